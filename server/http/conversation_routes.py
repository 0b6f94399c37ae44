"""REST endpoints of conversations and messages (``/v1/conversations``).

The same services serve the WebSocket gateway: REST is for clients that are not connected (bots,
scripts, a web page before its socket is up) and for administration of a conversation. Every
endpoint answers ``not_found`` for a conversation the caller is not (or was never) a member of, so
conversation ids cannot be probed; ``perm.forbidden`` means a member without the right.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from ..errors import XtError
from ..gateway.frames import ConversationId, MessageInput, Seq, SeqOrZero, UserIdIn
from ..messaging.models import MAX_FORWARD_ITEMS, MAX_TEXT, ClientMsgId
from ..messaging.views import (ConversationListView, ConversationView, MemberPageView, PageView,
                               ReadAllView, ReadStateView, ReceiptsView, SentView, conversation_view,
                               member_page_view, page_view, read_state_view, receipts_view)
from .auth_routes import origin
from .context import RequestContext
from .framework import RouteTable, json_response

routes = RouteTable("conversations", "Direct chats, groups and unit groups: members, settings, messages, read state.")

GroupName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Avatar = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
UserIds = Annotated[list[UserIdIn], msgspec.Meta(min_length=1, max_length=500)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=200)]

MEMBER = ("not_found",)  # the caller must be a member
MANAGE = ("not_found", "perm.forbidden", "conversation.dissolved")  # ... with a role that allows it
SEND = ("not_found", "perm.forbidden", "conversation.muted_all", "conversation.dissolved",
        "message.client_id_reused", "request.rate_limited")
EDIT = ("not_found", "perm.forbidden", "conversation.muted_all", "conversation.dissolved", "message.not_editable",
        "message.edit_window_passed")
SEQ_IN_PATH = ("request.invalid",)  # a `seq` path parameter that is not a positive integer


class DirectOpen(msgspec.Struct, forbid_unknown_fields=True):
    user_id: UserIdIn


class GroupCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: GroupName
    member_ids: UserIds  # besides the creator, who becomes the owner
    avatar: Avatar | None = None


class UnitGroupCreate(msgspec.Struct, forbid_unknown_fields=True):
    unit_id: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]


class MembersQuery(msgspec.Struct, forbid_unknown_fields=True):
    after: UserIdIn | None = None
    limit: Limit = 100


class MembersAdd(msgspec.Struct, forbid_unknown_fields=True):
    user_ids: UserIds


class ConversationUpdate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: GroupName | msgspec.UnsetType = msgspec.UNSET
    avatar: Avatar | msgspec.UnsetType = msgspec.UNSET
    mute_all: bool | msgspec.UnsetType = msgspec.UNSET
    members_can_invite: bool | msgspec.UnsetType = msgspec.UNSET


class OwnerTransfer(msgspec.Struct, forbid_unknown_fields=True):
    user_id: UserIdIn


class Preferences(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    muted: bool | msgspec.UnsetType = msgspec.UNSET
    pinned: bool | msgspec.UnsetType = msgspec.UNSET


class HistoryQuery(msgspec.Struct, forbid_unknown_fields=True):
    before: Seq | None = None
    after: SeqOrZero | None = None
    limit: Limit = 50


class MessageSend(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    client_msg_id: ClientMsgId
    message: MessageInput


class MessageForward(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    client_msg_id: ClientMsgId
    source_conversation_id: ConversationId
    seqs: Annotated[list[Seq], msgspec.Meta(min_length=1, max_length=MAX_FORWARD_ITEMS)]
    mode: Literal["single", "merged"] = "merged"
    title: Annotated[str, msgspec.Meta(max_length=64)] = ""


class MessageEdit(msgspec.Struct, forbid_unknown_fields=True):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
    client_msg_id: ClientMsgId | None = None  # makes a retried edit answer the first one


class ReadMark(msgspec.Struct, forbid_unknown_fields=True):
    seq: Seq


class ReceiptsQuery(msgspec.Struct, forbid_unknown_fields=True):
    which: Literal["read", "unread"] = "read"
    after: UserIdIn | None = None
    limit: Limit = 50


_SEQ = re.compile(r"^[1-9][0-9]{0,15}$")


def seq_param(ctx: RequestContext) -> int:
    """The ``{seq}`` of the path: a positive integer (as in the event log), else ``request.invalid``."""
    raw = ctx.param("seq")
    if not _SEQ.match(raw) or int(raw) > 2**53:
        raise XtError("request.invalid", "seq: must be a positive integer", details={"seq": raw[:32]})
    return int(raw)


def _unset_to_none(struct: msgspec.Struct) -> dict[str, Any]:
    return {name: None if value is msgspec.UNSET else value
            for name, value in msgspec.structs.asdict(struct).items()}


async def _view(ctx: RequestContext, conversation_id: str) -> ConversationView:
    return conversation_view(await ctx.services.sync.conversation(ctx.me, conversation_id))


def _sent(written: Any) -> Any:
    # A retried send answers the stored original with 200; a new message is 201 Created.
    return json_response(SentView(event=written.event, duplicate=written.duplicate),
                         200 if written.duplicate else 201)


# ---- conversations ---------------------------------------------------------------------------------


@routes.route("POST", "/v1/conversations/direct", summary="Open the direct chat with a colleague",
              body=DirectOpen, response=ConversationView, errors=("not_found", "conversation.contact_forbidden"))
async def open_direct(ctx: RequestContext, body: DirectOpen) -> ConversationView:
    """There is exactly one direct chat per pair of users: the first call from either side creates it,
    later calls return it. Creating one needs the directory to show the other user to the caller; an
    existing chat stays usable after the directory hides one of them."""
    conversation = await ctx.services.conversations.open_direct(ctx.me, body.user_id)
    return await _view(ctx, conversation.id)


@routes.route("POST", "/v1/conversations/groups", summary="Create a group (the caller owns it)", body=GroupCreate,
              response=ConversationView, status=201,
              errors=("not_found", "conversation.contact_forbidden", "conversation.full"))
async def create_group(ctx: RequestContext, body: GroupCreate) -> ConversationView:
    conversation = await ctx.services.conversations.create_group(ctx.me, body.name, body.member_ids, body.avatar)
    return await _view(ctx, conversation.id)


@routes.route("POST", "/v1/conversations/units", summary="Create the group of a unit I administer",
              body=UnitGroupCreate, response=ConversationView,
              errors=("not_found", "perm.forbidden", "conflict.exists"))
async def create_unit_group(ctx: RequestContext, body: UnitGroupCreate) -> ConversationView:
    """The unit's direct members become its members, and follow the directory from then on (a new post
    in the unit joins the group, a removed post leaves it). The creating administrator owns it. Calling
    again returns the existing group; an administrator who is not in it gets `conflict.exists` with
    `details.conversation_id`."""
    conversation = await ctx.services.conversations.create_unit_group(ctx.me, body.unit_id)
    return await _view(ctx, conversation.id)


@routes.route("GET", "/v1/conversations", summary="My conversations, pinned first, then by recent activity",
              response=ConversationListView)
async def list_conversations(ctx: RequestContext) -> ConversationListView:
    """Former conversations (left, removed) are listed too, readable up to the event that ended the
    membership."""
    entries = await ctx.services.sync.conversation_list(ctx.me)
    return ConversationListView(conversations=[conversation_view(e) for e in entries])


@routes.route("GET", "/v1/conversations/{conversation_id}", summary="One of my conversations",
              response=ConversationView, errors=MEMBER)
async def get_conversation(ctx: RequestContext) -> ConversationView:
    return await _view(ctx, ctx.param("conversation_id"))


@routes.route("PATCH", "/v1/conversations/{conversation_id}",
              summary="Rename, change the avatar, switch mute-all or the invite rule (owner and admins)",
              body=ConversationUpdate, response=ConversationView, errors=MANAGE)
async def update_conversation(ctx: RequestContext, body: ConversationUpdate) -> ConversationView:
    """A rename alone is logged as `conversation.renamed`, anything else as `conversation.updated`."""
    conversation_id = ctx.param("conversation_id")
    await ctx.services.conversations.update(ctx.me, conversation_id, **_unset_to_none(body))
    return await _view(ctx, conversation_id)


@routes.route("PUT", "/v1/conversations/{conversation_id}/preferences", summary="Mute or pin it, for me only",
              body=Preferences, response=ConversationView, errors=MEMBER)
async def set_preferences(ctx: RequestContext, body: Preferences) -> ConversationView:
    conversation_id = ctx.param("conversation_id")
    await ctx.services.conversations.set_preferences(ctx.me, conversation_id, **_unset_to_none(body))
    return await _view(ctx, conversation_id)


# ---- members ---------------------------------------------------------------------------------------


@routes.route("GET", "/v1/conversations/{conversation_id}/members", summary="A page of the current members",
              query=MembersQuery, response=MemberPageView, errors=MEMBER)
async def list_members(ctx: RequestContext, query: MembersQuery) -> MemberPageView:
    """Ordered by user id; pass `next_after` as `after` for the next page."""
    members = await ctx.services.conversations.members_page(ctx.me, ctx.param("conversation_id"), after=query.after,
                                                            limit=query.limit)
    return member_page_view(members, query.limit)


@routes.route("POST", "/v1/conversations/{conversation_id}/members", summary="Add members to a group",
              body=MembersAdd, response=ConversationView,
              errors=MANAGE + ("conversation.full", "conversation.contact_forbidden"))
async def add_members(ctx: RequestContext, body: MembersAdd) -> ConversationView:
    """Owner and admins always; plain members while `members_can_invite` is on. Users already in the
    group are skipped; the others join in one `member.joined` event."""
    conversation_id = ctx.param("conversation_id")
    await ctx.services.conversations.add_members(ctx.me, conversation_id, body.user_ids)
    return await _view(ctx, conversation_id)


@routes.route("DELETE", "/v1/conversations/{conversation_id}/members/{user_id}",
              summary="Remove a member (or leave, for my own id)", status=204,
              errors=MANAGE + ("conversation.owner_must_transfer",))
async def remove_member(ctx: RequestContext) -> None:
    """Admins remove plain members; only the owner removes admins; nobody removes the owner."""
    await ctx.services.conversations.remove_member(ctx.me, ctx.param("conversation_id"), ctx.param("user_id"))


@routes.route("POST", "/v1/conversations/{conversation_id}/leave", summary="Leave a group", status=204,
              errors=("not_found", "perm.forbidden", "conversation.owner_must_transfer"))
async def leave(ctx: RequestContext) -> None:
    """The owner transfers ownership first (unless alone). Direct chats and unit groups cannot be left."""
    await ctx.services.conversations.leave(ctx.me, ctx.param("conversation_id"))


@routes.route("PUT", "/v1/conversations/{conversation_id}/admins/{user_id}", summary="Appoint an admin (owner)",
              status=204, errors=MANAGE + ("request.invalid",))
async def appoint_admin(ctx: RequestContext) -> None:
    await ctx.services.conversations.set_admin(ctx.me, ctx.param("conversation_id"), ctx.param("user_id"), True)


@routes.route("DELETE", "/v1/conversations/{conversation_id}/admins/{user_id}", summary="Withdraw an admin (owner)",
              status=204, errors=MANAGE + ("request.invalid",))
async def withdraw_admin(ctx: RequestContext) -> None:
    await ctx.services.conversations.set_admin(ctx.me, ctx.param("conversation_id"), ctx.param("user_id"), False)


@routes.route("POST", "/v1/conversations/{conversation_id}/transfer", summary="Hand the group to another member",
              body=OwnerTransfer, status=204, errors=MANAGE)
async def transfer_owner(ctx: RequestContext, body: OwnerTransfer) -> None:
    """The former owner stays in the group as an admin."""
    await ctx.services.conversations.transfer_owner(ctx.me, ctx.param("conversation_id"), body.user_id)


@routes.route("POST", "/v1/conversations/{conversation_id}/dissolve", summary="Dissolve a group (owner)",
              status=204, errors=MANAGE)
async def dissolve(ctx: RequestContext) -> None:
    """Nothing more can be sent; the history stays readable to its members."""
    await ctx.services.conversations.dissolve(ctx.me, ctx.param("conversation_id"))


# ---- messages --------------------------------------------------------------------------------------


@routes.route("GET", "/v1/conversations/{conversation_id}/events", summary="A page of the conversation's log",
              query=HistoryQuery, response=PageView, errors=MEMBER + ("message.seq_out_of_range",))
async def history(ctx: RequestContext, query: HistoryQuery) -> PageView:
    """The newest `limit` events, or those before `before`, or after `after` (not both), in seq order,
    within what the caller may read (`readable_from`..`readable_until`), without the events the caller
    deleted for themself."""
    conversation_id = ctx.param("conversation_id")
    page = await ctx.services.messages.history(ctx.me, conversation_id, before=query.before, after=query.after,
                                               limit=query.limit)
    return page_view(conversation_id, page)


@routes.route("POST", "/v1/conversations/{conversation_id}/messages", summary="Send a message",
              body=MessageSend, response=SentView, status=201, also_ok=(200,), errors=SEND)
async def send(ctx: RequestContext, body: MessageSend) -> Any:
    """Idempotent by `client_msg_id`: a retry answers `200` with the original event (same seq) and
    `duplicate: true`; a new message answers `201`."""
    ctx.services.limits.check("send", ctx.me.user_id)
    return _sent(await ctx.services.messages.send(ctx.me, ctx.param("conversation_id"), body.client_msg_id,
                                                  body.message.to_message()))


@routes.route("POST", "/v1/conversations/{conversation_id}/forward",
              summary="Forward messages of another conversation into this one", body=MessageForward,
              response=SentView, status=201, also_ok=(200,), errors=SEND)
async def forward(ctx: RequestContext, body: MessageForward) -> Any:
    """`single` forwards one message as it is; `merged` forwards up to 100 as one chat record (合并转发).
    The messages are copied: recalling a source later does not change the forwarded copy. Idempotent
    like a send."""
    ctx.services.limits.check("send", ctx.me.user_id)
    return _sent(await ctx.services.messages.forward(ctx.me, ctx.param("conversation_id"), body.client_msg_id,
                                                     body.source_conversation_id, body.seqs, body.mode, body.title))


@routes.route("PATCH", "/v1/conversations/{conversation_id}/events/{seq}", summary="Edit my text message",
              body=MessageEdit, response=SentView,
              errors=EDIT + ("message.client_id_reused",))
async def edit(ctx: RequestContext, body: MessageEdit) -> SentView:
    """Within 15 minutes of sending. Answers the `message.edited` event (`duplicate: true` for a retry
    with the same `client_msg_id`)."""
    seq = seq_param(ctx)
    written = await ctx.services.messages.edit(ctx.me, ctx.param("conversation_id"), seq, body.text,
                                               body.client_msg_id)
    return SentView(event=written.event, duplicate=written.duplicate)


@routes.route("POST", "/v1/conversations/{conversation_id}/events/{seq}/recall", summary="Recall a message (撤回)",
              response=SentView, errors=MANAGE + SEQ_IN_PATH + ("message.not_editable",
                                                                 "message.recall_window_passed"))
async def recall(ctx: RequestContext) -> SentView:
    """The sender within 2 minutes; the owner and admins of a group at any time. The content is erased
    for everyone; answers the `message.recalled` event (a retry answers the same one)."""
    seq = seq_param(ctx)
    written = await ctx.services.messages.recall(ctx.me, ctx.param("conversation_id"), seq, origin(ctx))
    return SentView(event=written.event, duplicate=written.duplicate)


@routes.route("POST", "/v1/conversations/{conversation_id}/events/{seq}/hide", summary="Delete an event for me",
              status=204, errors=MEMBER + SEQ_IN_PATH)
async def hide(ctx: RequestContext) -> None:
    """The event disappears from the caller's own reads; the others still see it."""
    seq = seq_param(ctx)
    await ctx.services.messages.hide(ctx.me, ctx.param("conversation_id"), [seq])


