"""The qwatch wire contracts (PROTOCOL.md) as code: pure, fast and free of I/O."""

SCHEMA_VERSION = 1
