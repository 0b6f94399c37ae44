"""Helpers for the conversation REST tests (``tests/test_conversation*.py``, unit groups, access).

Every action under test goes through the HTTP API as a demo user; the live store is read only to
check what was (or was not) written.
"""

from __future__ import annotations

import itertools
from typing import Any

BASE = "/v1/conversations"
MESSAGING_COLLECTIONS = ("conversations", "members", "events", "hidden_events")

_ids = itertools.count(1)


def error_code(body: Any) -> str | None:
    """The coded error of a response body, or None when the body is not an error."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("code")
    return None


def new_client_msg_id() -> str:
    return f"test-{next(_ids)}"


async def call(demo: Any, username: str, method: str, path: str, json: Any = None, *,
               params: dict[str, Any] | None = None) -> tuple[int, Any]:
    return await demo.api.request(method, path, json, token=await demo.token(username), params=params)


async def ok(demo: Any, username: str, method: str, path: str, json: Any = None, *, status: int = 200,
             params: dict[str, Any] | None = None) -> Any:
    """Make a call that must succeed with ``status``; returns the body."""
    got, body = await call(demo, username, method, path, json, params=params)
    assert got == status, (method, path, got, body)
    return body


async def refused(demo: Any, username: str, code: str, method: str, path: str, json: Any = None, *,
                  params: dict[str, Any] | None = None) -> Any:
    """Make a call that must be refused with ``code`` and change nothing stored."""
    before = await messaging_snapshot(demo)
    status, body = await call(demo, username, method, path, json, params=params)
    assert error_code(body) == code, (method, path, status, body)
    assert await messaging_snapshot(demo) == before, f"{method} {path} was refused but changed stored state"
    return body


async def messaging_snapshot(demo: Any) -> dict[str, list[dict[str, Any]]]:
    """Every conversation, member, event and hidden event, in id order: equal snapshots mean nothing
    was written."""
    db = demo.server.services.store.db
    return {name: await db[name].find().sort("_id", 1).to_list() for name in MESSAGING_COLLECTIONS}


async def open_direct(demo: Any, me: str, other: str) -> dict[str, Any]:
    return await ok(demo, me, "POST", f"{BASE}/direct", {"user_id": demo.user(other)})


async def create_group(demo: Any, owner: str, members: list[str], name: str = "防汛工作协调群",
                       **extra: Any) -> dict[str, Any]:
    return await ok(demo, owner, "POST", f"{BASE}/groups",
                    {"name": name, "member_ids": [demo.user(m) for m in members], **extra}, status=201)


async def send_text(demo: Any, username: str, conversation_id: str, text: str, *,
                    client_msg_id: str | None = None, **message: Any) -> tuple[int, Any]:
    """Send a text message; returns the raw (status, body) so refusals can be checked."""
    return await call(demo, username, "POST", f"{BASE}/{conversation_id}/messages",
                      {"client_msg_id": client_msg_id or new_client_msg_id(),
                       "message": {"kind": "text", "text": text, **message}})


async def send(demo: Any, username: str, conversation_id: str, text: str, **message: Any) -> dict[str, Any]:
    """Send a text message that must be stored; returns its event."""
    status, body = await send_text(demo, username, conversation_id, text, **message)
    assert status == 201, body
    return body["event"]


async def page(demo: Any, username: str, conversation_id: str, **params: Any) -> dict[str, Any]:
    return await ok(demo, username, "GET", f"{BASE}/{conversation_id}/events", params=params or None)


async def log(demo: Any, username: str, conversation_id: str) -> list[tuple[int, str]]:
    """(seq, type) of every event ``username`` can read, oldest first."""
    return [(e["seq"], e["type"]) for e in (await page(demo, username, conversation_id, limit=200))["events"]]


async def view(demo: Any, username: str, conversation_id: str) -> dict[str, Any]:
    return await ok(demo, username, "GET", f"{BASE}/{conversation_id}")


async def member_roles(demo: Any, username: str, conversation_id: str) -> dict[str, str]:
    """user id -> role of the current members, as ``username`` lists them."""
    body = await ok(demo, username, "GET", f"{BASE}/{conversation_id}/members", params={"limit": 200})
    return {m["user_id"]: m["role"] for m in body["members"]}
