"""Sync after (re)connect: what a device missed, in order, plus the conversation list.

The algorithm (docs/protocol.md, "Sync"):

1. The device sends ``since``: for each conversation it holds, the highest seq it has without a gap
   (a new device sends ``{}``).
2. The server lists the caller's conversations (former ones included, readable up to the event that
   ended the membership) with their head, unread and mention counts, mute state and last event.
3. For each conversation in ``since`` whose readable head is beyond the device's seq, it returns the
   next ``limit`` events after it, in seq order, and ``has_more`` when more follow; the device
   repeats ``sync`` (or pages with ``history after=``) until nothing is left. One answer carries at
   most :data:`MAX_SYNC_BYTES` of events (one conversation at most :data:`PAGE_BYTES`); conversations
   beyond that answer ``has_more`` with no events, for the next round. Conversations the
   device does not hold yet get no events, only their list entry: the device loads them with
   ``history`` when they are opened.
4. A conversation in ``since`` that is not the caller's answers ``not_found`` in ``errors``; a seq
   beyond the readable head answers ``message.seq_out_of_range`` (the device's copy is corrupt:
   drop it and sync that conversation from 0).

A device offline for a week and one that missed three events run the same steps and converge on the
same log; the numbers (seq, read positions, unread) are the ones the server stores.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import msgspec

from ..access import Principal
from ..errors import XtError
from ..store import Store
from .conversations import Membership
from .messages import MessageService
from .models import Conversation, Event, Member, member_id, peer_of
from .receipts import unread_counts

MAX_CONVERSATIONS = 5000
CONCURRENT_READS = 8
MAX_SYNC_BYTES = 4 * 1024 * 1024  # events in one sync answer; the rest follow with has_more
PAGE_BYTES = 1024 * 1024  # one conversation's share, so one busy chat cannot starve the others


@dataclass(frozen=True)
class ConversationEntry:
    conversation: Conversation
    member: Member
    unread: int
    mention_unread: int
    readable_until: int
    peer: Member | None = None  # direct chats: the other user's membership (read/delivered positions)


@dataclass
class SyncResult:
    conversations: list[ConversationEntry]
    events: dict[str, list[Event]] = field(default_factory=dict)
    through: dict[str, int] = field(default_factory=dict)  # the device now has everything up to this seq
    has_more: dict[str, bool] = field(default_factory=dict)
    errors: dict[str, XtError] = field(default_factory=dict)


class SyncService:
    def __init__(self, store: Store, messages: MessageService):
        self.store = store
        self.messages = messages

    async def conversation_list(self, me: Principal) -> list[ConversationEntry]:
        members = await self.store.conversations.memberships_of(me.user_id)
        conversations = await self.store.conversations.get_many(m.conversation_id for m in members)
        peer_ids = [member_id(c.id, peer) for c in conversations.values() if (peer := peer_of(c, me.user_id))]
        peers = await self.store.conversations.get_members(peer_ids)
        entries = []
        for member in members:
            conversation = conversations.get(member.conversation_id)
            if conversation is None:
                continue
            peer = peer_of(conversation, me.user_id)
            entries.append(_entry(conversation, member, peers.get(member_id(conversation.id, peer)) if peer else None))
        # Most recent activity first, pinned conversations on top.
        entries.sort(key=lambda e: (not e.member.pinned, -(e.conversation.last_event.created_at.timestamp()
                                                            if e.conversation.last_event else 0)))
        return entries[:MAX_CONVERSATIONS]

    async def conversation(self, me: Principal, conversation_id: str) -> ConversationEntry:
        """One entry of the caller's list (a former conversation too), or ``not_found``."""
        m = await self.messages.conversations.membership(me, conversation_id)
        peer = peer_of(m.conversation, me.user_id)
        peer_member = await self.store.conversations.get_member(member_id(conversation_id, peer)) if peer else None
        return _entry(m.conversation, m.member, peer_member)

    async def sync(self, me: Principal, since: dict[str, int], limit: int) -> SyncResult:
        entries = await self.conversation_list(me)
        result = SyncResult(conversations=entries)
        by_id = {e.conversation.id: e for e in entries}
        gate = asyncio.Semaphore(CONCURRENT_READS)

        async def catch_up(conversation_id: str, have: int) -> None:
            entry = by_id.get(conversation_id)
            if entry is None:
                result.errors[conversation_id] = XtError("not_found", "No such conversation, or you are not a member.")
                return
            if have > entry.readable_until:
                result.errors[conversation_id] = XtError("message.seq_out_of_range",
                                                         details={"last_seq": entry.readable_until})
                return
            if have == entry.readable_until:
                return
            nonlocal budget
            async with gate:
                # Reserve this conversation's share before reading, so concurrent reads cannot
                # together overshoot the answer's budget; give back what the page did not use.
                share = min(budget, PAGE_BYTES)
                if share <= 0:  # the answer is full: this conversation waits for the next sync
                    result.through[conversation_id] = have
                    result.has_more[conversation_id] = True
                    result.events[conversation_id] = []
                    return
                budget -= share
                page = await self.messages.read_page(Membership(entry.conversation, entry.member), me.user_id,
                                                     before=None, after=have, limit=limit, max_bytes=share)
                budget += share - sum(len(msgspec.json.encode(e)) for e in page.events)
            result.events[conversation_id] = page.events
            result.through[conversation_id] = page.last
            result.has_more[conversation_id] = page.has_more

        budget = MAX_SYNC_BYTES
        await asyncio.gather(*(catch_up(cid, have) for cid, have in since.items()))
        return result


def _entry(conversation: Conversation, member: Member, peer: Member | None) -> ConversationEntry:
    unread, mentions = unread_counts(conversation, member)
    return ConversationEntry(conversation, member, unread, mentions,
                             Membership(conversation, member).readable_until, peer)
