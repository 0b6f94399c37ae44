"""Several server processes through Redis: delivery across processes, one order, presence, and
nothing acknowledged lost when Redis restarts or a process is killed or stopped."""

from __future__ import annotations

import asyncio
import collections
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from cluster_support import RedisServer, ServerProcess, server_env
from conftest import copy_database
from messaging_support import eventually
from pymongo import AsyncMongoClient

from xietong.clients import XietongClient
from xietong.server.seed import DEMO_PASSWORD

pytestmark = pytest.mark.slow


class Cluster:
    def __init__(self, redis: RedisServer, env: dict[str, str], users: dict[str, str]):
        self.redis = redis
        self.env = env
        self.users = users
        self.servers: list[ServerProcess] = []
        self.clients: list[XietongClient] = []

    async def start(self, count: int) -> list[ServerProcess]:
        new = [ServerProcess(self.env, f"server-{len(self.servers) + i}") for i in range(count)]
        await asyncio.gather(*(s.wait_ready() for s in new))
        self.servers += new
        return new

    def user(self, username: str) -> str:
        return self.users[username]

    async def client(self, username: str, *servers: ServerProcess) -> XietongClient:
        """A connected client of ``username``, on the first of ``servers`` (the others are its
        fail-over addresses, in order)."""
        client = XietongClient([s.url for s in servers], device_name=f"{username}-{uuid.uuid4().hex[:6]}")
        await client.login(username, DEMO_PASSWORD)
        await client.connect()
        self.clients.append(client)
        return client


@pytest.fixture
async def cluster(demo_template: str, mongo_url: str, db_name: str, keys_dir: Path, tmp_path: Path):
    await copy_database(mongo_url, demo_template, db_name)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    users = {d["username"]: d["_id"] for d in await mongo[db_name]["users"].find({}, {"username": 1}).to_list()}
    redis = RedisServer(tmp_path)
    redis.start()
    c = Cluster(redis, server_env(mongo_url, db_name, redis.url, keys_dir, tmp_path), users)
    try:
        yield c
    finally:
        for server in c.servers:
            if "Traceback" in server.log:  # a server-side error is shown with the failing test
                print(f"--- {server.name} log ---\n{server.log}")
        await asyncio.gather(*(client.close() for client in c.clients), return_exceptions=True)
        for server in c.servers:
            if server.proc.poll() is None:
                server.kill()
        redis.stop()
        await mongo.drop_database(db_name)
        await mongo.close()


async def group(cluster: Cluster, owner: XietongClient, members: list[str], name: str = "跨进程群") -> str:
    view = await owner.create_group(name, [cluster.user(m) for m in members])
    return view["id"]


async def test_a_message_sent_on_one_process_reaches_members_on_each_of_the_others(cluster):
    a, b, c = await cluster.start(3)
    sender = await cluster.client("zhangwei", a)
    on_b = await cluster.client("huangjian", b)
    on_c = await cluster.client("liuyang", c)
    cid = await group(cluster, sender, ["huangjian", "liuyang"])
    await on_b.sync()
    await on_c.sync()
    event = await sender.send_text(cid, "三个进程都收到")
    for receiver in (on_b, on_c):
        await eventually(lambda r=receiver: any(e["id"] == event["id"] for e in r.messages(cid)))
    # Routing, not broadcast: only the processes with a member connected follow the conversation.
    redis = aioredis.Redis.from_url(cluster.redis.url)
    try:
        (_, followers), = await redis.pubsub_numsub(f"xt:c:{cid}")
        lonely = await redis.pubsub_numsub(f"xt:c:cnv_{'0' * 16}")
    finally:
        await redis.aclose()
    assert followers == 3 and lonely[0][1] == 0


async def test_concurrent_senders_on_different_processes_produce_one_identical_gap_free_order(cluster):
    servers = await cluster.start(3)
    names = ["zhangwei", "huangjian", "liuyang", "chenjing", "wuqiang", "xuna"]
    clients = [await cluster.client(name, servers[i % 3]) for i, name in enumerate(names)]
    cid = await group(cluster, clients[0], names[1:])
    for client in clients:
        await client.sync()

    async def send_many(client: XietongClient, name: str) -> list[int]:
        return [(await client.send_text(cid, f"{name}-{n}"))["seq"] for n in range(30)]

    seqs = await asyncio.gather(*(send_many(c, n) for c, n in zip(clients, names)))
    assert all(s == sorted(s) for s in seqs)
    for client in clients:
        await client.sync()
    logs = [[(e["seq"], e["id"]) for e in c.logs[cid].ordered()] for c in clients]
    assert all(log == logs[0] for log in logs)
    assert [seq for seq, _ in logs[0]] == list(range(1, len(logs[0]) + 1))
    assert len([e for e in clients[0].messages(cid)]) == 180


