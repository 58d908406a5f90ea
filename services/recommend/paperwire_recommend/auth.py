"""Who may call the REST API, and the limits every request meets (body size, request rate).

Two kinds of bearer credentials, both sent as ``Authorization: Bearer <credential>``:
- the admin key (``PAPERWIRE_API_KEY``): user management and every user's routes;
- a user's token, signed with the link keys (purpose "api", paperwire_shared.links): that user's
  own routes only. It names the user by id, never by address; it is returned when the user is
  created (and to the admin by ``POST /v1/users/{id}/token``) and dies with the user.
The pages behind an email's links are authorised by the link itself (web.py), not by these.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paperwire_shared import links
from paperwire_shared.links import LinkError, LinkSigner, token_id

log = logging.getLogger(__name__)

API_KEY_FILE = "api_key"
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def api_key_for(configured: str | None, environment: str, data_dir: Path) -> str:
    """The admin key: the configured one, or in development the one kept in <data-dir>/api_key."""
    if configured:
        return configured
    if environment != links.DEVELOPMENT:  # Settings refuses this first; kept for other callers
        raise ValueError("PAPERWIRE_API_KEY is required outside development")
    return links.development_key(data_dir, API_KEY_FILE)


def client_api_key(data_dir: Path) -> str | None:
    """The admin key a local client sends: PAPERWIRE_API_KEY, else the node's <data-dir>/api_key."""
    if configured := os.environ.get("PAPERWIRE_API_KEY"):
        return configured
    path = data_dir / API_KEY_FILE
    return path.read_text().strip() if path.exists() else None


def client_headers(data_dir: Path) -> dict[str, str]:
    key = client_api_key(data_dir)
    return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass(frozen=True)
class Caller:
    """Who a request's credential names: the admin, or one user."""

    admin: bool
    user_id: str | None = None


class Credentials:
    """Checks bearer credentials against the admin key and the user-token signer."""

    def __init__(self, admin_key: str, signer: LinkSigner) -> None:
        self._admin_key = admin_key.encode()
        self._signer = signer

    def user_token(self, user_id: str) -> str:
        return self._signer.sign("api", user_id, token_id("api", user_id))

    def caller(self, request: Request) -> Caller | None:
        return self.caller_of(request.headers.get("authorization", ""))

    def caller_of(self, authorization: str) -> Caller | None:
        """Who an Authorization header names, or None for a missing or invalid credential."""
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return None
        # Constant time: the comparison must not tell how much of a guessed key was right.
        if hmac.compare_digest(credential.encode(), self._admin_key):
            return Caller(admin=True)
        try:
            return Caller(admin=False, user_id=self._signer.verify("api", credential).user_id)
        except LinkError:
            return None


def _caller(request: Request) -> Caller:
    caller = request.app.state.credentials.caller(request)
    if caller is None:
        raise HTTPException(401, "missing or invalid bearer credential", headers=CHALLENGE)
    return caller


def _admin(request: Request) -> Caller:
    caller = _caller(request)
    if not caller.admin:
        raise HTTPException(403, "this route needs the admin API key")
    return caller


def _user(request: Request) -> Caller:
    # The path's user id is read here rather than declared, so the credential is checked before
    # the parameters are validated: a caller without one learns nothing about valid ids.
    caller = _caller(request)
    if not caller.admin and caller.user_id != request.path_params.get("user_id"):
        raise HTTPException(403, "this token belongs to another user")
    return caller


CallerDep = Annotated[Caller, Depends(_caller)]
AdminDep = Annotated[Caller, Depends(_admin)]
UserDep = Annotated[Caller, Depends(_user)]


class RateLimit:
    """ASGI middleware: at most ``rate`` requests per caller (``limits`` notation), else 429.

    Written on ``limits`` (the library under slowapi) rather than slowapi's middleware: slowapi
    0.1.10 finds a request's route in ``app.routes``, which under FastAPI 0.165 holds included
    routers rather than their routes, so every /v1 route went unlimited (the 429 test caught it).
    One process's memory holds the counts: each API replica limits on its own.
    """

    def __init__(self, app: ASGIApp, rate: str, exempt: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.rate = rate
        self.item = parse(rate)
        self.exempt = exempt
        self.window = MovingWindowRateLimiter(MemoryStorage())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        key = _rate_key(scope)
        if self.window.hit(self.item, key):
            await self.app(scope, receive, send)
            return
        reset, _ = self.window.get_window_stats(self.item, key)
        retry_after = max(1, math.ceil(reset - time.time()))
        response = JSONResponse(
            {"detail": f"rate limit exceeded: {self.rate}"},
            status_code=429,
            headers={"Retry-After": str(retry_after)},
        )
        await response(scope, receive, send)


def _rate_key(scope: Scope) -> str:
    # Keyed by credential when there is one (hashed: the limiter's storage never holds it),
    # else by the client's address.
    headers = dict(scope["headers"])
    if credential := headers.get(b"authorization"):
        return "credential:" + hashlib.sha256(credential).hexdigest()[:32]
    client = scope.get("client")
    return "address:" + (client[0] if client else "unknown")


class BodyLimit:
    """ASGI middleware refusing request bodies over ``max_bytes`` with 413.

    A declared Content-Length over the cap is refused before anything is read; a chunked body is
    counted as it arrives and refused once it passes the cap (an HTTPException raised from the
    read, which the app's exception middleware turns into the 413).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._detail)
            return message

        await self.app(scope, counted, send)

    @property
    def _detail(self) -> str:
        return f"request body over {self.max_bytes} bytes"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"detail": self._detail}, status_code=413)(scope, receive, send)
