"""A call through the signaling service whose peers can only reach each other through a real coturn
relay, with the time-limited credentials the service hands out at connect time."""

from __future__ import annotations

import aioice.ice
import pytest
from aiortc import RTCSessionDescription

from rtc_support import ColourTrack, FrameCounter
from signaling_support import device, start_for
from turn_support import coturn, nominated_pair, relay_peer, wait_state  # noqa: F401  (fixture)


async def test_a_call_connects_only_through_the_relay_with_issued_credentials(demo, coturn, monkeypatch):  # noqa: F811
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4=True, use_ipv6=True: [])  # no direct path
    service = await start_for(demo, turn_urls=(f"turn:127.0.0.1:{coturn.port}?transport=udp",),
                              turn_secret=coturn.secret, turn_ttl=300)
    caller = await device(demo, service, "zhangwei")
    callee = await device(demo, service, "huangjian")
    try:
        servers = caller.hello["ice_servers"]
        turn = [s for s in servers if "username" in s]
        assert turn and turn[0]["username"].endswith(":" + demo.user("zhangwei")) and turn[0]["ttl"] == 300
        call = await caller.request("call.invite", callee=demo.user("huangjian"), media="video")
        await callee.next("call.incoming", call_id=call["call_id"])
        await callee.request("call.accept", call_id=call["call_id"])
        a, b = relay_peer(caller.hello["ice_servers"]), relay_peer(callee.hello["ice_servers"])
        got = {}
        b.on("track", lambda t: got.__setitem__("b", FrameCounter(t)))
        a.on("track", lambda t: got.__setitem__("a", FrameCounter(t)))
        a.addTrack(ColourTrack(80))
        b.addTrack(ColourTrack(180))
        await a.setLocalDescription(await a.createOffer())
        await caller.request("signal", call_id=call["call_id"], to=callee.hello["device_id"],
                             description={"type": "offer", "sdp": a.localDescription.sdp})
        offer = await callee.next("signal")
        await b.setRemoteDescription(RTCSessionDescription(offer["description"]["sdp"], "offer"))
        await b.setLocalDescription(await b.createAnswer())
        await callee.request("signal", call_id=call["call_id"], to=caller.hello["device_id"],
                             description={"type": "answer", "sdp": b.localDescription.sdp})
        answer = await caller.next("signal")
        await a.setRemoteDescription(RTCSessionDescription(answer["description"]["sdp"], "answer"))
        await wait_state(a, {"connected"}, 10)
        for pc in (a, b):
            pair = nominated_pair(pc)
            assert (pair.local_candidate.type, pair.remote_candidate.type) == ("relay", "relay")
        assert await got["b"].wait(5) >= 5 and await got["a"].wait(5) >= 5
        assert abs(got["b"].luma - 80) < 12 and abs(got["a"].luma - 180) < 12
        fresh = await caller.request("turn.credentials")
        assert [s for s in fresh["ice_servers"] if "username" in s][0]["credential"]
        for c in got.values():
            c.stop()
        await a.close()
        await b.close()
        await caller.request("call.hangup", call_id=call["call_id"])
    finally:
        await caller.close()
        await callee.close()
        await service.stop()
