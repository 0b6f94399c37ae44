"""The event writer: assigns gap-free seqs and stores events in batches (group commit).

Why batches: one round trip per message caps a SecantusDB-backed server at ~670 messages/s, while
``insert_many`` of a few hundred events runs at ~4,000 events/s (ENVIRONMENT.md). So every event of
a process goes through here:

1. Writes queue on one of ``XT_WRITER_LANES`` lanes, chosen by conversation id (so one conversation's
   events are always written by one lane, in arrival order). A lane takes everything queued as one
   batch while the previous batch is in flight — no timer, no added latency when idle. One lane
   suits the embedded database (one core: concurrent batches only contend, measured); a MongoDB
   replica set overlaps several.
2. One query loads the batch's conversations and one its senders' memberships; each write is checked
   (member, not muted, not dissolved) and refused with a coded error otherwise.
3. Seqs come from the lane's cache of each conversation's head. The unique ``(conversation_id,
   seq)`` index is the arbiter: if another process took a seq first, the ordered insert stops there
   with a duplicate-key error, the lane re-reads that conversation's head and re-assigns the rest of
   the batch in the same order. A sender's messages therefore never swap.
4. A duplicate ``_id`` — the idempotency key ``"<sender_id>|<client_msg_id>"`` — means a retried
   send: the stored original is returned (same seq), nothing is written twice. If the original lies beyond its conversation's recorded
   head, its first write was cut off before announcing it: the retry advances the head and publishes.
5. One bulk write advances the conversations' heads (last seq, message count, last-event summary,
   @all mentions) and one pushes @mentions into the mentioned members' documents.
6. Only then are the events published (``on_written``) and the callers acknowledged:
   persist, then publish.

Seqs stay gap-free because a seq is only ever used by an event that was stored; a batch that fails
uncertainly (connection lost mid-insert) forgets the cached heads of its conversations, so the next
write re-reads the real head from the log.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, Iterable

import msgspec
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, PyMongoError

from ..errors import XtError
from ..models import utcnow
from ..store import Store
from ..store.events import event_to_doc
from .models import Conversation, Event, EventSummary, EventType, Member, Message, SystemData, event_id, member_id

log = logging.getLogger(__name__)

LANES = 1  # the default of XT_WRITER_LANES
MAX_BATCH = 256
HEAD_CACHE = 50_000  # conversations whose head a lane remembers
HEAD_PROBE_WINDOW = 10_000
MAX_ATTEMPTS = 20
MAX_MENTION_SEQS = 100
MAX_ALL_MENTION_SEQS = 20


@dataclass
class Draft:
    """An event to append. ``policy="send"``: the sender must be an active member allowed to speak
    now; ``"system"``: the caller has checked permissions (membership changes, renames …)."""

    conversation_id: str
    type: EventType
    sender_id: str | None
    client_msg_id: str | None = None
    message: Message | None = None
    target_seq: int | None = None
    data: SystemData | None = None
    policy: str = "system"
    future: asyncio.Future["Written"] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(frozen=True)
class Written:
    event: Event
    duplicate: bool  # True: an earlier write with the same client_msg_id, returned as it was


OnWritten = Callable[[list[Event]], Awaitable[None]]


def preview(message: Message | None) -> str:
    if message is None:
        return ""
    if message.kind == "text":
        return (message.text or "")[:60]
    return {"card": "[卡片]", "file": "[文件]", "image": "[图片]", "forward": "[聊天记录]"}.get(message.kind, "")


def summary(event: Event) -> EventSummary:
    return EventSummary(seq=event.seq, type=event.type, created_at=event.created_at, sender_id=event.sender_id,
                        preview="" if event.recalled else preview(event.message), recalled=event.recalled)


def check_send(conversation: Conversation | None, member: Member | None, message: Message | None) -> None:
    """May this member post this message now? Non-members learn nothing about the conversation."""
    if conversation is None or member is None or member.state != "active":
        raise XtError("not_found", "No such conversation, or you are not a member.")
    if conversation.status != "active":
        raise XtError("conversation.dissolved")
    if conversation.mute_all and member.role == "member":
        raise XtError("conversation.muted_all")
    if message is not None and message.mention_all and member.role == "member" and conversation.kind != "direct":
        raise XtError("perm.forbidden", "Only the owner and admins may mention everyone (@all).")


class _Lane:
    def __init__(self, writer: "EventWriter", index: int):
        self.writer = writer
        self.index = index
        self.queue: list[Draft] = []
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.heads: OrderedDict[str, tuple[int, int]] = OrderedDict()  # conversation -> (seq, count)
        self.task: asyncio.Task[None] | None = None

    def submit(self, draft: Draft) -> None:
        self.queue.append(draft)
        self.idle.clear()
        self.wake.set()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
                try:
                    await self.write_batch(batch)
                except Exception as exc:  # never let a lane die: fail the batch, keep serving
                    log.exception("event batch failed")
                    self.heads.clear()
                    for draft in batch:
                        if not draft.future.done():
                            draft.future.set_exception(
                                exc if isinstance(exc, XtError) else XtError("server.unavailable"))
            self.idle.set()

    # ---- one batch -------------------------------------------------------------------------------

    async def write_batch(self, batch: list[Draft]) -> None:
        store = self.writer.store
        conversations = await store.conversations.get_many(d.conversation_id for d in batch)
        senders = await store.conversations.get_members(
            member_id(d.conversation_id, d.sender_id) for d in batch if d.policy == "send" and d.sender_id)
        pending: list[Draft] = []
        for draft in batch:
            try:
                conversation = conversations.get(draft.conversation_id)
                if draft.policy == "send":
                    check_send(conversation, senders.get(member_id(draft.conversation_id, draft.sender_id or "")),
                               draft.message)
                elif conversation is None:
                    raise XtError("not_found", "No such conversation.")
                pending.append(draft)
            except XtError as exc:
                draft.future.set_exception(exc)

        stored: list[tuple[Draft, Event]] = []
        duplicates: list[tuple[Draft, Event]] = []
        attempts = 0
        while pending:
            attempts += 1
            if attempts > MAX_ATTEMPTS:
                for draft in pending:
                    draft.future.set_exception(XtError("server.unavailable", "Could not assign a sequence number."))
                break
            await self._load_heads({d.conversation_id for d in pending}, conversations)
            events = self._assign(pending)
            try:
                await store.events.insert_ordered([self.writer.to_doc(e) for e in events])
                stored += list(zip(pending, events))
                break
            except BulkWriteError as exc:
                inserted = exc.details.get("nInserted", 0)
                stored += list(zip(pending[:inserted], events[:inserted]))
                error = exc.details["writeErrors"][0]
                failed, failed_event = pending[inserted], events[inserted]
                rest = pending[inserted + 1:]
                self._rewind(events[inserted:])
                if error.get("code") != 11000:
                    log.error("event insert refused: %s", error.get("errmsg"))
                    failed.future.set_exception(XtError("server.internal"))
                    pending = rest
                elif "_id" in (error.get("keyPattern") or {}) and failed.client_msg_id is not None:
                    # The _id is the idempotency key: this is a retry of something stored before.
                    original = await store.events.get_by_client_id(failed.sender_id, failed.client_msg_id)
                    if original is None:  # the unique index says it exists: only a race can hide it
                        pending = [failed] + rest
                    elif original.conversation_id != failed.conversation_id or original.type != failed.type:
                        failed.future.set_exception(XtError("message.client_id_reused"))
                        pending = rest
                    else:
                        duplicates.append((failed, original))
                        pending = rest
                else:  # another process stored this seq first: re-read the head, keep the order
                    self.heads.pop(failed_event.conversation_id, None)
                    pending = [failed] + rest
            except PyMongoError:
                # Unknown outcome: forget the heads we may have advanced, so the next batch re-reads them.
                for draft in pending:
                    self.heads.pop(draft.conversation_id, None)
                    draft.future.set_exception(XtError("server.unavailable"))
                pending = []

        # A duplicate beyond its conversation's recorded head was stored by a write whose outcome was
        # lost (connection cut after the insert, crash before the head update): nobody was told of
        # it. Its retry finishes that write's job, so an acknowledged event is always visible.
        unannounced = [e for _, e in duplicates
                       if e.seq > getattr(conversations.get(e.conversation_id), "last_seq", e.seq)]
        if stored or unannounced:
            events = sorted([e for _, e in stored] + unannounced, key=lambda e: (e.conversation_id, e.seq))
            await self._advance_heads(events)
            await self.writer.on_written(events)
        for draft, event in stored:
            draft.future.set_result(Written(event, False))
        for draft, event in duplicates:
            draft.future.set_result(Written(event, True))

    async def _load_heads(self, conversation_ids: Iterable[str], conversations: dict[str, Conversation]) -> None:
        store = self.writer.store
        for cid in conversation_ids:
            if cid in self.heads:
                self.heads.move_to_end(cid)
                continue
            conversation = conversations.get(cid) or await store.conversations.get(cid)
            seq, count = (conversation.last_seq, conversation.msg_count) if conversation else (0, 0)
            # The conversation document may lag the log (another process's batch in flight, or a
            # crash between insert and head update): probe forward for events beyond it.
            while True:
                later = await store.events.heads_after(cid, seq, HEAD_PROBE_WINDOW)
                if not later:
                    break
                seq, count = max(later)
                if len(later) < HEAD_PROBE_WINDOW:
                    break
            self.heads[cid] = (seq, count)
            if len(self.heads) > HEAD_CACHE:
                self.heads.popitem(last=False)

    def _assign(self, drafts: list[Draft]) -> list[Event]:
        now = utcnow()
        events = []
        for draft in drafts:
            seq, count = self.heads[draft.conversation_id]
            seq += 1
            if draft.type == "message":
                count += 1
            self.heads[draft.conversation_id] = (seq, count)
            events.append(Event(id=event_id(draft.conversation_id, seq), conversation_id=draft.conversation_id,
                                seq=seq, count=count, type=draft.type, created_at=now, sender_id=draft.sender_id,
                                client_msg_id=draft.client_msg_id, message=draft.message,
                                target_seq=draft.target_seq, data=draft.data))
        return events

    def _rewind(self, unstored: list[Event]) -> None:
        """Set each conversation's cached head back to just before its first unstored event."""
        seen: set[str] = set()
        for event in unstored:
            if event.conversation_id in seen:
                continue
            seen.add(event.conversation_id)
            counted = 1 if event.type == "message" else 0
            self.heads[event.conversation_id] = (event.seq - 1, event.count - counted)

    async def _advance_heads(self, events: list[Event]) -> None:
        store = self.writer.store
        now = utcnow()
        last: dict[str, Event] = {}
        all_mentions: dict[str, list[int]] = {}
        mentions: dict[str, list[int]] = {}
        sender_read: dict[str, Event] = {}  # sending a message reads the conversation up to it
        for event in events:
            last[event.conversation_id] = event
            message = event.message
            if event.type == "message" and event.sender_id:
                sender_read[member_id(event.conversation_id, event.sender_id)] = event
            if event.type == "message" and message is not None:
                if message.mention_all:
                    all_mentions.setdefault(event.conversation_id, []).append(event.seq)
                for user_id in message.mentions:
                    if user_id != event.sender_id:
                        mentions.setdefault(member_id(event.conversation_id, user_id), []).append(event.seq)
        # $max, not a filter on the old value: a head only moves forward, also when batches of two
        # processes land out of order, and the embedded database applies $max twice as fast as a
        # conditional update. last_event's first field is its seq, so $max keeps the newest.
        heads = [UpdateOne({"_id": cid}, {"$max": {"last_seq": e.seq, "msg_count": e.count, "updated_at": now,
                                                   "last_event": self.writer.summary_doc(e)}})
                 for cid, e in last.items()]
        heads += [UpdateOne({"_id": cid}, {"$push": {"all_mention_seqs": {"$each": seqs,
                                                                          "$slice": -MAX_ALL_MENTION_SEQS}}})
                  for cid, seqs in all_mentions.items()]
        await store.conversations.advance_heads(heads)
        member_ops = [UpdateOne({"_id": mid, "state": "active"},
                                {"$push": {"mention_seqs": {"$each": seqs, "$slice": -MAX_MENTION_SEQS}}})
                      for mid, seqs in mentions.items()]
        member_ops += [UpdateOne({"_id": mid}, {"$max": {"read_seq": e.seq, "read_count": e.count,
                                                          "delivered_seq": e.seq}})
                       for mid, e in sender_read.items()]
        if member_ops:
            await store.conversations.members.bulk_write(member_ops, ordered=False)


