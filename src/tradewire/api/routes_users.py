"""Users and their exchange keys. The API secret goes in and never comes out."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tradewire.api.deps import ApiDeps, deps, require_operator
from tradewire.store import users
from tradewire.store.tables import User

router = APIRouter(prefix="/api/users", dependencies=[Depends(require_operator)])

Deps = Annotated[ApiDeps, Depends(deps)]


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Annotated[str, Field(min_length=1, max_length=100)]
    api_key: Annotated[str, Field(min_length=8, max_length=128)]
    api_secret: Annotated[str, Field(min_length=8, max_length=256, repr=False)]
    discord_webhook_url: str | None = None
    max_leverage: Annotated[int, Field(ge=1, le=125)] | None = None  # caps every signal
    max_position_usdt: Annotated[Decimal, Field(gt=0)] | None = None

    @field_validator("discord_webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("discord_webhook_url must be an http(s) URL")
        return value or None


def user_json(user: User, api_key: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": user.id,
        "name": user.name,
        "active": user.active,
        "discord_webhook": bool(user.discord_webhook_url),
        "max_leverage": user.max_leverage,
        "max_position_usdt": None if user.max_position_usdt is None else str(
            user.max_position_usdt),
        "created_at": user.created_at,
    }
    if api_key is not None:
        out["api_key"] = users.mask(api_key)
    return out


@router.post("", status_code=201)
async def create_user(body: UserIn, d: Deps) -> dict[str, Any]:
    async with d.sessions.begin() as session:
        user, account = await users.create_user(
            session, d.box, name=body.name, api_key=body.api_key, api_secret=body.api_secret,
            discord_webhook_url=body.discord_webhook_url, max_leverage=body.max_leverage,
            max_position_usdt=body.max_position_usdt,
        )
    return user_json(user, account.api_key)


@router.get("")
async def list_users(d: Deps) -> list[dict[str, Any]]:
    async with d.sessions() as session:
        return [user_json(u) for u in await users.list_users(session)]


@router.post("/{user_id}/disable")
async def disable_user(user_id: int, d: Deps) -> dict[str, Any]:
    async with d.sessions.begin() as session:
        return user_json(await users.set_user_active(session, user_id, False))


@router.post("/{user_id}/enable")
async def enable_user(user_id: int, d: Deps) -> dict[str, Any]:
    async with d.sessions.begin() as session:
        return user_json(await users.set_user_active(session, user_id, True))
