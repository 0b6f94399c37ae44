"""Meetings through the SFU: the service speaks Janus VideoRoom (:mod:`.janus`) for the participants.

* The meeting's room lives on one Janus instance, picked by the pool when the first participant
  publishes; its place (``{"url", "room"}``) is written into the meeting's live document, so every
  signaling process uses the same instance and room. The room number is derived from the meeting id.
* Each participant has, on the process that holds its socket, a **publisher** handle (its offer in,
  Janus's answer out) and a **subscriber** handle (Janus's offer for the feeds it asked for out, its
  answer in). Its feed id is recorded in the live document so others can subscribe by participant id.
* Handles are detached when the participant leaves, drops or is removed; the room is destroyed when
  the meeting ends or empties.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING, Any

from xietong.server.errors import XtError

if TYPE_CHECKING:
    from .meetings import Meetings
    from .service import Connection

log = logging.getLogger("xietong.signaling.sfu")


def room_number(meeting_id: str) -> int:
    """A stable Janus room number for a meeting (below 2^53: JSON-safe everywhere)."""
    return int(hashlib.sha256(meeting_id.encode()).hexdigest()[:13], 16)


async def _room(meetings: "Meetings", live: dict[str, Any]) -> tuple[Any, int]:
    pool = meetings.janus
    room_id = room_number(live["id"])
    placed = live.get("sfu")
    if placed is None:
        lock = meetings.sfu_locks.setdefault(live["id"], asyncio.Lock())
        async with lock:  # participants publishing at once on this process: one creates the room
            placed = await _placement(meetings, live["id"])
            for _ in range(50):
                if placed is not None:
                    break
                try:
                    await pool.create_room(room_id, publishers=max(2, min(int(live["cap"]), 100)))
                except XtError as exc:
                    if exc.code != "conflict.exists":
                        raise
                    await asyncio.sleep(0.1)  # another process created it: its placement is on its way
                    placed = await _placement(meetings, live["id"])
                    continue
                instance = pool.instance_for(room_id)

                def place(d: dict[str, Any], key: str) -> dict[str, Any] | None:
                    current = d[key]
                    if current is not None and current.get("sfu") is None:
                        current["sfu"] = {"url": instance.url, "room": room_id}
                    return current.get("sfu") if current else None

                _, placed = await meetings._change(live["id"], place)
                if placed is None:
                    raise XtError("meeting.ended", "The meeting ended.")
            if placed is None:
                raise XtError("meeting.sfu_unavailable", "The meeting's SFU room could not be placed.")
    for instance in pool.instances:
        if instance.url == placed["url"]:
            if not instance.connected:
                await instance.connect()
            return instance, int(placed["room"])
    raise XtError("meeting.sfu_unavailable", "The meeting's media server is not configured on this process.")


async def _placement(meetings: "Meetings", meeting_id: str) -> dict[str, Any] | None:
    live = await meetings.service.state.get(f"meeting:{meeting_id}")
    return live.get("sfu") if live else None


async def publish(meetings: "Meetings", live: dict[str, Any], conn: "Connection", offer_sdp: str) -> str:
    instance, room_id = await _room(meetings, live)
    handles = meetings._sfu.setdefault((live["id"], conn.device_id), {})
    if "publisher" not in handles:
        handles["publisher"] = await instance.join_as_publisher(
            room_id, conn.device_id, on_event=_forward(meetings, live["id"], conn.device_id, "publisher"))
    answer = await instance.publish(handles["publisher"], offer_sdp, trickle=_trickles(offer_sdp))
    feed = handles["publisher"].feed_id
    audio_mid = _audio_mid(offer_sdp)

    def record(d: dict[str, Any], key: str) -> bool:
        x = (d[key] or {}).get("participants", {}).get(conn.device_id)
        if x is None:
            return False
        x["feed"], x["audio_mid"] = feed, audio_mid
        # Muted by the host before (re)publishing: the new feed's audio is cut at the SFU too.
        return bool(d[key]["mute_all"] and not d[key]["allow_unmute"] and not x["state"]["mic"])

    _, muted = await meetings._change(live["id"], record)
    if muted and audio_mid is not None:
        await instance.moderate(room_id, feed, audio_mid, mute=True)
    return answer


def _audio_mid(sdp: str) -> str | None:
    """The mid of the first audio section of an SDP (Janus keeps the publisher's mids)."""
    in_audio = False
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("m="):
            in_audio = line.startswith("m=audio")
        elif in_audio and line.startswith("a=mid:"):
            return line[6:].strip()
    return None


def _trickles(sdp: str) -> bool:
    """Whether the client will trickle candidates: not when its SDP already holds them all."""
    return "a=end-of-candidates" not in sdp


def _forward(meetings: "Meetings", meeting_id: str, device_id: str, target: str) -> Any:
    """Candidates Janus trickles (a full-trickle Janus) go to the participant's device."""
    async def on_event(event: Any) -> None:
        if event.kind == "webrtcup" and target == "publisher":
            # The feed is live in Janus: now others can subscribe to it (join results list it as publishing).
            def mark(d: dict[str, Any], key: str) -> None:
                x = (d[key] or {}).get("participants", {}).get(device_id)
                if x is not None:
                    x["publishing"] = True

            live, _ = await meetings._change(meeting_id, mark)
            if live is not None:
                await meetings._broadcast(live, {"type": "sfu.feed_added", "participant_id": device_id},
                                          exclude=device_id, statuses=("joined",))
        elif event.kind == "trickle":
            await meetings.service.to_device(device_id, {"type": "sfu.candidate", "meeting_id": meeting_id,
                                                         "target": target, "candidate": event.candidate})
        elif event.kind == "updated" and event.jsep is not None and target == "subscriber":
            # Janus changed the subscription by itself (a feed was unpublished): answer with sfu.answer.
            await meetings.service.to_device(device_id, {"type": "sfu.offer", "meeting_id": meeting_id,
                                                         "description": {"type": "offer",
                                                                         "sdp": event.jsep["sdp"]}})
        elif event.kind in ("hangup", "sfu_lost"):
            await meetings.service.to_device(device_id, {"type": "sfu.lost", "meeting_id": meeting_id,
                                                         "target": target, "reason": event.kind})

    return on_event


async def subscribe(meetings: "Meetings", live: dict[str, Any], conn: "Connection", pids: list[str]) -> str:
    feeds = []
    for pid in pids:
        x = live["participants"].get(pid)
        if x is None or x.get("feed") is None or pid == conn.device_id:
            raise XtError("not_found", "That participant publishes nothing (yet).", details={"participant_id": pid})
        feeds.append(x["feed"])
    instance, room_id = await _room(meetings, live)
    handles = meetings._sfu.setdefault((live["id"], conn.device_id), {})
    old = handles.pop("subscriber", None)
    if old is not None:  # a new set of feeds: a new subscription (the client replaces its peer connection)
        await old.instance.detach(old)
    handle, offer = await instance.subscribe(room_id, feeds, private_id=getattr(handles.get("publisher"),
                                                                                   "private_id", None),
                                             on_event=_forward(meetings, live["id"], conn.device_id, "subscriber"))
    handles["subscriber"] = handle
    return offer


async def start_subscription(meetings: "Meetings", live: dict[str, Any], conn: "Connection", answer_sdp: str) -> None:
    handle = meetings._sfu.get((live["id"], conn.device_id), {}).get("subscriber")
    if handle is None:
        raise XtError("conflict.state", "Subscribe first (sfu.subscribe).")
    await handle.instance.start(handle, answer_sdp, trickle=_trickles(answer_sdp))


async def trickle(meetings: "Meetings", live: dict[str, Any], conn: "Connection", target: str,
                  candidate: dict[str, Any] | None) -> None:
    handle = meetings._sfu.get((live["id"], conn.device_id), {}).get(target)
    if handle is None:
        raise XtError("conflict.state", f"No {target} connection to the SFU yet.")
    await handle.instance.trickle(handle, candidate)


async def mute_feeds(meetings: "Meetings", meeting_id: str, pids: list[str], *, mute: bool = True) -> None:
    """Cut (or restore) these participants' audio at the SFU: Janus stops relaying it to everyone,
    whatever their clients send."""
    live = await meetings.service.state.get(f"meeting:{meeting_id}")
    if live is None or live.get("sfu") is None:
        return
    instance, room_id = await _room(meetings, live)
    for pid in pids:
        x = live["participants"].get(pid)
        if x is not None and x.get("feed") is not None and x.get("audio_mid") is not None:
            await instance.moderate(room_id, x["feed"], x["audio_mid"], mute=mute)


async def detach(handles: dict[str, Any]) -> None:
    for role in ("subscriber", "publisher"):
        handle = handles.get(role)
        if handle is not None:
            await handle.instance.leave(handle) if role == "publisher" else await handle.instance.detach(handle)


async def release(meetings: "Meetings", meeting_id: str) -> None:
    """Destroy the meeting's room if this process's pool placed it."""
    pool = meetings.janus
    room_id = room_number(meeting_id)
    try:
        pool.instance_for(room_id)
    except (KeyError, XtError):
        return
    await pool.destroy_room(room_id)
