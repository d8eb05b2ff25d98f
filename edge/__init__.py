"""The edge node: observation sources, the wristband pipeline, cameras, the durable outbox, the
MQTT link, the agent that ties them together, and the `qwatch-edge` command line.

May import: `protocols` and `firmware_interface`; never `cloud` or development code
(devtools, tests, bench). Checked by import-linter (docs/architecture.md).
"""