async def test_presence_across_processes_and_devices_and_offline_after_a_killed_process(cluster):
    a, b, c = await cluster.start(3)
    watcher = await cluster.client("huangjian", a)
    phone = await cluster.client("zhangwei", b)
    pc = await cluster.client("zhangwei", c)
    zhangwei = cluster.user("zhangwei")

    async def state() -> str:
        return (await watcher.query_presence([zhangwei]))[0]["state"]

    await eventually(lambda: state_is(state, "online"))
    await watcher.watch_presence([zhangwei])
    await phone.set_presence("away")  # the phone goes to the background; the PC is still in front
    await pc.set_presence("active")
    await eventually(lambda: state_is(state, "online"))
    await pc.close()  # the PC leaves cleanly: only the background phone remains
    pushed = await watcher.next_push("presence", timeout=10)
    assert (pushed["user_id"], pushed["state"]) == (zhangwei, "away")
    b.kill()  # the phone's process dies without a word
    # Bound: TTL (3 s) + sweep interval (1 s) + debounce (0.2 s), plus delivery.
    pushed = await watcher.next_push("presence", timeout=3 + 1 + 0.2 + 4)
    assert (pushed["user_id"], pushed["state"]) == (zhangwei, "offline")


async def state_is(read, expected: str) -> bool:
    return await read() == expected


