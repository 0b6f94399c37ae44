"""Meetings through the real signaling service: a 3-party mesh with real media, roles and host
controls enforced by the server, waiting room, lock, cap, invitations, rejoin after a dropped socket."""

from __future__ import annotations

import asyncio

import pytest

from xietong.clients.signaling import SignalingError

from messaging_support import eventually, group_of
from rtc_support import loopback_only
from signaling_support import MeshPeer, device, join_mesh, signaling  # noqa: F401  (fixture)


async def meeting_in_group(demo, signaling, owner: str, members: list[str], **options):
    cid = await group_of(demo, owner, members, "应急会商群")
    host = await device(demo, signaling, owner)
    created = await host.request("meeting.create", title="防汛会商", conversation_id=cid, **options)
    return cid, host, created


async def test_an_instant_meeting_from_a_group_chat_posts_an_invite_card_and_three_peers_mesh(demo, signaling,
                                                                                                monkeypatch):
    loopback_only(monkeypatch)
    cid, host, created = await meeting_in_group(demo, signaling, "zhangwei", ["huangjian", "liuyang"])
    mid = created["meeting_id"]
    assert created["join_link"].endswith(f"/meet/{mid}")
    card = await eventually(lambda: demo.server.services.store.events.col.find_one(
        {"conversation_id": cid, "message.kind": "card"}))
    assert card["message"]["card"]["app_id"] == "meeting"
    assert card["message"]["card"]["buttons"][0]["url"] == created["join_link"]

    b = await device(demo, signaling, "huangjian")
    c = await device(demo, signaling, "liuyang")
    joined = await host.request("meeting.join", meeting_id=mid)
    assert joined["role"] == "host" and joined["topology"] == "mesh"
    peers = {host.hello["device_id"]: MeshPeer(host, 40, meeting_id=mid)}
    for sig, luma in ((b, 120), (c, 220)):
        peers[sig.hello["device_id"]] = await join_mesh(sig, mid, luma)
    joined_event = await host.next("meeting.participant_joined", meeting_id=mid)
    assert joined_event["participant"]["user_id"] == demo.user("huangjian")
    try:
        lumas = {host.hello["device_id"]: 40, b.hello["device_id"]: 120, c.hello["device_id"]: 220}
        for me, mp in peers.items():
            for other, luma in lumas.items():
                if other != me:
                    counter = await mp.frames_from(other)
                    assert abs(counter.luma - luma) < 12, (me, other, counter.luma)
    finally:
        for mp in peers.values():
            await mp.close()
    for sig in (host, b, c):
        await sig.close()


async def test_host_controls_are_enforced_and_a_participant_cannot_use_them(demo, signaling):
    cid, host, created = await meeting_in_group(demo, signaling, "zhangwei", ["huangjian", "liuyang", "chenjing"])
    mid = created["meeting_id"]
    b = await device(demo, signaling, "huangjian")
    c = await device(demo, signaling, "liuyang")
    for sig in (host, b, c):
        await sig.request("meeting.join", meeting_id=mid)
    b_id, c_id = b.hello["device_id"], c.hello["device_id"]

    for action, extra in (("meeting.mute", {"participant_id": c_id}), ("meeting.mute_all", {}),
                          ("meeting.remove", {"participant_id": c_id}), ("meeting.lock", {"locked": True}),
                          ("meeting.end", {}), ("meeting.transfer_host", {"participant_id": b_id})):
        with pytest.raises(SignalingError) as refused:
            await b.request(action, meeting_id=mid, **extra)
        assert refused.value.code == "perm.forbidden", action

    await host.request("meeting.mute", meeting_id=mid, participant_id=c_id)
    assert (await c.next("meeting.muted", meeting_id=mid))["by"] == demo.user("zhangwei")
    await c.request("meeting.update_state", meeting_id=mid, state={"mic": True})  # allowed: not mute-all
    muted = await host.request("meeting.mute_all", meeting_id=mid, allow_unmute=False)
    assert sorted(muted["muted"]) == sorted([b_id, c_id])
    with pytest.raises(SignalingError) as no_unmute:
        await b.request("meeting.update_state", meeting_id=mid, state={"mic": True})
    assert no_unmute.value.code == "meeting.muted_by_host"
    hand = await b.request("meeting.update_state", meeting_id=mid, state={"hand": True})
    assert hand["state"]["hand"] is True and hand["state"]["mic"] is False
    update = await c.next("meeting.participant_updated", meeting_id=mid,
                          participant={"participant_id": b_id, "user_id": demo.user("huangjian"), "name": "黄建",
                                       "status": "joined", "state": hand["state"]})
    assert update["participant"]["state"]["hand"] is True

    await host.request("meeting.set_role", meeting_id=mid, participant_id=b_id, role="cohost")
    await b.request("meeting.lock", meeting_id=mid, locked=True)  # a co-host may lock
    d = await device(demo, signaling, "chenjing")
    with pytest.raises(SignalingError) as locked:
        await d.request("meeting.join", meeting_id=mid)
    assert locked.value.code == "meeting.locked"

    await b.request("meeting.remove", meeting_id=mid, participant_id=c_id)
    assert (await c.next("meeting.removed", meeting_id=mid))["by"] == demo.user("huangjian")
    left = await host.next("meeting.participant_left", meeting_id=mid, participant_id=c_id)
    assert left["reason"] == "removed"
    with pytest.raises(SignalingError) as banned:
        await c.request("meeting.join", meeting_id=mid)
    assert banned.value.code in ("perm.forbidden", "meeting.locked")

    await host.request("meeting.transfer_host", meeting_id=mid, participant_id=b_id)
    changed = await b.next("meeting.host_changed", meeting_id=mid, host=demo.user("huangjian"))
    assert demo.user("zhangwei") in changed["cohosts"]
    with pytest.raises(SignalingError) as old_host:
        await host.request("meeting.end", meeting_id=mid)
    assert old_host.value.code == "perm.forbidden"
    await b.request("meeting.end", meeting_id=mid)
    assert (await host.next("meeting.ended", meeting_id=mid))["by"] == demo.user("huangjian")
    with pytest.raises(SignalingError) as over:
        await host.request("meeting.join", meeting_id=mid)
    assert over.value.code == "meeting.ended"
    for sig in (host, b, c, d):
        await sig.close()