class EventWriter:
    """Appends events to conversation logs; see the module docstring for the algorithm."""

    def __init__(self, store: Store, on_written: OnWritten | None = None, lanes: int = LANES):
        self.store = store
        self.to_doc = event_to_doc
        self.on_written: OnWritten = on_written or _nothing
        self.lanes = [_Lane(self, i) for i in range(lanes)]
        self._started = False

    def summary_doc(self, event: Event) -> dict[str, Any]:
        return msgspec.to_builtins(summary(event), builtin_types=(datetime,))

    def start(self) -> None:
        if not self._started:
            for lane in self.lanes:
                lane.task = asyncio.get_running_loop().create_task(lane.run(), name=f"event-writer-{lane.index}")
            self._started = True

    def _lane(self, conversation_id: str) -> _Lane:
        return self.lanes[zlib.crc32(conversation_id.encode()) % len(self.lanes)]

    async def append(self, draft: Draft) -> Written:
        """Store one event; returns once it is durable (and published)."""
        self.start()
        self._lane(draft.conversation_id).submit(draft)
        return await draft.future

    def forget_head(self, conversation_id: str) -> None:
        self._lane(conversation_id).heads.pop(conversation_id, None)

    async def drain(self) -> None:
        """Wait until every queued write has been stored (graceful shutdown)."""
        for lane in self.lanes:
            await lane.idle.wait()

    async def stop(self) -> None:
        await self.drain()
        for lane in self.lanes:
            if lane.task:
                lane.task.cancel()
        await asyncio.gather(*(lane.task for lane in self.lanes if lane.task), return_exceptions=True)
        self._started = False


async def _nothing(events: list[Event]) -> None:
    return None
