"""The heart of the product: no message lost, duplicated or reordered — under concurrency, retries
and cut sockets."""

from __future__ import annotations

import asyncio
import uuid

from messaging_support import RawSocket, client_for, direct_between, eventually, group_of, principal

from xietong.server.messaging.models import Message
from xietong.server.messaging.writer import Draft, EventWriter

SENDERS = ["zhangwei", "liuyang", "chenjing", "wuqiang", "xuna", "sunli", "hexin", "guoping", "majie", "linfeng",
           "luohong", "zengmin", "xiebin", "tangyu", "fengtao", "dengyan", "caoyu", "huangjian", "weiming", "lanting"]
READERS = ["mojun", "nongli", "liangbo"]


async def test_twenty_concurrent_senders_produce_one_identical_gap_free_log_for_every_member(demo):
    cid = await group_of(demo, SENDERS[0], SENDERS[1:] + READERS, "并发测试群")
    clients = await asyncio.gather(*(client_for(demo, name) for name in SENDERS + READERS))
    senders, readers = clients[:len(SENDERS)], clients[len(SENDERS):]
    try:
        async def send_fifty(index: int, client) -> list[int]:
            events = await asyncio.gather(*(client.send_text(cid, f"{SENDERS[index]} #{n}") for n in range(50)))
            return [e["seq"] for e in events]

        seqs = await asyncio.gather(*(send_fifty(i, c) for i, c in enumerate(senders)))
        # Each sender's messages were stored in the order it sent them.
        for own in seqs:
            assert own == sorted(own)
        all_seqs = sorted(s for own in seqs for s in own)
        assert len(set(all_seqs)) == 1000
        head = all_seqs[-1]

        for client in clients:
            await client.sync()
        logs = [[(e["seq"], e["id"], e["type"], e.get("sender_id")) for e in c.logs[cid].ordered()] for c in clients]
        assert all(log == logs[0] for log in logs), "members hold different logs"
        assert [entry[0] for entry in logs[0]] == list(range(1, head + 1)), "the log has a gap"
        texts = [e["message"]["text"] for e in readers[0].messages(cid)]
        assert len(texts) == 1000 and len(set(texts)) == 1000
        for name in SENDERS:  # per-sender order survives interleaving
            mine = [t for t in texts if t.startswith(name + " #")]
            assert mine == [f"{name} #{n}" for n in range(50)]
        stored = await demo.server.services.store.events.col.count_documents({"conversation_id": cid})
        assert stored == head
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_a_retried_send_returns_the_original_event_on_the_same_and_on_a_new_socket(demo):
    cid = await direct_between(demo, "zhangwei", "huangjian")
    frame = {"type": "send", "conversation_id": cid, "client_msg_id": "tap-7f3a",
             "message": {"kind": "text", "text": "请查收通知"}}
    first = await RawSocket.open(demo, "zhangwei")
    try:
        original = await first.request(frame)
        again = await first.request(frame)
    finally:
        await first.close()
    second = await RawSocket.open(demo, "zhangwei")
    try:
        changed_text = dict(frame, message={"kind": "text", "text": "改了内容的重试"})
        later = await second.request(changed_text)
    finally:
        await second.close()
    assert original["result"]["duplicate"] is False
    for answer in (again, later):
        assert answer["result"]["duplicate"] is True
        assert answer["result"]["event"] == original["result"]["event"]
    stored = await demo.server.services.store.events.col.count_documents({"client_msg_id": "tap-7f3a"})
    assert stored == 1


async def test_a_socket_dropped_mid_send_then_retried_yields_exactly_one_message(demo):
    cid = await direct_between(demo, "zhangwei", "huangjian")
    frame = {"id": "s1", "type": "send", "conversation_id": cid, "client_msg_id": "lost-ack",
             "message": {"kind": "text", "text": "网络断了"}}
    sock = await RawSocket.open(demo, "zhangwei")
    await sock.ws.send_json(frame)
    await sock.close()  # gone before the ack could be read
    retry = await RawSocket.open(demo, "zhangwei")
    try:
        answer = await retry.request(frame)
    finally:
        await retry.close()
    events = await demo.server.services.store.events.col.find({"conversation_id": cid, "type": "message"}).to_list()
    assert len(events) == 1
    assert answer["result"]["event"]["seq"] == events[0]["seq"]


async def test_a_client_whose_socket_is_cut_while_messages_flow_heals_by_sync(demo):
    cid = await group_of(demo, "zhangwei", ["huangjian", "liuyang"])
    sender = await client_for(demo, "zhangwei")
    receiver = await client_for(demo, "huangjian")
    try:
        async def keep_sending() -> None:
            for n in range(120):
                await sender.send_text(cid, f"第{n}条")

        flow = asyncio.create_task(keep_sending())
        await eventually(lambda: len(receiver.messages(cid)) >= 10)
        await receiver.drop_connection()  # the phone loses its network mid-stream
        await flow
        await eventually(lambda: receiver.connected)
        await eventually(lambda: len(receiver.messages(cid)) == 120)
        assert [e["message"]["text"] for e in receiver.messages(cid)] == [f"第{n}条" for n in range(120)]
        seqs = [e["seq"] for e in receiver.logs[cid].ordered()]
        assert seqs == list(range(1, seqs[-1] + 1))
    finally:
        await sender.close()
        await receiver.close()


