"""What the API's routes need, held on ``app.state.deps`` (one per app, no globals)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire.bus.base import Bus
from tradewire.errors import Unauthorized
from tradewire.intake.service import IntakeService
from tradewire.store.crypto import SecretBox
from tradewire.trading.execute import Executor


@dataclass
class ApiDeps:
    sessions: async_sessionmaker[AsyncSession]
    box: SecretBox
    executor: Executor
    bus: Bus | None
    token: str
    intake: IntakeService | None = None  # signal intake (routes_intake); None: not served


def deps(request: Request) -> ApiDeps:
    found: ApiDeps = request.app.state.deps
    return found


def require_operator(request: Request) -> None:
    """Bearer-token check for operator endpoints (constant-time compare)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected = deps(request).token
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), expected):
        raise Unauthorized("missing or wrong bearer token")
