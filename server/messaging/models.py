"""Conversations, members and events: the typed shapes of the messaging core.

An :class:`Event` is one entry of a conversation's log, identified by ``(conversation_id, seq)``;
its id is ``"<conversation_id>:<seq as 12 digits>"``. The same struct is what the store keeps and
what clients receive (encoded once per fan-out), so there is one event model end to end.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

ConversationKind = Literal["direct", "group", "unit"]
MemberRole = Literal["owner", "admin", "member"]
MessageKind = Literal["text", "card", "file", "image", "forward"]

# Event types. "message" is what people send; the rest record changes to messages or to the
# conversation, and are never counted as unread.
EventType = Literal[
    "message",
    "message.edited",
    "message.recalled",
    "card.updated",
    "conversation.created",
    "conversation.renamed",
    "conversation.updated",  # avatar, mute-all, invite rule
    "conversation.owner_transferred",
    "conversation.admins_changed",
    "conversation.dissolved",
    "member.joined",
    "member.left",
    "member.removed",
    "call.record",
]

MAX_TEXT = 5000
MAX_MENTIONS = 50
MAX_FORWARD_ITEMS = 100
MAX_CARD_BYTES = 16 * 1024

ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]


def event_id(conversation_id: str, seq: int) -> str:
    return f"{conversation_id}:{seq:012d}"


class ReplyRef(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """The message a reply quotes, by seq. No excerpt is copied: clients show the quoted event as it
    is now, so a recalled message disappears from the replies that quote it too."""

    seq: Annotated[int, msgspec.Meta(ge=1)]


class FileRef(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """A file or image shared in the conversation. Uploads are a later part; the shape is fixed now:
    ``file_id`` names a stored upload, and only members of the conversation may download it."""

    file_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    size: Annotated[int, msgspec.Meta(ge=0, le=2**40)]
    mime: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    width: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    height: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    thumbnail_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class CardField(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    label: Annotated[str, msgspec.Meta(max_length=64)]
    value: Annotated[str, msgspec.Meta(max_length=512)]


class CardButton(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    style: Literal["default", "primary", "danger"] = "default"
    url: Annotated[str, msgspec.Meta(max_length=2048)] | None = None


class Card(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """An interactive card (bots, mini-apps). Updatable in place by its sender (``card.updated``)."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    body: Annotated[str, msgspec.Meta(max_length=4000)] = ""
    fields: Annotated[list[CardField], msgspec.Meta(max_length=20)] = []
    buttons: Annotated[list[CardButton], msgspec.Meta(max_length=8)] = []
    status: Annotated[str, msgspec.Meta(max_length=32)] | None = None  # e.g. "已同意"
    app_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class ForwardedItem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A copy of a message taken at forwarding time (its source may later be recalled)."""

    sender_id: str | None
    sender_name: str
    created_at: datetime
    kind: MessageKind
    text: str | None = None
    card: Card | None = None
    file: FileRef | None = None
    forward: "Forward | None" = None


class Forward(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``single``: one message forwarded; ``merged``: a chat record (合并转发) of several."""

    mode: Literal["single", "merged"]
    title: str = ""
    source_conversation_id: str | None = None
    items: list[ForwardedItem]


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The content of a ``message`` event."""

    kind: MessageKind
    text: str | None = None
    mentions: list[str] = []  # user ids
    mention_all: bool = False
    reply_to: ReplyRef | None = None
    card: Card | None = None
    file: FileRef | None = None
    forward: Forward | None = None
    urgent: bool = False


class SystemData(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a system event records; which fields are set depends on the event type."""

    by: str | None = None  # who did it
    user_ids: list[str] = []  # joined / removed / admins added or removed
    removed_admin_ids: list[str] = []
    name: str | None = None
    avatar: str | None = None
    mute_all: bool | None = None
    members_can_invite: bool | None = None
    from_user: str | None = None
    to_user: str | None = None
    kind: str | None = None  # conversation.created: direct / group / unit
    unit_id: str | None = None
    # call.record
    call_id: str | None = None
    media: str | None = None
    outcome: str | None = None
    duration_seconds: int | None = None


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One entry of a conversation's log (stored with ``_id`` = ``id``).

    Fields at their default are left out, on the wire and in the store: queries on ``recalled`` or
    ``edit_version`` must treat a missing field as the default (see ``EventsStore.update_target``)."""

    id: str
    conversation_id: str
    seq: int
    count: int  # messages (type "message") in the conversation up to and including this event
    type: EventType
    created_at: datetime
    sender_id: str | None = None
    client_msg_id: str | None = None
    message: Message | None = None
    target_seq: int | None = None  # the message an edit / recall / card update applies to
    data: SystemData | None = None
    # State of a message as of now (reads return the current state, not the state at sending).
    edited_at: datetime | None = None
    edit_version: int = 0
    recalled: bool = False
    recalled_by: str | None = None


class EventSummary(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The last event of a conversation, for the conversation list.

    ``seq`` must stay the first field: heads are advanced with ``$max``, which compares embedded
    documents field by field, so the summary with the higher seq wins."""

    seq: int
    type: EventType
    created_at: datetime
    sender_id: str | None = None
    preview: str = ""
    recalled: bool = False


class Conversation(msgspec.Struct, kw_only=True):
    id: str = msgspec.field(name="_id")
    kind: ConversationKind
    name: str = ""
    avatar: str | None = None
    owner_id: str | None = None
    direct_key: str | None = None  # "<user id>|<user id>", sorted: one direct chat per pair
    unit_id: str | None = None  # unit groups follow this unit's members
    member_count: int = 0
    mute_all: bool = False  # only owner and admins may send
    members_can_invite: bool = True
    status: Literal["active", "dissolved"] = "active"
    last_seq: int = 0
    msg_count: int = 0
    last_event: EventSummary | None = None
    all_mention_seqs: list[int] = []  # recent @all mentions, newest last (at most 20)
    created_by: str | None = None
    created_at: datetime
    updated_at: datetime


class Member(msgspec.Struct, kw_only=True):
    id: str = msgspec.field(name="_id")  # "<conversation_id>|<user_id>"
    conversation_id: str
    user_id: str
    role: MemberRole = "member"
    state: Literal["active", "left"] = "active"
    joined_seq: int  # the first event this member may read
    left_seq: int | None = None  # the last event a former member may read
    read_seq: int = 0
    read_count: int = 0  # Event.count at read_seq: unread = Conversation.msg_count - read_count
    delivered_seq: int = 0
    mention_seqs: list[int] = []  # seqs of messages mentioning this member (at most 100)
    muted: bool = False
    pinned: bool = False
    joined_at: datetime
    updated_at: datetime


def member_id(conversation_id: str, user_id: str) -> str:
    return f"{conversation_id}|{user_id}"


def direct_key(a: str, b: str) -> str:
    return "|".join(sorted((a, b)))


def peer_of(conversation: Conversation, user_id: str) -> str | None:
    """The other user of a direct chat (None for groups)."""
    if conversation.kind != "direct" or not conversation.direct_key:
        return None
    a, _, b = conversation.direct_key.partition("|")
    return b if a == user_id else a
