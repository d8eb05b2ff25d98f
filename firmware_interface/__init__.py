"""The host side of the serial link to device firmware (docs/protocol.md §7): the BLE scanner
co-processor and the wristband enrolment dock, plus the emulated firmware that tests serve on a pty.

May import: `protocols` only. Checked by import-linter (docs/architecture.md).
"""
