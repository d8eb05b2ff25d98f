"""Command-line argument checks and error printing shared by `qwatch-edge` and `qwatch-cloud`.

Exit codes (docs/technician.md "Exit codes"): 0 done; 1 a check or an operation failed (a
device, the broker, the cloud, a doctor check); 2 bad arguments or a bad file (fix the command
line or the file named in the message); 3 the agent never reached the broker during its run.

`run_cli` runs a Typer app the way the console scripts do, but prints a usage error as
two lines (what is wrong, then where to read more) instead of Click's framed help box, and
turns any exception that escaped a command into two lines without a traceback.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import typer

from protocols.errors import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_BROKER = 3

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
log = logging.getLogger("qwatch.cli")


def parse_hostport(text: str, *, option: str = "--broker") -> tuple[str, int]:
    """Parse `HOST:PORT` (IPv6 as `[::1]:1883`); raises ConfigError naming the option."""
    host, sep, port_s = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ConfigError("command line", option, f"expected HOST:PORT with PORT 1-65535, got {text!r}")
    return host, int(port_s)


def id_option(what: str) -> Any:
    """A Typer callback that refuses an ID unusable as an MQTT topic level (`/`, `+`, `#`, spaces)."""

    def check(value: str | None) -> str | None:
        if value is not None and not _ID_RE.match(value):
            raise typer.BadParameter(f"{value!r} is not a valid {what}: use 1-64 letters, digits, '.', '_' or '-', "
                                     "starting with a letter or digit (no '/', '+', '#' or spaces)")
        return value

    return check


def _kinds(exc: BaseException) -> set[str]:
    # Typer may vendor its own copy of Click, so Click's exceptions are recognised by class name.
    return {c.__name__ for c in type(exc).__mro__}


def _click_error(exc: Exception, prog: str) -> int | None:
    """Print a Click usage/command error in one or two lines; None if `exc` is not one."""
    kinds = _kinds(exc)
    ctx = getattr(exc, "ctx", None)
    if "NoArgsIsHelpError" in kinds:
        typer.echo(ctx.get_help() if ctx is not None else str(exc))
        return EXIT_USAGE
    # Below, `exc` is a Click exception recognised by class name, so its type does not say it
    # has format_message().
    if "UsageError" in kinds:
        cmd = ctx.command_path if ctx is not None else prog
        typer.echo(f"{prog}: error: {exc.format_message()}", err=True)  # type: ignore[attr-defined]
        typer.echo(f"  (see `{cmd} --help`)", err=True)
        return EXIT_USAGE
    if "ClickException" in kinds:
        typer.echo(f"{prog}: error: {exc.format_message()}", err=True)  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", EXIT_FAILED))
    if "Abort" in kinds:
        typer.echo(f"{prog}: aborted", err=True)
        return EXIT_FAILED
    return None


def run_cli(app: typer.Typer, prog: str) -> None:
    """Run `app` as the console script `prog`: errors are one or two lines, never a traceback."""
    try:
        code = app(standalone_mode=False, prog_name=prog)
    except KeyboardInterrupt:
        sys.exit(130)
    except ConfigError as exc:
        typer.echo(f"{prog}: configuration error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"{prog}: error: {where}{exc.strerror or exc}", err=True)
        typer.echo("  check the path and that this user may read/write it", err=True)
        sys.exit(EXIT_FAILED)
    except Exception as exc:
        handled = _click_error(exc, prog)
        if handled is not None:
            sys.exit(handled)
        # Last resort: the technician gets two lines; QWATCH_DEBUG=1 shows the traceback.
        typer.echo(f"{prog}: internal error: {type(exc).__name__}: {exc}", err=True)
        typer.echo("  please report this with the command line (QWATCH_DEBUG=1 shows the details)", err=True)
        if _debug():
            raise
        sys.exit(EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _debug() -> bool:
    import os

    return os.environ.get("QWATCH_DEBUG", "") not in ("", "0")
