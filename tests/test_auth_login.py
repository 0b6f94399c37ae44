"""Signing in with user name and password: what a right, a wrong and a disabled login answer."""

from __future__ import annotations

from auth_support import LOGIN, audit_entries, error_code, whoami
from xietong.server.models import utcnow
from xietong.server.seed import DEMO_PASSWORD


async def test_login_returns_access_and_refresh_token_for_a_new_device(demo):
    status, body = await demo.api.post(LOGIN, {"username": "zhangwei", "password": DEMO_PASSWORD,
                                               "device": {"name": "张伟的手机", "platform": "android"}})
    assert status == 200, body
    assert body["token_type"] == "Bearer"
    assert body["user_id"] == demo.user("zhangwei")
    assert body["access_token"] and body["refresh_token"].startswith("xtr_")
    assert 0 < body["expires_in"] <= 900 and body["refresh_expires_in"] > body["expires_in"]
    assert await whoami(demo.api, body["access_token"]) == "zhangwei"

    status, listing = await demo.api.get("/v1/me/devices", token=body["access_token"])
    assert status == 200
    assert [(d["id"], d["name"], d["platform"], d["current"]) for d in listing["devices"]] == [
        (body["device_id"], "张伟的手机", "android", True)]


async def test_each_login_is_a_separate_device(demo):
    first = await demo.api.login("zhangwei")
    second = await demo.api.login("zhangwei")
    assert first["device_id"] != second["device_id"]
    assert first["refresh_token"] != second["refresh_token"]


async def test_wrong_password_and_unknown_user_get_the_same_answer(demo):
    wrong_password = await demo.api.post(LOGIN, {"username": "zhangwei", "password": "Xietong@2025"})
    unknown_user = await demo.api.post(LOGIN, {"username": "zhangwei2", "password": DEMO_PASSWORD})
    assert wrong_password == unknown_user
    status, body = wrong_password
    assert status == 401 and error_code(body) == "auth.invalid_credentials"


async def test_wrong_password_and_unknown_user_are_audited_as_failed_logins(demo):
    await demo.api.post(LOGIN, {"username": "zhangwei", "password": "Xietong@2025"})
    await demo.api.post(LOGIN, {"username": "Nobody.Here", "password": DEMO_PASSWORD})

    failures = [e for e in await audit_entries(demo, "auth.login") if e["outcome"] == "failure"]
    by_user = [e for e in failures if e["target_id"] == demo.user("zhangwei")]
    assert [e["details"]["reason"] for e in by_user] == ["bad_password"]
    unknown = [e for e in failures if e["details"].get("username") == "nobody.here"]
    assert [e["details"]["reason"] for e in unknown] == ["unknown_user"]
    assert all(e["ip"] == "127.0.0.1" for e in by_user + unknown)
    # The password someone typed is never written to the log.
    assert not any(DEMO_PASSWORD in str(e) or "Xietong@2025" in str(e) for e in failures)


async def test_successful_login_is_audited_with_its_device(demo):
    body = await demo.api.login("zhangwei")
    entries = await audit_entries(demo, "auth.login", target_id=demo.user("zhangwei"))
    assert [(e["outcome"], e["details"].get("device_id")) for e in entries] == [("success", body["device_id"])]


async def test_user_name_is_case_and_width_insensitive(demo):
    for typed in ("ZhangWei", " ZHANGWEI ", "ＺｈａｎｇＷｅｉ"):  # the last one in full-width letters of a Chinese IME
        body = await demo.api.login(typed)
        assert body["user_id"] == demo.user("zhangwei"), typed


async def test_password_is_case_sensitive(demo):
    status, body = await demo.api.post(LOGIN, {"username": "zhangwei", "password": DEMO_PASSWORD.lower()})
    assert status == 401 and error_code(body) == "auth.invalid_credentials"


async def test_disabled_account_is_told_so_only_with_the_right_password(demo):
    store = demo.server.services.store
    await store.users.update(demo.user("zhangwei"), {"status": "disabled"}, utcnow())

    status, body = await demo.api.post(LOGIN, {"username": "zhangwei", "password": DEMO_PASSWORD})
    assert status == 403 and error_code(body) == "auth.account_disabled"
    # Without the password nobody learns that the account exists and is disabled.
    status, body = await demo.api.post(LOGIN, {"username": "zhangwei", "password": "Xietong@2025"})
    assert status == 401 and error_code(body) == "auth.invalid_credentials"
    assert await store.devices.list_active(demo.user("zhangwei")) == []
