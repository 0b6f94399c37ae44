"""Presence in one server process: aggregated over devices, debounced, expiring, private."""

from __future__ import annotations

import json

import aiohttp
import pytest
from conftest import make_settings
from messaging_support import RawSocket, eventually

from xietong.server.gateway import handler


@pytest.fixture
def settings(mongo_url, db_name, tmp_path, keys_dir):
    return make_settings(mongo_url, db_name, tmp_path, keys_dir, presence_ttl=3, presence_debounce=0.2)


async def second_device(demo, username: str) -> RawSocket:
    """Another signed-in device of ``username`` (its own login, its own device id)."""
    login = await demo.api.login(username)
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(demo.server.url.replace("http", "ws", 1) + "/v1/ws",
                                  headers={"Authorization": f"Bearer {login['access_token']}"})
    sock = RawSocket(ws, session)
    await sock.push("hello")
    return sock


async def watch(sock: RawSocket, demo, *usernames: str) -> dict[str, dict]:
    answer = await sock.request({"type": "presence_watch", "user_ids": [demo.user(u) for u in usernames]})
    return {p["user_id"]: p for p in answer["result"]["presence"]}


async def quiet(demo) -> None:
    """Wait until every announcement in its debounce window has been made."""
    presence = demo.server.services.presence
    await eventually(lambda: presence.idle)


async def test_online_while_any_device_is_connected_offline_after_the_last_leaves(demo):
    watcher = await RawSocket.open(demo, "huangjian")
    try:
        assert (await watch(watcher, demo, "zhangwei"))[demo.user("zhangwei")]["state"] == "offline"
        phone = await RawSocket.open(demo, "zhangwei")
        pushed = await watcher.push("presence")
        assert (pushed["user_id"], pushed["state"]) == (demo.user("zhangwei"), "online")
        await phone.close()
        pushed = await watcher.push("presence")
        assert pushed["state"] == "offline" and pushed["last_seen"] is not None
        stored = await demo.server.services.store.users.last_seen_of([demo.user("zhangwei")])
        assert stored[demo.user("zhangwei")] is not None
    finally:
        await watcher.close()


async def test_a_phone_in_the_background_with_the_pc_connected_still_shows_online(demo):
    watcher = await RawSocket.open(demo, "huangjian")
    pc = await RawSocket.open(demo, "zhangwei")
    phone = await second_device(demo, "zhangwei")
    try:
        await quiet(demo)
        await watch(watcher, demo, "zhangwei")
        await phone.request({"type": "presence", "state": "away"})
        await quiet(demo)
        state = await watcher.request({"type": "presence_query", "user_ids": [demo.user("zhangwei")]})
        assert state["result"]["presence"][0]["state"] == "online"
        await pc.request({"type": "presence", "state": "away"})
        assert (await watcher.push("presence"))["state"] == "away"
        await phone.request({"type": "presence", "state": "active"})
        assert (await watcher.push("presence"))["state"] == "online"
    finally:
        for sock in (watcher, pc, phone):
            await sock.close()


async def test_a_flapping_connection_announces_nothing(demo, monkeypatch):
    services = demo.server.services
    announced = []
    publish = services.bus.publish

    async def counting(envelope):
        if envelope.kind == "presence":
            announced.append(json.loads(envelope.frame))
        await publish(envelope)

    monkeypatch.setattr(services.bus, "publish", counting)
    for _ in range(3):  # a phone switching networks: gone and back within the debounce window
        sock = await RawSocket.open(demo, "zhangwei")
        await sock.close()
        sock = await RawSocket.open(demo, "zhangwei")
        await quiet(demo)
        await sock.close()
        await quiet(demo)
    # Each settled change is announced once (online, then offline): the flaps in between are not.
    assert [frame["state"] for frame in announced] == ["online", "offline"] * 3


async def test_a_device_whose_process_stops_renewing_goes_offline_within_the_ttl(demo):
    presence = demo.server.services.presence
    watcher = await RawSocket.open(demo, "huangjian")
    phone = await RawSocket.open(demo, "zhangwei")
    try:
        await quiet(demo)
        await watch(watcher, demo, "zhangwei")
        presence.local_devices = lambda: []  # as if the phone's process had died: no more renewals
        pushed = await watcher.push("presence", timeout=3 + presence.sweep_interval + 0.2 + 3)
        assert (pushed["user_id"], pushed["state"]) == (demo.user("zhangwei"), "offline")
    finally:
        await watcher.close()
        await phone.close()