# ---- read state ------------------------------------------------------------------------------------


@routes.route("POST", "/v1/conversations/read-all", summary="Mark all my conversations read",
              response=ReadAllView)
async def read_all(ctx: RequestContext) -> ReadAllView:
    return ReadAllView(conversations=await ctx.services.read_state.mark_all_read(ctx.me))


@routes.route("POST", "/v1/conversations/{conversation_id}/read", summary="Move my read position",
              body=ReadMark, response=ReadStateView, errors=MEMBER + ("message.seq_out_of_range",))
async def mark_read(ctx: RequestContext, body: ReadMark) -> ReadStateView:
    """The position only moves forward: an older seq leaves it where it is."""
    state = await ctx.services.read_state.mark_read(ctx.me, ctx.param("conversation_id"), body.seq)
    return read_state_view(state)


@routes.route("GET", "/v1/conversations/{conversation_id}/events/{seq}/receipts",
              summary="Who has (not) read a message", query=ReceiptsQuery, response=ReceiptsView,
              errors=MEMBER + ("receipts.group_too_large",))
async def receipts(ctx: RequestContext, query: ReceiptsQuery) -> ReceiptsView:
    """Counts members who were in the conversation at that message, the sender excluded, and lists a
    page of readers (`which=read`) or of those who have not read it yet (`which=unread`)."""
    seq = seq_param(ctx)
    conversation_id = ctx.param("conversation_id")
    result = await ctx.services.read_state.receipts(ctx.me, conversation_id, seq, which=query.which,
                                                    after=query.after, limit=query.limit)
    return receipts_view(conversation_id, seq, result)
