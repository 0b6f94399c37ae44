"""Two signaling processes share one meeting through Redis: participants connected to different
processes see each other, relay offers to each other and get media across; host controls reach
across processes; a call rings a callee connected to the other process."""

from __future__ import annotations

import pytest

from xietong.clients.signaling import SignalingClient, SignalingError

from cluster_support import RedisServer, ServerProcess, server_env
from messaging_support import eventually, group_of
from rtc_support import loopback_only
from signaling_support import MeshPeer, join_mesh

pytestmark = pytest.mark.slow


@pytest.fixture
async def replicas(demo, settings, tmp_path):
    redis = RedisServer(tmp_path)
    redis.start()
    env = server_env(settings.mongo_url, settings.mongo_db, redis.url, settings.effective_keys_dir, tmp_path,
                     XT_SIGNALING_PORT="0", XT_MEETING_REJOIN_SECONDS="2")
    procs = [ServerProcess(env, f"signaling-{i}", command="signaling") for i in range(2)]
    try:
        urls = [await p.wait_ready() for p in procs]
        yield urls
    finally:
        for p in procs:
            if p.proc.poll() is None:
                await p.terminate()
        redis.stop()


async def connect(url: str, token: str) -> SignalingClient:
    client = SignalingClient(url, token)
    await client.connect()
    return client


async def test_one_meeting_across_two_signaling_processes(demo, replicas, monkeypatch):
    loopback_only(monkeypatch)
    first, second = replicas
    cid = await group_of(demo, "zhangwei", ["huangjian", "liuyang"], "跨进程会议群")
    host = await connect(first, await demo.token("zhangwei"))
    b = await connect(second, await demo.token("huangjian"))
    c = await connect(second, await demo.token("liuyang"))
    mid = (await host.request("meeting.create", title="跨进程会议", conversation_id=cid))["meeting_id"]
    await host.request("meeting.join", meeting_id=mid)
    peers = {host.hello["device_id"]: MeshPeer(host, 50, meeting_id=mid)}
    for sig, luma in ((b, 150), (c, 230)):
        peers[sig.hello["device_id"]] = await join_mesh(sig, mid, luma)
    seen = await host.next("meeting.participant_joined", meeting_id=mid)
    assert seen["participant"]["user_id"] == demo.user("huangjian")
    try:
        lumas = {host.hello["device_id"]: 50, b.hello["device_id"]: 150, c.hello["device_id"]: 230}
        for me, mp in peers.items():
            for other, luma in lumas.items():
                if other != me:
                    assert abs((await mp.frames_from(other)).luma - luma) < 12
    finally:
        for mp in peers.values():
            await mp.close()
    # The host on process 1 mutes a participant on process 2; state is one document in Redis.
    await host.request("meeting.mute_all", meeting_id=mid, allow_unmute=False)
    assert (await c.next("meeting.muted_all", meeting_id=mid))["by"] == demo.user("zhangwei")
    with pytest.raises(SignalingError) as refused:
        await c.request("meeting.update_state", meeting_id=mid, state={"mic": True})
    assert refused.value.code == "meeting.muted_by_host"
    await host.request("meeting.end", meeting_id=mid)
    await b.next("meeting.ended", meeting_id=mid)
    for sig in (host, b, c):
        await sig.close()


async def test_a_call_rings_across_processes_and_is_recorded_once(demo, replicas):
    first, second = replicas
    caller = await connect(first, await demo.token("zhangwei"))
    callee = await connect(second, await demo.token("huangjian"))
    call = await caller.request("call.invite", callee=demo.user("huangjian"), media="audio")
    await callee.next("call.incoming", call_id=call["call_id"])
    await callee.request("call.accept", call_id=call["call_id"])
    assert (await caller.next("call.accepted", call_id=call["call_id"]))["peer"] == callee.hello["device_id"]
    await callee.request("call.hangup", call_id=call["call_id"])
    assert (await caller.next("call.ended", call_id=call["call_id"]))["outcome"] == "completed"
    events = demo.server.services.store.events.col
    records = await eventually(lambda: events.find({"type": "call.record", "data.call_id": call["call_id"]}).to_list())
    assert len(records) == 1
    for sig in (caller, callee):
        await sig.close()
