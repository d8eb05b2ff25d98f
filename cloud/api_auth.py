"""Sign-in routes (cloud.signin): admins make one-time codes, a phone trades one for a session token, and
a signed-in client renews its session before it expires. Only meaningful with ``serve --users``: without
it the API is open and these answer 409."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from cloud.api_context import CloudContext, Ctx, errors, get_principal
from cloud.auth import Authenticator, Principal, SignInError

router = APIRouter(prefix="/api/v1/auth")


class CodeRequest(BaseModel):
    """Whom the code signs in (the name as in the users file; diacritics and either Unicode form welcome)."""

    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=256)


class CodeIssued(BaseModel):
    """A one-time code to read out or show as a QR code; ``url`` is relative to the dashboard's address."""

    code: str
    expires_at: float
    url: str


class ExchangeRequest(BaseModel):
    """The code as typed (case, spaces and dashes do not matter)."""

    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=64)


class Session(BaseModel):
    """A session token (``Authorization: Bearer``), its expiry, and who it is for."""

    token: str
    expires_at: float
    user: str
    role: str


def _auth(ctx: CloudContext) -> Authenticator:
    if ctx.auth is None:
        raise HTTPException(409, "sign-in is off: the cloud runs without --users")
    return ctx.auth


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


def _signed_in(ctx: Ctx, request: Request) -> Principal:
    """The bearer's principal; 409 when the cloud runs without sign-in (there is no one to be)."""
    _auth(ctx)
    return get_principal(request)


SignedIn = Annotated[Principal, Depends(_signed_in)]


@router.post("/codes", response_model=CodeIssued, responses=errors(401, 403, 404, 409, 422, 429))
def make_code(ctx: Ctx, who: SignedIn, body: CodeRequest) -> CodeIssued:
    """An admin makes a short one-time code for a user (single use; expires in minutes)."""
    auth = _auth(ctx)
    if who.role != "admin":
        raise HTTPException(403, "only an admin makes sign-in codes")
    try:
        code, exp = auth.issue_code(body.user)
    except SignInError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return CodeIssued(code=code, expires_at=exp, url=f"/?code={code}")


@router.post("/exchange", response_model=Session, responses=errors(401, 409, 422, 429))
def exchange(ctx: Ctx, body: ExchangeRequest, request: Request) -> Session:
    """Trade a one-time code for a session token (no bearer needed: this is the sign-in)."""
    token, exp, user = _auth(ctx).exchange(body.code, client=_client(request))
    return Session(token=token, expires_at=exp, user=user.name, role=user.role)


@router.post("/renew", response_model=Session, responses=errors(401, 409, 429))
def renew(ctx: Ctx, who: SignedIn) -> Session:
    """A fresh session token for the signed-in caller (send it before the old one expires)."""
    token, exp, user = _auth(ctx).renew(who)
    return Session(token=token, expires_at=exp, user=user.name, role=user.role)