async def test_sends_pipelined_on_one_socket_keep_their_order(demo):
    cid = await direct_between(demo, "zhangwei", "huangjian")
    sock = await RawSocket.open(demo, "zhangwei")
    try:
        for n in range(40):
            await sock.ws.send_json({"id": f"p{n}", "type": "send", "conversation_id": cid,
                                     "client_msg_id": f"pipe-{n}", "message": {"kind": "text", "text": str(n)}})
        answers = [await sock.answer(f"p{n}") for n in range(40)]
    finally:
        await sock.close()
    seqs = [a["result"]["event"]["seq"] for a in answers]
    assert seqs == sorted(seqs) and len(set(seqs)) == 40


async def test_two_writers_on_one_database_keep_one_gap_free_order(demo):
    """Two server processes share the database: their writers race for the same seqs; the unique
    event id decides, the loser re-reads the head, and the log stays gap-free."""
    services = demo.server.services
    cid = await group_of(demo, "zhangwei", ["huangjian"])
    other_process = EventWriter(services.store)
    me = principal(demo, "zhangwei")

    async def burst(writer: EventWriter, tag: str) -> list[int]:
        drafts = [writer.append(Draft(cid, "message", me.user_id, client_msg_id=f"{tag}-{n}",
                                      message=Message(kind="text", text=f"{tag}{n}"), policy="send"))
                  for n in range(150)]
        return [w.event.seq for w in await asyncio.gather(*drafts)]

    try:
        a, b = await asyncio.gather(burst(services.writer, "a"), burst(other_process, "b"))
    finally:
        await other_process.stop()
    assert a == sorted(a) and b == sorted(b)
    docs = await services.store.events.col.find({"conversation_id": cid}, {"seq": 1}).to_list()
    seqs = sorted(d["seq"] for d in docs)
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) == 1 + 300  # created + both bursts, nothing lost or doubled
    conversation = await services.store.conversations.get(cid)
    assert conversation.last_seq == seqs[-1] and conversation.msg_count == 300


async def test_the_writer_recovers_when_another_process_wrote_behind_its_back(demo):
    services = demo.server.services
    cid = await direct_between(demo, "zhangwei", "huangjian")
    sender = await client_for(demo, "zhangwei")
    try:
        await sender.send_text(cid, "one")  # this process now caches the head (seq 2)
        other = EventWriter(services.store)
        await other.append(Draft(cid, "message", demo.user("huangjian"), client_msg_id=uuid.uuid4().hex,
                                 message=Message(kind="text", text="from elsewhere"), policy="send"))
        await other.stop()
        event = await sender.send_text(cid, "two")  # its cached head is stale: seq 3 is taken
        assert event["seq"] == 4
    finally:
        await sender.close()
    texts = [d["message"]["text"] for d in await services.store.events.col.find(
        {"conversation_id": cid, "type": "message"}).sort("seq", 1).to_list()]
    assert texts == ["one", "from elsewhere", "two"]


async def test_a_removed_member_stops_receiving_at_once_on_a_live_connection(demo):
    cid = await group_of(demo, "zhangwei", ["huangjian", "liuyang"])
    owner = await client_for(demo, "zhangwei")
    removed = await RawSocket.open(demo, "liuyang")
    try:
        await owner.send_text(cid, "before")
        assert (await removed.push("event"))["event"]["message"]["text"] == "before"
        await demo.server.services.conversations.remove_member(principal(demo, "zhangwei"), cid, demo.user("liuyang"))
        removal = await removed.push("event")
        assert removal["event"]["type"] == "member.removed"
        after = await owner.send_text(cid, "after removal")
        # The same socket is told nothing more of this conversation; a later message to another
        # conversation still arrives, proving the socket is alive and in order.
        dm = await direct_between(demo, "zhangwei", "liuyang")
        await owner.send_text(dm, "still reachable here")
        nxt = await removed.push("event")
        while nxt["event"]["conversation_id"] == dm and nxt["event"]["type"] != "message":
            nxt = await removed.push("event")
        assert nxt["event"]["conversation_id"] == dm, nxt
        assert all(p.get("event", {}).get("seq") != after["seq"] or p["event"]["conversation_id"] != cid
                   for p in removed.pushes)
        history = await removed.request({"type": "history", "conversation_id": cid, "after": 0})
        assert history["result"]["readable_until"] == removal["event"]["seq"]
        refused = await removed.request({"type": "send", "conversation_id": cid, "client_msg_id": "x",
                                         "message": {"kind": "text", "text": "still here?"}})
        assert refused["error"]["code"] == "not_found"
    finally:
        await owner.close()
        await removed.close()
