"""Recording a meeting's audio with a server-side aiortc participant (:class:`.recorder.Recorder`).

The host starts it (``meeting.record`` ``start``): this process creates the recorder, gives it a
peer id (``rec_<meeting>``), subscribes to that peer's channel and tells everyone
``meeting.recording`` with the peer id. Each participant then sends the recorder an offer with its
audio through ``signal`` like to any mesh peer; the recorder answers. On ``stop`` (or when the
meeting ends or empties) the file is finished, listed on the meeting's definition and downloadable
by the host: ``GET /v1/recordings/<meeting id>/<file>`` with ``Authorization: Bearer <access token>``.

Files live under ``XT_DATA_DIR/recordings/<meeting id>/`` of the process that recorded (give
signaling replicas a shared volume there). M4A (AAC, mono 48 kHz): phones play it natively.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timezone
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from xietong.server.errors import XtError


if TYPE_CHECKING:
    from .meetings import Meetings
    from .service import Connection

log = logging.getLogger("xietong.signaling.recording")

MAX_RECORDING_SECONDS = 4 * 3600
_FILE = re.compile(r"^/v1/recordings/([A-Za-z0-9_]{1,64})/([0-9]{8}-[0-9]{6}\.m4a)$")


def peer_id(meeting_id: str) -> str:
    return f"rec_{meeting_id}"[:64]


async def start_recording(meetings: "Meetings", conn: "Connection", meeting_id: str) -> dict[str, Any]:
    from .recorder import Recorder

    if meeting_id in meetings.recorders:
        raise XtError("conflict.state", "The meeting is already being recorded.")
    rec_id = peer_id(meeting_id)

    def claim(live: dict[str, Any], _: Any) -> None:
        if live.get("recorder"):
            raise XtError("conflict.state", "The meeting is already being recorded.")
        if live["topology"] != "mesh":
            raise XtError("meeting.wrong_topology", "Recording is available for mesh meetings.")
        live["recorder"] = {"peer_id": rec_id, "by": conn.user_id, "started_at": time.time()}

    live, _ = await meetings._moderate(conn, meeting_id, None, claim)
    folder = meetings.recordings_dir / meeting_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + ".m4a")
    service = meetings.service

    async def stopped_by_limit(info: Any) -> None:
        if meetings.recorders.get(meeting_id) is recorder:
            await finish(meetings, meeting_id)

    recorder = Recorder(max_duration=MAX_RECORDING_SECONDS, on_stopped=stopped_by_limit)
    try:
        await recorder.start(path)
    except BaseException:  # the claim must not outlive a recorder that never started
        await meetings._change(meeting_id, _release)
        raise
    meetings.recorders[meeting_id] = recorder

    async def relay(frame: bytes) -> None:
        """Signals addressed to the recorder: offers get answers, candidates are applied."""
        message = json.loads(frame)
        if message.get("type") != "signal":
            return
        sender = message["from"]
        try:
            description = message.get("description")
            if description and description["type"] == "offer":
                answer = await recorder.accept_offer(sender, description["sdp"])
                await service.to_device(sender, {"type": "signal", "from": rec_id, "from_user": "recorder",
                                                 "meeting_id": meeting_id,
                                                 "description": {"type": "answer", "sdp": answer}})
            elif message.get("candidate"):
                await recorder.add_candidate(sender, message["candidate"])
        except XtError as exc:
            await service.to_device(sender, {"type": "error", "id": None, **exc.to_body()})

    service.local_channels[rec_id] = relay
    await service.state.subscribe([f"device:{rec_id}"])
    await meetings._broadcast(live, {"type": "meeting.recording", "recording": True, "peer_id": rec_id,
                                     "by": conn.user_id})
    return {"recording": True, "peer_id": rec_id}


async def stop_recording(meetings: "Meetings", conn: "Connection", meeting_id: str) -> dict[str, Any]:
    def check(live: dict[str, Any], _: Any) -> None:
        if not live.get("recorder"):
            raise XtError("conflict.state", "The meeting is not being recorded.")

    await meetings._moderate(conn, meeting_id, None, check)
    if meeting_id not in meetings.recorders:
        raise XtError("conflict.state", "The recording runs on another signaling process; stop it there.")
    entry = await finish(meetings, meeting_id)
    return {"recording": False, **(entry or {})}


async def finish(meetings: "Meetings", meeting_id: str) -> dict[str, Any] | None:
    """Stop this process's recorder of the meeting, list the file, tell the participants."""
    recorder = meetings.recorders.pop(meeting_id, None)
    if recorder is None:
        return None
    service = meetings.service
    rec_id = peer_id(meeting_id)
    service.local_channels.pop(rec_id, None)
    await service.state.unsubscribe([f"device:{rec_id}"])
    info = await recorder.stop()
    live, _ = await meetings._change(meeting_id, _release)
    if info is None:
        return None
    entry = {"file": info.path.name, "bytes": info.bytes, "duration_seconds": round(info.duration_seconds, 2),
             "started_at": info.started_at, "ended_at": info.ended_at, "reason": info.reason,
             "download_path": f"/v1/recordings/{meeting_id}/{info.path.name}"}
    await meetings.col.update_one({"_id": meeting_id}, {"$push": {"recordings": entry}})
    if live is not None:
        await meetings._broadcast(live, {"type": "meeting.recording", "recording": False,
                                         "file": entry["download_path"]})
    return {**entry, "started_at": info.started_at.isoformat(), "ended_at": info.ended_at.isoformat()}


def _release(d: dict[str, Any], key: str) -> None:
    """The meeting is no longer being recorded (a change for ``Meetings._change``)."""
    if d[key] is not None:
        d[key].pop("recorder", None)


async def download(meetings: "Meetings", headers: Any, path: str) -> Any:
    from .service import _json_response

    match = _FILE.match(path)
    try:
        if match is None:
            raise XtError("not_found", "No such recording.")
        claims = meetings.service.authenticate_header(headers)
        meeting_id, name = match.groups()
        doc = await meetings.col.find_one({"_id": meeting_id}, {"host_id": 1, "recordings": 1})
        entries = [r for r in (doc or {}).get("recordings", []) if r["file"] == name]
        if doc is None or not entries:
            raise XtError("not_found", "No such recording.")
        live = await meetings.service.state.get(f"meeting:{meeting_id}")
        hosts = {doc["host_id"]} | ({live["host"]} if live else set())
        if claims.user_id not in hosts:
            raise XtError("perm.forbidden", "Only the meeting's host downloads its recordings.")
        file = meetings.recordings_dir / meeting_id / name
        if not file.is_file():
            raise XtError("not_found", "The recording is on another signaling process's disk.")
        data = file.read_bytes()
    except XtError as exc:
        return _json_response(HTTPStatus(exc.status), exc.to_body())
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    return Response(200, "OK", Headers({"Content-Type": "audio/mp4", "Content-Length": str(len(data)),
                                        "Content-Disposition": f'attachment; filename="{name}"'}), data)
