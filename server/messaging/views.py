"""What clients see of conversations, members, pages and receipts (REST and WebSocket alike)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from .models import Event, EventSummary, peer_of
from .sync import ConversationEntry, SyncResult


class ConversationView(msgspec.Struct, kw_only=True, omit_defaults=True):
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


class MemberView(msgspec.Struct, kw_only=True):
    user_id: str
    role: str
    joined_seq: int


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
