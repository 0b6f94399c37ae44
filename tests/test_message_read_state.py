"""Read state: unread and @mention counts, read positions on all of a user's devices, "read by N of M"
receipts, delivery in direct chats, and typing notices (server/messaging/receipts.py)."""

from __future__ import annotations

import pytest

from messaging_support import RawSocket, client_for, direct_between, eventually, events_stored, group_of, principal

from xietong.clients.sdk import XietongError


async def badge(client, cid: str) -> tuple[int, int]:
    """(unread, mention_unread) of ``cid`` in the client's conversation list, freshly synced."""
    result = await client.request("sync", since={})
    entry = next(c for c in result["conversations"] if c["id"] == cid)
    return entry["unread"], entry["mention_unread"]


@pytest.fixture
async def office(demo):
    """A group owned by zhangwei with liuyang, chenjing and wuqiang; all four connected."""
    cid = await group_of(demo, "zhangwei", ["liuyang", "chenjing", "wuqiang"])
    clients = {name: await client_for(demo, name) for name in ("zhangwei", "liuyang", "chenjing", "wuqiang")}
    yield cid, clients
    for client in clients.values():
        await client.close()


# ---- unread and mentions ------------------------------------------------------------------------------


async def test_unread_counts_others_messages_after_my_read_position_and_never_my_own(demo, office):
    cid, c = office
    await c["liuyang"].send_text(cid, "一")
    await c["liuyang"].send_text(cid, "二")
    await c["chenjing"].send_text(cid, "三")
    assert await badge(c["zhangwei"], cid) == (3, 0)
    assert await badge(c["liuyang"], cid) == (1, 0)
    assert await badge(c["chenjing"], cid) == (0, 0)
    # Sending reads everything before one's own message.
    await c["zhangwei"].send_text(cid, "收到")
    assert await badge(c["zhangwei"], cid) == (0, 0)
    assert await badge(c["chenjing"], cid) == (1, 0)
    # System events (a rename) are not unread messages.
    await demo.server.services.conversations.update(principal(demo, "zhangwei"), cid, name="值班群")
    assert await badge(c["chenjing"], cid) == (1, 0)


async def test_the_read_position_only_moves_forward(demo, office):
    cid, c = office
    sent = [await c["liuyang"].send_text(cid, f"第{i}条") for i in range(3)]
    answer = await c["zhangwei"].read(cid, sent[2]["seq"])
    assert (answer["read_seq"], answer["unread"]) == (sent[2]["seq"], 0)
    late = await c["zhangwei"].read(cid, sent[0]["seq"])  # a slow device reporting an older position
    assert (late["read_seq"], late["unread"]) == (sent[2]["seq"], 0)
    assert await badge(c["zhangwei"], cid) == (0, 0)


async def test_read_all_clears_every_conversation(demo, office):
    cid, c = office
    direct = await direct_between(demo, "liuyang", "zhangwei")
    await c["liuyang"].send_text(cid, "群里说")
    await c["liuyang"].send_text(direct, "私下说", mentions=[demo.user("zhangwei")])
    assert await badge(c["zhangwei"], direct) == (1, 1)
    assert await c["zhangwei"].read_all() == {"conversations": 2}
    assert await badge(c["zhangwei"], cid) == (0, 0)
    assert await badge(c["zhangwei"], direct) == (0, 0)
    assert await c["zhangwei"].read_all() == {"conversations": 0}


async def test_mention_unread_counts_mentions_of_me_and_at_all(demo, office):
    cid, c = office
    chenjing = demo.user("chenjing")
    first = await c["liuyang"].send_text(cid, "@陈静 请看材料", mentions=[chenjing])
    await c["liuyang"].send_text(cid, "@吴强 请看", mentions=[demo.user("wuqiang")])
    await c["zhangwei"].send_text(cid, "@所有人 三点开会", mention_all=True)
    assert await badge(c["chenjing"], cid) == (3, 2)
    assert await badge(c["wuqiang"], cid) == (3, 2)
    assert await badge(c["liuyang"], cid) == (1, 1)
    await c["chenjing"].read(cid, first["seq"])
    assert await badge(c["chenjing"], cid) == (2, 1)


async def test_a_message_mentioning_me_and_everyone_counts_once(demo, office):
    cid, c = office
    await c["liuyang"].send_text(cid, "先看一下")
    await c["zhangwei"].send_text(cid, "@所有人 @陈静 务必参加", mention_all=True, mentions=[demo.user("chenjing")])
    assert await badge(c["chenjing"], cid) == (2, 1)


async def test_only_owner_and_admins_mention_everyone(demo, office):
    cid, c = office
    before = await events_stored(demo, cid)
    with pytest.raises(XietongError) as refused:
        await c["liuyang"].send_text(cid, "@所有人", mention_all=True)
    assert refused.value.code == "perm.forbidden"
    assert await events_stored(demo, cid) == before


async def test_reading_on_one_device_clears_the_badge_on_my_other_devices(demo, office):
    cid, c = office
    laptop = await client_for(demo, "zhangwei")
    try:
        sent = await c["liuyang"].send_text(cid, "@张伟", mentions=[demo.user("zhangwei")])
        await c["zhangwei"].read(cid, sent["seq"])
        pushed = await laptop.next_push("read")
        assert (pushed["user_id"], pushed["read_seq"]) == (demo.user("zhangwei"), sent["seq"])
        assert (pushed["unread"], pushed["mention_unread"]) == (0, 0)
    finally:
        await laptop.close()


# ---- receipts -----------------------------------------------------------------------------------------


