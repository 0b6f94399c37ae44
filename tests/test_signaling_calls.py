"""1:1 calls through the real signaling service: ringing on every device, the outcomes, media with
real aiortc peers, the call record in the chat, and bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest

from xietong.clients.signaling import SignalingClient, SignalingError

from messaging_support import direct_between, eventually
from rtc_support import loopback_only
from signaling_support import MeshPeer, device, signaling  # noqa: F401  (fixture)


async def call_records(demo, a: str, b: str) -> list[dict]:
    cid = await direct_between(demo, a, b)
    events = await demo.server.services.store.events.col.find(
        {"conversation_id": cid, "type": "call.record"}).sort("seq", 1).to_list()
    return [e["data"] for e in events]


async def test_a_call_rings_every_device_connects_on_one_and_video_flows_both_ways(demo, signaling, monkeypatch):
    loopback_only(monkeypatch)
    caller = await device(demo, signaling, "zhangwei")
    phone = await device(demo, signaling, "huangjian")
    desktop = await device(demo, signaling, "huangjian", fresh_login=True)
    call = await caller.request("call.invite", callee=demo.user("huangjian"), media="video")
    assert call["state"] == "ringing"
    ring_phone = await phone.next("call.incoming", call_id=call["call_id"])
    await desktop.next("call.incoming", call_id=call["call_id"])
    assert ring_phone["from"] == demo.user("zhangwei") and ring_phone["from_name"] == "张伟"
    assert ring_phone["media"] == "video"

    accepted = await phone.request("call.accept", call_id=call["call_id"])
    assert accepted["peer"] == caller.hello["device_id"]
    stop = await desktop.next("call.answered_elsewhere", call_id=call["call_id"])
    assert stop["device"] == phone.hello["device_id"]
    with pytest.raises(SignalingError) as refused:  # the other device is too late
        await desktop.request("call.accept", call_id=call["call_id"])
    assert refused.value.code == "conflict.state"
    ok = await caller.next("call.accepted", call_id=call["call_id"])

    a = MeshPeer(caller, 60, call_id=call["call_id"])
    b = MeshPeer(phone, 200, call_id=call["call_id"])
    try:
        await a.offer(ok["peer"])
        got_b = await a.frames_from(phone.hello["device_id"])
        got_a = await b.frames_from(caller.hello["device_id"])
        assert abs(got_b.luma - 200) < 12 and abs(got_a.luma - 60) < 12
    finally:
        await a.close()
        await b.close()
    await asyncio.sleep(1.1)
    ended = await phone.request("call.hangup", call_id=call["call_id"])
    assert ended["outcome"] == "completed" and ended["duration_seconds"] >= 1
    assert (await caller.next("call.ended", call_id=call["call_id"]))["outcome"] == "completed"
    [record] = await eventually(lambda: call_records(demo, "zhangwei", "huangjian"))
    assert record["outcome"] == "completed" and record["call_id"] == call["call_id"]
    assert record["media"] == "video" and record["duration_seconds"] >= 1
    for c in (caller, phone, desktop):
        await c.close()


async def test_declined_cancelled_and_missed_calls_end_with_their_record(demo, signaling):
    signaling.settings = signaling.settings.replace(call_ring_seconds=0.5)
    caller = await device(demo, signaling, "zhangwei")
    callee = await device(demo, signaling, "huangjian")
    callee_id = demo.user("huangjian")

    first = await caller.request("call.invite", callee=callee_id, media="audio")
    await callee.next("call.incoming", call_id=first["call_id"])
    await callee.request("call.decline", call_id=first["call_id"])
    assert (await caller.next("call.ended", call_id=first["call_id"]))["outcome"] == "declined"

    second = await caller.request("call.invite", callee=callee_id)
    await callee.next("call.incoming", call_id=second["call_id"])
    with pytest.raises(SignalingError) as refused:  # the callee cannot cancel, only decline
        await callee.request("call.cancel", call_id=second["call_id"])
    assert refused.value.code == "call.not_participant"
    await caller.request("call.cancel", call_id=second["call_id"])
    assert (await callee.next("call.ended", call_id=second["call_id"]))["outcome"] == "cancelled"

    third = await caller.request("call.invite", callee=callee_id)
    await callee.next("call.incoming", call_id=third["call_id"])
    missed = await caller.next("call.ended", call_id=third["call_id"], timeout=5)
    assert missed["outcome"] == "missed"
    assert (await callee.next("call.ended", call_id=third["call_id"]))["outcome"] == "missed"
    with pytest.raises(SignalingError) as late:
        await callee.request("call.accept", call_id=third["call_id"])
    assert late.value.code == "conflict.state"

    records = await eventually(lambda: _n(call_records(demo, "zhangwei", "huangjian"), 3))
    assert [r["outcome"] for r in records] == ["declined", "cancelled", "missed"]
    for c in (caller, callee):
        await c.close()


async def _n(coro, n):
    items = await coro
    return items if len(items) >= n else None


async def test_a_busy_callee_and_two_users_calling_each_other_at_once(demo, signaling):
    a = await device(demo, signaling, "zhangwei")
    b = await device(demo, signaling, "huangjian")
    c = await device(demo, signaling, "liuyang")
    # Glare: both invite at the same moment; one call results, connected.
    ra, rb = await asyncio.gather(a.request("call.invite", callee=demo.user("huangjian")),
                                  b.request("call.invite", callee=demo.user("zhangwei")))
    assert ra["call_id"] == rb["call_id"]
    assert sorted([ra["state"], rb["state"]]) == ["connected", "ringing"]
    # Now a third person calls one of them: busy, recorded in their chat.
    busy = await c.request("call.invite", callee=demo.user("huangjian"))
    assert busy["state"] == "ended" and busy["outcome"] == "busy"
    [record] = await eventually(lambda: call_records(demo, "liuyang", "huangjian"))
    assert record["outcome"] == "busy"
    with pytest.raises(SignalingError) as again:  # a caller in a call cannot place another
        await a.request("call.invite", callee=demo.user("liuyang"))
    assert again.value.code == "conflict.state"
    await a.request("call.hangup", call_id=ra["call_id"])
    [done] = await eventually(lambda: call_records(demo, "zhangwei", "huangjian"))
    assert done["outcome"] == "completed"
    for x in (a, b, c):
        await x.close()


async def test_an_incoming_call_is_a_high_priority_push_to_a_phone_in_the_background(demo, signaling):
    login = await demo.api.login("huangjian")
    status, _ = await demo.api.put("/v1/me/push", {"provider": "fcm", "token": "tok-huangjian-phone",
                                                   "platform": "android", "app_version": "1.0", "locale": "zh-CN"},
                                   token=login["access_token"])
    assert status in (200, 204)
    caller = await device(demo, signaling, "zhangwei")
    call = await caller.request("call.invite", callee=demo.user("huangjian"), media="audio")
    doc = await demo.server.services.store.push.outbox.find_one({"event_id": f"call:{call['call_id']}"})
    assert doc is not None and doc["token"] == "tok-huangjian-phone"
    n = doc["notification"]
    assert n["priority"] == "high" and n["ttl_seconds"] <= 60 and n["data"]["call_id"] == call["call_id"]
    assert n["data"]["type"] == "call" and n["title"] == "张伟"
    await caller.request("call.cancel", call_id=call["call_id"])
    await caller.close()


async def test_bad_frames_get_coded_errors_and_the_call_goes_on(demo, signaling, monkeypatch):
    caller = await device(demo, signaling, "zhangwei")
    callee = await device(demo, signaling, "huangjian")
    outsider = await device(demo, signaling, "liuyang")
    call = await caller.request("call.invite", callee=demo.user("huangjian"))
    await callee.request("call.accept", call_id=call["call_id"])

    await caller.send_raw("this is not json")
    await caller.send_raw(json.dumps({"type": "call.fly", "id": "x1"}))
    await caller.send_raw(json.dumps({"type": "signal", "id": "x2", "to": "d", "call_id": call["call_id"],
                                      "description": {"type": "offer", "sdp": 42}}))
    await asyncio.sleep(0.2)
    with pytest.raises(SignalingError) as bad_sdp:
        await caller.request("signal", call_id=call["call_id"], to=callee.hello["device_id"],
                             description={"type": "offer", "sdp": "v=0\r\nthis is not sdp\r\n"})
    assert bad_sdp.value.code == "meeting.bad_sdp"
    with pytest.raises(SignalingError) as not_peer:  # candidates for someone not in the call
        await caller.request("signal", call_id=call["call_id"], to=outsider.hello["device_id"],
                             candidate={"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"})
    assert not_peer.value.code == "signal.not_a_peer"
    with pytest.raises(SignalingError) as intruder:
        await outsider.request("call.hangup", call_id=call["call_id"])
    assert intruder.value.code == "call.not_participant"
    # The call still works: a candidate reaches the callee.
    await caller.request("signal", call_id=call["call_id"], to=callee.hello["device_id"],
                         candidate={"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"})
    relayed = await callee.next("signal")
    assert relayed["from"] == caller.hello["device_id"] and relayed["candidate"]["sdpMid"] == "0"
    errors = [f for f in caller.pending("error")]
    assert [e["error"]["code"] for e in errors] == ["request.malformed_json", "request.invalid", "request.invalid"]
    assert errors[1]["id"] == "x1" and errors[2]["id"] == "x2"
    await caller.request("call.hangup", call_id=call["call_id"])
    for c in (caller, callee, outsider):
        await c.close()


async def test_authentication_first_and_an_expired_token_is_refused_until_renewed(demo, signaling, monkeypatch):
    anonymous = SignalingClient(signaling.url, "not-a-token")
    with pytest.raises(SignalingError) as refused:
        await anonymous.connect()
    assert refused.value.code == "auth.token_invalid"
    await asyncio.wait_for(anonymous.closed.wait(), 5)
    assert anonymous.close_code == 4401

    client = await device(demo, signaling, "zhangwei")
    conn = signaling.local[client.hello["device_id"]]
    conn.claims = dataclasses.replace(conn.claims, expires_at=int(time.time()) - 5)  # it expired mid-session
    with pytest.raises(SignalingError) as expired:
        await client.request("ping")
    assert expired.value.code == "auth.token_expired"
    fresh = demo.server.services.issuer.issue(client.hello["user_id"], client.hello["device_id"])
    await client.request("auth", token=fresh)
    assert "time" in await client.request("ping")
    other = demo.server.services.issuer.issue(demo.user("huangjian"), client.hello["device_id"])
    with pytest.raises(SignalingError) as swap:
        await client.request("auth", token=other)
    assert swap.value.code == "perm.forbidden"
    await client.close()


async def test_a_silent_socket_whose_token_expired_is_closed_after_the_grace(demo, signaling, monkeypatch):
    from xietong.signaling import service as signaling_service

    monkeypatch.setattr(signaling_service, "EXPIRED_GRACE_SECONDS", 0.2)
    client = await device(demo, signaling, "zhangwei")
    conn = signaling.local[client.hello["device_id"]]
    conn.claims = dataclasses.replace(conn.claims, expires_at=int(time.time()) - 1)
    conn.watch_expiry()  # as an auth frame would re-arm it
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.close_code == 4401
    await client.close()


async def test_a_ringing_call_left_behind_by_a_dead_process_does_not_keep_its_callee_busy(demo, signaling):
    callee_id = demo.user("huangjian")

    def leftover(d):  # rang an hour ago on a process that died before its ring timer fired
        d["call:cal_leftover"] = {"id": "cal_leftover", "caller": demo.user("liuyang"), "caller_device": "dev_gone",
                                  "callee": callee_id, "media": "audio", "conversation_id": "cnv_x",
                                  "created_at": time.time() - 3600, "state": "ringing"}
        d[f"user:{callee_id}"] = {"call": "cal_leftover"}

    await signaling.state.update(["call:cal_leftover", f"user:{callee_id}"], leftover)
    caller = await device(demo, signaling, "zhangwei")
    call = await caller.request("call.invite", callee=callee_id)
    assert call["state"] == "ringing"
    await caller.request("call.cancel", call_id=call["call_id"])
    await caller.close()