async def test_waiting_room_cap_and_invitations(demo, signaling):
    _, host, created = await meeting_in_group(demo, signaling, "zhangwei", ["huangjian", "liuyang"],
                                              waiting_room=True, cap=2)
    mid = created["meeting_id"]
    b = await device(demo, signaling, "huangjian")
    c = await device(demo, signaling, "liuyang")
    outsider = await device(demo, signaling, "chenjing")
    with pytest.raises(SignalingError) as not_invited:
        await outsider.request("meeting.join", meeting_id=mid)
    assert not_invited.value.code == "meeting.not_invited"
    await host.request("meeting.join", meeting_id=mid)
    waiting = await b.request("meeting.join", meeting_id=mid)
    assert waiting["status"] == "waiting"
    knock = await host.next("meeting.waiting", meeting_id=mid)
    assert knock["participant"]["user_id"] == demo.user("huangjian")
    with pytest.raises(SignalingError) as not_yet:  # waiting is not joined
        await b.request("meeting.update_state", meeting_id=mid, state={"hand": True})
    assert not_yet.value.code == "meeting.not_participant"
    await host.request("meeting.admit", meeting_id=mid, participant_id=b.hello["device_id"])
    admitted = await b.next("meeting.admitted", meeting_id=mid)
    assert len(admitted["participants"]) == 2
    with pytest.raises(SignalingError) as full:
        await c.request("meeting.join", meeting_id=mid)
    assert full.value.code in ("meeting.full",)
    # A scheduled meeting with named invitees: only they (and the host) get in.
    scheduled = await host.request("meeting.create", title="周例会", invitees=[demo.user("chenjing")],
                                   scheduled_at="2030-01-06T09:00:00+08:00", reminder_minutes=15)
    assert scheduled["scheduled_at"].startswith("2030-01-06T01:00:00")
    assert (await outsider.request("meeting.join", meeting_id=scheduled["meeting_id"]))["status"] == "joined"
    with pytest.raises(SignalingError) as not_listed:
        await c.request("meeting.join", meeting_id=scheduled["meeting_id"])
    assert not_listed.value.code == "meeting.not_invited"
    with pytest.raises(SignalingError) as bad:
        await host.request("meeting.create", title="", invitees=["nobody"])
    assert bad.value.code == "request.invalid"
    for sig in (host, b, c, outsider):
        await sig.close()