async def test_receipts_show_who_of_the_members_at_the_time_has_read(demo, office):
    cid, c = office
    sent = await c["zhangwei"].send_text(cid, "请确认收到")
    await c["liuyang"].read(cid, sent["seq"])
    # Someone who joins later is not counted for the earlier message.
    await demo.server.services.conversations.add_members(principal(demo, "zhangwei"), cid, [demo.user("xuna")])
    read = await c["zhangwei"].receipts(cid, sent["seq"])
    assert (read["read_count"], read["total"], read["users"]) == (1, 3, [demo.user("liuyang")])
    unread = await c["zhangwei"].receipts(cid, sent["seq"], which="unread")
    assert sorted(unread["users"]) == sorted([demo.user("chenjing"), demo.user("wuqiang")])
    # Any member may ask, and the numbers are the same.
    assert (await c["chenjing"].receipts(cid, sent["seq"]))["read_count"] == 1


async def test_receipts_page_through_readers(demo, office):
    cid, c = office
    sent = await c["zhangwei"].send_text(cid, "请确认收到")
    for name in ("liuyang", "chenjing", "wuqiang"):
        await c[name].read(cid, sent["seq"])
    first = await c["zhangwei"].request("receipts", conversation_id=cid, seq=sent["seq"], limit=2)
    rest = await c["zhangwei"].request("receipts", conversation_id=cid, seq=sent["seq"], limit=2,
                                       after=first["next_after"])
    assert sorted(first["users"] + rest["users"]) == sorted(demo.user(n) for n in ("liuyang", "chenjing", "wuqiang"))
    assert rest["next_after"] is None


async def test_receipts_are_refused_for_groups_over_the_limit(demo, office, monkeypatch):
    monkeypatch.setattr("xietong.server.messaging.receipts.RECEIPT_GROUP_LIMIT", 3)
    cid, c = office
    sent = await c["zhangwei"].send_text(cid, "大群消息")
    with pytest.raises(XietongError) as refused:
        await c["zhangwei"].receipts(cid, sent["seq"])
    assert (refused.value.code, refused.value.details) == ("receipts.group_too_large", {"limit": 3})


# ---- delivered (direct chats) -------------------------------------------------------------------------


async def test_delivery_in_a_direct_chat_reaches_the_senders_devices(demo):
    cid = await direct_between(demo, "zhangwei", "huangjian")
    alice = await client_for(demo, "zhangwei")
    bob = await client_for(demo, "huangjian")
    try:
        sent = await alice.send_text(cid, "材料已发邮箱")
        assert await bob.delivered(cid, sent["seq"]) == {}
        pushed = await alice.next_push("delivered")
        assert (pushed["conversation_id"], pushed["user_id"], pushed["delivered_seq"]) == (
            cid, demo.user("huangjian"), sent["seq"])
        entry = next(e for e in (await alice.sync())["conversations"] if e["id"] == cid)
        assert (entry["peer_delivered_seq"], entry["peer_read_seq"]) == (sent["seq"], 0)
        # Delivery never moves back either.
        await bob.delivered(cid, 1)
        entry = next(e for e in (await alice.sync())["conversations"] if e["id"] == cid)
        assert entry["peer_delivered_seq"] == sent["seq"]
    finally:
        await alice.close()
        await bob.close()


# ---- typing -------------------------------------------------------------------------------------------


async def test_typing_is_relayed_to_the_other_members_and_not_stored(demo):
    cid = await group_of(demo, "zhangwei", ["liuyang", "chenjing"])
    typist = await RawSocket.open(demo, "liuyang")
    others = [await RawSocket.open(demo, name) for name in ("zhangwei", "chenjing")]
    try:
        before = await events_stored(demo, cid)
        answer = await typist.request({"type": "typing", "conversation_id": cid})
        assert answer["result"] == {"sent": True}
        for other in others:
            assert await other.push("typing") == {"type": "typing", "conversation_id": cid,
                                                  "user_id": demo.user("liuyang")}
        assert not [p for p in typist.pushes if p["type"] == "typing"]  # not echoed to the typist
        assert await events_stored(demo, cid) == before
    finally:
        for sock in (typist, *others):
            await sock.close()


async def test_typing_is_relayed_at_most_once_per_interval_per_device_and_conversation(demo, monkeypatch):
    monkeypatch.setattr("xietong.server.gateway.handler.TYPING_INTERVAL", 1.0)
    cid = await group_of(demo, "zhangwei", ["liuyang"])
    other = await direct_between(demo, "liuyang", "chenjing")
    typist = await RawSocket.open(demo, "liuyang")
    watcher = await RawSocket.open(demo, "zhangwei")
    try:
        assert (await typist.request({"type": "typing", "conversation_id": cid}))["result"] == {"sent": True}
        assert (await typist.request({"type": "typing", "conversation_id": cid}))["result"] == {"sent": False}
        # Another conversation has its own interval.
        assert (await typist.request({"type": "typing", "conversation_id": other}))["result"] == {"sent": True}
        # The watcher sees one notice, then the message that followed it.
        await typist.request({"type": "send", "conversation_id": cid, "client_msg_id": "t1",
                              "message": {"kind": "text", "text": "好的"}})
        assert (await watcher.push("typing"))["user_id"] == demo.user("liuyang")
        after = await watcher.ws.receive_json(timeout=10)
        assert after["type"] == "event" and after["event"]["message"]["text"] == "好的"
        # Once the interval has passed, the next notice goes out again.
        async def sent_again() -> bool:
            return (await typist.request({"type": "typing", "conversation_id": cid}))["result"]["sent"]

        await eventually(sent_again, interval=0.1)
    finally:
        await typist.close()
        await watcher.close()
