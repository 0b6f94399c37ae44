"""The signaling service under test: started in the test's process next to the demo messaging server
(as ``xietong up`` runs it), reached over real WebSockets with the client SDK; aiortc peers that
negotiate through it."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import pytest
from aiortc import RTCSessionDescription

from xietong.clients.signaling import SignalingClient
from xietong.signaling.service import SignalingService, start_signaling

from rtc_support import ColourTrack, FrameCounter, peer


@pytest.fixture
async def signaling(demo: Any) -> AsyncIterator[SignalingService]:
    """The signaling service next to the demo server, stopped after the test."""
    service = await start_for(demo)
    try:
        yield service
    finally:
        await service.stop()


async def start_for(demo: Any, **overrides: Any) -> SignalingService:
    settings = demo.server.services.settings.replace(**overrides)
    return await start_signaling(settings, demo.server.services, host="127.0.0.1", port=0)


async def device(demo: Any, service: SignalingService, username: str, *, fresh_login: bool = False) -> SignalingClient:
    """A connected signaling client for a user; ``fresh_login`` makes it another device of that user."""
    token = (await demo.api.login(username))["access_token"] if fresh_login else await demo.token(username)
    client = SignalingClient(service.url, token)
    await client.connect()
    return client


class MeshPeer:
    """One participant's media side: an aiortc peer connection per remote participant."""

    def __init__(self, sig: SignalingClient, luma: int, *, meeting_id: str | None = None, call_id: str | None = None):
        self.sig = sig
        self.luma = luma
        self.meeting_id = meeting_id
        self.call_id = call_id
        self.pcs: dict[str, Any] = {}
        self.counters: dict[str, FrameCounter] = {}
        self._task = asyncio.ensure_future(self._answer_forever())

    def _scope(self) -> dict[str, str]:
        return {"meeting_id": self.meeting_id} if self.meeting_id else {"call_id": self.call_id}  # type: ignore

    def _pc(self, remote: str) -> Any:
        pc = peer()
        pc.addTrack(ColourTrack(self.luma))

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video":
                self.counters[remote] = FrameCounter(track)

        self.pcs[remote] = pc
        return pc

    async def offer(self, remote: str) -> None:
        pc = self._pc(remote)
        await pc.setLocalDescription(await pc.createOffer())
        await self.sig.request("signal", to=remote, description={"type": "offer", "sdp": pc.localDescription.sdp},
                               **self._scope())

    async def _answer_forever(self) -> None:
        while True:
            try:
                frame = await self.sig.next("signal", timeout=3600)
            except (ConnectionError, asyncio.CancelledError):
                return
            remote, description = frame["from"], frame.get("description")
            if description is None:
                continue
            if description["type"] == "offer":
                old = self.pcs.pop(remote, None)
                if old is not None:
                    await old.close()
                pc = self._pc(remote)
                await pc.setRemoteDescription(RTCSessionDescription(description["sdp"], "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                await self.sig.request("signal", to=remote,
                                       description={"type": "answer", "sdp": pc.localDescription.sdp},
                                       **self._scope())
            else:
                await self.pcs[remote].setRemoteDescription(RTCSessionDescription(description["sdp"], "answer"))

    async def frames_from(self, remote: str, n: int = 3, timeout: float = 15.0) -> FrameCounter:
        async def counter() -> FrameCounter:
            while remote not in self.counters:
                await asyncio.sleep(0.02)
            return self.counters[remote]

        c = await asyncio.wait_for(counter(), timeout)
        await c.wait(n, timeout)
        return c

    async def close(self) -> None:
        self._task.cancel()
        for c in self.counters.values():
            c.stop()
        for pc in self.pcs.values():
            await pc.close()


async def join_mesh(sig: SignalingClient, meeting_id: str, luma: int) -> MeshPeer:
    """Join a mesh meeting with a colour-coded camera and offer to everyone already there (the
    newcomer offers; the others answer)."""
    joined = await sig.request("meeting.join", meeting_id=meeting_id)
    media = MeshPeer(sig, luma, meeting_id=meeting_id)
    for other in joined["participants"]:
        if other["participant_id"] != sig.hello["device_id"]:
            await media.offer(other["participant_id"])
    return media
