"""``WS /api/v1/live``: a hello with recent alerts and positions, then every hub message as it happens."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from cloud.alert_store import AlertQuery, alert_view
from cloud.api_context import Ctx

router = APIRouter()


@router.websocket("/api/v1/live")
async def live(ws: WebSocket, ctx: Ctx) -> None:
    """Stream ``{"kind", "data", "sent_at"}`` messages until the client goes away."""
    await ws.accept()
    sub = ctx.hub.subscribe()
    recv: asyncio.Task[Any] | None = None
    try:
        rows = await asyncio.to_thread(ctx.store.list_alerts, AlertQuery(limit=200))
        hello = {"alerts": [alert_view(r) for r in rows], "positions": list(ctx.hub.positions.values())}
        await ws.send_text(json.dumps({"kind": "hello", "data": hello, "sent_at": time.time()}))
        # Watch the receive side too, so a closed browser tab frees its queue at once.
        recv = asyncio.create_task(_until_closed(ws))
        while True:
            get = asyncio.create_task(sub.queue.get())
            done, _ = await asyncio.wait({get, recv}, return_when=asyncio.FIRST_COMPLETED)
            if recv in done:
                get.cancel()
                return
            await ws.send_text(get.result())
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        ctx.hub.unsubscribe(sub)
        if recv is not None:
            recv.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await recv


async def _until_closed(ws: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await ws.receive_text()
