"""Meetings: instant (from a group chat, with an invite card) or scheduled; roles, waiting room, lock,
participant state, host controls enforced here; mesh or SFU media; rejoin within a grace period.

* The **definition** (title, host, invitees, chat, schedule, settings) is stored in MongoDB, in the
  ``meetings`` collection that this service owns: it outlives processes.
* The **live state** (participants, roles, lock, mute-all, topology, SFU room) is a document
  ``meeting:<id>`` in :mod:`.state` (Redis when several signaling processes serve one meeting).

Who may join: the host, the invitees, and the active members of the meeting's chat. Participant
ids are device ids: a device that reconnects (Wi-Fi → 4G) within ``XT_MEETING_REJOIN_SECONDS`` gets
its place back — same id, role and state — so there is no ghost; after the grace it has left.

Topology: ``mesh`` (every pair of participants has a peer connection; the newcomer sends the
offers) up to ``XT_MESH_MAX_PARTICIPANTS``; ``sfu`` beyond (Janus VideoRoom, driven by this service).
An ``auto`` meeting starts as a mesh and moves to the SFU when a join would exceed the mesh size:
everyone gets ``meeting.topology`` and publishes to the SFU instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from xietong.server.access import Principal
from xietong.server.errors import XtError
from xietong.server.ids import new_id
from xietong.server.messaging.models import Card, CardButton, CardField, Message

from . import protocol as p

if TYPE_CHECKING:
    from .service import Connection, SignalingService

log = logging.getLogger("xietong.signaling.meetings")

MODERATORS = ("host", "cohost")
REMINDER_POLL_SECONDS = 15.0
SHANGHAI = timezone(timedelta(hours=8))


def _now() -> float:
    return time.time()


class Meetings:
    def __init__(self, service: "SignalingService", *, janus: Any, recordings_dir: Path):
        self.service = service
        self.janus = janus
        self.recordings_dir = recordings_dir
        self._grace: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._sfu: dict[tuple[str, str], Any] = {}  # (meeting, device) → this process's Janus handles
        self.sfu_locks: dict[str, asyncio.Lock] = {}
        self.recorders: dict[str, Any] = {}  # meeting id → Recorder running on this process
        self._reminders: asyncio.Task[None] | None = None

    @property
    def col(self) -> Any:
        return self.service.chat.store.db["meetings"]

    async def start(self) -> None:
        await self.col.create_index([("remind_at", 1)], sparse=True)
        self._reminders = asyncio.ensure_future(self._remind_forever())

    async def stop(self) -> None:
        if self._reminders:
            self._reminders.cancel()
        for task in self._grace.values():
            task.cancel()
        for meeting_id in list(self.recorders):
            await self._stop_recording(meeting_id)
        for handles in list(self._sfu.values()):
            await self._sfu_detach(handles)

    # ---- definitions -------------------------------------------------------------------------------

    async def create(self, conn: "Connection", frame: p.MeetingCreate) -> dict[str, Any]:
        chat = self.service.chat
        me = Principal(conn.user_id, conn.device_id)
        if frame.conversation_id is not None:
            await chat.conversations.membership(me, frame.conversation_id, active=True)
        invitees = sorted(set(frame.invitees) - {conn.user_id})
        if invitees:
            users = await chat.store.users.get_many(invitees)
            missing = [u for u in invitees if u not in users or users[u].status != "active"]
            if missing:
                raise XtError("not_found", "No such user.", details={"user_ids": missing[:20]})
        cap = min(frame.cap or self.service.settings.meeting_cap, self.service.settings.meeting_cap)
        if frame.topology == "mesh":
            cap = min(cap, self.service.settings.mesh_max)
        now = datetime.now(timezone.utc)
        meeting_id = new_id("meeting")
        scheduled = frame.scheduled_at.astimezone(timezone.utc) if frame.scheduled_at else None
        if scheduled is not None and scheduled < now - timedelta(minutes=5):
            raise XtError("request.invalid", "scheduled_at is in the past.")
        doc: dict[str, Any] = {
            "_id": meeting_id, "title": frame.title, "host_id": conn.user_id, "conversation_id": frame.conversation_id,
            "invitees": invitees, "scheduled_at": scheduled, "waiting_room": frame.waiting_room, "cap": cap,
            "topology": frame.topology, "created_at": now, "status": "scheduled" if scheduled else "open"}
        if scheduled is not None and frame.reminder_minutes is not None:
            doc["remind_at"] = scheduled - timedelta(minutes=frame.reminder_minutes)
        await self.col.insert_one(doc)
        link = self.join_link(meeting_id)
        if frame.conversation_id is not None:
            await chat.messages.send(me, frame.conversation_id, f"#meeting:{meeting_id}",
                                     Message(kind="card", card=self._card(doc, "会议邀请")))
        return {"meeting_id": meeting_id, "join_link": link, "cap": cap, "topology": frame.topology,
                "scheduled_at": scheduled.isoformat() if scheduled else None}

    def join_link(self, meeting_id: str) -> str:
        return f"{self.service.chat.settings.effective_public_url()}/meet/{meeting_id}"

    def _card(self, doc: dict[str, Any], heading: str) -> Card:
        fields = [CardField(label="主题", value=doc["title"])]
        if doc.get("scheduled_at"):
            when = doc["scheduled_at"]
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            fields.append(CardField(label="时间", value=when.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")))
        return Card(title=f"{heading}: {doc['title']}"[:128], fields=fields, app_id="meeting",
                    buttons=[CardButton(id=f"join:{doc['_id']}", text="加入会议", style="primary",
                                        url=self.join_link(doc["_id"]))])

    async def _definition(self, meeting_id: str) -> dict[str, Any]:
        doc = await self.col.find_one({"_id": meeting_id})
        if doc is None:
            raise XtError("not_found", "No such meeting.")
        return doc

    async def _invited(self, doc: dict[str, Any], user_id: str) -> bool:
        if user_id == doc["host_id"] or user_id in doc.get("invitees", []):
            return True
        if doc.get("conversation_id"):
            try:
                await self.service.chat.conversations.membership(Principal(user_id, None), doc["conversation_id"],
                                                                 active=True)
                return True
            except XtError:
                return False
        return False

    async def get(self, conn: "Connection", frame: p.MeetingGet) -> dict[str, Any]:
        doc = await self._definition(frame.meeting_id)
        if not await self._invited(doc, conn.user_id):
            raise XtError("meeting.not_invited")
        live = await self.service.state.get(f"meeting:{frame.meeting_id}")
        return {"meeting_id": doc["_id"], "title": doc["title"], "host_id": doc["host_id"],
                "status": doc["status"], "join_link": self.join_link(doc["_id"]),
                "scheduled_at": doc["scheduled_at"].isoformat() if doc.get("scheduled_at") else None,
                "live": self._public(live) if live else None}

    # ---- live state --------------------------------------------------------------------------------

    def _fresh(self, doc: dict[str, Any]) -> dict[str, Any]:
        return {"id": doc["_id"], "host": doc["host_id"], "cohosts": [], "locked": False,
                "waiting_room": bool(doc.get("waiting_room")), "cap": doc["cap"],
                "topology_mode": doc.get("topology", "auto"),
                "topology": "sfu" if doc.get("topology") == "sfu" else "mesh",
                "mute_all": False, "allow_unmute": True, "participants": {}, "removed": [], "ended": False}

    @staticmethod
    def _public(live: dict[str, Any]) -> dict[str, Any]:
        return {"host": live["host"], "cohosts": live["cohosts"], "locked": live["locked"],
                "topology": live["topology"], "mute_all": live["mute_all"], "allow_unmute": live["allow_unmute"],
                "cap": live["cap"], "recording": bool(live.get("recording")),
                "participants": [_participant_view(pid, x) for pid, x in live["participants"].items()]}

    def _prune(self, live: dict[str, Any], now: float) -> list[str]:
        """Participants whose rejoin grace has passed (their process may have died with the timer)."""
        grace = self.service.settings.rejoin_grace
        gone = [pid for pid, x in live["participants"].items()
                if x["status"] == "reconnecting" and now - x["since"] > grace]
        for pid in gone:
            del live["participants"][pid]
        return gone

    async def _change(self, meeting_id: str, change: Any) -> tuple[dict[str, Any] | None, Any]:
        key = f"meeting:{meeting_id}"
        docs, result = await self.service.state.update([key], lambda d: change(d, key))
        return docs[key], result

    def _role(self, live: dict[str, Any], user_id: str) -> str:
        return "host" if user_id == live["host"] else "cohost" if user_id in live["cohosts"] else "participant"

    def _actor(self, live: dict[str, Any] | None, conn: "Connection", *, host_only: bool = False) -> dict[str, Any]:
        if live is None or live["ended"]:
            raise XtError("meeting.ended" if live else "not_found", "The meeting is not running.")
        me = live["participants"].get(conn.device_id)
        if me is None or me["status"] != "joined":
            raise XtError("meeting.not_participant")
        role = self._role(live, conn.user_id)
        if role not in (("host",) if host_only else MODERATORS):
            raise XtError("perm.forbidden", "Only the host may do this." if host_only else
                          "Only the host and co-hosts may do this.")
        return me

    async def _broadcast(self, live: dict[str, Any], payload: dict[str, Any], *, exclude: str | None = None,
                         statuses: tuple[str, ...] = ("joined", "reconnecting")) -> None:
        frame = p.encode({**payload, "meeting_id": live["id"]})
        for pid, x in list(live["participants"].items()):
            if pid != exclude and x["status"] in statuses:
                await self.service.state.publish(f"device:{pid}", frame)

    # ---- join / leave ------------------------------------------------------------------------------

    async def join(self, conn: "Connection", frame: p.MeetingJoin) -> dict[str, Any]:
        doc = await self._definition(frame.meeting_id)
        if doc["status"] == "ended":
            raise XtError("meeting.ended")
        if not await self._invited(doc, conn.user_id):
            raise XtError("meeting.not_invited")
        user = await self.service.chat.store.users.get(conn.user_id)
        name = user.display_name if user else conn.user_id
        wanted = msgspec.to_builtins(frame.state) if frame.state else {}
        now = _now()
        mesh_max = self.service.settings.mesh_max

        def change(d: dict[str, Any], key: str) -> dict[str, Any]:
            live = d[key] or self._fresh(doc)
            d[key] = live
            if live["ended"]:
                raise XtError("meeting.ended")
            pruned = self._prune(live, now)
            parts = live["participants"]
            mine = parts.get(conn.device_id)
            if mine is not None:  # the same device again: its place, role and state are kept
                was = mine["status"]
                mine.update(status="joined" if was != "waiting" else "waiting", since=now)
                return {"kind": "rejoined", "was": was, "pruned": pruned}
            if conn.user_id in live["removed"]:
                raise XtError("perm.forbidden", "The host removed you from this meeting.")
            role = self._role(live, conn.user_id)
            if live["locked"] and role not in MODERATORS:
                raise XtError("meeting.locked")
            present = sum(1 for x in parts.values() if x["status"] in ("joined", "reconnecting"))
            if present >= live["cap"]:
                raise XtError("meeting.full", details={"cap": live["cap"]})
            switched = False
            if live["topology"] == "mesh" and present >= mesh_max:
                if live["topology_mode"] == "mesh":
                    raise XtError("meeting.full", details={"cap": mesh_max})
                live["topology"], switched = "sfu", True
            waiting = live["waiting_room"] and role not in MODERATORS
            state = {"mic": bool(wanted.get("mic", True)), "camera": bool(wanted.get("camera", True)),
                     "hand": False, "screen": False}
            if live["mute_all"] and not live["allow_unmute"] and role not in MODERATORS:
                state["mic"] = False
            parts[conn.device_id] = {"user_id": conn.user_id, "name": name, "state": state,
                                     "status": "waiting" if waiting else "joined", "since": now, "joined_at": now}
            return {"kind": "waiting" if waiting else "joined", "switched": switched, "pruned": pruned}

        live, outcome = await self._change(frame.meeting_id, change)
        assert live is not None
        conn.meetings.add(frame.meeting_id)
        self._cancel_grace(frame.meeting_id, conn.device_id)
        for pid in outcome.get("pruned", []):
            await self._broadcast(live, {"type": "meeting.participant_left", "participant_id": pid,
                                         "reason": "timeout"})
        me = live["participants"][conn.device_id]
        if doc["status"] == "scheduled":
            await self.col.update_one({"_id": doc["_id"], "status": "scheduled"}, {"$set": {"status": "open"}})
        if outcome["kind"] == "waiting":
            for pid, x in live["participants"].items():
                if self._role(live, x["user_id"]) in MODERATORS and x["status"] == "joined":
                    await self.service.to_device(pid, {"type": "meeting.waiting", "meeting_id": live["id"],
                                                       "participant": _participant_view(conn.device_id, me)})
            return {"participant_id": conn.device_id, "status": "waiting"}
        if outcome.get("switched"):
            await self._broadcast(live, {"type": "meeting.topology", "topology": "sfu"}, exclude=conn.device_id)
        if outcome["kind"] == "rejoined":
            await self._broadcast(live, {"type": "meeting.participant_reconnected",
                                         "participant": _participant_view(conn.device_id, me)},
                                  exclude=conn.device_id)
        else:
            await self._broadcast(live, {"type": "meeting.participant_joined",
                                         "participant": _participant_view(conn.device_id, me)},
                                  exclude=conn.device_id, statuses=("joined",))
        return {"participant_id": conn.device_id, "status": "joined", "role": self._role(live, conn.user_id),
                "rejoined": outcome["kind"] == "rejoined", **self._public(live),
                "ice_servers": self.service.ice_servers(conn.user_id)}

    async def leave(self, conn: "Connection", frame: p.MeetingLeave) -> dict[str, Any]:
        await self._depart(frame.meeting_id, conn.device_id, "left")
        conn.meetings.discard(frame.meeting_id)
        return {}

    async def _depart(self, meeting_id: str, pid: str, reason: str) -> None:
        now = _now()

        def change(d: dict[str, Any], key: str) -> dict[str, Any] | None:
            live = d[key]
            if live is None or pid not in live["participants"]:
                return None
            gone = live["participants"].pop(pid)
            new_host = None
            present = {q: x for q, x in live["participants"].items() if x["status"] in ("joined", "reconnecting")}
            if not present:
                d[key] = None  # nobody left: the meeting is idle (joinable again until it is ended)
                return {"gone": gone, "idle": True}
            if gone["user_id"] == live["host"] and not any(x["user_id"] == live["host"] for x in present.values()):
                # The host left: a co-host takes over, else whoever has been there longest.
                candidates = sorted(present.items(), key=lambda kv: (kv[1]["user_id"] not in live["cohosts"],
                                                                     kv[1]["joined_at"]))
                new_host = candidates[0][1]["user_id"]
                live["host"] = new_host
                live["cohosts"] = [c for c in live["cohosts"] if c != new_host]
            self._prune(live, now)
            return {"gone": gone, "idle": False, "new_host": new_host}

        live, outcome = await self._change(meeting_id, change)
        self._cancel_grace(meeting_id, pid)
        handles = self._sfu.pop((meeting_id, pid), None)
        if handles is not None:
            await self._sfu_detach(handles)
        if outcome is None:
            return
        if outcome["idle"]:
            await self._idle(meeting_id)
            return
        assert live is not None
        if outcome["gone"].get("feed") is not None:
            await self._broadcast(live, {"type": "sfu.feed_removed", "participant_id": pid})
        await self._broadcast(live, {"type": "meeting.participant_left", "participant_id": pid, "reason": reason})
        if outcome.get("new_host"):
            await self._broadcast(live, {"type": "meeting.host_changed", "host": outcome["new_host"]})

    async def _idle(self, meeting_id: str) -> None:
        self.sfu_locks.pop(meeting_id, None)
        if meeting_id in self.recorders:
            await self._stop_recording(meeting_id)
        if self.janus is not None:
            from .sfu import release

            try:
                await release(self, meeting_id)
            except Exception:
                log.exception("releasing the SFU room of %s failed", meeting_id)

    async def disconnected(self, conn: "Connection") -> None:
        """Keep the participant's place for the rejoin grace; then it has left."""
        now = _now()
        for meeting_id in list(conn.meetings):
            def change(d: dict[str, Any], key: str) -> dict[str, Any] | None:
                live = d[key]
                x = live["participants"].get(conn.device_id) if live else None
                if x is None or x["status"] != "joined":
                    if x is not None and x["status"] == "waiting":
                        del live["participants"][conn.device_id]  # type: ignore[index]
                    return None
                x.update(status="reconnecting", since=now)
                x.pop("publishing", None)  # its SFU handles go with the socket: it publishes again on rejoin
                return {"feed": x.pop("feed", None)}

            live, changed = await self._change(meeting_id, change)
            handles = self._sfu.pop((meeting_id, conn.device_id), None)
            if handles is not None:
                await self._sfu_detach(handles)
            if changed and live is not None:
                if changed["feed"] is not None:  # its SFU feed went with the socket
                    await self._broadcast(live, {"type": "sfu.feed_removed", "participant_id": conn.device_id},
                                          exclude=conn.device_id)
                await self._broadcast(live, {"type": "meeting.participant_reconnecting",
                                             "participant_id": conn.device_id}, exclude=conn.device_id)
                self._start_grace(meeting_id, conn.device_id)

    def _start_grace(self, meeting_id: str, pid: str) -> None:
        async def expire() -> None:
            await asyncio.sleep(self.service.settings.rejoin_grace)
            self._grace.pop((meeting_id, pid), None)
            live = await self.service.state.get(f"meeting:{meeting_id}")
            x = live["participants"].get(pid) if live else None
            if x is not None and x["status"] == "reconnecting":
                await self._depart(meeting_id, pid, "timeout")

        self._cancel_grace(meeting_id, pid)
        self._grace[(meeting_id, pid)] = asyncio.ensure_future(expire())

    def _cancel_grace(self, meeting_id: str, pid: str) -> None:
        task = self._grace.pop((meeting_id, pid), None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # ---- participant state and host controls -------------------------------------------------------

    async def update_state(self, conn: "Connection", frame: p.MeetingUpdateState) -> dict[str, Any]:
        wanted = msgspec.to_builtins(frame.state)

        def change(d: dict[str, Any], key: str) -> dict[str, Any]:
            live = d[key]
            if live is None or live["ended"]:
                raise XtError("meeting.ended" if live else "not_found")
            me = live["participants"].get(conn.device_id)
            if me is None or me["status"] != "joined":
                raise XtError("meeting.not_participant")
            if wanted.get("mic") and live["mute_all"] and not live["allow_unmute"] \
                    and self._role(live, conn.user_id) not in MODERATORS:
                raise XtError("meeting.muted_by_host")
            me["state"].update(wanted)
            return me

        live, me = await self._change(frame.meeting_id, change)
        assert live is not None
        await self._broadcast(live, {"type": "meeting.participant_updated",
                                     "participant": _participant_view(conn.device_id, me)})
        if wanted.get("mic") and live.get("sfu"):  # unmuted (allowed): restore the audio at the SFU
            await self._sfu_moderate(frame.meeting_id, [conn.device_id], mute=False)
        return {"state": me["state"]}

    async def _moderate(self, conn: "Connection", meeting_id: str, target: str | None, action: Any, *,
                        host_only: bool = False) -> tuple[dict[str, Any], Any]:
        def change(d: dict[str, Any], key: str) -> Any:
            live = d[key]
            self._actor(live, conn, host_only=host_only)
            x = None
            if target is not None:
                x = live["participants"].get(target)
                if x is None:
                    raise XtError("not_found", "No such participant.")
            return action(live, x)

        live, result = await self._change(meeting_id, change)
        assert live is not None
        return live, result

    async def mute(self, conn: "Connection", frame: p.MeetingMute) -> dict[str, Any]:
        def action(live: dict[str, Any], x: dict[str, Any]) -> dict[str, Any]:
            if self._role(live, x["user_id"]) == "host" and self._role(live, conn.user_id) != "host":
                raise XtError("perm.forbidden", "A co-host does not mute the host.")
            x["state"]["mic"] = False
            return x

        live, x = await self._moderate(conn, frame.meeting_id, frame.participant_id, action)
        await self.service.to_device(frame.participant_id, {"type": "meeting.muted", "meeting_id": live["id"],
                                                            "by": conn.user_id})
        await self._broadcast(live, {"type": "meeting.participant_updated",
                                     "participant": _participant_view(frame.participant_id, x)})
        await self._sfu_moderate(frame.meeting_id, [frame.participant_id])
        return {}

    async def mute_all(self, conn: "Connection", frame: p.MeetingMuteAll) -> dict[str, Any]:
        def action(live: dict[str, Any], _: Any) -> list[str]:
            live["mute_all"], live["allow_unmute"] = True, frame.allow_unmute
            muted = []
            for pid, x in live["participants"].items():
                if self._role(live, x["user_id"]) not in MODERATORS and x["state"]["mic"]:
                    x["state"]["mic"] = False
                    muted.append(pid)
            return muted

        live, muted = await self._moderate(conn, frame.meeting_id, None, action)
        await self._broadcast(live, {"type": "meeting.muted_all", "by": conn.user_id,
                                     "allow_unmute": frame.allow_unmute})
        for pid in muted:
            await self._broadcast(live, {"type": "meeting.participant_updated",
                                         "participant": _participant_view(pid, live["participants"][pid])})
        await self._sfu_moderate(frame.meeting_id, muted)
        return {"muted": muted}

    async def remove(self, conn: "Connection", frame: p.MeetingRemove) -> dict[str, Any]:
        def action(live: dict[str, Any], x: dict[str, Any]) -> dict[str, Any]:
            if self._role(live, x["user_id"]) == "host" or frame.participant_id == conn.device_id:
                raise XtError("perm.forbidden", "The host cannot be removed (transfer the host role first).")
            if self._role(live, x["user_id"]) == "cohost" and self._role(live, conn.user_id) != "host":
                raise XtError("perm.forbidden", "Only the host removes a co-host.")
            del live["participants"][frame.participant_id]
            live["removed"] = sorted(set(live["removed"]) | {x["user_id"]})
            return x

        live, x = await self._moderate(conn, frame.meeting_id, frame.participant_id, action)
        await self.service.to_device(frame.participant_id, {"type": "meeting.removed", "meeting_id": live["id"],
                                                            "by": conn.user_id})
        self._cancel_grace(frame.meeting_id, frame.participant_id)
        handles = self._sfu.pop((frame.meeting_id, frame.participant_id), None)
        if handles is not None:
            await self._sfu_detach(handles)
        if x.get("feed") is not None:
            await self._broadcast(live, {"type": "sfu.feed_removed", "participant_id": frame.participant_id})
        await self._broadcast(live, {"type": "meeting.participant_left", "participant_id": frame.participant_id,
                                     "reason": "removed"})
        return {}

    async def transfer_host(self, conn: "Connection", frame: p.MeetingTransferHost) -> dict[str, Any]:
        def action(live: dict[str, Any], x: dict[str, Any]) -> str:
            if x["status"] != "joined" or x["user_id"] == conn.user_id:
                raise XtError("request.invalid", "The new host is another joined participant.")
            live["cohosts"] = sorted((set(live["cohosts"]) | {conn.user_id}) - {x["user_id"]})
            live["host"] = x["user_id"]
            return x["user_id"]

        live, host = await self._moderate(conn, frame.meeting_id, frame.participant_id, action, host_only=True)
        await self._broadcast(live, {"type": "meeting.host_changed", "host": host, "cohosts": live["cohosts"]})
        return {"host": host}

    async def set_role(self, conn: "Connection", frame: p.MeetingSetRole) -> dict[str, Any]:
        def action(live: dict[str, Any], x: dict[str, Any]) -> None:
            if x["user_id"] == live["host"]:
                raise XtError("request.invalid", "The host's role changes by transferring it.")
            cohosts = set(live["cohosts"])
            cohosts.add(x["user_id"]) if frame.role == "cohost" else cohosts.discard(x["user_id"])
            live["cohosts"] = sorted(cohosts)

        live, _ = await self._moderate(conn, frame.meeting_id, frame.participant_id, action, host_only=True)
        await self._broadcast(live, {"type": "meeting.host_changed", "host": live["host"], "cohosts": live["cohosts"]})
        return {"cohosts": live["cohosts"]}

    async def lock(self, conn: "Connection", frame: p.MeetingLock) -> dict[str, Any]:
        def action(live: dict[str, Any], _: Any) -> None:
            live["locked"] = frame.locked

        live, _ = await self._moderate(conn, frame.meeting_id, None, action)
        await self._broadcast(live, {"type": "meeting.locked", "locked": frame.locked, "by": conn.user_id})
        return {"locked": frame.locked}

    async def admit(self, conn: "Connection", frame: p.MeetingAdmit) -> dict[str, Any]:
        def action(live: dict[str, Any], x: dict[str, Any]) -> dict[str, Any]:
            if x["status"] != "waiting":
                raise XtError("conflict.state", "The participant is not waiting.")
            present = sum(1 for y in live["participants"].values() if y["status"] in ("joined", "reconnecting"))
            if present >= live["cap"]:
                raise XtError("meeting.full", details={"cap": live["cap"]})
            if live["topology"] == "mesh" and present >= self.service.settings.mesh_max:
                if live["topology_mode"] == "mesh":
                    raise XtError("meeting.full", details={"cap": self.service.settings.mesh_max})
                live["topology"] = "sfu"
            x.update(status="joined", since=_now())
            return x

        live, x = await self._moderate(conn, frame.meeting_id, frame.participant_id, action)
        await self.service.to_device(frame.participant_id, {
            "type": "meeting.admitted", "meeting_id": live["id"], "participant_id": frame.participant_id,
            "role": self._role(live, x["user_id"]), **self._public(live),
            "ice_servers": self.service.ice_servers(x["user_id"])})
        await self._broadcast(live, {"type": "meeting.participant_joined",
                                     "participant": _participant_view(frame.participant_id, x)},
                              exclude=frame.participant_id, statuses=("joined",))
        return {}

    async def end(self, conn: "Connection", frame: p.MeetingEnd) -> dict[str, Any]:
        def action(live: dict[str, Any], _: Any) -> None:
            live["ended"] = True

        live, _ = await self._moderate(conn, frame.meeting_id, None, action, host_only=True)
        await self.col.update_one({"_id": frame.meeting_id}, {"$set": {"status": "ended",
                                                                       "ended_at": datetime.now(timezone.utc)}})
        await self._broadcast(live, {"type": "meeting.ended", "by": conn.user_id},
                              statuses=("joined", "reconnecting", "waiting"))
        for (mid, pid) in [k for k in self._sfu if k[0] == frame.meeting_id]:
            await self._sfu_detach(self._sfu.pop((mid, pid)))
        await self._idle(frame.meeting_id)
        await self._change(frame.meeting_id, lambda d, key: d.__setitem__(key, None))  # the live state goes
        return {}

    # ---- mesh relay --------------------------------------------------------------------------------

    async def _joined_in(self, conn: "Connection", meeting_id: str) -> dict[str, Any]:
        """The running meeting's live document; the caller must have joined it (not waiting)."""
        live = await self.service.state.get(f"meeting:{meeting_id}")
        if live is None or live["ended"]:
            raise XtError("meeting.ended" if live else "not_found", "The meeting is not running.")
        me = live["participants"].get(conn.device_id)
        if me is None or me["status"] != "joined":
            raise XtError("meeting.not_participant")
        return live

    async def check_peer(self, conn: "Connection", meeting_id: str, to: str) -> None:
        live = await self._joined_in(conn, meeting_id)
        if to == live.get("recorder", {}).get("peer_id"):
            return
        if live["topology"] != "mesh":
            raise XtError("meeting.wrong_topology", "This meeting's media goes through the SFU (sfu.*).")
        other = live["participants"].get(to)
        if other is None or other["status"] != "joined" or to == conn.device_id:
            raise XtError("signal.not_a_peer", "The target is not another joined participant of this meeting.")

    # ---- SFU (Janus) -------------------------------------------------------------------------------

    async def _sfu_live(self, conn: "Connection", meeting_id: str) -> dict[str, Any]:
        live = await self._joined_in(conn, meeting_id)
        if live["topology"] != "sfu":
            raise XtError("meeting.wrong_topology", "This meeting is a mesh: send offers to peers (signal).")
        if self.janus is None:
            raise XtError("meeting.sfu_unavailable", "No SFU is configured (XT_JANUS_URLS).")
        return live

    async def sfu_publish(self, conn: "Connection", frame: p.SfuPublish) -> dict[str, Any]:
        p.check_sdp(frame.description)
        live = await self._sfu_live(conn, frame.meeting_id)
        from .sfu import publish

        answer = await publish(self, live, conn, frame.description.sdp)  # sfu.feed_added follows once it is live
        return {"description": {"type": "answer", "sdp": answer}}

    async def sfu_subscribe(self, conn: "Connection", frame: p.SfuSubscribe) -> dict[str, Any]:
        live = await self._sfu_live(conn, frame.meeting_id)
        from .sfu import subscribe

        offer = await subscribe(self, live, conn, list(frame.feeds))
        return {"description": {"type": "offer", "sdp": offer}}

    async def sfu_answer(self, conn: "Connection", frame: p.SfuAnswer) -> dict[str, Any]:
        p.check_sdp(frame.description)
        live = await self._sfu_live(conn, frame.meeting_id)
        from .sfu import start_subscription

        await start_subscription(self, live, conn, frame.description.sdp)
        return {}

    async def sfu_trickle(self, conn: "Connection", frame: p.SfuTrickle) -> dict[str, Any]:
        p.check_candidate(frame.candidate)
        live = await self._sfu_live(conn, frame.meeting_id)
        from .sfu import trickle

        await trickle(self, live, conn, frame.target, msgspec.to_builtins(frame.candidate) if frame.candidate else None)
        return {}

    async def _sfu_moderate(self, meeting_id: str, pids: list[str], *, mute: bool = True) -> None:
        """Mute in the SFU too, so a muted participant's audio stops at the server, whatever its client does."""
        if self.janus is None or not pids:
            return
        from .sfu import mute_feeds

        try:
            await mute_feeds(self, meeting_id, pids, mute=mute)
        except Exception:
            log.exception("muting in the SFU failed")

    async def _sfu_detach(self, handles: Any) -> None:
        from .sfu import detach

        try:
            await detach(handles)
        except Exception:
            log.exception("detaching SFU handles failed")

    # ---- recording ---------------------------------------------------------------------------------

    async def record(self, conn: "Connection", frame: p.MeetingRecord) -> dict[str, Any]:
        from .recording import start_recording, stop_recording

        if frame.action == "start":
            return await start_recording(self, conn, frame.meeting_id)
        return await stop_recording(self, conn, frame.meeting_id)

    async def _stop_recording(self, meeting_id: str) -> None:
        from .recording import finish

        try:
            await finish(self, meeting_id)
        except Exception:
            log.exception("stopping the recording of %s failed", meeting_id)

    async def download(self, headers: Any, path: str) -> Any:
        from .recording import download

        return await download(self, headers, path)

    # ---- reminders ---------------------------------------------------------------------------------

    async def _remind_forever(self) -> None:
        while True:
            try:
                await self.remind_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("meeting reminders failed")
            await asyncio.sleep(REMINDER_POLL_SECONDS)

    async def remind_due(self, now: datetime | None = None) -> int:
        """Post the reminder card of each scheduled meeting whose reminder time has come: into its chat,
        else into the host's direct chat with each invitee. Claimed atomically (one process reminds)."""
        now = now or datetime.now(timezone.utc)
        sent = 0
        while True:
            doc = await self.col.find_one_and_update({"remind_at": {"$lte": now}}, {"$unset": {"remind_at": ""}})
            if doc is None:
                return sent
            chat = self.service.chat
            host = Principal(doc["host_id"], None)
            card = Message(kind="card", card=self._card(doc, "会议提醒"))
            try:
                if doc.get("conversation_id"):
                    await chat.messages.send(host, doc["conversation_id"], f"#meeting-reminder:{doc['_id']}", card)
                else:
                    for user_id in doc.get("invitees", []):
                        direct = await chat.conversations.open_direct(host, user_id)
                        await chat.messages.send(host, direct.id, f"#meeting-reminder:{doc['_id']}", card)
                sent += 1
            except XtError as exc:
                log.warning("meeting %s: reminder not posted (%s)", doc["_id"], exc.code)


def _participant_view(pid: str, x: dict[str, Any]) -> dict[str, Any]:
    view = {"participant_id": pid, "user_id": x["user_id"], "name": x["name"], "status": x["status"],
            "state": x["state"]}
    if x.get("publishing"):
        view["publishing"] = True  # SFU: its feed is live, subscribe to it
    return view
