"""1:1 calls: invite → ringing on every device of the callee → accepted on one / declined / busy /
cancelled / missed; hang-up. Each call ends as one ``call.record`` event in the pair's direct chat.

State (see :mod:`.state`): ``call:<id>`` (the call) and ``user:<id>`` (``{"call": <id>}`` while the
user is in a ringing or connected call: the busy marker). An invite changes the caller's and the
callee's markers and the new call in one atomic update, so two simultaneous invites between the
same pair (glare) resolve to one call: the second invite finds the first ringing towards its own
sender and accepts it instead of starting another.

Media: once a call is accepted, the caller sends the offer to the answering device (``signal``);
candidates follow. A device that reconnects during a connected call gets ``call.resume`` and
renegotiates with an ICE restart. A party whose connection is gone for longer than the rejoin
grace ends the call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from xietong.server.access import Principal
from xietong.server.errors import XtError
from xietong.server.ids import new_id

from . import protocol as p

if TYPE_CHECKING:
    from .service import Connection, SignalingService

log = logging.getLogger("xietong.signaling.calls")



class _Retry(Exception):
    """The busy marker moved between reading it and the transaction: read again."""


class Calls:
    def __init__(self, service: "SignalingService"):
        self.service = service
        self._timers: dict[str, asyncio.Task[None]] = {}

    async def stop(self) -> None:
        for task in self._timers.values():
            task.cancel()
        self._timers.clear()

    # ---- requests ----------------------------------------------------------------------------------

    async def invite(self, conn: "Connection", frame: p.CallInvite) -> dict[str, Any]:
        chat = self.service.chat
        if frame.callee == conn.user_id:
            raise XtError("request.invalid", "A call needs another user.")
        callee = await chat.store.users.get(frame.callee)
        if callee is None or callee.status != "active":
            raise XtError("not_found", "No such user.")
        # The pair's direct chat: the directory's visibility rules decide who may call whom, as for chats.
        conversation = await chat.conversations.open_direct(Principal(conn.user_id, conn.device_id), frame.callee)
        now = time.time()
        call_id = new_id("call")
        for _ in range(20):
            my_call = ((await self.service.state.get(f"user:{conn.user_id}")) or {}).get("call")
            other_call = ((await self.service.state.get(f"user:{frame.callee}")) or {}).get("call")
            keys = [f"call:{call_id}", f"user:{conn.user_id}", f"user:{frame.callee}"]
            keys += [f"call:{c}" for c in {my_call, other_call} if c]
            try:
                docs, outcome = await self.service.state.update(
                    keys, lambda d: self._invite_change(d, conn, frame, conversation.id, call_id, my_call, other_call,
                                                        now))
                break
            except _Retry:
                continue
        else:  # pragma: no cover - twenty races in a row
            raise XtError("server.unavailable", "The call could not be placed; retry.")
        if outcome == "glare":
            call = docs[f"call:{other_call}"]
            assert call is not None
            await self._accepted(call, conn)
            return {"call_id": call["id"], "state": "connected", "peer": call["caller_device"],
                    "conversation_id": call["conversation_id"]}
        call = docs[f"call:{call_id}"]
        assert call is not None
        if outcome == "busy":
            await self._record(call, "busy", None)
            return {"call_id": call_id, "state": "ended", "outcome": "busy", "conversation_id": conversation.id}
        caller_user = await chat.store.users.get(conn.user_id)
        await self.service.to_user(frame.callee, {
            "type": "call.incoming", "call_id": call_id, "from": conn.user_id, "from_device": conn.device_id,
            "from_name": caller_user.display_name if caller_user else "", "media": frame.media,
            "conversation_id": conversation.id, "ring_seconds": self.service.settings.call_ring_seconds})
        try:
            await chat.push.ring(call_id, conversation.id, conn.user_id, frame.callee, frame.media)
        except Exception:  # the call rings on connected devices even if the push queue is unreachable
            log.exception("queueing the call push failed")
        self._timer(call_id, self.service.settings.call_ring_seconds, self._ring_out)
        return {"call_id": call_id, "state": "ringing", "conversation_id": conversation.id}

    def _live(self, call: dict[str, Any] | None, now: float) -> bool:
        """Whether a call still holds its parties: connected, or ringing within its ring time (a ringing
        call whose timer died with its process is over, whoever notices first)."""
        if call is None:
            return False
        if call["state"] == "ringing":
            return now - call["created_at"] <= self.service.settings.call_ring_seconds + 5
        return call["state"] == "connected"

    def _invite_change(self, d: dict[str, Any], conn: "Connection", frame: p.CallInvite, conversation_id: str,
                       call_id: str, my_call: str | None, other_call: str | None, now: float) -> str:
        me, them = d[f"user:{conn.user_id}"], d[f"user:{frame.callee}"]
        if (them or {}).get("call") != other_call or (me or {}).get("call") != my_call:
            raise _Retry()
        existing = d.get(f"call:{other_call}") if other_call else None
        if not self._live(existing, now):
            existing = None  # the callee's marker is stale: they are free
        if existing and existing["state"] == "ringing" and existing["caller"] == frame.callee \
                and existing["callee"] == conn.user_id:
            # Glare: the callee is calling us right now. Answer that call with this device.
            existing.update(state="connected", answered_device=conn.device_id, answered_at=now)
            d[f"user:{conn.user_id}"] = {"call": existing["id"]}
            return "glare"
        if my_call and self._live(d.get(f"call:{my_call}"), now):
            raise XtError("conflict.state", "You are already in a call; hang up first.")
        call = {"id": call_id, "caller": conn.user_id, "caller_device": conn.device_id, "callee": frame.callee,
                "media": frame.media, "conversation_id": conversation_id, "created_at": now, "state": "ringing"}
        if existing is not None:  # live, with someone else
            call.update(state="ended", outcome="busy", ended_at=now)
            d[f"call:{call_id}"] = call
            return "busy"
        d[f"call:{call_id}"] = call
        d[f"user:{conn.user_id}"] = {"call": call_id}
        d[f"user:{frame.callee}"] = {"call": call_id}
        return "ringing"

    async def accept(self, conn: "Connection", frame: p.CallAccept) -> dict[str, Any]:
        now = time.time()

        def change(d: dict[str, Any]) -> None:
            call = self._call(d, frame.call_id)
            if call["callee"] != conn.user_id:
                raise XtError("call.not_participant", "Only the callee accepts a call.")
            if call["state"] == "connected":
                raise XtError("conflict.state", "The call was answered on another device.")
            if call["state"] != "ringing":
                raise XtError("conflict.state", f"The call has ended ({call.get('outcome')}).")
            call.update(state="connected", answered_device=conn.device_id, answered_at=now)

        docs, _ = await self.service.state.update([f"call:{frame.call_id}"], change)
        call = docs[f"call:{frame.call_id}"]
        assert call is not None
        await self._accepted(call, conn)
        return {"call_id": call["id"], "peer": call["caller_device"]}

    async def _accepted(self, call: dict[str, Any], conn: "Connection") -> None:
        self._cancel_timer(call["id"])
        await self.service.to_device(call["caller_device"], {
            "type": "call.accepted", "call_id": call["id"], "peer": conn.device_id, "by": conn.user_id})
        # The callee's other devices stop ringing.
        await self.service.to_user(call["callee"], {"type": "call.answered_elsewhere", "call_id": call["id"],
                                                    "device": conn.device_id})

    async def decline(self, conn: "Connection", frame: p.CallDecline) -> dict[str, Any]:
        return await self._end(conn, frame.call_id, "declined", who="callee", states=("ringing",))

    async def cancel(self, conn: "Connection", frame: p.CallCancel) -> dict[str, Any]:
        return await self._end(conn, frame.call_id, "cancelled", who="caller", states=("ringing",))

    async def hangup(self, conn: "Connection", frame: p.CallHangup) -> dict[str, Any]:
        call = await self.service.state.get(f"call:{frame.call_id}")
        if call is not None and call["state"] == "ringing":  # hanging up a ringing call: cancel or decline
            if call["caller"] == conn.user_id:
                return await self._end(conn, frame.call_id, "cancelled", who="caller", states=("ringing",))
            return await self._end(conn, frame.call_id, "declined", who="callee", states=("ringing",))
        return await self._end(conn, frame.call_id, "completed", who="party", states=("connected",))

    async def _end(self, conn: "Connection | None", call_id: str, outcome: str, *, who: str,
                   states: tuple[str, ...]) -> dict[str, Any]:
        now = time.time()

        def change(d: dict[str, Any]) -> str | None:
            call = self._call(d, call_id)
            if conn is not None:
                parties = {"caller": [(call["caller"], call["caller_device"])],
                           "callee": [(call["callee"], None)],
                           "party": [(call["caller"], call["caller_device"]),
                                     (call["callee"], call.get("answered_device"))]}[who]
                if not any(conn.user_id == u and (dev is None or conn.device_id == dev) for u, dev in parties):
                    raise XtError("call.not_participant", f"Only the {who} may do this.")
            if call["state"] not in states:
                if call["state"] == "ended":
                    return None  # already over (a race with the other party or the timer): answer as done
                raise XtError("conflict.state", f"The call is {call['state']}.")
            final = outcome
            if outcome == "completed" and call["state"] == "ringing":
                final = "cancelled"
            call.update(state="ended", outcome=final, ended_at=now)
            for user in (call["caller"], call["callee"]):
                if (d.get(f"user:{user}") or {}).get("call") == call_id:
                    d[f"user:{user}"] = None
            return final

        call0 = await self.service.state.get(f"call:{call_id}")
        if call0 is None:
            raise XtError("not_found", "No such call.")
        keys = [f"call:{call_id}", f"user:{call0['caller']}", f"user:{call0['callee']}"]
        docs, final = await self.service.state.update(keys, change)
        call = docs[f"call:{call_id}"]
        assert call is not None
        if final is None:
            return {"call_id": call_id, "state": "ended", "outcome": call.get("outcome")}
        self._cancel_timer(call_id)
        duration = int(round(now - call["answered_at"])) if call.get("answered_at") else None
        ended = {"type": "call.ended", "call_id": call_id, "outcome": final, "duration_seconds": duration}
        await self.service.to_device(call["caller_device"], ended)
        await self.service.to_user(call["callee"], ended)
        await self._record(call, final, duration)
        return {"call_id": call_id, "state": "ended", "outcome": final, "duration_seconds": duration}

    async def _record(self, call: dict[str, Any], outcome: str, duration: int | None) -> None:
        try:
            await self.service.chat.messages.record_call(call["conversation_id"], call["caller"], call["id"],
                                                         call["media"], outcome, duration)
        except Exception:
            log.exception("writing the record of call %s failed", call["id"])

    @staticmethod
    def _call(d: dict[str, Any], call_id: str) -> dict[str, Any]:
        call = d.get(f"call:{call_id}")
        if call is None:
            raise XtError("not_found", "No such call.")
        return call

    async def check_peer(self, conn: "Connection", call_id: str, to: str) -> None:
        call = await self.service.state.get(f"call:{call_id}")
        if call is None:
            raise XtError("not_found", "No such call.")
        pair = {call["caller_device"], call.get("answered_device")}
        if call["state"] != "connected" or conn.device_id not in pair or to not in pair or to == conn.device_id:
            raise XtError("signal.not_a_peer", "Signals go to the other device of a connected call.")

    # ---- timers and connections --------------------------------------------------------------------

    def _timer(self, call_id: str, seconds: float, action: Any) -> None:
        self._cancel_timer(call_id)

        async def fire() -> None:
            await asyncio.sleep(seconds)
            self._timers.pop(call_id, None)
            try:
                await action(call_id)
            except XtError:
                pass  # the call changed meanwhile
            except Exception:
                log.exception("call timer failed")

        self._timers[call_id] = asyncio.ensure_future(fire())

    def _cancel_timer(self, call_id: str) -> None:
        task = self._timers.pop(call_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _ring_out(self, call_id: str) -> None:
        await self._end(None, call_id, "missed", who="system", states=("ringing",))

    async def disconnected(self, conn: "Connection") -> None:
        """A party's device went away: a ringing call it placed is cancelled; a connected call waits
        for the device to come back (rejoin grace), then ends."""
        state = await self.service.state.get(f"user:{conn.user_id}")
        call_id = (state or {}).get("call")
        if not call_id:
            return
        call = await self.service.state.get(f"call:{call_id}")
        if call is None:
            return
        if call["state"] == "ringing" and call["caller_device"] == conn.device_id:
            await self._end(None, call_id, "cancelled", who="system", states=("ringing",))
        elif call["state"] == "connected" and conn.device_id in (call["caller_device"], call.get("answered_device")):
            await self._mark_away(call_id, conn.device_id, True)

            async def gone(cid: str) -> None:
                current = await self.service.state.get(f"call:{cid}")
                if current is not None and conn.device_id in current.get("away", []):
                    await self._end(None, cid, "completed", who="system", states=("connected",))

            self._timer(call_id, self.service.settings.rejoin_grace, gone)

    async def _mark_away(self, call_id: str, device_id: str, away: bool) -> None:
        """Whether a party's device is between connections (any process may see it come back)."""
        def change(d: dict[str, Any]) -> None:
            call = d.get(f"call:{call_id}")
            if call is not None:
                devices = set(call.get("away", []))
                devices.add(device_id) if away else devices.discard(device_id)
                call["away"] = sorted(devices)

        await self.service.state.update([f"call:{call_id}"], change)

    async def reconnected(self, conn: "Connection") -> None:
        state = await self.service.state.get(f"user:{conn.user_id}")
        call_id = (state or {}).get("call")
        if not call_id:
            return
        call = await self.service.state.get(f"call:{call_id}")
        if call is None or call["state"] != "connected":
            return
        pair = (call["caller_device"], call.get("answered_device"))
        if conn.device_id in pair:
            self._cancel_timer(call_id)
            await self._mark_away(call_id, conn.device_id, False)
            peer = pair[1] if conn.device_id == pair[0] else pair[0]
            conn.send(p.encode({"type": "call.resume", "call_id": call_id, "peer": peer,
                                "offerer": conn.device_id == pair[0]}))
            await self.service.to_device(peer, {"type": "call.peer_reconnected", "call_id": call_id,
                                                "peer": conn.device_id})
