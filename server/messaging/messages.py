"""Sending, editing, recalling and reading messages.

* **Send** is idempotent by ``(sender, client_msg_id)``: a retry — same socket, new socket, other
  server process — returns the stored original with its seq.
* **Edit**: text messages, by their sender, within :data:`EDIT_WINDOW`. The stored message takes the
  new text (reads return the current state) and a ``message.edited`` event carries it to devices
  that already hold the old one.
* **Recall** (撤回): the sender within :data:`RECALL_WINDOW`; the owner and admins of a group at any
  time. The content is removed from the stored event first, and from the edits and card updates
  that copied it — so no later read can return it — then one ``message.recalled`` event tells
  devices to drop their copy. Recalls are audited.
* **Card update**: the sender of a card replaces it (``card.updated``), e.g. an approval card whose
  status changed.
* **Delete for me** hides events from the caller's own reads only.

Edits, recalls and card updates are idempotent too: a card update and an edit may carry the
client's ``client_msg_id``; otherwise (and for recalls) the server derives one from the target.
Derived ids start with ``#``, a character client ids cannot contain, so the two never collide.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec

from ..access import Principal
from ..audit.service import AuditService, Origin
from ..bus import Bus, Envelope
from ..errors import XtError
from ..gateway import frames
from ..models import utcnow
from ..store import Store
from ..store.events import storage_key
from .conversations import ConversationService, Membership
from .models import MAX_CARD_BYTES, Card, Event, Forward, ForwardedItem, Message, SystemData
from .writer import Draft, EventWriter, Written, check_send

EDIT_WINDOW = timedelta(minutes=15)
RECALL_WINDOW = timedelta(minutes=2)
MAX_PAGE = 200
MAX_PAGE_BYTES = 2 * 1024 * 1024  # a page stops growing past this (it keeps at least one event)
MAX_FORWARD_DEPTH = 3


@dataclass(frozen=True)
class Page:
    events: list[Event]  # without the events the reader deleted for themself
    first: int  # the seq range the page covers (first > last for an empty page)
    last: int
    has_more: bool  # more events exist beyond this page in the direction read
    readable_from: int  # the first seq the caller may read
    readable_until: int  # the last seq the caller may read


def validate_message(message: Message) -> Message:
    """Check that the fields fit the kind; refuse what a client should never send."""
    kind = message.kind
    present = {name for name in ("card", "file", "forward") if getattr(message, name) is not None}
    expected = {"text": set(), "card": {"card"}, "file": {"file"}, "image": {"file"}, "forward": {"forward"}}[kind]
    if present != expected:
        raise XtError("request.invalid", f"a {kind} message carries exactly: {sorted(expected) or 'text'}")
    if kind == "text":
        if message.text is None or not message.text.strip():
            raise XtError("request.invalid", "text: a text message needs text")
    if message.text is not None and "\x00" in message.text:
        raise XtError("request.invalid", "text: contains a NUL character")
    if len(set(message.mentions)) != len(message.mentions):
        raise XtError("request.invalid", "mentions: each user once")
    if message.card is not None:
        check_card_size(message.card)
    return message


def check_card_size(card: Card) -> None:
    if len(msgspec.json.encode(card)) > MAX_CARD_BYTES:
        raise XtError("request.invalid", f"card: at most {MAX_CARD_BYTES} bytes of JSON")


class MessageService:
    def __init__(self, store: Store, writer: EventWriter, conversations: ConversationService, audit: AuditService,
                 bus: Bus):
        self.store = store
        self.bus = bus
        self.writer = writer
        self.conversations = conversations
        self.audit = audit

    async def send(self, me: Principal, conversation_id: str, client_msg_id: str, message: Message) -> Written:
        """Append a message. Membership, mute-all and @all rights are checked by the writer in the
        same batch that stores it (one query per batch, not per message)."""
        validate_message(message)
        if message.kind == "forward":
            raise XtError("request.invalid", "Use forward to forward messages.")
        return await self.writer.append(Draft(conversation_id, "message", me.user_id, client_msg_id=client_msg_id,
                                              message=message, policy="send"))

    async def forward(self, me: Principal, conversation_id: str, client_msg_id: str, source_conversation_id: str,
                      seqs: list[int], mode: str, title: str) -> Written:
        """Forward messages the caller can read into another conversation, as copies."""
        source = await self.conversations.membership(me, source_conversation_id)
        wanted = sorted(set(seqs))
        if mode == "single" and len(wanted) != 1:
            raise XtError("request.invalid", "A single forward carries exactly one message.")
        lo, hi = self._readable(source)
        if wanted[0] < lo or wanted[-1] > hi:
            raise XtError("not_found", "Some of these messages are not readable to you.")
        events = {e.seq: e for e in await self.store.events.range(source_conversation_id, wanted[0], wanted[-1])}
        hidden = await self.store.events.hidden_seqs(me.user_id, source_conversation_id, wanted[0], wanted[-1])
        picked = [events.get(s) for s in wanted]
        if any(e is None or e.type != "message" or e.recalled or e.message is None or e.seq in hidden for e in picked):
            raise XtError("not_found", "Some of these messages cannot be forwarded (recalled, deleted or not messages).")
        names = {u.id: u.display_name for u in (await self.store.users.get_many(
            [e.sender_id for e in picked if e and e.sender_id])).values()}
        items = []
        for event in picked:
            assert event is not None and event.message is not None
            inner = event.message
            if inner.forward is not None and _depth(inner.forward) >= MAX_FORWARD_DEPTH:
                raise XtError("request.invalid", f"Forwarded records nest at most {MAX_FORWARD_DEPTH} deep.")
            items.append(ForwardedItem(sender_id=event.sender_id, sender_name=names.get(event.sender_id or "", ""),
                                       created_at=event.created_at, kind=inner.kind, text=inner.text,
                                       card=inner.card, file=inner.file, forward=inner.forward))
        message = Message(kind="forward", forward=Forward(mode=mode, title=title,  # type: ignore[arg-type]
                                                          source_conversation_id=source_conversation_id, items=items))
        return await self.writer.append(Draft(conversation_id, "message", me.user_id, client_msg_id=client_msg_id,
                                              message=message, policy="send"))

    # ---- changing a sent message -------------------------------------------------------------------

    async def _target(self, m: Membership, seq: int) -> Event:
        lo, hi = self._readable(m)
        if not lo <= seq <= hi:
            raise XtError("not_found", "No such message.")
        event = await self.store.events.get(m.conversation.id, seq)
        if event is None:
            raise XtError("not_found", "No such message.")
        if event.type != "message" or event.recalled:
            raise XtError("message.not_editable")
        return event

    async def _earlier(self, me: Principal, conversation_id: str, client_msg_id: str | None,
                       event_type: str) -> Written | None:
        """The stored answer to an earlier request with this client_msg_id, if there was one."""
        if client_msg_id is None:
            return None
        earlier = await self.store.events.get_by_client_id(me.user_id, client_msg_id)
        if earlier is None:
            return None
        if earlier.conversation_id != conversation_id or earlier.type != event_type:
            raise XtError("message.client_id_reused")
        return Written(earlier, True)

    async def edit(self, me: Principal, conversation_id: str, seq: int, text: str,
                   client_msg_id: str | None = None) -> Written:
        m = await self.conversations.membership(me, conversation_id, active=True)
        if (earlier := await self._earlier(me, conversation_id, client_msg_id, "message.edited")) is not None:
            return earlier
        target = await self._target(m, seq)
        if target.sender_id != me.user_id:
            raise XtError("perm.forbidden", "Only the sender edits a message.")
        if target.message is None or target.message.kind != "text":
            raise XtError("message.not_editable", "Only text messages are edited.")
        if utcnow() - target.created_at > EDIT_WINDOW:
            raise XtError("message.edit_window_passed")
        # The edited event is sent under the send rules (mute-all, dissolved): check them before the
        # stored text changes, or a refused edit would leave new text that no event announces.
        check_send(m.conversation, m.member, None)
        new = validate_message(Message(kind="text", text=text, mentions=target.message.mentions,
                                       mention_all=target.message.mention_all, reply_to=target.message.reply_to))
        edit_id = client_msg_id or f"#edit:{conversation_id}:{seq}:{target.edit_version + 1}"
        updated = await self.store.events.update_target(
            conversation_id, seq, {"recalled": {"$ne": True},
                                   "edit_version": target.edit_version if target.edit_version else {"$in": [0, None]}},
            {"message.text": text, "edited_at": utcnow()}, inc={"edit_version": 1},
            change_id=storage_key(conversation_id, seq, me.user_id, edit_id))
        if updated is None:
            raise XtError("message.not_editable", "The message changed meanwhile; try again.")
        return await self.writer.append(Draft(conversation_id, "message.edited", me.user_id, client_msg_id=edit_id,
                                              message=new, target_seq=seq, policy="send"))

    async def recall(self, me: Principal, conversation_id: str, seq: int, origin: Origin) -> Written:
        m = await self.conversations.membership(me, conversation_id, active=True)
        if m.conversation.status != "active":
            raise XtError("conversation.dissolved")
        lo, hi = self._readable(m)
        if not lo <= seq <= hi:
            raise XtError("not_found", "No such message.")
        target = await self.store.events.get(conversation_id, seq)
        if target is None or target.type != "message":
            raise XtError("message.not_editable")
        moderator = m.conversation.kind != "direct" and m.member.role in ("owner", "admin")
        if not moderator:
            if target.sender_id != me.user_id:
                raise XtError("perm.forbidden", "You may recall only your own messages.")
            if not target.recalled and utcnow() - target.created_at > RECALL_WINDOW:
                raise XtError("message.recall_window_passed")
        if not target.recalled:
            recalled = await self.store.events.update_target(conversation_id, seq, {"recalled": {"$ne": True}},
                                                             {"recalled": True, "recalled_by": me.user_id},
                                                             unset=["message"])
            if recalled is not None:  # this call recalled it, not a concurrent one
                await self.audit.record("message.recall", origin=origin, actor_id=me.user_id, target_type="event",
                                        target_id=target.id, details={"sender_id": target.sender_id})
            target = recalled or await self.store.events.get(conversation_id, seq) or target
        # Edits and card updates carry copies of the content: they go too (again on a retry, which
        # also heals a recall cut off between these writes).
        await self.store.events.strip_changes(conversation_id, seq)
        # One recall event per message: it is written as the user who recalled it, under a derived
        # client_msg_id, so a retry — or a second moderator — finds the first one.
        return await self.writer.append(Draft(conversation_id, "message.recalled", target.recalled_by or me.user_id,
                                              client_msg_id=f"#recall:{conversation_id}:{seq}", target_seq=seq))

    async def update_card(self, me: Principal, conversation_id: str, seq: int, card: Card,
                          client_msg_id: str) -> Written:
        m = await self.conversations.membership(me, conversation_id, active=True)
        # A retry must not change the stored card again (it may carry other content): answer the first.
        if (earlier := await self._earlier(me, conversation_id, client_msg_id, "card.updated")) is not None:
            return earlier
        target = await self._target(m, seq)
        if target.sender_id != me.user_id or target.message is None or target.message.kind != "card":
            raise XtError("perm.forbidden", "Only the sender of a card updates it.")
        check_send(m.conversation, m.member, None)  # as for edits: refuse before the stored card changes
        check_card_size(card)
        await self.store.events.update_target(conversation_id, seq, {"recalled": {"$ne": True}},
                                              {"message.card": _builtins(card), "edited_at": utcnow()},
                                              inc={"edit_version": 1},
                                              change_id=storage_key(conversation_id, seq, me.user_id, client_msg_id))
        return await self.writer.append(Draft(conversation_id, "card.updated", me.user_id,
                                              client_msg_id=client_msg_id, message=Message(kind="card", card=card),
                                              target_seq=seq, policy="send"))

    async def record_call(self, conversation_id: str, caller_id: str, call_id: str, media: str, outcome: str,
                          duration_seconds: int | None) -> Written:
        """The record of a finished call in its conversation (written by the signaling service, which has
        checked the participants). Exactly one per call: the call id is the idempotency key, so a second
        signaling process ending the same call finds the first record."""
        return await self.writer.append(Draft(conversation_id, "call.record", caller_id,
                                              client_msg_id=f"#call:{call_id}", data=SystemData(
                                                  by=caller_id, call_id=call_id, media=media, outcome=outcome,
                                                  duration_seconds=duration_seconds)))

    async def hide(self, me: Principal, conversation_id: str, seqs: list[int]) -> None:
        m = await self.conversations.membership(me, conversation_id)
        lo, hi = self._readable(m)
        if any(not lo <= s <= hi for s in seqs):
            raise XtError("not_found", "No such message.")
        hidden = sorted(set(seqs))
        await self.store.events.hide(me.user_id, conversation_id, hidden, utcnow())
        # The user's other devices drop them too (their next sync would not return them either).
        await self.bus.publish(Envelope(kind="user", target=me.user_id, exclude_device=me.device_id,
                                        frame=frames.hidden_frame(conversation_id, hidden)))

    # ---- reading ------------------------------------------------------------------------------

    @staticmethod
    def _readable(m: Membership) -> tuple[int, int]:
        return m.member.joined_seq, m.readable_until

    async def history(self, me: Principal, conversation_id: str, *, before: int | None = None,
                      after: int | None = None, limit: int = 50) -> Page:
        """A page of the log: the ``limit`` events before ``before`` (newest page when both are None),
        or after ``after``, in seq order, without the events the caller deleted for themself."""
        if before is not None and after is not None:
            raise XtError("request.invalid", "Give before or after, not both.")
        limit = max(1, min(limit, MAX_PAGE))
        m = await self.conversations.membership(me, conversation_id)
        return await self.read_page(m, me.user_id, before=before, after=after, limit=limit)

    async def read_page(self, m: Membership, user_id: str, *, before: int | None, after: int | None,
                        limit: int, max_bytes: int | None = None) -> Page:
        lo, hi = self._readable(m)
        if (after is not None and after > hi) or (before is not None and before > hi + 1):
            raise XtError("message.seq_out_of_range", details={"last_seq": hi})
        if after is not None:
            first, last = max(after + 1, lo), min(after + limit, hi)
            more = last < hi
        else:
            end = hi if before is None else before - 1
            first, last = max(end - limit + 1, lo), end
            more = first > lo
        if last < first:
            return Page([], first, last, False, lo, hi)
        events = await self.store.events.range(m.conversation.id, first, last)
        hidden = await self.store.events.hidden_seqs(user_id, m.conversation.id, first, last)
        if hidden:
            events = [e for e in events if e.seq not in hidden]
        # A page of long messages or chat records could outgrow what a phone should take in one
        # frame (and the socket's send queue): cut it at max_bytes, keeping at least one event.
        max_bytes = MAX_PAGE_BYTES if max_bytes is None else max_bytes
        size, kept = 0, 0
        for event in events if after is not None else reversed(events):
            size += len(msgspec.json.encode(event))
            if kept and size > max_bytes:
                break
            kept += 1
        if kept < len(events):
            if after is not None:
                events = events[:kept]
                last, more = events[-1].seq, True
            else:
                events = events[len(events) - kept:]
                first, more = events[0].seq, True
        return Page(events, first, last, more, lo, hi)


def _depth(forward: Forward) -> int:
    return 1 + max((_depth(i.forward) for i in forward.items if i.forward is not None), default=0)


def _builtins(card: Card) -> dict[str, Any]:
    return msgspec.to_builtins(card)
