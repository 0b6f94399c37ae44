"""Refresh tokens rotate: each is good once; a spent one presented again signs its device out."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timedelta, timezone

from auth_support import a_while_ago, audit_entries, error_code, refresh, whoami


async def test_refresh_returns_a_new_pair_for_the_same_device(demo):
    phone = await demo.api.login("zhangwei")
    status, renewed = await refresh(demo.api, phone["refresh_token"])
    assert status == 200, renewed
    assert renewed["device_id"] == phone["device_id"] and renewed["user_id"] == demo.user("zhangwei")
    assert renewed["refresh_token"] != phone["refresh_token"]
    assert renewed["access_token"] != phone["access_token"]
    assert await whoami(demo.api, renewed["access_token"]) == "zhangwei"
    # The renewed refresh token is good for the next rotation.
    assert (await refresh(demo.api, renewed["refresh_token"]))[0] == 200


async def test_refresh_records_when_and_where_the_device_was_last_active(demo):
    phone = await demo.api.login("zhangwei")
    store = demo.server.services.store
    yesterday = datetime.now(timezone.utc) - timedelta(days=1)
    await store.devices.col.update_one({"_id": phone["device_id"]}, {"$set": {"last_active_at": yesterday,
                                                                              "last_ip": "10.0.0.1"}})
    await refresh(demo.api, phone["refresh_token"])
    _, listing = await demo.api.get("/v1/me/devices", token=phone["access_token"])
    [device] = listing["devices"]
    assert datetime.fromisoformat(device["last_active_at"]) > yesterday + timedelta(hours=23)
    assert device["last_ip"] == "127.0.0.1"


async def test_refresh_tokens_are_stored_only_as_hashes(demo):
    phone = await demo.api.login("zhangwei")
    tokens = demo.server.services.store.devices.tokens
    assert await tokens.find_one({"_id": phone["refresh_token"]}) is None
    digest = hashlib.sha256(phone["refresh_token"].encode()).hexdigest()
    assert (await tokens.find_one({"_id": digest}))["device_id"] == phone["device_id"]


async def test_spent_refresh_token_is_refused_as_reused(demo):
    phone = await demo.api.login("zhangwei")
    assert (await refresh(demo.api, phone["refresh_token"]))[0] == 200
    status, body = await refresh(demo.api, phone["refresh_token"])
    assert (status, error_code(body)) == (401, "auth.refresh_reused")


async def test_reused_refresh_token_signs_out_that_device_but_not_the_users_other_devices(demo):
    phone = await demo.api.login("zhangwei", device={"name": "phone"})
    laptop = await demo.api.login("zhangwei", device={"name": "laptop"})
    _, renewed = await refresh(demo.api, phone["refresh_token"])

    # Someone replays the copied, already spent token of the phone.
    status, body = await refresh(demo.api, phone["refresh_token"])
    assert (status, error_code(body)) == (401, "auth.refresh_reused")

    # The phone's whole family is dead: its newest refresh token and its live access token.
    status, body = await refresh(demo.api, renewed["refresh_token"])
    assert (status, error_code(body)) == (401, "auth.session_revoked")
    assert await whoami(demo.api, renewed["access_token"]) == "auth.session_revoked"
    # The laptop was not involved and keeps working.
    assert await whoami(demo.api, laptop["access_token"]) == "zhangwei"
    assert (await refresh(demo.api, laptop["refresh_token"]))[0] == 200
    _, listing = await demo.api.get("/v1/me/devices", token=laptop["access_token"])
    assert [d["name"] for d in listing["devices"]] == ["laptop"]


async def test_refresh_token_reuse_is_audited(demo):
    phone = await demo.api.login("zhangwei")
    await refresh(demo.api, phone["refresh_token"])
    await refresh(demo.api, phone["refresh_token"])
    entries = await audit_entries(demo, "auth.refresh_reuse")
    assert [(e["outcome"], e["actor_id"], e["target_type"], e["target_id"]) for e in entries] == [
        ("failure", demo.user("zhangwei"), "device", phone["device_id"])]


async def test_unknown_refresh_token_is_refused_as_invalid(demo):
    for token in ("xtr_" + "A" * 43, "not-a-token"):
        status, body = await refresh(demo.api, token)
        assert (status, error_code(body)) == (401, "auth.refresh_invalid")


async def test_an_access_token_is_not_a_refresh_token(demo):
    phone = await demo.api.login("zhangwei")
    status, body = await refresh(demo.api, phone["access_token"][:256])
    assert (status, error_code(body)) == (401, "auth.refresh_invalid")


async def test_expired_refresh_token_is_refused_as_invalid(demo):
    phone = await demo.api.login("zhangwei")
    digest = hashlib.sha256(phone["refresh_token"].encode()).hexdigest()
    await demo.server.services.store.devices.tokens.update_one({"_id": digest},
                                                               {"$set": {"expires_at": a_while_ago()}})
    status, body = await refresh(demo.api, phone["refresh_token"])
    assert (status, error_code(body)) == (401, "auth.refresh_invalid")


async def test_two_concurrent_refreshes_of_one_token_give_exactly_one_new_pair(demo):
    phone = await demo.api.login("zhangwei")
    results = await asyncio.gather(refresh(demo.api, phone["refresh_token"]),
                                   refresh(demo.api, phone["refresh_token"]))
    assert sorted(status for status, _ in results) == [200, 401]
    assert [error_code(body) for status, body in results if status == 401] == ["auth.refresh_reused"]


async def test_refresh_for_a_disabled_account_is_refused_and_signs_the_device_out(demo):
    phone = await demo.api.login("zhangwei")
    store = demo.server.services.store
    await store.users.col.update_one({"_id": demo.user("zhangwei")}, {"$set": {"status": "disabled"}})
    status, body = await refresh(demo.api, phone["refresh_token"])
    assert (status, error_code(body)) == (403, "auth.account_disabled")
    assert await whoami(demo.api, phone["access_token"]) == "auth.session_revoked"


async def test_malformed_refresh_request_is_refused_before_any_lookup(demo):
    for body in ({}, {"refresh_token": ""}, {"refresh_token": "x" * 257}, {"refresh_token": 42}):
        status, answer = await demo.api.post("/v1/auth/refresh", body)
        assert (status, error_code(answer)) == (400, "request.invalid"), body
