"""Helpers shared by the directory, administration and audit tests.

They read the live store only to check what was (or was not) written; every action under test
goes through the HTTP API.
"""

from __future__ import annotations

from typing import Any

from xietong.server.seed import DEMO_PASSWORD

COLLECTIONS = ("units", "users", "devices", "login_attempts", "audit")


def error_code(body: Any) -> str | None:
    """The coded error of a response body, or None when the body is not an error."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("code")
    return None


async def snapshot(store: Any, collections: tuple[str, ...] = ("units", "users", "devices", "login_attempts")
                   ) -> dict[str, list[dict[str, Any]]]:
    """Every document of ``collections``, in id order: equal snapshots mean nothing was written."""
    return {name: await store.db[name].find().sort("_id", 1).to_list() for name in collections}


async def counts(store: Any) -> dict[str, int]:
    return {name: await store.db[name].count_documents({}) for name in COLLECTIONS}


def names(units: list[dict[str, Any]]) -> list[str]:
    return [unit["name"] for unit in units]


def member_names(page: dict[str, Any]) -> list[str]:
    return [member["user"]["display_name"] for member in page["members"]]


def user_names(page: dict[str, Any]) -> set[str]:
    return {user["display_name"] for user in page["users"]}


async def create_user(demo: Any, actor: str, unit: str, username: str, display_name: str, **extra: Any
                      ) -> dict[str, Any]:
    """Create an account through the admin API as ``actor`` and return the response body. It gets the
    demo password (so ``demo.token(username)`` works) unless ``extra`` says otherwise."""
    spec = {"username": username, "display_name": display_name, "unit_id": demo.unit(unit),
            "password": DEMO_PASSWORD, **extra}
    status, body = await demo.api.post("/v1/admin/users", spec,
        token=await demo.token(actor))
    assert status == 201, body
    demo.users[username] = body["user"]["id"]
    return body


async def create_unit(demo: Any, actor: str, parent: str | None, name: str, level: str = "department",
                      **extra: Any) -> dict[str, Any]:
    status, body = await demo.api.post(
        "/v1/admin/units",
        {"name": name, "level": level, "parent_id": demo.unit(parent) if parent else None, **extra},
        token=await demo.token(actor))
    assert status == 201, body
    demo.units[name] = body["id"]
    return body


async def grant(demo: Any, actor: str, username: str, role: str, unit: str) -> None:
    status, body = await demo.api.post(f"/v1/admin/users/{demo.user(username)}/roles",
                                       {"role": role, "unit_id": demo.unit(unit)}, token=await demo.token(actor))
    assert status == 200, body
