"""Helpers shared by the authentication tests (``tests/test_auth_*.py``).

Every action under test goes through the HTTP API; the live store is touched only to move time
(an expiry into the past) or to check what was written.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from xietong.server.auth.service import login_key

LOGIN = "/v1/auth/login"
REFRESH = "/v1/auth/refresh"


def error_code(body: Any) -> str | None:
    """The coded error of a response body, or None when the body is not an error."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("code")
    return None


async def whoami(api: Any, access_token: str) -> str | None:
    """The user name an access token acts as on ``/v1/me``, or the error code it is refused with."""
    status, body = await api.get("/v1/me", token=access_token)
    return body["username"] if status == 200 else error_code(body)


async def refresh(api: Any, refresh_token: str) -> tuple[int, Any]:
    return await api.post(REFRESH, {"refresh_token": refresh_token})


async def audit_entries(demo: Any, action: str, **filters: str) -> list[dict[str, Any]]:
    """Audit entries of ``action`` (newest first) as the system administrator reads them."""
    status, body = await demo.api.get("/v1/audit", token=await demo.token("admin"),
                                      params={"action": action, "limit": 200, **filters})
    assert status == 200, body
    return [entry for entry in body["entries"] if entry["action"] == action]


def a_while_ago() -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=1)


async def expire_lock(demo: Any, username: str) -> None:
    """Let the lockout of ``username`` run out, as if its time had passed."""
    result = await demo.server.services.store.devices.attempts.update_one(
        {"_id": login_key(username), "locked_until": {"$ne": None}}, {"$set": {"locked_until": a_while_ago()}})
    assert result.matched_count == 1, f"{username} is not locked"
