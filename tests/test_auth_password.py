"""Changing my password: it needs the current one, follows the rules, and signs out my other devices."""

from __future__ import annotations

from auth_support import LOGIN, audit_entries, error_code, refresh, whoami
from xietong.server.ratelimit import Limits
from xietong.server.seed import DEMO_PASSWORD

NEW_PASSWORD = "Nanning#Office2026"


async def change(demo, token: str, current: str, new: str) -> tuple[int, str | None, dict]:
    status, body = await demo.api.post("/v1/me/password", {"current_password": current, "new_password": new},
                                       token=token)
    return status, error_code(body), body


async def can_log_in(demo, password: str) -> bool:
    status, body = await demo.api.post(LOGIN, {"username": "zhangwei", "password": password})
    assert status == 200 or error_code(body) == "auth.invalid_credentials", body
    return status == 200


async def test_password_change_with_wrong_current_password_is_refused_and_changes_nothing(demo):
    phone = await demo.api.login("zhangwei")
    laptop = await demo.api.login("zhangwei")

    status, code, _ = await change(demo, phone["access_token"], "Xietong@2025", NEW_PASSWORD)
    assert (status, code) == (401, "auth.invalid_credentials")
    assert await whoami(demo.api, laptop["access_token"]) == "zhangwei"
    assert await can_log_in(demo, DEMO_PASSWORD) and not await can_log_in(demo, NEW_PASSWORD)
    entries = await audit_entries(demo, "auth.password_change", target_id=demo.user("zhangwei"))
    assert [e["outcome"] for e in entries] == ["failure"]


async def test_weak_new_password_is_refused_and_changes_nothing(demo):
    phone = await demo.api.login("zhangwei")
    for weak in ("Sh0rt!", "alllowercaseletters", "NoDigitsOrSymbols", "1234567890abc"):
        status, code, body = await change(demo, phone["access_token"], DEMO_PASSWORD, weak)
        assert (status, code) == (400, "auth.password_weak"), weak
        assert body["error"]["message"]  # tells the user the rule they missed
    assert await can_log_in(demo, DEMO_PASSWORD)


async def test_password_change_signs_out_my_other_devices_but_not_this_one(demo):
    phone = await demo.api.login("zhangwei")
    laptop = await demo.api.login("zhangwei")
    tablet = await demo.api.login("zhangwei")

    status, code, body = await change(demo, phone["access_token"], DEMO_PASSWORD, NEW_PASSWORD)
    assert (status, code, body) == (200, None, {"revoked": 2})
    assert await whoami(demo.api, phone["access_token"]) == "zhangwei"
    assert (await refresh(demo.api, phone["refresh_token"]))[0] == 200
    for other in (laptop, tablet):
        assert await whoami(demo.api, other["access_token"]) == "auth.session_revoked"
        assert error_code((await refresh(demo.api, other["refresh_token"]))[1]) == "auth.session_revoked"


async def test_after_a_password_change_the_new_password_logs_in_and_the_old_one_does_not(demo):
    phone = await demo.api.login("zhangwei")
    await change(demo, phone["access_token"], DEMO_PASSWORD, NEW_PASSWORD)
    assert await can_log_in(demo, NEW_PASSWORD)
    assert not await can_log_in(demo, DEMO_PASSWORD)
    entries = await audit_entries(demo, "auth.password_change", target_id=demo.user("zhangwei"))
    assert [e["outcome"] for e in entries] == ["success"]
    assert not any(NEW_PASSWORD in str(e) or DEMO_PASSWORD in str(e) for e in entries)


async def test_guessing_the_current_password_through_a_stolen_session_is_rate_limited(demo):
    phone = await demo.api.login("zhangwei")
    burst = Limits.DEFAULT_RULES["password"].burst
    for i in range(burst):
        status, code, _ = await change(demo, phone["access_token"], f"Guess#{i:04d}x", NEW_PASSWORD)
        assert code == "auth.invalid_credentials"
    status, code, body = await change(demo, phone["access_token"], DEMO_PASSWORD, NEW_PASSWORD)
    assert (status, code) == (429, "request.rate_limited")
    assert await can_log_in(demo, DEMO_PASSWORD)


async def test_password_change_needs_a_signed_in_device(demo):
    phone = await demo.api.login("zhangwei")
    await demo.api.post("/v1/auth/logout", token=phone["access_token"])
    status, code, _ = await change(demo, phone["access_token"], DEMO_PASSWORD, NEW_PASSWORD)
    assert (status, code) == (401, "auth.session_revoked")
    assert await can_log_in(demo, DEMO_PASSWORD)
