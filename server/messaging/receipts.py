"""Read state: read positions, unread counts, "read by N of M", delivery in direct chats, typing.

Numbers (docs/flows/read-receipts.md):

* A member's **read position** is a seq; it only moves forward. Sending a message moves the sender's
  position to it (the event writer does this in the batch that stores the message).
* **Unread** = messages after the read position = ``Conversation.msg_count - Member.read_count``
  (each event stores the running message count, so this needs no counting query).
  **Mention unread** counts the member's @mentions and the conversation's @all after the position.
* **Read by N of M** for a message at seq S: members who joined by S and have read up to S, out of
  members who joined by S (the sender excluded) — two counting queries on an index. Kept only for
  conversations of at most :data:`RECEIPT_GROUP_LIMIT` members; larger groups answer
  ``receipts.group_too_large`` (as DingTalk and WeCom do for big groups).
* A read position change is pushed to the reader's own devices always (their unread badges), and to
  every member's devices only in conversations of at most :data:`READ_FANOUT_LIMIT` members.
* **Delivered** (direct chats only): the recipient's device reports the highest seq it received;
  the sender's devices are told.
* **Typing** is ephemeral (never stored), at most one notice per :data:`TYPING_INTERVAL` per device
  and conversation, and not sent in groups above :data:`READ_FANOUT_LIMIT` members.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from pymongo import UpdateOne

from ..access import Principal
from ..bus import Bus, Envelope
from ..errors import XtError
from ..gateway import frames
from ..models import from_doc, utcnow
from ..store import Store
from .conversations import ConversationService
from .models import Conversation, Member

RECEIPT_GROUP_LIMIT = 500
READ_FANOUT_LIMIT = 100
TYPING_INTERVAL = 3.0


@dataclass(frozen=True)
class ReadState:
    conversation_id: str
    read_seq: int
    unread: int
    mention_unread: int


def unread_counts(conversation: Conversation, member: Member) -> tuple[int, int]:
    """(unread, mention_unread) of a member, from stored numbers only."""
    if member.state != "active":
        return 0, 0
    unread = max(0, conversation.msg_count - member.read_count)
    # A set: a message that mentions the member and @all is one mention.
    mentions = {s for s in member.mention_seqs if s > member.read_seq}
    mentions.update(s for s in conversation.all_mention_seqs if s > member.read_seq and s >= member.joined_seq)
    return unread, min(len(mentions), unread)


@dataclass(frozen=True)
class Receipts:
    read_count: int
    total: int  # members (sender excluded) who were in the conversation at that seq
    users: list[Member]  # a page of readers (or non-readers)
    next_after: str | None


class ReadStateService:
    def __init__(self, store: Store, conversations: ConversationService, bus: Bus):
        self.store = store
        self.conversations = conversations
        self.bus = bus

    async def mark_read(self, me: Principal, conversation_id: str, seq: int) -> ReadState:
        m = await self.conversations.membership(me, conversation_id)
        if seq > m.readable_until:
            raise XtError("message.seq_out_of_range", details={"last_seq": m.readable_until})
        member = m.member
        if seq > member.read_seq:
            event = await self.store.events.get(conversation_id, seq)
            if event is None:  # below the readable head every seq exists; only a race lands here
                raise XtError("message.seq_out_of_range", details={"last_seq": m.readable_until})
            member = await self.store.conversations.advance_read(member.id, seq, event.count, utcnow()) or \
                await self.store.conversations.get_member(member.id) or member
            await self._announce_read(m.conversation, member)
        unread, mentions = unread_counts(m.conversation, member)
        return ReadState(conversation_id, member.read_seq, unread, mentions)

    async def _announce_read(self, conversation: Conversation, member: Member) -> None:
        """The reader's devices get their new unread counts; in small conversations, the other
        members' devices get the reader's position (without the reader's counts)."""
        unread, mentions = unread_counts(conversation, member)
        own = frames.read_frame(conversation.id, member.user_id, member.read_seq, unread=unread,
                                mention_unread=mentions)
        await self.bus.publish(Envelope(kind="user", target=member.user_id, frame=own))
        if conversation.member_count <= READ_FANOUT_LIMIT and member.state == "active":
            await self.bus.publish(Envelope(kind="conversation", target=conversation.id, exclude_user=member.user_id,
                                            frame=frames.read_frame(conversation.id, member.user_id,
                                                                    member.read_seq)))

    async def mark_all_read(self, me: Principal) -> int:
        """Read everything: returns how many conversations changed."""
        members = await self.store.conversations.memberships_of(me.user_id, include_left=False)
        conversations = await self.store.conversations.get_many(m.conversation_id for m in members)
        now = utcnow()
        ops = []
        changed: list[tuple[Conversation, Member]] = []
        for member in members:
            conversation = conversations.get(member.conversation_id)
            if conversation is None or conversation.last_seq <= member.read_seq:
                continue
            ops.append(UpdateOne({"_id": member.id, "read_seq": {"$lt": conversation.last_seq}},
                                 {"$set": {"read_seq": conversation.last_seq, "read_count": conversation.msg_count,
                                           "updated_at": now},
                                  "$max": {"delivered_seq": conversation.last_seq},
                                  "$pull": {"mention_seqs": {"$lte": conversation.last_seq}}}))
            changed.append((conversation, msgspec.structs.replace(
                member, read_seq=conversation.last_seq, read_count=conversation.msg_count, mention_seqs=[])))
        if ops:
            await self.store.conversations.members.bulk_write(ops, ordered=False)
        for conversation, member in changed:
            await self._announce_read(conversation, member)
        return len(changed)

    async def delivered(self, me: Principal, conversation_id: str, seq: int) -> None:
        m = await self.conversations.membership(me, conversation_id, active=True)
        if seq > m.readable_until:
            raise XtError("message.seq_out_of_range", details={"last_seq": m.readable_until})
        if m.conversation.kind != "direct":
            return  # delivery state is kept for direct chats only
        if await self.store.conversations.advance_delivered(m.member.id, seq):
            await self.bus.publish(Envelope(kind="conversation", target=conversation_id,
                                            frame=frames.delivered_frame(conversation_id, me.user_id, seq)))

    async def receipts(self, me: Principal, conversation_id: str, seq: int, *, which: str, after: str | None,
                       limit: int) -> Receipts:
        m = await self.conversations.membership(me, conversation_id)
        if not m.member.joined_seq <= seq <= m.readable_until:
            raise XtError("not_found", "No such message.")
        if m.conversation.member_count > RECEIPT_GROUP_LIMIT:
            raise XtError("receipts.group_too_large", details={"limit": RECEIPT_GROUP_LIMIT})
        event = await self.store.events.get(conversation_id, seq)
        sender = event.sender_id if event else None
        col = self.store.conversations.members
        base = {"conversation_id": conversation_id, "state": "active", "joined_seq": {"$lte": seq}}
        not_sender = {"$ne": sender} if sender else {"$exists": True}
        total = await col.count_documents({**base, "user_id": not_sender})
        read = await col.count_documents({**base, "user_id": not_sender, "read_seq": {"$gte": seq}})
        user_filter: dict[str, object] = dict(not_sender)
        if after:
            user_filter["$gt"] = after
        query = {**base, "user_id": user_filter, "read_seq": {"$gte": seq} if which == "read" else {"$lt": seq}}
        docs = await col.find(query).sort("user_id", 1).limit(limit).to_list()
        users = [from_doc(d, Member) for d in docs]
        return Receipts(read, total, users, users[-1].user_id if len(users) == limit else None)

    async def typing(self, me: Principal, conversation_id: str) -> bool:
        """Relay a typing notice (the gateway rate-limits per device before calling); False when
        the conversation is too large to relay typing."""
        m = await self.conversations.membership(me, conversation_id, active=True)
        if m.conversation.member_count > READ_FANOUT_LIMIT:
            return False
        await self.bus.publish(Envelope(kind="conversation", target=conversation_id, exclude_device=me.device_id,
                                        frame=frames.typing_frame(conversation_id, me.user_id)))
        return True
