"""Signing out: this device, every other device, or one chosen from the list of my devices."""

from __future__ import annotations

from auth_support import audit_entries, error_code, refresh, whoami


async def sign_in_on(demo, username: str, *names: str) -> dict[str, dict]:
    return {name: await demo.api.login(username, device={"name": name}) for name in names}


async def revocations(demo, username: str) -> list[tuple[str, str]]:
    """(device id, reason) of the auth.revoke entries recorded for ``username``, oldest first."""
    entries = await audit_entries(demo, "auth.revoke", actor_id=demo.user(username))
    return [(e["target_id"], e["details"]["reason"]) for e in reversed(entries)]


async def test_logout_signs_out_this_device_at_once(demo):
    devices = await sign_in_on(demo, "zhangwei", "phone", "laptop")
    phone, laptop = devices["phone"], devices["laptop"]

    status, _ = await demo.api.post("/v1/auth/logout", token=phone["access_token"])
    assert status == 204
    # The access token is refused at once, long before it would expire, and so is the refresh token.
    assert await whoami(demo.api, phone["access_token"]) == "auth.session_revoked"
    status, body = await refresh(demo.api, phone["refresh_token"])
    assert (status, error_code(body)) == (401, "auth.session_revoked")
    # The laptop stays signed in.
    assert await whoami(demo.api, laptop["access_token"]) == "zhangwei"
    assert (await refresh(demo.api, laptop["refresh_token"]))[0] == 200
    assert await revocations(demo, "zhangwei") == [(phone["device_id"], "logout")]


async def test_logout_needs_a_signed_in_device(demo):
    status, body = await demo.api.post("/v1/auth/logout")
    assert (status, error_code(body)) == (401, "auth.required")
    phone = await demo.api.login("zhangwei")
    await demo.api.post("/v1/auth/logout", token=phone["access_token"])
    status, body = await demo.api.post("/v1/auth/logout", token=phone["access_token"])
    assert (status, error_code(body)) == (401, "auth.session_revoked")


async def test_logout_others_signs_out_every_other_device_of_mine_only(demo):
    mine = await sign_in_on(demo, "zhangwei", "phone", "laptop", "tablet")
    colleague = await demo.api.login("huangjian")

    status, body = await demo.api.post("/v1/auth/logout-others", token=mine["phone"]["access_token"])
    assert (status, body) == (200, {"revoked": 2})
    assert await whoami(demo.api, mine["phone"]["access_token"]) == "zhangwei"
    for name in ("laptop", "tablet"):
        assert await whoami(demo.api, mine[name]["access_token"]) == "auth.session_revoked"
        assert error_code((await refresh(demo.api, mine[name]["refresh_token"]))[1]) == "auth.session_revoked"
    assert await whoami(demo.api, colleague["access_token"]) == "huangjian"
    assert sorted(await revocations(demo, "zhangwei")) == sorted(
        [(mine["laptop"]["device_id"], "signed_out_by_user"), (mine["tablet"]["device_id"], "signed_out_by_user")])


async def test_device_list_shows_my_signed_in_devices_and_marks_the_current_one(demo):
    mine = await sign_in_on(demo, "zhangwei", "phone", "laptop", "old tablet")
    await demo.api.login("huangjian", device={"name": "someone else's phone"})
    await demo.api.post("/v1/auth/logout", token=mine["old tablet"]["access_token"])

    status, body = await demo.api.get("/v1/me/devices", token=mine["laptop"]["access_token"])
    assert status == 200
    listed = {d["name"]: d for d in body["devices"]}
    assert set(listed) == {"phone", "laptop"}
    assert listed["laptop"]["current"] is True and listed["phone"]["current"] is False
    assert listed["phone"]["id"] == mine["phone"]["device_id"]
    assert listed["phone"]["last_ip"] == "127.0.0.1"


async def test_deleting_one_of_my_devices_signs_it_out(demo):
    mine = await sign_in_on(demo, "zhangwei", "phone", "lost laptop")
    lost = mine["lost laptop"]

    status, _ = await demo.api.delete(f"/v1/me/devices/{lost['device_id']}", token=mine["phone"]["access_token"])
    assert status == 204
    assert await whoami(demo.api, lost["access_token"]) == "auth.session_revoked"
    assert error_code((await refresh(demo.api, lost["refresh_token"]))[1]) == "auth.session_revoked"
    assert await whoami(demo.api, mine["phone"]["access_token"]) == "zhangwei"
    _, body = await demo.api.get("/v1/me/devices", token=mine["phone"]["access_token"])
    assert [d["name"] for d in body["devices"]] == ["phone"]
    assert await revocations(demo, "zhangwei") == [(lost["device_id"], "signed_out_by_user")]

    # Deleting it again: it is no longer one of my signed-in devices.
    status, body = await demo.api.delete(f"/v1/me/devices/{lost['device_id']}", token=mine["phone"]["access_token"])
    assert (status, error_code(body)) == (404, "not_found")


async def test_another_users_device_cannot_be_deleted_and_stays_signed_in(demo):
    mine = await demo.api.login("zhangwei")
    theirs = await demo.api.login("huangjian")

    status, body = await demo.api.delete(f"/v1/me/devices/{theirs['device_id']}", token=mine["access_token"])
    assert (status, error_code(body)) == (404, "not_found")
    status, unknown = await demo.api.delete("/v1/me/devices/device_nosuchthing", token=mine["access_token"])
    assert (status, unknown) == (404, body)  # the same answer as for a device that does not exist
    assert await whoami(demo.api, theirs["access_token"]) == "huangjian"
    assert (await refresh(demo.api, theirs["refresh_token"]))[0] == 200
    assert await revocations(demo, "zhangwei") == []
    assert await revocations(demo, "huangjian") == []
