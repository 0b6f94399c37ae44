"""The ``meetings`` scenario: join → media-connected time, mesh and SFU.

A real ``xietong signaling`` process (next to the messaging server's database) and, for the SFU path,
a private Janus started like the tests start it. The harness process runs the participants as aiortc
peers (real ICE, DTLS, SRTP, VP8) and measures, per participant, from sending ``meeting.join`` to the
first decoded video frame of *every* other participant:

- **mesh**: 3 participants join one after another; each newcomer offers to those already there.
- **sfu**: 6 participants join one after another and publish to Janus through ``sfu.publish``; each
  subscribes to the others' feeds as ``sfu.feed_added`` announces them.

Several meetings are run; the figures are the median and the worst participant.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiortc import RTCSessionDescription

from .report import percentile

if TYPE_CHECKING:
    from .__main__ import Bench

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from rtc_support import ColourTrack, FrameCounter, peer  # noqa: E402


async def _first_frames(counters: dict[str, FrameCounter], wanted: set[str], timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wanted <= set(counters) and all(counters[k].frames > 0 for k in wanted):
            return time.monotonic()
        await asyncio.sleep(0.005)
    raise TimeoutError(f"no media from {wanted - {k for k, c in counters.items() if c.frames}}")


class MeshMember:
    def __init__(self, sig: Any, meeting_id: str, luma: int):
        self.sig, self.mid, self.luma = sig, meeting_id, luma
        self.pcs: dict[str, Any] = {}
        self.counters: dict[str, FrameCounter] = {}
        self.task = asyncio.ensure_future(self._answer())

    def _pc(self, remote: str) -> Any:
        pc = peer()
        pc.addTrack(ColourTrack(self.luma))
        pc.on("track", lambda track: self.counters.__setitem__(remote, FrameCounter(track)))
        self.pcs[remote] = pc
        return pc

    async def offer(self, remote: str) -> None:
        pc = self._pc(remote)
        await pc.setLocalDescription(await pc.createOffer())
        await self.sig.request("signal", meeting_id=self.mid, to=remote,
                               description={"type": "offer", "sdp": pc.localDescription.sdp})

    async def _answer(self) -> None:
        while True:
            frame = await self.sig.next("signal", timeout=3600)
            d, remote = frame["description"], frame["from"]
            if d["type"] == "offer":
                pc = self._pc(remote)
                await pc.setRemoteDescription(RTCSessionDescription(d["sdp"], "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                await self.sig.request("signal", meeting_id=self.mid, to=remote,
                                       description={"type": "answer", "sdp": pc.localDescription.sdp})
            else:
                await self.pcs[remote].setRemoteDescription(RTCSessionDescription(d["sdp"], "answer"))

    async def close(self) -> None:
        self.task.cancel()
        for c in self.counters.values():
            c.stop()
        for pc in self.pcs.values():
            await pc.close()


class SfuMember:
    def __init__(self, sig: Any, meeting_id: str, luma: int):
        self.sig, self.mid, self.luma = sig, meeting_id, luma
        self.pub = peer()
        self.sub: Any = None
        self.counters: dict[str, FrameCounter] = {}

    async def publish(self) -> None:
        self.pub.addTrack(ColourTrack(self.luma))
        await self.pub.setLocalDescription(await self.pub.createOffer())
        answer = await self.sig.request("sfu.publish", meeting_id=self.mid,
                                        description={"type": "offer", "sdp": self.pub.localDescription.sdp})
        await self.pub.setRemoteDescription(RTCSessionDescription(answer["description"]["sdp"], "answer"))

    async def subscribe(self, feeds: list[str]) -> None:
        if self.sub is not None:
            await self.sub.close()
        for attempt in range(100):  # a feed Janus has not seen connected yet is "no such feed": a moment later it is
            try:
                offer = await self.sig.request("sfu.subscribe", meeting_id=self.mid, feeds=feeds)
                break
            except Exception as exc:
                if getattr(exc, "code", None) != "not_found" or attempt == 99:
                    raise
                await asyncio.sleep(0.02)
        self.sub = peer()
        def on_track(track: Any) -> None:  # which feed a track carries does not matter here: how many do
            if track.kind == "video":
                self.counters[f"track-{len(self.counters)}"] = FrameCounter(track)

        self.sub.on("track", on_track)
        await self.sub.setRemoteDescription(RTCSessionDescription(offer["description"]["sdp"], "offer"))
        await self.sub.setLocalDescription(await self.sub.createAnswer())
        await self.sig.request("sfu.answer", meeting_id=self.mid,
                               description={"type": "answer", "sdp": self.sub.localDescription.sdp})

    async def close(self) -> None:
        for c in self.counters.values():
            c.stop()
        await self.pub.close()
        if self.sub is not None:
            await self.sub.close()


async def meetings(bench: "Bench") -> dict[str, Any]:
    from xietong.clients.signaling import SignalingClient

    from cluster_support import ServerProcess
    from janus_support import JanusServer, host_ipv4

    import aioice.ice

    rounds = 2 if bench.quick else 5
    d = await bench.deployment("meetings")
    janus = JanusServer(bench.tmp / "janus")
    janus.start()
    address = host_ipv4()  # Janus never uses loopback; the peers use the host's own address too
    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: [address]
    signaling = ServerProcess(dict(d.env, XT_SIGNALING_PORT="0", XT_JANUS_URLS=janus.url), "signaling",
                              command="signaling")
    out: dict[str, Any] = {}
    try:
        url = await signaling.wait_ready()
        accounts = await d.population.accounts(6, "mt")
        for topology, size in (("mesh", 3), ("sfu", 6)):
            times: list[float] = []
            for r in range(rounds):
                cid = await d.population.group(accounts[0], accounts[1:size], f"会议{topology}{r}")
                sigs = [SignalingClient(url, a.token) for a in accounts[:size]]
                for s in sigs:
                    await s.connect()
                created = await sigs[0].request("meeting.create", title="bench", conversation_id=cid,
                                                topology=topology)
                mid = created["meeting_id"]
                members: list[Any] = []
                try:
                    ids = [s.hello["device_id"] for s in sigs]
                    for i, s in enumerate(sigs):
                        began = time.monotonic()
                        joined = await s.request("meeting.join", meeting_id=mid)
                        others = {p["participant_id"] for p in joined["participants"]} - {ids[i]}
                        if topology == "mesh":
                            m = MeshMember(s, mid, 40 + 30 * i)
                            members.append(m)
                            for other in others:
                                await m.offer(other)
                        else:
                            m = SfuMember(s, mid, 40 + 30 * i)
                            members.append(m)
                            await m.publish()
                            if others:
                                await m.subscribe(sorted(others))
                        if others:
                            wanted = others if topology == "mesh" else {f"track-{k}" for k in range(len(others))}
                            times.append(await _first_frames(m.counters, wanted) - began)
                finally:
                    for m in members:
                        await m.close()
                    try:
                        await sigs[0].request("meeting.end", meeting_id=mid)
                    except Exception:
                        pass
                    for s in sigs:
                        await s.close()
            out[topology] = {"participants": size, "meetings": rounds, "samples": len(times),
                             "join_to_media_ms_median": round(1000 * percentile(times, 50), 1),
                             "join_to_media_ms_max": round(1000 * max(times), 1)}
            bench.log(f"  {topology}: join → media of every other participant, median "
                      f"{out[topology]['join_to_media_ms_median']} ms, worst {out[topology]['join_to_media_ms_max']} ms")
    finally:
        aioice.ice.get_host_addresses = original
        if signaling.proc.poll() is None:
            await signaling.terminate()
        janus.stop()
        await d.close()
    return out
