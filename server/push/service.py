"""The push worker: from stored events to notifications on phones (docs/flows/push.md).

One server process at a time holds the push **lease** (renewed every few seconds; another process
takes over within ``XT_PUSH_LEASE_SECONDS`` when the holder dies). The holder runs:

* the **planner**: it follows the ``events`` collection's change stream (resuming from the token it
  stores after each batch, so a restart misses nothing and replays only the last batch), applies
  ``rules.py`` to every recipient of every message, and queues one outbox document per (device,
  event) — a replayed event queues nothing twice;
* the **sender**: it claims due deliveries, sends them through the device's provider in batches,
  and records each outcome the moment it is known: sent; token invalid (removed from the device);
  transient failure (again later, exponential back-off with jitter); quota exceeded (the sender
  pauses); permanent failure.

At-least-once: a delivery claimed by a worker that died is sent again by the next lease holder.
The only window for a duplicate is between the provider accepting a message and the worker
recording it (one database write); the notification's tag makes even that duplicate replace itself
on the phone.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from pymongo.errors import OperationFailure, PyMongoError

from ..access import Principal
from ..config import Settings
from ..errors import XtError
from ..messaging.models import Event
from ..models import NotificationSettings, PushRegistration, to_doc, utcnow
from ..presence.backend import PresenceBackend
from ..store import Store
from ..store.events import doc_to_event
from . import rules
from .providers import Outcome, Outgoing, PushProvider

log = logging.getLogger("xietong.push")

BATCH = 500
PLAN_WINDOW_SECONDS = 0.25  # a push waits at most this long for others to plan with it
PLAN_BATCH = 200
MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 300.0
QUOTA_PAUSE_SECONDS = 30.0
BADGE_USERS_LIMIT = 1000  # badges are computed for at most this many recipients of a batch
IDLE_POLL_SECONDS = 0.5


def backoff(attempts: int) -> float:
    """Seconds before the next try: 1, 2, 4 … capped, with ±20 % jitter so retries do not align."""
    base = min(BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0), BACKOFF_MAX_SECONDS)
    return base * random.uniform(0.8, 1.2)


class PushService:
    def __init__(self, settings: Settings, store: Store, providers: dict[str, PushProvider],
                 presence: PresenceBackend):
        self.settings = settings
        self.store = store
        self.providers = providers
        self.presence = presence
        self.owner = secrets.token_hex(8)
        self.holding = False
        self.metrics: dict[str, int] = defaultdict(int)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._work: list[asyncio.Task[None]] = []
        self._pause_until: datetime | None = None

    # ---- registry and settings --------------------------------------------------------------------

    async def register(self, me: Principal, *, provider: str, token: str, platform: str, app_version: str,
                       locale: str, token_type: str = "token") -> PushRegistration:
        """Bind a push token to the caller's device (a new token replaces the old one). A token
        held by another device (the app re-installed and signed in again) moves to this one."""
        if provider not in self.providers:
            raise XtError("request.invalid", f"provider: one of {sorted(self.providers)}")
        if me.device_id is None:
            raise XtError("auth.required")
        await self.store.devices.forget_push_token(token)
        registration = PushRegistration(provider=provider, token=token, token_type=token_type,  # type: ignore[arg-type]
                                        platform=platform, app_version=app_version,  # type: ignore[arg-type]
                                        locale=locale, updated_at=utcnow())
        await self.store.devices.set_push(me.device_id, to_doc(registration))
        return registration

    async def unregister(self, me: Principal) -> None:
        if me.device_id is not None:
            await self.store.devices.set_push(me.device_id, None)

    async def set_settings(self, me: Principal, settings: NotificationSettings) -> NotificationSettings:
        if (settings.dnd_start is None) != (settings.dnd_end is None):
            raise XtError("request.invalid", "dnd_start and dnd_end: both or neither")
        try:
            ZoneInfo(settings.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise XtError("request.invalid", f"timezone: unknown time zone {settings.timezone!r}") from None
        await self.store.users.update(me.user_id, {"notifications": to_doc(settings)}, utcnow())
        return settings

    async def get_settings(self, me: Principal) -> NotificationSettings:
        user = await self.store.users.get(me.user_id)
        return user.notifications if user else NotificationSettings()

    # ---- lease ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.get_running_loop().create_task(self._hold_lease(), name="push-lease")]

    async def stop(self) -> None:
        for task in self._tasks + self._work:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._work, return_exceptions=True)
        self._tasks, self._work = [], []

    async def _hold_lease(self) -> None:
        lease = self.settings.push_lease_seconds
        while True:
            try:
                now = utcnow()
                held = await self.store.push.take_lease(self.owner, now, now + timedelta(seconds=lease))
            except PyMongoError as exc:
                log.warning("push lease check failed: %s", exc)
                held = False
            if held and not self.holding:
                log.info("push worker: this process plans and sends notifications")
                self.holding = True
                released = await self.store.push.release_claims(self.owner)
                if released:
                    log.warning("push worker: %d deliveries left in flight by a previous worker go again", released)
                loop = asyncio.get_running_loop()
                self._work = [loop.create_task(self._plan_forever(), name="push-planner"),
                              loop.create_task(self._send_forever(), name="push-sender")]
            elif not held and self.holding:
                log.warning("push worker: lease lost")
                self.holding = False
                for task in self._work:
                    task.cancel()
                self._work = []
            await asyncio.sleep(lease / 3)

    # ---- planning -------------------------------------------------------------------------------

    async def _plan_forever(self) -> None:
        pipeline = [{"$match": {"operationType": "insert", "fullDocument.type": "message"}}]
        while True:
            token = await self.store.push.resume_token()
            try:
                options: dict[str, Any] = {"batch_size": PLAN_BATCH, "max_await_time_ms": 1000}
                stream = await self.store.events.col.watch(pipeline, resume_after=token, **options) if token else \
                    await self.store.events.col.watch(pipeline, **options)
            except OperationFailure as exc:  # the oplog no longer holds our position
                log.error("push planner: cannot resume (%s); notifications of the gap are lost", exc)
                await self.store.push.save_resume_token(None)
                continue
            try:
                async with stream:
                    while True:
                        batch: list[tuple[Event, Any]] = []
                        change = await stream.next()
                        batch.append((doc_to_event(change["fullDocument"]), change["_id"]))
                        # Gather for a moment: one read of the stream and one round of queries then serve
                        # a whole busy period instead of a few messages (a push is not that urgent).
                        await asyncio.sleep(PLAN_WINDOW_SECONDS)
                        while len(batch) < PLAN_BATCH:
                            more = await stream.try_next()
                            if more is None:
                                break
                            batch.append((doc_to_event(more["fullDocument"]), more["_id"]))
                        await self.plan([e for e, _ in batch])
                        await self.store.push.save_resume_token(batch[-1][1])
            except PyMongoError as exc:
                log.warning("push planner: change stream interrupted (%s); resuming", exc)
                await asyncio.sleep(1)

    async def plan(self, events: list[Event], now: datetime | None = None) -> int:
        """Queue the deliveries these message events call for; returns how many were new."""
        now = now or utcnow()
        store = self.store
        events = [e for e in events if e.type == "message"]
        if not events:
            return 0
        # Cheap first: one query for every recipient of the batch, one for which of them can get a
        # push at all. Most batches stop there (recipients online on a computer, or without a phone
        # registered), before any user, presence or badge lookup: see docs/performance.md.
        cids = sorted({e.conversation_id for e in events})
        members: dict[str, list[dict[str, Any]]] = defaultdict(list)
        async for m in store.conversations.members.find(
                {"conversation_id": {"$in": cids}, "state": "active"},
                {"conversation_id": 1, "user_id": 1, "muted": 1}):
            members[m["conversation_id"]].append(m)
        senders = {(e.conversation_id, e.sender_id) for e in events}
        recipients = sorted({m["user_id"] for cid, ms in members.items() for m in ms})
        devices = await store.devices.push_targets(recipients)
        reachable = {d.user_id for d in devices}
        if not any(m["user_id"] in reachable and (cid, m["user_id"]) not in senders
                   for cid, ms in members.items() for m in ms):
            self.metrics["no_device"] += len(events)
            return 0
        conversations = await store.conversations.get_many(cids)
        user_ids = reachable | {e.sender_id for e in events if e.sender_id}
        users = await store.users.get_many(list(user_ids))
        states = await self.presence.states(sorted(reachable))
        wanted: list[tuple[Event, str]] = []
        for event in events:
            conversation = conversations.get(event.conversation_id)
            if conversation is None:
                continue
            for member in members.get(conversation.id, []):
                if member["user_id"] not in reachable:
                    continue  # no phone registered
                user = users.get(member["user_id"])
                recipient = rules.Recipient(
                    user_id=member["user_id"], muted=bool(member.get("muted")),
                    settings=user.notifications if user else NotificationSettings(),
                    in_foreground=states.get(member["user_id"]) == "online")
                reason = rules.why_not(event, recipient, now)
                if reason is None:
                    wanted.append((event, member["user_id"]))
                else:
                    self.metrics[f"skipped_{reason}"] += 1
        if not wanted:
            return 0
        by_user: dict[str, list[Any]] = defaultdict(list)
        for device in devices:
            by_user[device.user_id].append(device)
        badges = await self._badges(sorted({u for _, u in wanted})[:BADGE_USERS_LIMIT])
        docs = []
        for event, user_id in wanted:
            conversation = conversations[event.conversation_id]
            sender = users.get(event.sender_id or "")
            notification = rules.compose(event, conversation, sender.display_name if sender else "", user_id,
                                         previews=self.settings.push_previews, badge=badges.get(user_id))
            docs += [_delivery(device, event.id, notification, now) for device in by_user[user_id]]
        return await self._queue(docs)

    async def _queue(self, docs: list[dict[str, Any]]) -> int:
        """Add deliveries to the outbox (one per device and event: a second copy is ignored) and wake the
        sender; returns how many were new."""
        queued = await self.store.push.enqueue(docs) if docs else 0
        self.metrics["planned"] += queued
        if queued:
            self._wake.set()
        return queued

    async def ring(self, call_id: str, conversation_id: str, caller_id: str, callee_id: str, media: str,
                   now: datetime | None = None) -> int:
        """An incoming call for a callee with no device in the foreground: a high-priority data push
        (short TTL) to each of the callee's registered devices. A call rings through a conversation's
        mute but not through do-not-disturb hours (it ends as missed, and the record says so)."""
        now = now or utcnow()
        users = await self.store.users.get_many([caller_id, callee_id])
        callee = users.get(callee_id)
        if callee is None:
            return 0
        settings = callee.notifications or NotificationSettings()
        if (await self.presence.states([callee_id])).get(callee_id) == "online":
            self.metrics["skipped_in_foreground"] += 1
            return 0
        if rules.in_do_not_disturb(settings, now):
            self.metrics["skipped_do_not_disturb"] += 1
            return 0
        caller = users.get(caller_id)
        notification = rules.compose_call(call_id, conversation_id, caller.display_name if caller else "", media)
        docs = [_delivery(device, f"call:{call_id}", notification, now)
                for device in await self.store.devices.push_targets([callee_id])]
        if not docs:
            self.metrics["no_device"] += 1
            return 0
        return await self._queue(docs)

    async def _badges(self, user_ids: list[str]) -> dict[str, int]:
        """Total unread count of each user (the app icon's badge)."""
        if not user_ids:
            return {}
        memberships = await self.store.conversations.members.find(
            {"user_id": {"$in": user_ids}, "state": "active"},
            {"user_id": 1, "conversation_id": 1, "read_count": 1}).to_list()
        counts = await self.store.conversations.col.find(
            {"_id": {"$in": list({m["conversation_id"] for m in memberships})}}, {"msg_count": 1}).to_list()
        msg_count = {c["_id"]: c.get("msg_count", 0) for c in counts}
        badges: dict[str, int] = defaultdict(int)
        for m in memberships:
            badges[m["user_id"]] += max(0, msg_count.get(m["conversation_id"], 0) - m.get("read_count", 0))
        return dict(badges)

    # ---- sending -----------------------------------------------------------------------------

    async def _send_forever(self) -> None:
        while True:
            try:
                sent = await self.send_due()
            except PyMongoError as exc:
                log.warning("push sender: database unavailable (%s)", exc)
                sent = 0
            if not sent:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_SECONDS)
                except asyncio.TimeoutError:
                    pass

    async def send_due(self, now: datetime | None = None) -> int:
        """Send one batch of due deliveries; returns how many were handled."""
        now = now or utcnow()
        if self._pause_until is not None and now < self._pause_until:
            return 0
        docs = await self.store.push.claim_due(now, self.owner, BATCH)
        if not docs:
            return 0
        by_provider: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for doc in docs:
            by_provider[doc["provider"]].append(doc)
        by_id = {d["_id"]: d for d in docs}

        async def record(outcome: Outcome) -> None:
            await self.store.push.finish([await self._record(by_id[outcome.delivery_id], outcome, now)])

        for name, group in by_provider.items():
            provider = self.providers.get(name)
            if provider is None:
                await self.store.push.finish([(d["_id"], {"state": "failed", "last_error": f"no provider {name!r}"})
                                              for d in group])
                continue
            outgoing = [Outgoing(d["_id"], d["token"], d["platform"],
                                 msgspec.convert(d["notification"], rules.Notification), d.get("token_type", "token"))
                        for d in group]
            await provider.send(outgoing, record)
        return len(docs)

    async def _record(self, doc: dict[str, Any], outcome: Outcome, now: datetime) -> tuple[str, dict[str, Any]]:
        """The outbox change an outcome calls for (and the token removal, for an invalid token)."""
        self.metrics[outcome.status] += 1
        if outcome.status == "sent":
            return doc["_id"], {"state": "sent", "sent_at": utcnow()}
        if outcome.status == "invalid_token":
            removed = await self.store.devices.forget_push_token(doc["token"])
            log.info("push: token of device %s is invalid (%s); removed from %d device(s)",
                     doc["device_id"], outcome.detail, removed)
            return doc["_id"], {"state": "failed", "last_error": outcome.detail}
        if outcome.status in ("retry", "quota"):
            attempts = doc["attempts"] + 1
            if outcome.status == "quota":
                self._pause_until = now + timedelta(seconds=QUOTA_PAUSE_SECONDS)
                log.warning("push: provider quota exceeded; pausing %.0f s", QUOTA_PAUSE_SECONDS)
                delay = QUOTA_PAUSE_SECONDS
            else:
                delay = backoff(attempts)
            if attempts >= MAX_ATTEMPTS:
                log.error("push: giving up delivery %s after %d attempts: %s", doc["_id"], attempts, outcome.detail)
                return doc["_id"], {"state": "failed", "attempts": attempts, "last_error": outcome.detail}
            log.warning("push: delivery %s failed (%s); retry %d in %.1f s", doc["_id"], outcome.detail, attempts,
                        delay)
            return doc["_id"], {"state": "pending", "attempts": attempts, "last_error": outcome.detail,
                                "next_attempt_at": now + timedelta(seconds=delay)}
        log.error("push: delivery %s failed for good: %s", doc["_id"], outcome.detail)
        return doc["_id"], {"state": "failed", "last_error": outcome.detail}


def _delivery(device: Any, event_id: str, notification: rules.Notification, now: datetime) -> dict[str, Any]:
    """The outbox document of one notification to one device (``_id`` de-duplicates per device and event)."""
    assert device.push is not None
    return {"_id": f"{device.id}|{event_id}", "device_id": device.id, "user_id": device.user_id,
            "provider": device.push.provider, "token": device.push.token, "token_type": device.push.token_type,
            "platform": device.push.platform, "event_id": event_id, "notification": msgspec.to_builtins(notification),
            "state": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
