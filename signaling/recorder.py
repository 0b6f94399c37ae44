"""The meeting recorder: a server-side aiortc participant that records a meeting's audio to one file.

The signaling service wires a :class:`Recorder` like any other mesh peer of the meeting:

* a participant who offers to it: ``answer_sdp = await recorder.accept_offer(peer_id, offer_sdp)``;
* or the recorder offers: ``offer_sdp = await recorder.create_offer(peer_id)``, then
  ``await recorder.accept_answer(peer_id, answer_sdp)``;
* trickled candidates (browsers trickle; aiortc puts all of its candidates in the SDP):
  ``await recorder.add_candidate(peer_id, candidate)``;
* a participant leaves: ``await recorder.remove_peer(peer_id)``.

It only receives: it sends no media, answers every audio m-line ``recvonly`` and every video m-line
``inactive`` (video is never decoded). The audio of all peers goes through one :class:`AudioMixer`
track (48 kHz, mono, s16, 20 ms frames at real-time pace, silence when nobody speaks or nobody is
connected, so the file's timeline is the meeting's wall-clock timeline) into one audio stream.

File format: **M4A (AAC-LC in an MP4/"ipod" container), mono, 48 kHz, 64 kbit/s by default.**

* Every phone plays it natively (iOS/AVFoundation and Android MediaPlayer, and
  desktop browsers). Ogg/Opus would be smaller, but iOS's built-in player does not reliably play
  Ogg (Apple supports Opus in CAF/MP4), and a host opening the download on an iPhone must hear it.
* PyAV's bundled FFmpeg always has the native ``aac`` encoder (no optional libfdk/lame needed).
* ~8 KB/s (~29 MB an hour) instead of WAV's 96 KB/s (~345 MB an hour, and WAV's 4 GB ceiling).
* It is written with ``movflags=+faststart``: the index is moved to the front when the file is
  finalised, so a phone can start playing a download before it has all of it.
* Cost: an MP4 is only playable once finalised (the index is written at the end). :meth:`Recorder.stop`
  (and the size/duration limits, and a writer error) always finalise it; a killed process leaves an
  unplayable file. The host downloads recordings of finished meetings, so we take that trade.

We write with PyAV directly rather than through ``aiortc.contrib.media.MediaRecorder``: the recorder
is the same few ``encode``/``mux`` calls, but MediaRecorder allows no bitrate or channel layout and
cannot tell how many bytes it has written, which the size limit needs.

Errors that a client can cause are :class:`~xietong.server.errors.XtError`: ``meeting.bad_sdp`` (an
offer, answer or candidate that cannot be parsed or negotiated; the other peers are unaffected),
``conflict.state`` (the recording has ended, or was already started) and ``not_found`` (an answer
or candidate for a peer the recorder does not know).
"""

from __future__ import annotations

import asyncio
import fractions
import inspect
import logging
import os
from array import array
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import av
from aiortc import (MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection,
                    RTCSessionDescription)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import SessionDescription, candidate_from_sdp

from xietong.server.errors import XtError

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
_BYTES_PER_SAMPLE = 2  # s16 mono
_FRAME_BYTES = FRAME_SAMPLES * _BYTES_PER_SAMPLE
_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
MAX_SDP_CHARS = 64 * 1024

# Why a recording ended (RecordingInfo.reason).
STOPPED = "stopped"
MAX_DURATION = "max_duration"
MAX_BYTES = "max_bytes"
ERROR = "error"


@dataclass(frozen=True)
class RecordingInfo:
    """A finished recording. ``duration_seconds`` is the audio timeline written (20 ms resolution);
    ``reason`` is one of ``"stopped"``, ``"max_duration"``, ``"max_bytes"``, ``"error"``."""

    path: Path
    bytes: int
    duration_seconds: float
    started_at: datetime
    ended_at: datetime
    reason: str = STOPPED


# --------------------------------------------------------------------------------------------- mixer


