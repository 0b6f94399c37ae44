"""What clients see of conversations, members, pages and receipts (REST and WebSocket alike)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from .messages import Page
from .models import Event, EventSummary, Member, peer_of
from .receipts import Receipts, ReadState
from .sync import ConversationEntry, SyncResult


class ConversationView(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    name: str
    avatar: str | None = None
    owner_id: str | None = None
    unit_id: str | None = None
    peer_id: str | None = None  # direct chats: the other user
    member_count: int
    mute_all: bool = False
    members_can_invite: bool = True
    status: str
    last_seq: int
    last_event: EventSummary | None = None
    created_at: datetime
    # The caller's own state in it.
    membership: str  # active | left
    role: str
    joined_seq: int
    readable_until: int
    read_seq: int
    unread: int
    mention_unread: int
    muted: bool = False
    pinned: bool = False
    # Direct chats: how far the other user has received and read.
    peer_read_seq: int | None = None
    peer_delivered_seq: int | None = None


class ConversationMemberView(msgspec.Struct, kw_only=True):
    """A member of a conversation (named apart from the directory's ``MemberView`` of a unit)."""

    user_id: str
    role: str
    joined_seq: int


class MemberPageView(msgspec.Struct, kw_only=True):
    members: list[ConversationMemberView]
    next_after: str | None  # pass as ``after`` for the next page; None on the last page


class ConversationListView(msgspec.Struct, kw_only=True):
    conversations: list[ConversationView]


class SentView(msgspec.Struct, kw_only=True):
    event: Event
    duplicate: bool  # True: a retry (same client_msg_id), answered with the stored original event


class ReadAllView(msgspec.Struct, kw_only=True):
    conversations: int  # how many conversations were marked read


class PageView(msgspec.Struct, kw_only=True):
    conversation_id: str
    events: list[Event]
    first: int
    last: int
    has_more: bool
    readable_from: int
    readable_until: int


class ErrorView(msgspec.Struct, kw_only=True, omit_defaults=True):
    code: str
    message: str
    details: dict[str, object] = {}


class SyncView(msgspec.Struct, kw_only=True):
    server_time: datetime
    conversations: list[ConversationView]
    events: dict[str, list[Event]]
    through: dict[str, int]
    has_more: dict[str, bool]
    errors: dict[str, ErrorView]


class ReadStateView(msgspec.Struct, kw_only=True):
    conversation_id: str
    read_seq: int
    unread: int
    mention_unread: int


class ReceiptsView(msgspec.Struct, kw_only=True):
    conversation_id: str
    seq: int
    read_count: int
    total: int
    users: list[str]
    next_after: str | None


def conversation_view(entry: ConversationEntry) -> ConversationView:
    c, m, peer = entry.conversation, entry.member, entry.peer
    return ConversationView(
        id=c.id, kind=c.kind, name=c.name, avatar=c.avatar, owner_id=c.owner_id, unit_id=c.unit_id,
        peer_id=peer_of(c, m.user_id), member_count=c.member_count, mute_all=c.mute_all,
        members_can_invite=c.members_can_invite, status=c.status, last_seq=min(c.last_seq, entry.readable_until),
        last_event=c.last_event if c.last_event and c.last_event.seq <= entry.readable_until else None,
        created_at=c.created_at, membership=m.state, role=m.role, joined_seq=m.joined_seq,
        readable_until=entry.readable_until, read_seq=m.read_seq, unread=entry.unread,
        mention_unread=entry.mention_unread, muted=m.muted, pinned=m.pinned,
        peer_read_seq=peer.read_seq if peer else None, peer_delivered_seq=peer.delivered_seq if peer else None)


def sync_view(result: SyncResult, now: datetime) -> SyncView:
    return SyncView(server_time=now, conversations=[conversation_view(e) for e in result.conversations],
                    events=result.events, through=result.through,
                    has_more=result.has_more,
                    errors={cid: ErrorView(code=e.code, message=e.message, details=e.details)
                            for cid, e in result.errors.items()})


def member_page_view(members: list[Member], limit: int) -> MemberPageView:
    return MemberPageView(members=[ConversationMemberView(user_id=m.user_id, role=m.role, joined_seq=m.joined_seq)
                                   for m in members],
                          next_after=members[-1].user_id if len(members) == limit else None)


def page_view(conversation_id: str, page: Page) -> PageView:
    return PageView(conversation_id=conversation_id, events=page.events, first=page.first, last=page.last,
                    has_more=page.has_more, readable_from=page.readable_from, readable_until=page.readable_until)


def receipts_view(conversation_id: str, seq: int, receipts: Receipts) -> ReceiptsView:
    return ReceiptsView(conversation_id=conversation_id, seq=seq, read_count=receipts.read_count,
                        total=receipts.total, users=[m.user_id for m in receipts.users],
                        next_after=receipts.next_after)


def read_state_view(state: ReadState) -> ReadStateView:
    return ReadStateView(conversation_id=state.conversation_id, read_seq=state.read_seq, unread=state.unread,
                         mention_unread=state.mention_unread)
