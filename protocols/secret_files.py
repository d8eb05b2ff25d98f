"""Files that hold secrets (the band key file, MQTT credentials bundles, private keys).

One way to read them (refused unless only the owner can read them, errors naming the file),
one way to write them (atomically, mode 0600 from the first byte), and one JSON-object parser
whose errors name the file and the line. docs/protocol.md §3.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from protocols.errors import ConfigError

MAX_SECRET_FILE_BYTES = 1 << 20  # a key file of 20,000 bands is ~1 MB; a bigger file is the wrong file


def read_private_text(path: str | os.PathLike[str], *, what: str, require_private: bool = True) -> str:
    """The text of a secrets file; ConfigError when unreadable, too big, not UTF-8, or readable by others."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        with p.open("rb") as fh:
            raw = fh.read(MAX_SECRET_FILE_BYTES + 1)
        if len(raw) > MAX_SECRET_FILE_BYTES:
            raise ConfigError(str(p), "", f"over {MAX_SECRET_FILE_BYTES} bytes; {what} is at most that big "
                                          "(is this the right file?)")
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot read {what}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(p), "", "not UTF-8 text") from None
    if require_private and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(str(p), "", f"mode is {stat.S_IMODE(mode):04o}; {what} holds secrets and must be 0600 "
                          f"(fix: chmod 600 {p})")
    return text


def json_object(text: str, source: str, expected: str) -> dict[str, Any]:
    """Parse JSON text that must be an object; ConfigError with the line, or "must be {expected}"."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(source, f"line {exc.lineno}", f"not valid JSON: {exc.msg}") from None
    except (ValueError, RecursionError):  # a number past Python's digit limit, or 100k nested brackets
        raise ConfigError(source, "", "not valid JSON (nested too deeply or a number too long)") from None
    if not isinstance(data, dict):
        raise ConfigError(source, "", f"must be {expected}")
    return data


def write_private_file(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write `data` (text as UTF-8) atomically, mode 0600 from the first byte, never briefly readable.

    The temporary file has a unique name (mkstemp creates it 0600), so two writers never share it.
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock (`<path>.lock`) around a read-modify-write of `path`, across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
