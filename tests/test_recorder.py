"""The meeting recorder with real aiortc participants on loopback: tones in, one mixed M4A out.

Each participant sends a tone of its own frequency; the decoded file is checked with the Goertzel
algorithm (the amplitude of one frequency over a window), so we know whose audio is in which part.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from pathlib import Path

import av
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.rtc_support import ColourTrack, ToneTrack, loopback_only, peer
from xietong.server.errors import XtError
from xietong.signaling.recorder import Recorder, RecordingInfo

RATE = 48000
WINDOW = RATE // 2  # 0.5 s: a whole number of periods of 440, 550 and 660 Hz


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    loopback_only(monkeypatch)


async def connected(pc: RTCPeerConnection, timeout: float = 5.0) -> None:
    async def reach() -> None:
        while pc.connectionState != "connected":
            await asyncio.sleep(0.01)

    await asyncio.wait_for(reach(), timeout)


async def offer_to(recorder: Recorder, peer_id: str, hz: float, *, video: bool = False) -> RTCPeerConnection:
    """A participant that offers its tone (and optionally video) to the recorder."""
    pc = peer()
    pc.addTrack(ToneTrack(hz))
    if video:
        pc.addTrack(ColourTrack(200))
    await pc.setLocalDescription(await pc.createOffer())
    answer = await recorder.accept_offer(peer_id, pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await connected(pc)
    return pc


async def answer_to(recorder: Recorder, peer_id: str, hz: float) -> RTCPeerConnection:
    """A participant that the recorder offers to."""
    pc = peer()
    offer = await recorder.create_offer(peer_id)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    pc.addTrack(ToneTrack(hz))
    await pc.setLocalDescription(await pc.createAnswer())
    await recorder.accept_answer(peer_id, pc.localDescription.sdp)
    await connected(pc)
    return pc


def decode(path: Path) -> tuple[float, list[int]]:
    """(container duration in seconds, the samples as 48 kHz mono s16); checks there is one audio stream."""
    with av.open(str(path)) as container:
        assert len(container.streams) == 1
        assert len(container.streams.audio) == 1
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac"
        duration = container.duration / av.time_base
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        pcm = bytearray()
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                pcm += bytes(out.planes[0])[: out.samples * 2]
        for out in resampler.resample(None):
            pcm += bytes(out.planes[0])[: out.samples * 2]
    samples = memoryview(bytes(pcm)).cast("h").tolist()
    return duration, samples


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def tone(samples: list[int], hz: float, start: float) -> float:
    """Goertzel: the amplitude of ``hz`` in the 0.5 s window starting at ``start`` seconds."""
    window = samples[int(start * RATE): int(start * RATE) + WINDOW]
    assert len(window) == WINDOW, "window outside the recording"
    coeff = 2 * math.cos(2 * math.pi * hz / RATE)
    s1 = s2 = 0.0
    for x in window:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / WINDOW


def assert_tones(samples: list[int], start: float, present: list[float], absent: list[float]) -> None:
    amplitudes = {hz: tone(samples, hz, start) for hz in [*present, *absent, 550.0]}
    noise = amplitudes[550.0]  # between the tones: what is there without a tone
    for hz in present:
        assert amplitudes[hz] > 1000 and amplitudes[hz] > 10 * noise, (start, amplitudes)
    for hz in absent:
        assert amplitudes[hz] < 200, (start, amplitudes)


async def test_two_participants_are_mixed_into_one_audio_file(tmp_path: Path) -> None:
    recorder = Recorder()
    path = tmp_path / "meeting.m4a"
    began = time.monotonic()
    await recorder.start(path)
    a = await offer_to(recorder, "alice", 440, video=True)  # her video is refused, not recorded
    b = await offer_to(recorder, "bob", 660)
    assert recorder.peers == {"alice", "bob"}
    await asyncio.sleep(1.2)
    both_from = recorder.position - 0.8
    info = await recorder.stop()
    elapsed = time.monotonic() - began

    assert isinstance(info, RecordingInfo) and info.reason == "stopped"
    assert info.path == path and path.exists() and info.bytes == path.stat().st_size > 0
    assert abs(info.duration_seconds - elapsed) < 0.5
    assert info.started_at < info.ended_at
    duration, samples = decode(path)
    assert abs(duration - elapsed) < 0.5
    assert abs(duration - info.duration_seconds) < 0.1
    assert rms(samples[int(both_from * RATE):]) > 1000
    assert_tones(samples, both_from, present=[440, 660], absent=[])

    # The recorder closed its side: the participants see their connections end.
    for pc in (a, b):
        for _ in range(100):
            if pc.connectionState in ("closed", "failed"):
                break
            await asyncio.sleep(0.02)
        assert pc.connectionState in ("closed", "failed")
        await pc.close()

    assert await recorder.stop() == info  # stopping twice is harmless
    with pytest.raises(XtError) as refused:
        await recorder.accept_offer("carol", "v=0")
    assert refused.value.code == "conflict.state"


async def test_leaving_and_garbage_do_not_break_the_recording(tmp_path: Path) -> None:
    recorder = Recorder()
    path = tmp_path / "meeting.m4a"
    await recorder.start(path)
    a = await offer_to(recorder, "alice", 440)
    b = await offer_to(recorder, "bob", 660)
    await asyncio.sleep(1.0)

    # Garbage from a third participant: a coded refusal; nobody else is affected.
    mallory = peer()
    mallory.addTrack(ToneTrack(550))
    await mallory.setLocalDescription(await mallory.createOffer())
    real = mallory.localDescription.sdp
    await mallory.close()
    no_fingerprint = "".join(line for line in real.splitlines(keepends=True) if "fingerprint" not in line)
    for garbage in ["hello", "", "v=0\r\n", real.replace("m=audio", "m=audio x"), no_fingerprint,
                    re.sub(r"(a=rtpmap:\d+ )[\w-]+", r"\1nonsense", real)]:  # no common codec
        with pytest.raises(XtError) as bad:
            await recorder.accept_offer("mallory", garbage)
        assert bad.value.code == "meeting.bad_sdp" and bad.value.status == 400, garbage
    assert recorder.peers == {"alice", "bob"}
    with pytest.raises(XtError) as bad:
        await recorder.add_candidate("alice", {"candidate": "candidate:nonsense", "sdpMid": "0"})
    assert bad.value.code == "meeting.bad_sdp"
    await recorder.add_candidate("alice", {"candidate": "", "sdpMid": "0"})  # end of candidates
    with pytest.raises(XtError) as unknown:
        await recorder.add_candidate("mallory", "candidate:1 1 udp 1 127.0.0.1 9 typ host")
    assert unknown.value.code == "not_found"

    # Bob leaves without a word (closes his connection); the recorder notices and drops him.
    left_at = recorder.position
    await b.close()
    for _ in range(200):
        if recorder.peers == {"alice"}:
            break
        await asyncio.sleep(0.01)
    assert recorder.peers == {"alice"}
    await recorder.remove_peer("bob")  # the service's leave event, after the fact: harmless
    await asyncio.sleep(1.0)
    info = await recorder.stop()
    await a.close()

    assert info is not None and info.reason == "stopped"
    duration, samples = decode(path)
    assert abs(duration - info.duration_seconds) < 0.1
    assert_tones(samples, left_at - 0.6, present=[440, 660], absent=[])
    assert_tones(samples, duration - 0.6, present=[440], absent=[660])


async def test_duration_limit_stops_the_recording_and_silence_keeps_the_timeline(tmp_path: Path) -> None:
    stopped: list[RecordingInfo] = []
    recorder = Recorder(max_duration=0.6, on_stopped=stopped.append)
    path = tmp_path / "quiet.m4a"
    await recorder.start(path)  # nobody joins: the file is 0.6 s of silence
    info = await asyncio.wait_for(recorder.wait_stopped(), 5)

    assert info is not None and info.reason == "max_duration"
    assert stopped == [info]
    assert info.duration_seconds == pytest.approx(0.6, abs=0.021)
    duration, samples = decode(path)
    assert duration == pytest.approx(0.6, abs=0.1)
    assert rms(samples) < 10
    assert await recorder.stop() == info
    assert not recorder.recording


async def test_size_limit_with_the_recorder_offering(tmp_path: Path) -> None:
    recorder = Recorder(max_bytes=8000)
    path = tmp_path / "capped.m4a"
    await recorder.start(path)
    a = await answer_to(recorder, "alice", 440)  # this time the recorder makes the offer
    assert recorder.peers == {"alice"}
    info = await asyncio.wait_for(recorder.wait_stopped(), 10)
    await a.close()

    assert info is not None and info.reason == "max_bytes"
    assert 4000 < info.bytes <= 8000
    assert recorder.peers == set()
    duration, samples = decode(path)
    assert abs(duration - info.duration_seconds) < 0.1
    assert_tones(samples, duration - 0.5, present=[440], absent=[660])
