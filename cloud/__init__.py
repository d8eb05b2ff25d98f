"""The provincial cloud: MQTT ingest, alert store, time-series writer, API, live dashboard,
users and sign-in, broker provisioning, notifications, and the `qwatch-cloud` command line.

May import: `protocols` only; never `edge`, `firmware_interface` or development code.
Checked by import-linter (docs/architecture.md).
"""
