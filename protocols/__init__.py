"""The qwatch contracts (docs/protocol.md) as code: pure, fast, and at the bottom of the stack.

Owns: the advert codec and verifier (§1), the observation line (§2), the site config, band key
file and MQTT credentials bundle (§3), the alert, telemetry, command and camera-event payloads
(§4-§6), the MQTT topic tree (§5), serial frames (§7), ULIDs, and the exit codes and error
format that both command lines share.

May import: no other qwatch package (checked by import-linter, docs/architecture.md).
"""

SCHEMA_VERSION = 1
