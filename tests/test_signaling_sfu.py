"""A 6-party meeting through a real Janus driven by the signaling service: participants only speak
the signaling protocol (sfu.publish / sfu.subscribe / sfu.answer); media flows to every one of them."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc import RTCSessionDescription

from xietong.clients.signaling import SignalingError
from xietong.signaling.janus import JanusPool

from janus_support import JanusServer, host_media_only, janus_server  # noqa: F401  (fixture)
from messaging_support import group_of
from rtc_support import ColourTrack, FrameCounter, ToneTrack, peer
from signaling_support import device, start_for

pytestmark = pytest.mark.slow

PEOPLE = ["zhangwei", "huangjian", "liuyang", "chenjing", "weiming", "lanting"]


@pytest.fixture
async def signaling(demo, janus_server, monkeypatch):  # noqa: F811
    host_media_only(monkeypatch, janus_server.ice_address)
    service = await start_for(demo)
    service.meetings.janus = JanusPool([janus_server.url], request_timeout=5.0)
    try:
        yield service
    finally:
        await service.stop()
        await service.meetings.janus.close()


class SfuParticipant:
    def __init__(self, sig, meeting_id: str, luma: int, *, audio: bool = False):
        self.sig, self.mid, self.luma, self.audio = sig, meeting_id, luma, audio
        self.pub = peer()
        self.sub = None
        self.video: list[FrameCounter] = []
        self.sound: list[FrameCounter] = []

    async def publish(self) -> None:
        self.pub.addTrack(ColourTrack(self.luma))
        if self.audio:
            self.pub.addTrack(ToneTrack())
        await self.pub.setLocalDescription(await self.pub.createOffer())
        answer = await self.sig.request("sfu.publish", meeting_id=self.mid,
                                        description={"type": "offer", "sdp": self.pub.localDescription.sdp})
        await self.pub.setRemoteDescription(RTCSessionDescription(answer["description"]["sdp"], "answer"))

    async def subscribe(self, participant_ids: list[str]) -> None:
        offer = await self.sig.request("sfu.subscribe", meeting_id=self.mid, feeds=participant_ids)
        self.sub = peer()

        @self.sub.on("track")
        def on_track(track) -> None:
            (self.video if track.kind == "video" else self.sound).append(FrameCounter(track))

        await self.sub.setRemoteDescription(RTCSessionDescription(offer["description"]["sdp"], "offer"))
        await self.sub.setLocalDescription(await self.sub.createAnswer())
        await self.sig.request("sfu.answer", meeting_id=self.mid,
                               description={"type": "answer", "sdp": self.sub.localDescription.sdp})

    async def close(self) -> None:
        for c in self.video + self.sound:
            c.stop()
        await self.pub.close()
        if self.sub is not None:
            await self.sub.close()


async def test_six_participants_through_janus_each_receive_the_five_others(demo, signaling):
    cid = await group_of(demo, PEOPLE[0], PEOPLE[1:], "六方会商群")
    sigs = [await device(demo, signaling, name) for name in PEOPLE]
    created = await sigs[0].request("meeting.create", title="六方视频会商", conversation_id=cid, topology="sfu")
    mid = created["meeting_id"]
    lumas = [30, 65, 100, 135, 170, 205]
    people = []
    began = time.monotonic()
    for sig, luma in zip(sigs, lumas):
        joined = await sig.request("meeting.join", meeting_id=mid)
        assert joined["topology"] == "sfu"
        people.append(SfuParticipant(sig, mid, luma, audio=luma == 65))  # the second one also speaks
    try:
        await asyncio.gather(*(p.publish() for p in people))
        ids = [s.hello["device_id"] for s in sigs]
        for p, me in zip(people, ids):  # each one learns of the five others' feeds once they are live
            added = {(await p.sig.next("sfu.feed_added", meeting_id=mid, timeout=20))["participant_id"]
                     for _ in range(5)}
            assert added == set(ids) - {me}
        await asyncio.gather(*(p.subscribe([i for i in ids if i != me]) for p, me in zip(people, ids)))
        for p in people:
            deadline = time.monotonic() + 20
            while len(p.video) < 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert len(p.video) == 5
            await asyncio.gather(*(c.wait(3, timeout=20) for c in p.video))
            seen = sorted(c.luma for c in p.video)
            expected = sorted(luma for luma in lumas if luma != p.luma)
            assert all(abs(a - b) < 12 for a, b in zip(seen, expected)), (seen, expected)
        print(f"\n[sfu] 6 participants joined, published and received all 30 feeds in "
              f"{(time.monotonic() - began) * 1000:.0f} ms")
        # The mesh relay is refused in an SFU meeting; a participant trying host actions is refused too.
        with pytest.raises(SignalingError) as wrong:
            await sigs[1].request("signal", meeting_id=mid, to=ids[2],
                                  candidate={"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"})
        assert wrong.value.code == "meeting.wrong_topology"
        with pytest.raises(SignalingError) as bad:
            await sigs[1].request("sfu.publish", meeting_id=mid, description={"type": "offer", "sdp": "v=0\r\nx\r\n"})
        assert bad.value.code == "meeting.bad_sdp"
        # Everyone still receives after the refusals.
        await asyncio.gather(*(c.wait(c.frames + 3, timeout=10) for c in people[0].video))
        # The host mutes everyone: the speaker's audio stops at the SFU, whatever its client sends.
        [voice] = people[0].sound
        await voice.wait(voice.frames + 10, timeout=10)
        await sigs[0].request("meeting.mute_all", meeting_id=mid, allow_unmute=False)
        await asyncio.sleep(0.5)  # what was in flight
        before = voice.frames
        await asyncio.sleep(1.0)
        assert voice.frames - before <= 2, "Janus still relays the muted participant's audio"
        with pytest.raises(SignalingError) as muted:
            await sigs[1].request("meeting.update_state", meeting_id=mid, state={"mic": True})
        assert muted.value.code == "meeting.muted_by_host"
        # Someone leaves: the others are told their feed is gone.
        await sigs[5].request("meeting.leave", meeting_id=mid)
        gone = await sigs[0].next("sfu.feed_removed", meeting_id=mid)
        assert gone["participant_id"] == ids[5]
    finally:
        for p in people:
            await p.close()
    await sigs[0].request("meeting.end", meeting_id=mid)
    for sig in sigs:
        await sig.close()
