"""Real WebRTC peers for tests: aiortc on loopback, synthetic media, frame counting.

* ``loopback_only(monkeypatch)``: aioice skips loopback addresses; tests that must stay on 127.0.0.1
  make it gather only 127.0.0.1 host candidates.
* :class:`ColourTrack` / :class:`ToneTrack`: synthetic video (a solid yuv420p colour that identifies the
  sender) and audio (a 440 Hz tone), so a receiver can tell whose media it got.
* :class:`FrameCounter`: consumes a remote track and counts decoded frames; ``await wait(n)``.
* :func:`peer`: an ``RTCPeerConnection`` with no ICE servers (the default would add a public STUN server).
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, VideoStreamTrack
from aiortc.mediastreams import AUDIO_PTIME, AudioStreamTrack, MediaStreamError

WIDTH, HEIGHT = 160, 120


def loopback_only(monkeypatch: Any) -> None:
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"])


def peer(ice_servers: list[dict[str, Any]] | None = None) -> RTCPeerConnection:
    servers = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
               for s in (ice_servers or [])]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers))


class ColourTrack(VideoStreamTrack):
    """Video frames of one solid colour: the luma value ``y`` identifies the sender."""

    def __init__(self, y: int = 128):
        super().__init__()
        self.y = y

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        frame.planes[0].update(bytes([self.y]) * (frame.planes[0].line_size * HEIGHT))
        for plane in frame.planes[1:]:
            plane.update(bytes([128]) * (plane.line_size * (HEIGHT // 2)))
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneTrack(AudioStreamTrack):
    """A 440 Hz sine tone, mono s16, 48 kHz, 20 ms frames."""

    def __init__(self, hz: float = 440.0):
        super().__init__()
        self.hz = hz
        self._samples = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        rate = 48000
        n = int(AUDIO_PTIME * rate)
        if hasattr(self, "_start"):
            self._timestamp += n
            wait = self._start + (self._timestamp / rate) - time.time()
            await asyncio.sleep(max(0.0, wait))
        else:
            self._start = time.time()
            self._timestamp = 0
        data = bytearray()
        for i in range(n):
            v = int(8000 * math.sin(2 * math.pi * self.hz * (self._samples + i) / rate))
            data += v.to_bytes(2, "little", signed=True)
        self._samples += n
        frame = av.AudioFrame(format="s16", layout="mono", samples=n)
        frame.planes[0].update(bytes(data))
        frame.pts = self._timestamp
        frame.sample_rate = rate
        frame.time_base = fractions.Fraction(1, rate)
        return frame


class FrameCounter:
    """Reads a remote track until it ends; counts frames and remembers the last video luma seen."""

    def __init__(self, track: MediaStreamTrack):
        self.track = track
        self.frames = 0
        self.luma: int | None = None
        self._changed = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                self.frames += 1
                if isinstance(frame, av.VideoFrame):
                    plane = bytes(frame.planes[0])
                    self.luma = plane[len(plane) // 2]
                self._changed.set()
        except (MediaStreamError, asyncio.CancelledError):
            return

    async def wait(self, n: int = 1, timeout: float = 10.0) -> int:
        async def reach() -> None:
            while self.frames < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(reach(), timeout)
        return self.frames

    def stop(self) -> None:
        self.task.cancel()
