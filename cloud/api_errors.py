"""One error shape for the API, request bodies bounded before anything reads them, errors documented.

- Every error but a validation error is ``{"error": <code>, "detail": <text>}`` (``ErrorBody``);
  a 422 keeps FastAPI's ``{"detail": [{"loc", "msg", "type"}]}`` shape, also for the 422s a route
  raises itself, and never echoes the input (a NaN or a lone surrogate in it once made the error
  handler itself fail with a 500).
- ``BodyLimit`` refuses a request body over ``MAX_BODY_BYTES`` with 413 from its Content-Length,
  or while it streams in, before routing, parsing or authentication read a byte of it: a 300 MB
  unauthenticated POST used to be read and parsed before the token was checked (263 MB -> 1.1 GB).
- ``ERROR_RESPONSES`` declares 400/401/403/404/409/413/422/503 with their real shapes on every
  route of the app (FastAPI merges an app's ``responses`` into each route, also those of routers
  included later), so the OpenAPI schema lists every status a client can get.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.api_context import ErrorBody  # the one refusal model every route documents

MAX_BODY_BYTES = 1 << 20  # the largest body any route takes is far below (an ack note is <= 2000 chars)

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "too_large", 422: "invalid", 429: "rate_limited", 503: "unavailable"}


class ValidationItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationBody(BaseModel):
    """A 422: what is wrong with which field (the input itself is never echoed)."""

    detail: list[ValidationItem]


def _clean(text: str) -> str:
    """A message safe to encode: lone surrogates (from a hostile JSON body) replaced."""
    return text.encode("utf-8", "replace").decode("utf-8")


def validation_body(errors: Any) -> dict[str, Any]:
    """FastAPI's 422 shape without ``input``/``ctx`` (they may hold NaN or unencodable text)."""
    items = []
    for e in list(errors)[:20]:
        loc = [p if isinstance(p, int) else _clean(str(p))[:100] for p in e.get("loc", ())]
        msg = _clean(str(e.get("msg", "")))[:500]
        items.append({"loc": loc, "msg": msg, "type": str(e.get("type", "value_error"))})
    return {"detail": items}


async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(validation_body(exc.errors()), status_code=422)


async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = _clean(str(exc.detail))[:2000]
    if exc.status_code == 422:
        return JSONResponse({"detail": [{"loc": [], "msg": detail, "type": "value_error"}]}, status_code=422)
    return JSONResponse({"error": CODES.get(exc.status_code, "error"), "detail": detail},
                        status_code=exc.status_code, headers=getattr(exc, "headers", None))


class BodyLimit:
    """ASGI middleware: at most ``max_bytes`` of request body, checked before the app sees it."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if length is not None:
            if not length.isdigit() or len(length) > 18:
                await _refuse(send, 400, "invalid Content-Length")
                return
            if int(length) > self.max_bytes:
                await _refuse(send, 413, f"request body over {self.max_bytes} bytes")
                return
        seen = 0
        started = refused = False

        async def limited_receive() -> Message:
            nonlocal seen, started, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Answer now and tell the app the client left: it stops reading, and whatever it
                    # answers itself (FastAPI turns any body-read failure into a 400) is dropped.
                    refused = True
                    if not started:
                        started = True
                        await _refuse(send, 413, f"request body over {self.max_bytes} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = JSONResponse({"error": CODES[status], "detail": detail}, status_code=status).body
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def install(app: FastAPI) -> None:
    """Error handlers and the body limit (outermost: it runs before everything else)."""
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)


_DESCRIPTIONS = {
    400: "Malformed request (e.g. a bad Content-Length)", 401: "Missing, wrong or revoked bearer token",
    403: "The caller's role or sites do not allow this", 404: "No such resource",
    409: "Conflicts with the current state (e.g. already acknowledged)",
    413: f"Request body over {MAX_BODY_BYTES} bytes", 429: "Too many failed attempts: retry after Retry-After",
    503: "A backing service is unavailable",
}

# Passed as FastAPI(responses=...): merged into every route added to the app, including the routes
# of routers included later, so a new module's routes are documented without doing anything.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{status: {"model": ErrorBody, "description": text} for status, text in _DESCRIPTIONS.items()},
    422: {"model": ValidationBody, "description": "Invalid parameters or body"},
}