class _Source:
    """One remote audio track: a reader task resamples its frames to 48 kHz mono s16 into a small
    jitter buffer that the mixer drains 20 ms at a time."""

    PREBUFFER = 2 * _FRAME_BYTES  # start (and restart after an underrun) with 40 ms buffered
    MAX_BUFFER = 10 * _FRAME_BYTES  # keep at most 200 ms: latency stays bounded if the sender runs fast

    def __init__(self, track: MediaStreamTrack):
        self.track = track
        self.buffer = bytearray()
        self.playing = False
        self.ended = False
        self._resampler: av.AudioResampler | None = None
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                if isinstance(frame, av.AudioFrame):
                    self._append(frame)
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # a bad frame must not take the recording down; this source just ends
            log.exception("recorder: audio source failed")
        finally:
            self.ended = True

    def _append(self, frame: av.AudioFrame) -> None:
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        try:
            out = self._resampler.resample(frame)
        except ValueError:  # the sender changed format/rate mid-stream: start a new resampler
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            out = self._resampler.resample(frame)
        for f in out:
            self.buffer += bytes(f.planes[0])[: f.samples * _BYTES_PER_SAMPLE]
        if len(self.buffer) > self.MAX_BUFFER:
            del self.buffer[: len(self.buffer) - self.PREBUFFER]

    def take(self) -> bytes | None:
        """The next 20 ms, zero-padded on an underrun, or None while (re)buffering."""
        if not self.playing:
            if len(self.buffer) < self.PREBUFFER and not (self.ended and self.buffer):
                return None
            self.playing = True
        chunk = bytes(self.buffer[:_FRAME_BYTES])
        del self.buffer[:_FRAME_BYTES]
        if len(chunk) < _FRAME_BYTES:  # underrun: pad, and buffer again before resuming
            self.playing = False
            chunk += bytes(_FRAME_BYTES - len(chunk))
        return chunk

    def stop(self) -> None:
        self.task.cancel()


def mix(chunks: list[bytes]) -> bytes:
    """Sum s16 native-endian chunks of equal length, clipping to the s16 range."""
    if not chunks:
        return bytes(_FRAME_BYTES)
    if len(chunks) == 1:
        return chunks[0]
    total = array("h", chunks[0]).tolist()
    for chunk in chunks[1:]:
        total = [a + b for a, b in zip(total, array("h", chunk))]
    return array("h", [32767 if v > 32767 else -32768 if v < -32768 else v for v in total]).tobytes()


