"""``qwatch-cloud user …``: who may use the cloud API and dashboard (the users file of ``serve --users``).

``add`` and ``rotate`` print the new token once, alone on stdout (``TOKEN=$(qwatch-cloud user add …)``
works); everything else goes to stderr. No command ever prints a stored hash.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cloud.auth import Authenticator, SignInSettings
from cloud.signin import CodeBook
from cloud.users import ROLES, Issued, UserChangeError, add_user, load_users, revoke_user, rotate_user, user_name
from protocols.errors import ConfigError
from protocols.text import LabelError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="API users: guards (their sites), command centre and admins (every site)")
err = Console(stderr=True, highlight=False)
log = logging.getLogger("qwatch.cloud")
UsersOpt = Annotated[Path, typer.Option("--users", help="users file (YAML), as given to `serve --users`")]
DEFAULT_USERS = Path("var/cloud/users.yaml")


def _fail(exc: Exception, hint: str) -> typer.BadParameter:
    return typer.BadParameter(str(exc), param_hint=hint)


def _show_token(issued: Issued, what: str) -> None:
    u = issued.user
    scope = ", ".join(u.sites) if u.sites else "every site"
    err.print(f"{what} [bold]{u.name}[/] (role {u.role}, {scope}). Its token follows, shown this once: "
              "store it now (only its hash is kept).")
    typer.echo(issued.token)


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(
        help="user name, recorded on acknowledgements: letters (diacritics too), digits, spaces; at most 64")],
    role: Annotated[str, typer.Option("--role", help=f"one of: {', '.join(ROLES)}")],
    site: Annotated[list[str], typer.Option("--site", help="a site the guard may see (repeatable; guards only)")
                    ] = [],  # noqa: B006 - typer needs a literal default
    users: UsersOpt = DEFAULT_USERS,
) -> None:
    """Add a user and print their new token once."""
    try:
        issued = add_user(users, name, role, site)
    except ConfigError as exc:
        raise _fail(exc, "--users") from None
    except UserChangeError as exc:
        raise _fail(exc, "--role" if "role" in str(exc) else "--site" if "site" in str(exc) else "NAME") from None
    _show_token(issued, "added")


@app.command("list")
def list_users(users: UsersOpt = DEFAULT_USERS) -> None:
    """List users (no tokens, no hashes)."""
    try:
        current = load_users(users)
    except ConfigError as exc:
        raise _fail(exc, "--users") from None
    table = Table(title=f"users in {users}")
    for col in ("name", "role", "sites", "state", "token id", "issued"):
        table.add_column(col)
    for u in current.users:
        state = "active" if u.active else f"revoked {time.strftime('%Y-%m-%d %H:%M', time.gmtime(u.revoked_at or 0))}"
        table.add_row(u.name, u.role, ", ".join(u.sites) or "(all)", state, u.token_id,
                      time.strftime("%Y-%m-%d %H:%M", time.gmtime(u.created_at)) + "Z")
    Console(highlight=False).print(table)


@app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="user to disable")], users: UsersOpt = DEFAULT_USERS) -> None:
    """Disable a user's token at once (a running cloud re-reads the file; open dashboards are closed)."""
    try:
        revoke_user(users, name)
    except ConfigError as exc:
        raise _fail(exc, "--users") from None
    except UserChangeError as exc:
        raise _fail(exc, "NAME") from None
    err.print(f"revoked [bold]{name}[/]: the token no longer works (kept in the file for the audit trail)")


@app.command("rotate")
def rotate(name: Annotated[str, typer.Argument(help="user to re-issue")], users: UsersOpt = DEFAULT_USERS) -> None:
    """Issue a new token (the old one stops working; a revoked user is reinstated) and print it once."""
    try:
        issued = rotate_user(users, name)
    except ConfigError as exc:
        raise _fail(exc, "--users") from None
    except UserChangeError as exc:
        raise _fail(exc, "NAME") from None
    _show_token(issued, "new token for")


@app.command("code")
def code(
    name: Annotated[str, typer.Argument(help="the user who will sign in with it")],
    users: UsersOpt = DEFAULT_USERS,
    ttl_s: Annotated[float, typer.Option("--ttl-s", min=30, max=86400, help="how long the code works")] = 600.0,
    url: Annotated[str, typer.Option("--url", help="the dashboard's address, for the link and the QR code")
                   ] = "http://127.0.0.1:8080",
) -> None:
    """Make a one-time sign-in code (single use) and print it; the link and a QR code go to stderr."""
    try:
        current = load_users(users)
        wanted = user_name(name)
    except ConfigError as exc:
        raise _fail(exc, "--users") from None
    except LabelError as exc:
        raise _fail(exc, "NAME") from None
    user = current.get(wanted)
    if user is None or not user.active:
        why = "no such user" if user is None else "revoked (reinstate with `user rotate`)"
        raise typer.BadParameter(f"{wanted!r}: {why}", param_hint="NAME")
    try:
        issued, expires = CodeBook(users).issue(user.name, ttl_s=ttl_s, now=time.time())
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--users") from None
    link = f"{url.rstrip('/')}/?code={issued}"
    until = time.strftime("%H:%M", time.localtime(expires))
    err.print(f"one-time code for [bold]{user.name}[/] ({user.role}), single use, until {until}: type it on the "
              f"sign-in page, or open {link}")
    typer.echo(issued)
    _print_qr(link)


def _print_qr(link: str) -> None:
    try:
        import segno
    except ImportError:  # the QR code is a convenience; the code and link are already printed
        return
    buf = io.StringIO()
    segno.make(link, error="m").terminal(out=buf, compact=True)
    err.file.write(buf.getvalue())


# ---------------------------------------------------------------- for `serve --users`
ServeUsersOpt = Annotated[Path | None, typer.Option(
    "--users", metavar="FILE",
    help="users file (`qwatch-cloud user add`): every /api/v1 route and the live WebSocket then need a bearer "
         "token, and guards see only their sites. Without it the API and dashboard are OPEN to anyone who "
         "can reach the port")]


def open_auth(path: Path | None, settings: SignInSettings | None = None) -> Authenticator | None:
    """Validate ``--users`` before anything starts (a bad file is a usage error naming file and key)."""
    if path is None:
        return None
    try:
        auth = Authenticator(path, settings)
        auth.session_key()  # made (or read) now: a broken key file is a start-up error, not a sign-in one
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--users") from None
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"session key next to {path}: {exc}", param_hint="--users") from None
    return auth


def log_auth_mode(auth: Authenticator | None, host: str, port: int) -> None:
    """One line at start saying who may use the API; a loud WARNING when nobody has to sign in."""
    if auth is None:
        log.warning("event=auth mode=off url=http://%s:%d/ WARNING: the API and dashboard are OPEN: anyone who "
                    "can reach this port reads every site's alerts and band positions and acknowledges alerts "
                    "under any name. Start with --users FILE (docs/cloud.md, Access control)", host, port)
        return
    users = auth.users
    log.info("event=auth mode=on users_file=%s users=%d active=%d", auth.path, len(users),
             sum(u.active for u in users))
    if not any(u.active for u in users):
        log.warning("event=auth mode=on users_file=%s WARNING: no active user, nobody can sign in", auth.path)
