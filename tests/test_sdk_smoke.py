"""The SDK end to end: log in, connect, send, receive, sync."""

from __future__ import annotations

from messaging_support import client_for, direct_between


async def test_two_clients_exchange_a_message_and_converge(demo):
    cid = await direct_between(demo, "zhangwei", "huangjian")
    alice = await client_for(demo, "zhangwei")
    bob = await client_for(demo, "huangjian")
    try:
        event = await alice.send_text(cid, "下午三点开会")
        assert event["seq"] == 2 and event["message"]["text"] == "下午三点开会"
        pushed = await bob.next_push("event")
        assert pushed["event"]["id"] == event["id"]
        assert [e["seq"] for e in bob.logs[cid].ordered()] == [1, 2]
        await bob.read(cid, 2)
        state = await alice.sync()
        entry = next(c for c in state["conversations"] if c["id"] == cid)
        assert entry["peer_read_seq"] == 2 and entry["unread"] == 0
    finally:
        await alice.close()
        await bob.close()