class AudioMixer(MediaStreamTrack):
    """An audio track mixing any number of source tracks: 48 kHz mono s16 frames of 20 ms, produced
    at real-time pace from the first ``recv()``. Sources can be added and removed at any time; with
    no source (or only silent ones) it yields silence, so consecutive frames are always contiguous.
    If the consumer falls behind (event-loop stall) frames are produced back to back until it catches
    up, so the number of samples produced always matches the wall-clock time elapsed."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._sources: dict[Hashable, _Source] = {}
        self._start: float | None = None
        self._samples = 0

    def add_source(self, key: Hashable, track: MediaStreamTrack) -> None:
        self.remove_source(key)
        self._sources[key] = _Source(track)

    def remove_source(self, key: Hashable) -> None:
        source = self._sources.pop(key, None)
        if source is not None:
            source.stop()

    @property
    def source_keys(self) -> list[Hashable]:
        return list(self._sources)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            due = self._start + (self._samples + FRAME_SAMPLES) / SAMPLE_RATE
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.readyState != "live":
                raise MediaStreamError
        chunks = []
        for key, source in list(self._sources.items()):
            chunk = source.take()
            if chunk is not None:
                chunks.append(chunk)
            elif source.ended and not source.buffer:
                self._sources.pop(key, None)
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(mix(chunks))
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = _TIME_BASE
        frame.pts = self._samples
        self._samples += FRAME_SAMPLES
        return frame

    def stop(self) -> None:
        for key in list(self._sources):
            self.remove_source(key)
        super().stop()


# ------------------------------------------------------------------------------------------ recorder


def check_sdp(text: str) -> None:
    """Raise ValueError unless ``text`` looks like a usable WebRTC description. aiortc itself is
    lenient: it accepts any text without media lines (``"hello"`` parses as an empty session)."""
    if len(text) > MAX_SDP_CHARS:
        raise ValueError("the SDP is too large")
    if not text.lstrip().startswith("v=0"):
        raise ValueError("not an SDP description (must start with v=0)")
    description = SessionDescription.parse(text)
    if not description.media:
        raise ValueError("the SDP has no media sections")
    for media in description.media:
        if not media.ice.usernameFragment or not media.ice.password:
            raise ValueError("ICE username fragment or password is missing")
        if not media.dtls or not media.dtls.fingerprints:
            raise ValueError("DTLS fingerprint is missing")


class _Peer:
    def __init__(self, pc: RTCPeerConnection):
        self.pc = pc
        self.track_keys: set[Hashable] = set()


OnStopped = Callable[[RecordingInfo], "Awaitable[None] | None"]


class Recorder:
    """A receive-only meeting participant that records the mixed audio of all its peers to one M4A file.

    ``max_duration`` (seconds) and ``max_bytes`` (file size) end the recording on their own: the file
    is finalised, every peer connection closed, ``on_stopped(info)`` called (sync or async) and
    :meth:`wait_stopped` / :meth:`stop` return the info with ``reason`` ``"max_duration"`` or
    ``"max_bytes"``. ``ice_servers`` defaults to none (host candidates only: no STUN lookups).
    Peers may connect before :meth:`start`; their audio is recorded from ``start`` on.
    """

    def __init__(self, *, max_duration: float | None = None, max_bytes: int | None = None,
                 bitrate: int = 64000, ice_servers: list[RTCIceServer] | None = None,
                 on_stopped: OnStopped | None = None):
        if max_duration is not None and max_duration <= 0:
            raise ValueError("max_duration must be positive")
        if max_bytes is not None and max_bytes < 4096:
            raise ValueError("max_bytes must be at least 4096")
        self.max_duration = max_duration
        self.max_bytes = max_bytes
        self.bitrate = bitrate
        self._ice_servers = list(ice_servers or [])
        self._on_stopped = on_stopped
        self._mixer = AudioMixer()
        self._peers: dict[str, _Peer] = {}
        self._path: Path | None = None
        self._container: Any = None
        self._stream: Any = None
        self._writer: asyncio.Task[None] | None = None
        self._samples = 0
        self._payload = 0
        self._packets = 0
        self._started_at: datetime | None = None
        self._finished: asyncio.Future[RecordingInfo | None] | None = None
        self._done = asyncio.Event()

    # ---------------------------------------------------------------- state

    @property
    def recording(self) -> bool:
        return self._writer is not None and self._finished is None

    @property
    def peers(self) -> set[str]:
        return set(self._peers)

    @property
    def position(self) -> float:
        """Seconds of audio written so far (the position in the file)."""
        return self._samples / SAMPLE_RATE

    def _check_open(self) -> None:
        if self._finished is not None:
            raise XtError("conflict.state", "The recording has ended.")

    # ---------------------------------------------------------------- recording

    async def start(self, path: str | os.PathLike[str]) -> None:
        """Open ``path`` (an ``.m4a`` file, overwritten) and start recording in real time."""
        self._check_open()
        if self._writer is not None:
            raise XtError("conflict.state", "The recording has already started.")
        self._path = Path(path)
        container = av.open(str(self._path), mode="w", format="ipod", options={"movflags": "+faststart"})
        try:
            stream = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
            stream.bit_rate = self.bitrate
        except Exception:
            container.close()
            raise
        self._container, self._stream = container, stream
        self._started_at = datetime.now(timezone.utc)
        self._writer = asyncio.ensure_future(self._write_loop())

    def _estimated_size(self) -> int:
        # Encoded payload, plus the MP4 index (~700 bytes, plus sample size and chunk offset
        # tables: under 8 bytes a packet), plus what the encoder still holds for the final flush.
        per_packet = self.bitrate / 8 * 1024 / SAMPLE_RATE
        return self._payload + 1024 + 8 * self._packets + int(3 * per_packet)

    def _mux(self, packets: list[Any]) -> None:
        for packet in packets:
            self._payload += packet.size
            self._packets += 1
            self._container.mux(packet)

    async def _write_loop(self) -> None:
        max_samples = None if self.max_duration is None else round(self.max_duration * SAMPLE_RATE)
        reason = ERROR
        try:
            while True:
                frame = await self._mixer.recv()
                if max_samples is not None and self._samples + frame.samples > max_samples:
                    reason = MAX_DURATION
                    break
                self._mux(self._stream.encode(frame))
                self._samples += frame.samples
                if self.max_bytes is not None and self._estimated_size() >= self.max_bytes:
                    reason = MAX_BYTES
                    break
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("recorder: writing %s failed", self._path)
        if reason != ERROR:
            log.info("recorder: %s reached after %.1f s; stopping", reason, self.position)
        await self._finish(reason)

    async def stop(self) -> RecordingInfo | None:
        """Stop recording, finalise the file and close every peer connection. Idempotent: later calls
        (and concurrent ones) return the same info. Returns None if :meth:`start` was never called."""
        return await self._finish(STOPPED)

    async def wait_stopped(self) -> RecordingInfo | None:
        """Wait until the recording ends (stop() or a limit) and return its info."""
        await self._done.wait()
        assert self._finished is not None
        return self._finished.result()

    async def _finish(self, reason: str) -> RecordingInfo | None:
        if self._finished is not None:
            return await asyncio.shield(self._finished)
        self._finished = asyncio.get_running_loop().create_future()
        info: RecordingInfo | None = None
        try:
            writer = self._writer
            if writer is not None and writer is not asyncio.current_task():
                writer.cancel()
                try:
                    await writer
                except asyncio.CancelledError:
                    pass
            peers, self._peers = self._peers, {}
            self._mixer.stop()
            await asyncio.gather(*(p.pc.close() for p in peers.values()), return_exceptions=True)
            if self._container is not None:
                try:
                    self._mux(self._stream.encode(None))
                except Exception:
                    log.exception("recorder: flushing %s failed", self._path)
                    reason = ERROR
                try:
                    await asyncio.to_thread(self._container.close)  # +faststart rewrites the file
                except Exception:
                    log.exception("recorder: finalising %s failed", self._path)
                    reason = ERROR
                self._container = None
                assert self._path is not None and self._started_at is not None
                size = self._path.stat().st_size if self._path.exists() else 0
                info = RecordingInfo(path=self._path, bytes=size, duration_seconds=self.position,
                                     started_at=self._started_at, ended_at=datetime.now(timezone.utc),
                                     reason=reason)
        finally:
            self._finished.set_result(info)
            self._done.set()
        if info is not None and self._on_stopped is not None:
            try:
                result = self._on_stopped(info)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("recorder: on_stopped callback failed")
        return info

    # ---------------------------------------------------------------- peers

    def _new_peer(self, peer_id: str) -> _Peer:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
        entry = _Peer(pc)
        self._peers[peer_id] = entry

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self._peers.get(peer_id) is entry:
                key = (peer_id, track.id)
                entry.track_keys.add(key)
                self._mixer.add_source(key, track)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and self._peers.get(peer_id) is entry:
                log.info("recorder: peer %s connection %s", peer_id, pc.connectionState)
                await self.remove_peer(peer_id)

        return entry

    @staticmethod
    def _receive_only(pc: RTCPeerConnection) -> None:
        for transceiver in pc.getTransceivers():
            transceiver.direction = "recvonly" if transceiver.kind == "audio" else "inactive"

    def _bad_sdp(self, peer_id: str, exc: Exception) -> XtError:
        log.info("recorder: bad SDP from %s: %r", peer_id, exc)
        return XtError("meeting.bad_sdp", details={"peer_id": peer_id,
                                                   "reason": (str(exc) or type(exc).__name__)[:200]})

    async def accept_offer(self, peer_id: str, offer_sdp: str) -> str:
        """Answer a participant's offer; returns the answer SDP (with all of our candidates).
        A new offer from a connected peer renegotiates its existing connection."""
        self._check_open()
        if not isinstance(offer_sdp, str) or not offer_sdp.strip():
            raise XtError("meeting.bad_sdp", "The offer is empty.", details={"peer_id": peer_id})
        try:
            check_sdp(offer_sdp)
        except Exception as exc:
            raise self._bad_sdp(peer_id, exc) from exc
        entry = self._peers.get(peer_id)
        fresh = entry is None or entry.pc.connectionState in ("failed", "closed")
        if fresh:
            if entry is not None:
                await self.remove_peer(peer_id)
            entry = self._new_peer(peer_id)
        assert entry is not None
        pc = entry.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            self._receive_only(pc)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            if fresh:
                await self.remove_peer(peer_id)
            raise self._bad_sdp(peer_id, exc) from exc
        if self._finished is not None:  # stop() ran while we negotiated
            await pc.close()
            raise XtError("conflict.state", "The recording has ended.")
        return pc.localDescription.sdp

    async def create_offer(self, peer_id: str) -> str:
        """Offer to a participant (one receive-only audio m-line); pass its answer to
        :meth:`accept_answer`. Replaces any existing connection with this peer."""
        self._check_open()
        if peer_id in self._peers:
            await self.remove_peer(peer_id)
        entry = self._new_peer(peer_id)
        entry.pc.addTransceiver("audio", direction="recvonly")
        await entry.pc.setLocalDescription(await entry.pc.createOffer())
        if self._finished is not None:
            await entry.pc.close()
            raise XtError("conflict.state", "The recording has ended.")
        return entry.pc.localDescription.sdp

    async def accept_answer(self, peer_id: str, answer_sdp: str) -> None:
        """Apply a participant's answer to :meth:`create_offer`."""
        self._check_open()
        entry = self._peers.get(peer_id)
        if entry is None:
            raise XtError("not_found", "The recorder has no connection with this peer.",
                          details={"peer_id": peer_id})
        if not isinstance(answer_sdp, str) or not answer_sdp.strip():
            raise XtError("meeting.bad_sdp", "The answer is empty.", details={"peer_id": peer_id})
        try:
            check_sdp(answer_sdp)
            await entry.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        except Exception as exc:
            raise self._bad_sdp(peer_id, exc) from exc

    async def add_candidate(self, peer_id: str, candidate: dict[str, Any] | str | None) -> None:
        """Add a trickled remote ICE candidate: the browser's ``RTCIceCandidate.toJSON()``
        (``{"candidate", "sdpMid", "sdpMLineIndex"}``) or the bare ``candidate:...`` line. An empty
        candidate (end of candidates) is accepted and ignored."""
        self._check_open()
        entry = self._peers.get(peer_id)
        if entry is None:
            raise XtError("not_found", "The recorder has no connection with this peer.",
                          details={"peer_id": peer_id})
        if isinstance(candidate, dict):
            line = candidate.get("candidate")
            mid, index = candidate.get("sdpMid"), candidate.get("sdpMLineIndex")
        else:
            line, mid, index = candidate, None, None
        if not line:
            return
        try:
            if not isinstance(line, str):
                raise ValueError("candidate must be a string")
            parsed = candidate_from_sdp(line.split(":", 1)[1] if line.startswith("candidate:") else line)
            if mid is None and index is None:
                index = 0
            parsed.sdpMid = mid
            parsed.sdpMLineIndex = index
            await entry.pc.addIceCandidate(parsed)
        except Exception as exc:
            raise self._bad_sdp(peer_id, exc) from exc

    async def remove_peer(self, peer_id: str) -> None:
        """Drop a participant (it left): its audio leaves the mix and its connection is closed.
        Unknown peers are ignored."""
        entry = self._peers.pop(peer_id, None)
        if entry is None:
            return
        for key in entry.track_keys:
            self._mixer.remove_source(key)
        await entry.pc.close()