async def test_presence_is_only_given_for_users_the_caller_may_see(demo):
    outsider = await RawSocket.open(demo, "zhouhui")
    hidden = await RawSocket.open(demo, "mengqiang")  # 机要室: hidden from outsiders
    try:
        seen = await watch(outsider, demo, "mengqiang", "huangjian")
        assert set(seen) == {demo.user("huangjian")}
        query = await outsider.request({"type": "presence_query", "user_ids": [demo.user("mengqiang")]})
        assert query["result"]["presence"] == []
        status, body = await demo.api.get("/v1/presence", params={"user_ids": demo.user("mengqiang")},
                                          token=await demo.token("zhouhui"))
        assert status == 200 and body["presence"] == []
        colleague = await RawSocket.open(demo, "luoxue")  # same hidden unit: may see
        assert set(await watch(colleague, demo, "mengqiang")) == {demo.user("mengqiang")}
        await colleague.close()
    finally:
        await outsider.close()
        await hidden.close()


async def test_a_user_can_hide_their_last_seen_time(demo):
    token = await demo.token("zhangwei")
    status, body = await demo.api.put("/v1/me/presence-settings", {"hide_last_seen": True}, token=token)
    assert (status, body) == (200, {"hide_last_seen": True})
    watcher = await RawSocket.open(demo, "huangjian")
    try:
        await watch(watcher, demo, "zhangwei")
        phone = await RawSocket.open(demo, "zhangwei")
        assert (await watcher.push("presence"))["state"] == "online"
        await phone.close()
        offline = await watcher.push("presence")
        assert offline["state"] == "offline" and offline["last_seen"] is None
        status, body = await demo.api.get("/v1/presence", params={"user_ids": demo.user("zhangwei")},
                                          token=await demo.token("huangjian"))
        assert body["presence"] == [{"user_id": demo.user("zhangwei"), "state": "offline", "last_seen": None}]
    finally:
        await watcher.close()


async def test_rest_batch_query_and_its_bad_input(demo):
    token = await demo.token("huangjian")
    phone = await RawSocket.open(demo, "zhangwei")
    try:
        await quiet(demo)
        ids = ",".join([demo.user("zhangwei"), demo.user("liuyang"), "usr_nobody"])
        status, body = await demo.api.get("/v1/presence", params={"user_ids": ids}, token=token)
        assert status == 200
        assert {p["user_id"]: p["state"] for p in body["presence"]} == {demo.user("zhangwei"): "online",
                                                                       demo.user("liuyang"): "offline"}
        too_many = ",".join(f"usr_{n:016d}" for n in range(201))
        status, body = await demo.api.get("/v1/presence", params={"user_ids": too_many}, token=token)
        assert status == 400 and body["error"]["code"] == "request.invalid"
        status, body = await demo.api.get("/v1/presence", params={"user_ids": " , "}, token=token)
        assert status == 400
    finally:
        await phone.close()


async def test_a_device_watches_a_bounded_number_of_users(demo, monkeypatch):
    monkeypatch.setattr(handler, "MAX_WATCHED", 2)
    sock = await RawSocket.open(demo, "huangjian")
    try:
        await watch(sock, demo, "zhangwei", "liuyang")
        refused = await sock.request({"type": "presence_watch", "user_ids": [demo.user("chenjing")]})
        assert refused["error"]["code"] == "request.invalid"
        await sock.request({"type": "presence_unwatch", "user_ids": [demo.user("liuyang")]})
        assert set(await watch(sock, demo, "chenjing")) == {demo.user("chenjing")}
    finally:
        await sock.close()


async def test_the_sdk_keeps_its_watches_and_background_state_across_a_reconnect(demo):
    from messaging_support import client_for

    watcher = await client_for(demo, "huangjian")
    phone = await client_for(demo, "zhangwei")
    try:
        await quiet(demo)
        await watcher.watch_presence([demo.user("zhangwei")])
        await phone.set_presence("away")
        assert (await watcher.next_push("presence"))["state"] == "away"
        await watcher.drop_connection()
        await phone.drop_connection()
        await eventually(lambda: watcher.connected and phone.connected)
        await quiet(demo)
        # The phone came back still in the background; the watcher still watches.
        assert (await watcher.query_presence([demo.user("zhangwei")]))[0]["state"] == "away"
        await phone.set_presence("active")
        while (pushed := await watcher.next_push("presence"))["state"] != "online":
            pass
        assert pushed["user_id"] == demo.user("zhangwei")
    finally:
        await watcher.close()
        await phone.close()