async def test_a_dropped_socket_rejoins_with_its_identity_and_state_and_no_ghost(demo, signaling):
    signaling.settings = signaling.settings.replace(rejoin_grace=1.0)
    _, host, created = await meeting_in_group(demo, signaling, "zhangwei", ["huangjian"])
    mid = created["meeting_id"]
    b = await device(demo, signaling, "huangjian")
    await host.request("meeting.join", meeting_id=mid)
    await b.request("meeting.join", meeting_id=mid, state={"mic": False, "camera": True})
    await b.request("meeting.update_state", meeting_id=mid, state={"hand": True})
    b_id = b.hello["device_id"]
    await b.close()  # Wi-Fi gone
    gone = await host.next("meeting.participant_reconnecting", meeting_id=mid)
    assert gone["participant_id"] == b_id
    b2 = await device(demo, signaling, "huangjian")  # 4G: the same device, a new socket
    again = await b2.request("meeting.join", meeting_id=mid)
    assert again["rejoined"] is True and again["participant_id"] == b_id
    mine = [x for x in again["participants"] if x["participant_id"] == b_id]
    assert len(again["participants"]) == 2 and mine[0]["state"]["hand"] is True and mine[0]["state"]["mic"] is False
    back = await host.next("meeting.participant_reconnected", meeting_id=mid)
    assert back["participant"]["participant_id"] == b_id
    # Gone for longer than the grace: it has left.
    await b2.close()
    left = await host.next("meeting.participant_left", meeting_id=mid, timeout=5)
    assert left["participant_id"] == b_id and left["reason"] == "timeout"
    live = await signaling.state.get(f"meeting:{mid}")
    assert list(live["participants"]) == [host.hello["device_id"]]
    await host.close()


async def test_media_comes_back_after_a_network_switch(demo, signaling, monkeypatch):
    loopback_only(monkeypatch)
    _, host, created = await meeting_in_group(demo, signaling, "zhangwei", ["huangjian"])
    mid = created["meeting_id"]
    await host.request("meeting.join", meeting_id=mid)
    b = await device(demo, signaling, "huangjian")
    await b.request("meeting.join", meeting_id=mid)
    host_media = MeshPeer(host, 70, meeting_id=mid)
    b_media = MeshPeer(b, 190, meeting_id=mid)
    b_id = b.hello["device_id"]
    try:
        await b_media.offer(host.hello["device_id"])
        assert abs((await host_media.frames_from(b_id)).luma - 190) < 12
        await b_media.close()  # the phone loses Wi-Fi: socket and peer connection gone
        await b.close()
        await host.next("meeting.participant_reconnecting", meeting_id=mid)
        b2 = await device(demo, signaling, "huangjian")  # back on 4G, same device
        again = await b2.request("meeting.join", meeting_id=mid)
        assert again["rejoined"] and again["participant_id"] == b_id
        b_media = MeshPeer(b2, 210, meeting_id=mid)
        await b_media.offer(host.hello["device_id"])  # renegotiates: a fresh connection to each peer
        await eventually(lambda: host_media.counters.get(b_id) is not None
                         and host_media.counters[b_id].luma is not None
                         and abs(host_media.counters[b_id].luma - 210) < 12, timeout=15)
        assert abs((await b_media.frames_from(host.hello["device_id"])).luma - 70) < 12
        await b2.close()
    finally:
        await host_media.close()
        await b_media.close()
    await host.close()


async def test_a_scheduled_meeting_reminds_its_invitees_once(demo, signaling):
    from datetime import datetime, timedelta, timezone

    from messaging_support import direct_between

    host = await device(demo, signaling, "zhangwei")
    soon = datetime.now(timezone.utc) + timedelta(minutes=10)
    created = await host.request("meeting.create", title="应急演练", invitees=[demo.user("huangjian")],
                                 scheduled_at=soon.isoformat(), reminder_minutes=15)
    assert await signaling.meetings.remind_due() == 1
    assert await signaling.meetings.remind_due() == 0  # claimed: never twice
    cid = await direct_between(demo, "zhangwei", "huangjian")
    card = await eventually(lambda: demo.server.services.store.events.col.find_one(
        {"conversation_id": cid, "message.kind": "card"}))
    assert card["message"]["card"]["title"].startswith("会议提醒")
    assert card["message"]["card"]["buttons"][0]["url"].endswith(created["meeting_id"])
    later = await host.request("meeting.create", title="下周例会", invitees=[demo.user("huangjian")],
                               scheduled_at=(soon + timedelta(days=7)).isoformat(), reminder_minutes=15)
    assert later["meeting_id"] and await signaling.meetings.remind_due() == 0  # not yet due
    with pytest.raises(SignalingError) as past:
        await host.request("meeting.create", title="过去的会", scheduled_at="2020-01-01T09:00:00+08:00")
    assert past.value.code == "request.invalid"
    await host.close()
