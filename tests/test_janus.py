"""The Janus VideoRoom driver (xietong.signaling.janus) against a real private Janus, with real aiortc
peers publishing colour-coded video. Everything Janus-side goes through the driver only."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp
from janus_support import JanusServer, host_media_only, janus_server  # noqa: F401  (fixture)
from rtc_support import ColourTrack, FrameCounter, ToneTrack, peer

from xietong.server.errors import XtError
from xietong.server.store.embedded import free_port
from xietong.signaling.janus import JanusEvent, JanusHandle, JanusInstance, JanusPool, JanusRoom

LUMA_TOLERANCE = 10


@pytest.fixture
def media(monkeypatch: pytest.MonkeyPatch, janus_server: JanusServer) -> None:  # noqa: F811
    host_media_only(monkeypatch, janus_server.ice_address)


@pytest.fixture
async def janus(janus_server: JanusServer, media: None) -> AsyncIterator[JanusInstance]:  # noqa: F811
    instance = JanusInstance(janus_server.url, request_timeout=5.0)
    await instance.connect()
    try:
        yield instance
    finally:
        await instance.close()


async def apply_trickled(pc: RTCPeerConnection, handle: JanusHandle) -> int:
    """Add candidates Janus trickled on ``handle`` (a full-trickle Janus) to the aiortc peer; other
    events stay queued."""
    added, others = 0, []
    while not handle.events.empty():
        event = handle.events.get_nowait()
        if event.kind != "trickle":
            others.append(event)
        elif event.candidate is not None:
            line = event.candidate["candidate"]
            candidate = candidate_from_sdp(line.split(":", 1)[1] if line.startswith("candidate:") else line)
            candidate.sdpMid = event.candidate.get("sdpMid")
            candidate.sdpMLineIndex = event.candidate.get("sdpMLineIndex")
            await pc.addIceCandidate(candidate)
            added += 1
    for event in others:
        handle.events.put_nowait(event)
    return added


class Participant:
    """One meeting participant as the signaling service would run it: a publisher PeerConnection
    (offer → Janus's answer) and one subscriber PeerConnection for everybody else's feeds."""

    def __init__(self, janus: JanusInstance, room: Any, name: str, luma: int, *, audio: bool = False):
        self.janus, self.room, self.name, self.luma, self.audio = janus, room, name, luma, audio
        self.handle: JanusHandle | None = None
        self.sub: JanusHandle | None = None
        self.pub_pc: RTCPeerConnection | None = None
        self.sub_pc: RTCPeerConnection | None = None
        self.video: dict[Any, FrameCounter] = {}  # feed id → counter
        self.audio_in: dict[Any, FrameCounter] = {}
        self.tracks_changed = asyncio.Event()

    @property
    def feed(self) -> Any:
        assert self.handle is not None
        return self.handle.feed_id

    async def join_and_publish(self) -> None:
        self.handle = await self.janus.join_as_publisher(self.room, self.name)
        await self.publish()

    async def publish(self) -> None:
        """Publish on a fresh PeerConnection (Janus hangs the old one up on unpublish)."""
        assert self.handle is not None
        if self.pub_pc is not None:
            await self.pub_pc.close()
        self.pub_pc = peer()
        self.pub_pc.addTrack(ColourTrack(self.luma))
        if self.audio:
            self.pub_pc.addTrack(ToneTrack())
        await self.pub_pc.setLocalDescription(await self.pub_pc.createOffer())
        answer = await self.janus.publish(self.handle, self.pub_pc.localDescription.sdp, trickle=False)
        await self.pub_pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await apply_trickled(self.pub_pc, self.handle)

    async def subscribe(self, feeds: list[Any]) -> None:
        assert self.handle is not None
        self.sub, offer = await self.janus.subscribe(self.room, feeds, private_id=self.handle.private_id)
        self.sub_pc = peer()

        @self.sub_pc.on("track")
        def on_track(track: Any) -> None:
            assert self.sub_pc is not None and self.sub is not None
            mid = next(t.mid for t in self.sub_pc.getTransceivers() if t.receiver.track is track)
            feed = self.sub.feed_for_mid(mid)
            (self.video if track.kind == "video" else self.audio_in)[feed] = FrameCounter(track)
            self.tracks_changed.set()

        await self.answer(offer)

    async def answer(self, offer: str) -> None:
        assert self.sub_pc is not None and self.sub is not None
        await self.sub_pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await self.sub_pc.setLocalDescription(await self.sub_pc.createAnswer())
        await self.janus.start(self.sub, self.sub_pc.localDescription.sdp, trickle=False)
        await apply_trickled(self.sub_pc, self.sub)

    async def first_frame_from(self, feed: Any, timeout: float = 10.0) -> FrameCounter:
        deadline = time.monotonic() + timeout
        while feed not in self.video:
            self.tracks_changed.clear()
            await asyncio.wait_for(self.tracks_changed.wait(), max(0.01, deadline - time.monotonic()))
        counter = self.video[feed]
        await counter.wait(1, timeout=max(0.01, deadline - time.monotonic()))
        return counter

    async def close(self) -> None:
        for counter in [*self.video.values(), *self.audio_in.values()]:
            counter.stop()
        for pc in (self.pub_pc, self.sub_pc):
            if pc is not None:
                await pc.close()


async def next_event(room: JanusRoom, kinds: set[str], feed: Any = None, timeout: float = 5.0) -> JanusEvent:
    """The next room event of one of ``kinds`` (for ``feed``, if given); other events are skipped."""
    deadline = time.monotonic() + timeout
    while True:
        event = await asyncio.wait_for(room.events.get(), max(0.01, deadline - time.monotonic()))
        if event.kind in kinds and (feed is None or event.feed == feed):
            return event


async def next_handle_event(handle: JanusHandle, kind: str, timeout: float = 5.0) -> JanusEvent:
    deadline = time.monotonic() + timeout
    while True:
        event = await asyncio.wait_for(handle.events.get(), max(0.01, deadline - time.monotonic()))
        if event.kind == kind:
            return event


async def wait_published(room: JanusRoom, feeds: set[Any], timeout: float = 10.0) -> None:
    pending = set(feeds)
    while pending:
        event = await next_event(room, {"published"}, timeout=timeout)
        pending.discard(event.feed)


async def assert_receives(receiver: Participant, sender: Participant, frames: int = 3) -> None:
    counter = await receiver.first_frame_from(sender.feed)
    await counter.wait(frames, timeout=10)
    assert counter.luma is not None and abs(counter.luma - sender.luma) <= LUMA_TOLERANCE, (
        f"{receiver.name} got luma {counter.luma} on {sender.name}'s feed, expected {sender.luma}")


async def test_six_participants_each_see_the_five_others(janus: JanusInstance,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    room = await janus.create_room(1001, publishers=6, secret="room-secret-1001")
    people = [Participant(janus, room.id, f"p{i}", luma) for i, luma in enumerate((30, 65, 100, 135, 170, 205))]
    try:
        started = time.monotonic()
        await asyncio.gather(*(p.join_and_publish() for p in people))
        await wait_published(room, {p.feed for p in people})
        await asyncio.gather(*(p.subscribe([o.feed for o in people if o is not p]) for p in people))
        await asyncio.gather(*(assert_receives(p, o) for p in people for o in people if o is not p))
        elapsed = time.monotonic() - started
        for p in people:
            assert set(p.video) == {o.feed for o in people if o is not p}
        participants = await janus.list_participants(room.id)
        assert sorted(x["display"] for x in participants) == sorted(p.name for p in people)
        with capsys.disabled():
            print(f"\n[janus] 6 participants joined at once, 30 feeds decoded (luma checked) {elapsed * 1000:.0f} ms"
                  " after the first join")
    finally:
        for p in people:
            await p.close()


async def test_join_to_first_frame_leaving_and_destroy(janus: JanusInstance, capsys: pytest.CaptureFixture[str],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="xietong.signaling.janus")
    room = await janus.create_room(1002, publishers=4, secret="room-secret-1002", pin="room-pin-1002")
    host = Participant(janus, room.id, "host", 200, audio=True)
    guest = Participant(janus, room.id, "guest", 50)
    try:
        await host.join_and_publish()
        assert (await next_event(room, {"published"})).feed == host.feed

        # The SFU path as a newcomer sees it: join, publish, subscribe to the feeds already there.
        started = time.monotonic()
        await guest.join_and_publish()
        assert guest.handle is not None and [p["id"] for p in guest.handle.publishers] == [host.feed]
        await guest.subscribe([p["id"] for p in guest.handle.publishers])
        await guest.first_frame_from(host.feed)
        join_to_frame = time.monotonic() - started
        await assert_receives(guest, host)
        await guest.audio_in[host.feed].wait(5)  # the host's tone is relayed too

        event = await next_event(room, {"published"}, guest.feed)
        assert event.display == "guest" and {s["type"] for s in event.streams} == {"video"}
        # The service tells the host to subscribe to the newcomer.
        host_wait = time.monotonic()
        await host.subscribe([event.feed])
        await assert_receives(host, guest)
        with capsys.disabled():
            # Either figure is ~1 s longer when aiortc's first DTLS ClientHello on the subscriber connection
            # reaches Janus before Janus's side of ICE is up: aiortc (OpenSSL) retransmits only after 1 s.
            print(f"\n[janus] SFU join→first remote frame: {join_to_frame * 1000:.0f} ms "
                  f"(join + publish + subscribe + start + first decoded frame); an existing participant "
                  f"subscribing to the newcomer: {(time.monotonic() - host_wait) * 1000:.0f} ms to 3 frames")

        # The guest stops sending: the room reports it and Janus renegotiates the host's subscription
        # itself (an `updated` event with an offer, relayed to the client and answered with start()).
        assert host.sub is not None
        await janus.unpublish(guest.handle)
        assert (await next_event(room, {"unpublished"}, guest.feed)).feed == guest.feed
        updated = await next_handle_event(host.sub, "updated")
        assert updated.jsep is not None and updated.jsep["type"] == "offer"
        assert all(not s.get("active") for s in host.sub.streams)
        await host.answer(updated.jsep["sdp"])

        # The guest publishes again: the host adds the feed back to its subscription.
        await guest.publish()
        assert (await next_event(room, {"published"}, guest.feed)).display == "guest"
        offer = await janus.update_subscription(host.sub, subscribe=[guest.feed])
        assert offer is not None
        await host.answer(offer)
        await assert_receives(host, guest)

        # The guest leaves: the room reports it. Janus does not renegotiate subscribers of a feed whose
        # publisher left, so the service drops the feed from each subscription itself.
        await janus.leave(guest.handle)
        assert (await next_event(room, {"leaving"}, guest.feed)).feed == guest.feed
        assert guest.handle.detached
        offer = await janus.update_subscription(host.sub, unsubscribe=[guest.feed])
        assert offer is not None and all(not s.get("active") for s in host.sub.streams)
        await host.answer(offer)

        # The host's client vanishes without a word (its handle is detached): same notifications.
        assert host.handle is not None
        await janus.detach(host.handle)
        assert (await next_event(room, {"unpublished", "leaving"}, host.feed)).feed == host.feed
        assert await janus.list_participants(room.id) == []

        await janus.destroy_room(room.id)
        assert not await janus.room_exists(room.id)
        assert room.id not in janus.rooms
        await janus.destroy_room(room.id)  # idempotent
        with pytest.raises(XtError) as info:
            await janus.join_as_publisher(room.id, "late")
        assert info.value.code == "not_found"
    finally:
        await guest.close()
        await host.close()
    for secret in ("room-secret-1002", "room-pin-1002"):
        assert secret not in caplog.text


async def test_pool_skips_a_dead_instance_and_places_rooms(janus_server: JanusServer,  # noqa: F811
                                                           media: None) -> None:
    dead = f"http://127.0.0.1:{free_port()}/janus"  # nothing listens there
    pool = JanusPool([dead, janus_server.url], request_timeout=5.0, probe_timeout=1.0)
    try:
        room = await pool.create_room(2001, publishers=2)
        assert pool.rooms == {2001: janus_server.url}
        assert pool.instance_for(2001).url == janus_server.url and pool.room(2001) is room
        assert await pool.create_room(2001) is room  # already placed
        await pool.create_room(2002, publishers=2)
        assert pool.rooms[2002] == janus_server.url

        janus = pool.instance_for(2001)
        alice = Participant(janus, 2001, "alice", 90)
        bob = Participant(janus, 2001, "bob", 180)
        try:
            await alice.join_and_publish()
            await bob.join_and_publish()
            await wait_published(room, {alice.feed, bob.feed})
            await bob.subscribe([alice.feed])
            await assert_receives(bob, alice)
        finally:
            await alice.close()
            await bob.close()

        await pool.destroy_room(2002)
        assert 2002 not in pool.rooms and not await janus.room_exists(2002)
        with pytest.raises(XtError) as info:
            pool.instance_for(2002)
        assert info.value.code == "not_found"
    finally:
        await pool.close()
    checker = JanusInstance(janus_server.url)
    try:
        assert not await checker.room_exists(2001)  # the pool tore its rooms down
    finally:
        await checker.close()

    nothing = JanusPool([dead], probe_timeout=1.0)
    with pytest.raises(XtError) as info:
        await nothing.create_room(2003)
    assert info.value.code == "meeting.sfu_unavailable"
    await nothing.close()


async def test_bad_input_is_refused_with_codes_and_the_room_keeps_working(janus: JanusInstance) -> None:
    room = await janus.create_room(3001, publishers=3)
    with pytest.raises(XtError) as info:
        await janus.create_room(3001)
    assert info.value.code == "conflict.exists"
    alice = Participant(janus, room.id, "alice", 70)
    bob = Participant(janus, room.id, "bob", 160)
    mallory = Participant(janus, room.id, "mallory", 120)
    try:
        await alice.join_and_publish()
        await bob.join_and_publish()
        await wait_published(room, {alice.feed, bob.feed})
        await bob.subscribe([alice.feed])
        await assert_receives(bob, alice)

        handle = await janus.join_as_publisher(room.id, "mallory")
        for garbage in ("this is not SDP", "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"):
            with pytest.raises(XtError) as info:
                await janus.publish(handle, garbage)
            assert info.value.code == "meeting.bad_sdp", info.value.details
            assert info.value.status == 400 and "janus_code" in info.value.details
        with pytest.raises(XtError) as info:
            await janus.publish(handle, "")
        assert info.value.code == "meeting.bad_sdp"
        with pytest.raises(XtError) as info:
            await janus.subscribe(room.id, [])
        assert info.value.code == "request.invalid"
        with pytest.raises(XtError) as info:
            await janus.subscribe(room.id, [123456789])
        assert info.value.code == "not_found"
        with pytest.raises(XtError) as info:
            await janus.trickle(handle, {"sdpMid": "0"})
        assert info.value.code == "request.invalid"
        assert bob.sub is not None
        with pytest.raises(XtError) as info:
            await janus.start(bob.sub, "garbage answer")
        assert info.value.code == "meeting.bad_sdp"
        with pytest.raises(XtError) as info:
            await janus.publish(bob.sub, "v=0")  # a subscriber handle cannot publish
        assert info.value.code == "conflict.state"
        await janus.detach(handle)

        # The room still works: bob keeps receiving alice, and a newcomer can publish and be seen.
        counter = bob.video[alice.feed]
        before = counter.frames
        await counter.wait(before + 5, timeout=10)
        await mallory.join_and_publish()
        await next_event(room, {"published"}, mallory.feed)
        await alice.subscribe([bob.feed, mallory.feed])
        await assert_receives(alice, bob)
        await assert_receives(alice, mallory)

        # The publisher cap: a fourth publisher is refused with a code.
        extra = Participant(janus, room.id, "extra", 240)
        try:
            with pytest.raises(XtError) as info:
                await extra.join_and_publish()
            assert info.value.code == "meeting.full"
        finally:
            await extra.close()
    finally:
        for p in (alice, bob, mallory):
            await p.close()


async def test_full_trickle_candidates_arrive_as_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = JanusServer(tmp_path / "janus-trickle", full_trickle=True)
    try:
        server.start()
        host_media_only(monkeypatch, server.ice_address)
        janus = JanusInstance(server.url, request_timeout=5.0)
        try:
            room = await janus.create_room(4001, publishers=2)
            alice = Participant(janus, room.id, "alice", 110)
            bob = Participant(janus, room.id, "bob", 220)
            try:
                alice_handle = await janus.join_as_publisher(room.id, "alice")
                alice.handle = alice_handle
                alice.pub_pc = peer()
                alice.pub_pc.addTrack(ColourTrack(alice.luma))
                await alice.pub_pc.setLocalDescription(await alice.pub_pc.createOffer())
                answer = await janus.publish(alice_handle, alice.pub_pc.localDescription.sdp, trickle=False)
                assert "a=candidate" not in answer  # full trickle: Janus sends its candidates separately
                await alice.pub_pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
                deadline = time.monotonic() + 5
                added = 0
                while added == 0 and time.monotonic() < deadline:
                    added += await apply_trickled(alice.pub_pc, alice_handle)
                    await asyncio.sleep(0.02)
                assert added >= 1
                await janus.trickle(alice_handle, None)  # our end of candidates is accepted too
                await wait_published(room, {alice.feed})
                await bob.join_and_publish()
                await bob.subscribe([alice.feed])
                deadline = time.monotonic() + 5
                while alice.feed not in bob.video and time.monotonic() < deadline:
                    assert bob.sub_pc is not None and bob.sub is not None
                    await apply_trickled(bob.sub_pc, bob.sub)
                    await asyncio.sleep(0.02)
                await assert_receives(bob, alice)
            finally:
                await alice.close()
                await bob.close()
        finally:
            await janus.close()
    finally:
        server.stop()


async def test_lost_session_and_crash_are_reported_and_rooms_recreated(janus_server: JanusServer,  # noqa: F811
                                                                       media: None) -> None:
    pool = JanusPool([janus_server.url], request_timeout=2.0, keepalive_interval=0.3)
    lost: list[JanusInstance] = []
    try:
        room = await pool.create_room(5001, publishers=2, secret="room-secret-5001")
        janus = pool.instance_for(5001)
        janus.on_lost = lost.append
        handle = await janus.join_as_publisher(5001, "alice")

        # Janus forgets our session (as after a session timeout); the room itself lives on in Janus.
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{janus_server.url}/{janus.session_id}",
                                 json={"janus": "destroy", "transaction": "test"}) as resp:
                assert (await resp.json(content_type=None))["janus"] == "success"
        await next_event(room, {"sfu_lost"}, timeout=10)
        assert lost == [janus] and not janus.connected and 5001 not in janus.rooms
        await next_handle_event(handle, "sfu_lost", timeout=1)
        with pytest.raises(XtError) as info:
            pool.instance_for(5001)
        assert info.value.code == "meeting.sfu_unavailable"
        # The pool takes the room back on the same instance (it still exists in Janus) and follows it again.
        again = await pool.create_room(5001, publishers=2, secret="room-secret-5001")
        assert again is not room and again.instance is janus and janus.connected and pool.room(5001) is again
        bob = Participant(janus, 5001, "bob", 80)
        try:
            await bob.join_and_publish()
            await next_event(again, {"published"}, bob.feed)
        finally:
            await bob.close()

        # Janus crashes: the room is reported lost and nothing can be placed until it is back.
        janus_server.kill()
        await next_event(again, {"sfu_lost"}, timeout=10)
        with pytest.raises(XtError) as info:
            await pool.create_room(5002)
        assert info.value.code == "meeting.sfu_unavailable"
        janus_server.start()
        third = await pool.create_room(5001, publishers=2, secret="room-secret-5001")
        assert await third.instance.room_exists(5001)
    finally:
        await pool.close()


async def test_another_process_adopts_the_room(janus: JanusInstance, janus_server: JanusServer) -> None:  # noqa: F811
    room = await janus.create_room(6001, publishers=2, secret="room-secret-6001")
    other = JanusInstance(janus_server.url, request_timeout=5.0)  # a second signaling process
    try:
        with pytest.raises(XtError) as info:
            await other.adopt_room(6002)
        assert info.value.code == "not_found"
        followed = await other.adopt_room(6001, secret="room-secret-6001")
        alice = Participant(other, 6001, "alice", 140)
        try:
            await alice.join_and_publish()
            for r in (room, followed):  # both processes hear about the feed
                assert (await next_event(r, {"published"}, alice.feed)).display == "alice"
        finally:
            await alice.close()
    finally:
        await other.close()  # an adopted room is left alone
    assert await janus.room_exists(6001)
