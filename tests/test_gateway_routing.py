"""Which devices receive which pushes: joins during connection set-up, other devices of the same
user, large groups."""

from __future__ import annotations

import asyncio

import aiohttp
from messaging_support import RawSocket, closed_with, group_of, principal

from xietong.server.app import GATEWAY_KEY
from xietong.server.messaging import receipts
from xietong.server.messaging.models import Message


async def test_a_user_added_to_a_group_while_their_device_connects_still_receives_it(demo, monkeypatch):
    """The hub loads a user's conversations when the first device connects; a join written during
    that load must not be lost (the load may have read the members before the join)."""
    services = demo.server.services
    cid = await group_of(demo, "zhangwei", ["huangjian"])
    store = services.store.conversations
    real_load = store.active_conversation_ids
    loading, release = asyncio.Event(), asyncio.Event()

    async def slow_load(user_id: str) -> list[str]:
        found = await real_load(user_id)  # read before the join below
        loading.set()
        await release.wait()
        return found

    monkeypatch.setattr(store, "active_conversation_ids", slow_load)
    connecting = asyncio.create_task(RawSocket.open(demo, "liuyang"))
    await asyncio.wait_for(loading.wait(), 10)
    await services.conversations.add_members(principal(demo, "zhangwei"), cid, [demo.user("liuyang")])
    release.set()
    sock = await connecting
    monkeypatch.setattr(store, "active_conversation_ids", real_load)
    try:
        await services.messages.send(principal(demo, "zhangwei"), cid, "after-join", Message(kind="text", text="欢迎"))
        while True:
            pushed = await sock.push("event")
            if pushed["event"]["type"] == "message":
                break
        assert pushed["event"]["message"]["text"] == "欢迎"
    finally:
        await sock.close()


async def test_hello_comes_before_any_push(demo):
    sock = await RawSocket.open(demo, "zhangwei", hello=False)
    try:
        first = await sock.ws.receive_json(timeout=5)
        assert first["type"] == "hello"
        assert first["limits"]["sends_per_second"] == demo.server.services.limits.rules["send"].rate
    finally:
        await sock.close()


async def test_delete_for_me_reaches_my_other_devices_only(demo):
    cid = await group_of(demo, "zhangwei", ["huangjian"])
    sent = await demo.server.services.messages.send(principal(demo, "zhangwei"), cid, "h-1",
                                                   Message(kind="text", text="草稿"))
    phone = await RawSocket.open(demo, "huangjian")
    other_session = aiohttp.ClientSession()
    try:
        login = await demo.api.login("huangjian")  # a second device of the same user
        desk_ws = await other_session.ws_connect(demo.server.url.replace("http", "ws", 1) + "/v1/ws",
                                                 headers={"Authorization": f"Bearer {login['access_token']}"})
        desk = RawSocket(desk_ws, other_session)
        await desk.push("hello")
        colleague = await RawSocket.open(demo, "zhangwei")
        answer = await phone.request({"type": "delete_for_me", "conversation_id": cid, "seqs": [sent.event.seq]})
        assert answer["result"]["hidden"] == [sent.event.seq]
        hidden = await desk.push("hidden")
        assert hidden == {"type": "hidden", "conversation_id": cid, "seqs": [sent.event.seq]}
        assert all(p.get("type") != "hidden" for p in phone.pushes)
        ping = await colleague.request({"type": "ping"})  # the colleague got nothing before this answer
        assert ping["type"] == "result" and all(p.get("type") != "hidden" for p in colleague.pushes)
        await colleague.close()
    finally:
        await phone.close()
        await other_session.close()


async def test_read_all_tells_the_other_members_in_small_groups_and_my_devices_once(demo):
    cid = await group_of(demo, "zhangwei", ["huangjian"])
    await demo.server.services.messages.send(principal(demo, "zhangwei"), cid, "ra-1",
                                             Message(kind="text", text="请阅"))
    sender = await RawSocket.open(demo, "zhangwei")
    reader = await RawSocket.open(demo, "huangjian")
    try:
        done = await reader.request({"type": "read_all"})
        assert done["result"]["conversations"] >= 1
        seen = await sender.push("read")
        assert seen["user_id"] == demo.user("huangjian") and "unread" not in seen
        own = await reader.push("read")
        assert own["unread"] == 0
        await reader.request({"type": "ping"})
        assert [p for p in reader.pushes if p.get("type") == "read"] == [], "my device got the read twice"
    finally:
        await sender.close()
        await reader.close()


async def test_typing_in_a_group_too_large_to_relay_answers_not_sent(demo, monkeypatch):
    monkeypatch.setattr(receipts, "READ_FANOUT_LIMIT", 2)
    cid = await group_of(demo, "zhangwei", ["huangjian", "liuyang"])
    sock = await RawSocket.open(demo, "zhangwei")
    try:
        answer = await sock.request({"type": "typing", "conversation_id": cid})
        assert answer["result"] == {"sent": False}
    finally:
        await sock.close()


async def test_a_binary_auth_frame_is_refused_like_any_binary_frame(demo):
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(demo.server.url.replace("http", "ws", 1) + "/v1/ws")
        token = await demo.token("zhangwei")
        await ws.send_bytes(f'{{"type":"auth","id":"a","token":"{token}"}}'.encode())
        code, _ = await closed_with(ws)
        assert code == 4010
    finally:
        await session.close()
    hub = demo.server.runner.app[GATEWAY_KEY].hub
    assert hub.connection_count == 0
