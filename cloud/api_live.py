"""``WS /api/v1/live``: a hello with recent alerts and positions, then every hub message as it happens.

With auth on, the handshake carries the token: ``Authorization: Bearer <token>`` (non-browser clients),
or the subprotocols ``["qwatch.v1", "qwatch.bearer.<token>"]`` (browsers cannot set headers on a
WebSocket). The server answers with ``qwatch.v1`` and never echoes the token. A missing, wrong or
revoked token closes the socket with 4401 right after the handshake (so a browser can tell it from a
network failure); a token revoked or rotated while connected closes it within ``RECHECK_S``. A guard
receives only the messages of their sites.

Province scale (docs/cloud.md "The live feed at province scale"): with ``?watch=`` the client names whose
band positions it wants: ``*`` (all it may see, the default without the parameter), ``auto`` (all when the
province is small or the caller is a guard, else none), or site IDs separated by commas. The hello then
also carries ``summary`` (per-site counts: bands, stale bands, nodes online, alerts open / needing attention
/ critical / escalated) and ``watching`` (``"*"`` or the site list). The client changes its choice with a
text message ``{"op": "watch", "sites": "auto" | "*" | [IDs]}``; the answer is a ``positions`` message
with the watched sites' current positions. Alerts, escalations and node events always come, watched or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from cloud.alert_store import AlertQuery, alert_view
from cloud.api_alerts import scoped_alerts
from cloud.api_context import CloudContext, Ctx
from cloud.api_sites import band_counts, scoped_positions, site_briefs
from cloud.auth import OPEN, WS_PROTOCOL, AuthError, Principal, ws_token
from cloud.live import Subscriber, live_json
from cloud.signin import RateLimited

router = APIRouter()
log = logging.getLogger("qwatch.cloud.api")
RECHECK_S = 5.0
MAX_OP_CHARS = 4096  # a client's text message; longer ones are refused (counted)
MAX_WATCH_SITES = 64
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
Watch = frozenset[str] | None  # the sites whose positions a client gets; None: every site it may see


class WatchError(ValueError):
    """A ``watch`` choice that is not ``*``, ``auto`` or a list of site IDs."""


def parse_watch(value: object) -> str | list[str]:
    """``*``, ``auto`` or up to :data:`MAX_WATCH_SITES` site IDs (a list, or a comma-separated string)."""
    if value in ("*", "auto"):
        return str(value)
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > MAX_WATCH_SITES:
        raise WatchError("watch: '*', 'auto' or at most 64 site IDs")
    if not all(isinstance(v, str) and _ID.match(v) for v in items):
        raise WatchError("watch: site IDs are [A-Za-z0-9][A-Za-z0-9._-]{0,63}")
    return [str(v) for v in items]


def resolve_watch(ctx: CloudContext, who: Principal, choice: str | list[str]) -> Watch:
    """What ``choice`` means now for ``who``. ``auto``: everything for a guard (their own sites stay live
    whatever their size) and for a province of at most ``ctx.live_all_bands`` bands, else nothing until the
    client picks a site."""
    if choice == "*":
        return None
    if choice == "auto":
        if who.sites is not None:
            return None
        total = sum(n for site, (n, _stale) in band_counts(ctx).items() if who.sees(site))
        return None if total <= ctx.live_all_bands else frozenset()
    return frozenset(s for s in choice if who.sees(s))


@dataclass
class WatchState:
    """One connection's watch choice; ``gen`` counts the client's changes, so a re-evaluation of ``auto``
    that was under way when the client chose again never overwrites the newer choice."""

    choice: str | list[str]
    gen: int = 0


async def _rewatch(ctx: CloudContext, who: Principal, sub: Subscriber, state: WatchState, *, always: bool) -> None:
    """Resolve the choice now; on a change (or ``always``: the client asked) set it and queue the positions
    of the sites now watched (through the subscriber's own queue: one writer per socket, shed like any
    positions). ``auto`` is re-resolved every RECHECK_S, so a province that grows past the budget while a
    dashboard is open turns into summaries, and back."""
    gen = state.gen
    watch = await asyncio.to_thread(resolve_watch, ctx, who, state.choice)
    if gen != state.gen or (watch == sub.watch and not always):
        return
    sub.watch = watch
    for reply in await asyncio.to_thread(_positions_messages, ctx, who, watch):
        sub.offer(reply, True, ctx.hub)


def _watching(watch: Watch) -> str | list[str]:
    return "*" if watch is None else sorted(watch)


def _positions(ctx: CloudContext, who: Principal, watch: Watch) -> list[dict[str, Any]]:
    return [p for p in scoped_positions(ctx, who) if watch is None or p.get("site") in watch]


def _split(kind: str, data: dict[str, Any], positions: list[dict[str, Any]], hub: Any) -> list[str]:
    """``data`` with ``positions`` as one message if it fits the live feed's size limit; else ``data`` with
    no positions followed by one ``bands`` message per (site, node), as the feed sends them live. A province
    of 10,000 bands (about 1.9 MB of positions) would otherwise lose the whole message, alerts included."""
    text = live_json({"kind": kind, "data": {**data, "positions": positions}, "sent_at": time.time()})
    if text is not None:
        return [text]
    head = live_json({"kind": kind, "data": {**data, "positions": []}, "sent_at": time.time()})
    if head is None:  # cannot happen with validated payloads; never send what a browser cannot parse
        hub.counts[f"unserialisable_{kind}"] += 1
        return []
    hub.counts[f"{kind}_positions_split"] += 1
    parts = [live_json({"kind": "bands", "data": p, "sent_at": time.time()}) for p in positions]
    return [head, *(t for t in parts if t is not None)]


def _hello(ctx: CloudContext, who: Principal, watch: Watch, province: bool) -> list[str]:
    """The first messages (built off the event loop: a province's positions are megabytes of JSON)."""
    rows = scoped_alerts(ctx.store, who, AlertQuery(limit=200))
    hello: dict[str, Any] = {"alerts": [alert_view(r) for r in rows]}
    if province:
        hello["summary"] = site_briefs(ctx, who)
        hello["watching"] = _watching(watch)
    out = _split("hello", hello, _positions(ctx, who, watch), ctx.hub)
    if not out:
        text = live_json({"kind": "hello", "data": {"alerts": [], "positions": []}, "sent_at": time.time()})
        assert text is not None
        out = [text]
    return out


async def _authenticate(ws: WebSocket, ctx: CloudContext) -> Principal | None:
    """Accept the handshake, then the caller; None (socket closed with 4401) when refused."""
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
    await ws.accept(subprotocol=WS_PROTOCOL if WS_PROTOCOL in offered else None)
    if ctx.auth is None:
        return OPEN
    client = ws.client.host if ws.client else "-"
    try:
        return await asyncio.to_thread(ctx.auth.authenticate, ws_token(ws.headers), client=client)
    except AuthError as err:
        await ws.close(code=err.ws_close_code, reason=err.message)
        return None
    except RateLimited as err:
        await ws.close(code=4429, reason=str(err))
        return None


async def _still_valid(ctx: CloudContext, who: Principal) -> bool:
    return ctx.auth is None or await asyncio.to_thread(ctx.auth.still_valid, who)


@router.websocket("/api/v1/live")
async def live(ws: WebSocket, ctx: Ctx) -> None:
    """Stream ``{"kind", "data", "sent_at"}`` messages until the client goes away."""
    who = await _authenticate(ws, ctx)
    if who is None:
        return
    asked = ws.query_params.get("watch")
    try:
        choice = parse_watch(asked) if asked is not None else "*"
    except WatchError as err:
        await ws.close(code=4422, reason=str(err))
        return
    sub = ctx.hub.subscribe(sites=who.sites)
    state = WatchState(choice)
    recv: asyncio.Task[Any] | None = None
    try:
        sub.watch = await asyncio.to_thread(resolve_watch, ctx, who, choice)
        for text in await asyncio.to_thread(_hello, ctx, who, sub.watch, asked is not None):
            await ws.send_text(text)
        # Read the receive side too: watch changes, and a closed browser tab frees its queue at once.
        recv = asyncio.create_task(_read_ops(ws, ctx, who, sub, state))
        await _pump(ws, ctx, who, sub, recv, state)
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        ctx.hub.unsubscribe(sub)
        if recv is not None:
            recv.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await recv


async def _pump(ws: WebSocket, ctx: CloudContext, who: Principal, sub: Subscriber, recv: asyncio.Task[Any],
                state: WatchState) -> None:
    """Send what the hub queues for ``sub`` until the client leaves or its token stops being valid."""
    checked = time.monotonic()
    while True:
        get = asyncio.create_task(sub.queue.get())
        # Wait only until the next check is due, not a full RECHECK_S from now: with traffic flowing
        # the check used to slip to nearly 2 x RECHECK_S (8.7 s measured against the documented 5 s).
        wait_s = max(0.0, checked + RECHECK_S - time.monotonic())
        done, _ = await asyncio.wait({get, recv}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        if recv in done:
            get.cancel()
            return
        if get in done:
            await ws.send_text(get.result())
        else:
            get.cancel()  # an item already handed to it stays queued (asyncio.Queue.get on cancel)
        if time.monotonic() - checked >= RECHECK_S:
            checked = time.monotonic()
            if not await _still_valid(ctx, who):
                log.info("event=live_closed reason=token_revoked user=%s", who.name)
                await ws.close(code=4401, reason="token revoked")
                return
            if state.choice == "auto":
                await _rewatch(ctx, who, sub, state, always=False)


async def _read_ops(ws: WebSocket, ctx: CloudContext, who: Principal, sub: Subscriber, state: WatchState) -> None:
    """Apply the client's ``watch`` messages until it closes; anything else is refused and counted."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            text = await ws.receive_text()
            try:
                if len(text) > MAX_OP_CHARS:
                    raise WatchError("oversized")
                op = json.loads(text)
                if not isinstance(op, dict) or op.get("op") != "watch" or set(op) != {"op", "sites"}:
                    raise WatchError("unknown")
                choice = parse_watch(op["sites"])
            except (ValueError, RecursionError) as err:
                reason = "oversized" if str(err) == "oversized" else "bad"
                ctx.hub.counts[f"live_op_refused:{reason}"] += 1
                continue
            state.choice, state.gen = choice, state.gen + 1
            await _rewatch(ctx, who, sub, state, always=True)


def _positions_messages(ctx: CloudContext, who: Principal, watch: Watch) -> list[str]:
    return _split("positions", {"watching": _watching(watch)}, _positions(ctx, who, watch), ctx.hub)