async def _send_continuously(client: XietongClient, cid: str, tag: str, acked: dict[str, int],
                             stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        event = await client.send_text(cid, f"{tag}-{n}")
        acked[event["client_msg_id"]] = event["seq"]
        n += 1


async def _every_acknowledged_message_once(cluster: Cluster, cid: str, acked: dict[str, int],
                                           members: list[XietongClient]) -> None:
    for client in members:
        await client.sync()
        messages = client.messages(cid)
        counts = collections.Counter(e["client_msg_id"] for e in messages)
        assert all(counts[m] == 1 for m in acked), "an acknowledged message is missing or doubled"
        assert {e["client_msg_id"]: e["seq"] for e in messages if e["client_msg_id"] in acked} == acked
        seqs = [e["seq"] for e in client.logs[cid].ordered()]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_redis_restarted_mid_traffic_loses_no_acknowledged_message(cluster):
    a, b = await cluster.start(2)
    sender_a = await cluster.client("zhangwei", a)
    sender_b = await cluster.client("huangjian", b)
    reader = await cluster.client("liuyang", b)
    cid = await group(cluster, sender_a, ["huangjian", "liuyang"])
    for client in (sender_b, reader):
        await client.sync()
    acked: dict[str, int] = {}
    stop = asyncio.Event()
    traffic = [asyncio.create_task(_send_continuously(c, cid, t, acked, stop))
               for c, t in ((sender_a, "a"), (sender_b, "b"))]
    await eventually(lambda: len(acked) >= 20)
    cluster.redis.stop()
    await eventually(lambda: len(acked) >= 40)  # writes go on without the bus
    cluster.redis.start()
    resync = await reader.next_push("resync", timeout=20)  # the gateways told their devices to catch up
    assert resync == {"type": "resync"}
    await eventually(lambda: len(acked) >= 60)
    stop.set()
    await asyncio.gather(*traffic)
    # Live delivery works again after the restart.
    event = await sender_a.send_text(cid, "after the restart")
    await eventually(lambda: any(e["id"] == event["id"] for e in reader.messages(cid)))
    acked[event["client_msg_id"]] = event["seq"]
    await _every_acknowledged_message_once(cluster, cid, acked, [sender_a, sender_b, reader])
    # Presence rebuilds from the processes' renewals.
    await eventually(lambda: state_is(lambda: _state(reader, cluster.user("zhangwei")), "online"), timeout=10)


async def _state(client: XietongClient, user_id: str) -> str:
    return (await client.query_presence([user_id]))[0]["state"]


async def test_a_process_killed_mid_traffic_loses_no_acknowledged_message(cluster):
    a, b, c = await cluster.start(3)
    sender = await cluster.client("zhangwei", a, b)  # fails over to b
    other = await cluster.client("huangjian", b)
    reader = await cluster.client("liuyang", c)
    cid = await group(cluster, other, ["zhangwei", "liuyang"])
    await sender.sync()
    await reader.sync()
    acked: dict[str, int] = {}
    stop = asyncio.Event()
    traffic = [asyncio.create_task(_send_continuously(sender, cid, "s", acked, stop)),
               asyncio.create_task(_send_continuously(other, cid, "o", acked, stop))]
    await eventually(lambda: len(acked) >= 30)
    a.kill()
    before = len(acked)
    await eventually(lambda: len(acked) >= before + 30, timeout=30)  # the sender is back, on b
    assert sender.base_url == b.url
    stop.set()
    await asyncio.gather(*traffic)
    await _every_acknowledged_message_once(cluster, cid, acked, [sender, other, reader])


async def test_sigterm_drains_a_process_and_its_devices_move_on(cluster):
    a, b = await cluster.start(2)
    mover = await cluster.client("zhangwei", a, b)
    stayer = await cluster.client("huangjian", b)
    cid = await group(cluster, stayer, ["zhangwei"])
    await mover.sync()
    sends = [asyncio.create_task(mover.send_text(cid, f"在途-{n}")) for n in range(20)]
    code = await a.terminate()
    assert code == 0, a.log
    events = await asyncio.gather(*sends)  # in flight at SIGTERM: finished there or retried on b
    assert len({e["seq"] for e in events}) == 20
    await eventually(lambda: mover.connected and mover.base_url == b.url)
    later = await mover.send_text(cid, "迁移后")
    await eventually(lambda: any(e["id"] == later["id"] for e in stayer.messages(cid)))
    await stayer.sync()
    texts = [e["message"]["text"] for e in stayer.messages(cid)]
    assert sorted(t for t in texts if t.startswith("在途")) == sorted(f"在途-{n}" for n in range(20))
    assert "Traceback" not in a.log


async def test_one_device_on_two_processes_stays_online_when_one_socket_closes(cluster):
    a, b = await cluster.start(2)
    watcher = await cluster.client("huangjian", a)
    zhangwei, liuyang = cluster.user("zhangwei"), cluster.user("liuyang")
    await watcher.watch_presence([zhangwei, liuyang])
    phone = await cluster.client("zhangwei", a)
    assert (await watcher.next_push("presence"))["state"] == "online"
    # The same device (same tokens) opens a second socket on the other process, as a phone that
    # switched networks does before its old socket has timed out.
    second = XietongClient(b.url, device_name="same phone")
    second.access_token, second.refresh_token = phone.access_token, phone.refresh_token
    second.user_id, second.device_id = phone.user_id, phone.device_id
    await second.connect()
    cluster.clients.append(second)
    await phone.close()  # the old socket goes
    # A later change on the same process is announced after the phone's departure would have been
    # (announcements are due in order): once it arrives, an "offline" would have arrived first.
    await cluster.client("liuyang", a)
    while True:
        pushed = await watcher.next_push("presence", timeout=10)
        assert pushed["user_id"] != zhangwei, f"the user was announced {pushed['state']}"
        if pushed["user_id"] == liuyang:
            break
    assert (await watcher.query_presence([zhangwei]))[0]["state"] == "online"


async def test_a_device_signed_out_while_redis_was_down_is_closed_when_it_comes_back(cluster):
    a, b = await cluster.start(2)
    victim = await cluster.client("zhangwei", a)
    victim.reconnect = False
    other = await cluster.client("zhangwei", b)  # signs the victim out, from the other process
    cluster.redis.stop()
    devices = await other.rest("GET", "/v1/me/devices")
    assert any(d["id"] == victim.device_id for d in devices["devices"])
    await other.rest("DELETE", f"/v1/me/devices/{victim.device_id}")
    assert victim.connected  # the revoke envelope was lost with Redis
    cluster.redis.start()
    await eventually(lambda: not victim.connected, timeout=20)
