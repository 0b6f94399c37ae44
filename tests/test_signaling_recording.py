"""The host records a meeting's audio: a server-side aiortc participant receives every
participant's audio, and the host downloads the file afterwards."""

from __future__ import annotations

import asyncio
import io
from array import array

import aiohttp
import av
import pytest
from aiortc import RTCSessionDescription

from xietong.clients.signaling import SignalingError

from messaging_support import group_of
from rtc_support import ToneTrack, loopback_only, peer
from signaling_support import device, start_for


@pytest.fixture
async def signaling(demo, tmp_path):
    service = await start_for(demo)
    service.meetings.recordings_dir = tmp_path / "recordings"
    try:
        yield service
    finally:
        await service.stop()


async def send_audio_to(sig, meeting_id: str, recorder_id: str, hz: float):
    pc = peer()
    pc.addTrack(ToneTrack(hz))
    await pc.setLocalDescription(await pc.createOffer())
    await sig.request("signal", meeting_id=meeting_id, to=recorder_id,
                      description={"type": "offer", "sdp": pc.localDescription.sdp})
    answer = await sig.next("signal", timeout=10)
    assert answer["from"] == recorder_id
    await pc.setRemoteDescription(RTCSessionDescription(answer["description"]["sdp"], "answer"))
    return pc


async def test_the_host_records_the_meeting_audio_and_only_the_host_downloads_it(demo, signaling, monkeypatch):
    loopback_only(monkeypatch)
    cid = await group_of(demo, "zhangwei", ["huangjian"], "录音测试群")
    host = await device(demo, signaling, "zhangwei")
    member = await device(demo, signaling, "huangjian")
    mid = (await host.request("meeting.create", title="录音会议", conversation_id=cid))["meeting_id"]
    await host.request("meeting.join", meeting_id=mid)
    await member.request("meeting.join", meeting_id=mid)
    with pytest.raises(SignalingError) as refused:
        await member.request("meeting.record", meeting_id=mid, action="start")
    assert refused.value.code == "perm.forbidden"
    started = await host.request("meeting.record", meeting_id=mid, action="start")
    rec_id = started["peer_id"]
    told = await member.next("meeting.recording", meeting_id=mid)
    assert told["recording"] is True and told["peer_id"] == rec_id
    pcs = [await send_audio_to(host, mid, rec_id, 440), await send_audio_to(member, mid, rec_id, 660)]
    await asyncio.sleep(2.0)
    stopped = await host.request("meeting.record", meeting_id=mid, action="stop")
    assert stopped["duration_seconds"] > 1.5 and stopped["bytes"] > 0
    for pc in pcs:
        await pc.close()

    url = signaling.url.replace("ws://", "http://").replace("/v1/signal", "") + stopped["download_path"]
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"Authorization": f"Bearer {await demo.token('huangjian')}"}) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "perm.forbidden"
        async with http.get(url) as r:
            assert r.status == 401
        async with http.get(url, headers={"Authorization": f"Bearer {await demo.token('zhangwei')}"}) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "audio/mp4"
            data = await r.read()
    with av.open(io.BytesIO(data)) as container:
        [stream] = container.streams.audio
        samples = sum(frame.samples for frame in container.decode(stream))
    assert samples / 48000 > 1.5
    with av.open(io.BytesIO(data)) as container:
        levels = [abs(x) for frame in container.decode(audio=0) if frame.format.name == "fltp"
                  for x in array("f", bytes(frame.planes[0]))[:frame.samples]]
    assert levels and max(levels) > 0.01  # not silence
    for sig in (host, member):
        await sig.close()
