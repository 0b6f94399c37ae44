"""Conversations and their membership: direct chats, groups, unit groups.

Rules (decisions recorded in docs/flows/conversations.md):

* **Direct**: exactly one per pair of users (a unique key), created on first use by either side if
  the directory lets the caller see the other user.
* **Group**: the creator is the owner. Owner and admins rename, change the avatar, switch mute-all
  (then only they speak) and the invite rule, and remove members (admins remove plain members only;
  the owner removes anyone). Members invite others while ``members_can_invite`` is on. The owner
  appoints admins, transfers ownership, and dissolves the group; the owner cannot leave before
  transferring. At most :data:`MAX_GROUP_MEMBERS` members.
* **Unit group**: follows a unit of the directory — created once by an administrator of the unit (who
  owns it), its members are the unit's direct members, kept in step when posts are added or removed.
  Asking again returns it to its members; another administrator who is not in it gets
  ``conflict.exists`` with its id (administering the unit gives no seat in its group).
* Every change is an event in the conversation's log, written before the member documents change,
  so that every member sees the change at its place in the order.
* A member who leaves or is removed keeps read access up to the event that ended the membership.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pymongo.errors import DuplicateKeyError

from ..access import Principal, administers_unit
from ..directory.service import DirectoryService
from ..errors import XtError
from ..ids import new_id
from ..models import utcnow
from ..store import Store
from ..text import clean_name
from .models import Conversation, Member, SystemData, direct_key, member_id
from .writer import Draft, EventWriter

log = logging.getLogger(__name__)

MAX_GROUP_MEMBERS = 10_000
MAX_ADD_AT_ONCE = 500


@dataclass(frozen=True)
class Membership:
    """A conversation as one of its (possibly former) members sees it."""

    conversation: Conversation
    member: Member

    @property
    def readable_until(self) -> int:
        """The last seq this member may read."""
        if self.member.state == "active":
            return self.conversation.last_seq
        return self.member.left_seq or 0


class ConversationService:
    def __init__(self, store: Store, writer: EventWriter, directory: DirectoryService):
        self.store = store
        self.writer = writer
        self.directory = directory

    # ---- access --------------------------------------------------------------------------------

    async def membership(self, me: Principal, conversation_id: str, *, active: bool = False) -> Membership:
        """The caller's membership, or ``not_found`` — also for conversations that exist but that the
        caller is not in, so ids cannot be probed."""
        member = await self.store.conversations.get_member(member_id(conversation_id, me.user_id))
        if member is None or (active and member.state != "active"):
            raise XtError("not_found", "No such conversation, or you are not a member.")
        conversation = await self.store.conversations.get(conversation_id)
        if conversation is None:
            raise XtError("not_found", "No such conversation, or you are not a member.")
        return Membership(conversation, member)

    async def _managed(self, me: Principal, conversation_id: str, *, owner_only: bool = False) -> Membership:
        m = await self.membership(me, conversation_id, active=True)
        if m.conversation.kind == "direct":
            raise XtError("perm.forbidden", "A direct chat has no administration.")
        if m.conversation.status != "active":
            raise XtError("conversation.dissolved")
        allowed = ("owner",) if owner_only else ("owner", "admin")
        if m.member.role not in allowed:
            raise XtError("perm.forbidden", "Only the group's " + ("owner" if owner_only else "owner or admins")
                          + " may do this.")
        return m

    async def _check_contactable(self, me: Principal, user_ids: list[str]) -> None:
        users = await self.store.users.get_many(user_ids)
        for user_id in user_ids:
            user = users.get(user_id)
            if user is None or user.status != "active":
                raise XtError("not_found", f"No such user: {user_id}")
            if user_id != me.user_id and not await self.directory.can_contact(me.user_id, user_id):
                raise XtError("conversation.contact_forbidden", details={"user_id": user_id})

    # ---- creation --------------------------------------------------------------------------------

    async def _create(self, conversation: Conversation, members: dict[str, str]) -> Conversation:
        """Store a new conversation (``member_count`` already set), then populate it."""
        await self.store.conversations.insert(conversation)
        return await self._populate(conversation, members)

    async def _populate(self, conversation: Conversation, members: dict[str, str]) -> Conversation:
        """Write a stored conversation's ``conversation.created`` event, then its members.

        Idempotent: the event's system ``client_msg_id`` is derived from the conversation, and members
        are upserted. So a caller who finds a direct chat that the other user is still creating finishes
        the creation with them instead of getting a chat without members."""
        by = conversation.created_by
        written = await self.writer.append(Draft(
            conversation.id, "conversation.created", by, client_msg_id=f"#created:{conversation.id}",
            data=SystemData(by=by, kind=conversation.kind, name=conversation.name or None,
                            user_ids=sorted(members), unit_id=conversation.unit_id)))
        now = utcnow()
        await self.store.conversations.upsert_members([
            Member(id=member_id(conversation.id, uid), conversation_id=conversation.id, user_id=uid, role=role,
                   joined_seq=written.event.seq, joined_at=now, updated_at=now)  # type: ignore[arg-type]
            for uid, role in members.items()])
        created = await self.store.conversations.get(conversation.id)
        assert created is not None
        return created

    async def open_direct(self, me: Principal, other_id: str) -> Conversation:
        """The direct chat between the caller and ``other_id``, created on first use."""
        if other_id == me.user_id:
            raise XtError("request.invalid", "A direct chat needs another user.")
        key = direct_key(me.user_id, other_id)
        conversation = await self.store.conversations.get_by_direct_key(key)
        if conversation is None:
            await self._check_contactable(me, [other_id])
            now = utcnow()
            conversation = Conversation(id=new_id("conversation"), kind="direct", direct_key=key, member_count=2,
                                        created_by=me.user_id, created_at=now, updated_at=now)
            try:
                await self.store.conversations.insert(conversation)
            except DuplicateKeyError:  # both users opened it at the same moment: theirs won
                conversation = await self.store.conversations.get_by_direct_key(key)
                if conversation is None:
                    raise
        elif await self.store.conversations.get_member(member_id(conversation.id, me.user_id)) is not None:
            # The pair's chat is theirs for good: visibility changes later do not cut it off.
            return conversation
        # The chat is new, or its creator (the other user, at this same moment) is still writing its
        # first event and members: finishing that is idempotent, and the caller gets a complete chat.
        return await self._populate(conversation, dict.fromkeys(key.split("|"), "member"))

    async def create_group(self, me: Principal, name: str, member_ids: list[str], avatar: str | None) -> Conversation:
        others = sorted(set(member_ids) - {me.user_id})
        if len(others) + 1 > MAX_GROUP_MEMBERS:
            raise XtError("conversation.full", details={"limit": MAX_GROUP_MEMBERS})
        await self._check_contactable(me, others)
        now = utcnow()
        conversation = Conversation(id=new_id("conversation"), kind="group", name=clean_name(name, "name"),
                                    avatar=avatar, owner_id=me.user_id, member_count=len(others) + 1,
                                    created_by=me.user_id, created_at=now, updated_at=now)
        roles = {me.user_id: "owner", **{uid: "member" for uid in others}}
        return await self._create(conversation, roles)

    async def create_unit_group(self, me: Principal, unit_id: str) -> Conversation:
        """The group of a unit's direct members (created once, by an administrator of the unit; see the
        module docstring for a second call)."""
        actor = await self.store.users.get(me.user_id)
        unit = await self.store.units.get(unit_id)
        if unit is None or actor is None:
            raise XtError("not_found", "No such unit.")
        if not administers_unit(actor, unit):
            raise XtError("perm.forbidden", "Only administrators of the unit create its group.")
        existing = await self.store.conversations.get_by_unit(unit.id)
        if existing is None:
            members = [u.id for u in await self.store.users.members_of_unit(unit.id)]
            # The creating administrator owns and moderates it, with or without a post in the unit.
            roles = {**{uid: "member" for uid in members}, me.user_id: "owner"}
            now = utcnow()
            conversation = Conversation(id=new_id("conversation"), kind="unit", name=unit.name, unit_id=unit.id,
                                        owner_id=me.user_id, member_count=len(roles), created_by=me.user_id,
                                        created_at=now, updated_at=now)
            try:
                return await self._create(conversation, roles)
            except DuplicateKeyError:  # another administrator created it at this moment
                existing = await self.store.conversations.get_by_unit(unit.id)
                if existing is None:
                    raise
        mine = await self.store.conversations.get_member(member_id(existing.id, me.user_id))
        if mine is None or mine.state != "active":
            # Administering the unit gives no seat in its group: the caller learns where it is, not more.
            raise XtError("conflict.exists", "The unit's group exists already, and you are not in it.",
                          details={"conversation_id": existing.id})
        return existing

    # ---- membership ------------------------------------------------------------------------------

    async def add_members(self, me: Principal, conversation_id: str, user_ids: list[str]) -> Conversation:
        m = await self.membership(me, conversation_id, active=True)
        conversation = m.conversation
        if conversation.kind != "group":
            raise XtError("perm.forbidden", "Members are added to groups only (unit groups follow the directory).")
        if conversation.status != "active":
            raise XtError("conversation.dissolved")
        if m.member.role == "member" and not conversation.members_can_invite:
            raise XtError("perm.forbidden", "Only the owner and admins may add members to this group.")
        wanted = sorted(set(user_ids))
        if len(wanted) > MAX_ADD_AT_ONCE:
            raise XtError("request.invalid", f"At most {MAX_ADD_AT_ONCE} users at once.")
        current = await self.store.conversations.get_members(member_id(conversation.id, u) for u in wanted)
        new = [u for u in wanted if current.get(member_id(conversation.id, u)) is None
               or current[member_id(conversation.id, u)].state != "active"]
        if not new:
            return conversation
        if conversation.member_count + len(new) > MAX_GROUP_MEMBERS:
            raise XtError("conversation.full", details={"limit": MAX_GROUP_MEMBERS})
        await self._check_contactable(me, new)
        return await self._join(conversation, new, me.user_id)

    async def _join(self, conversation: Conversation, user_ids: list[str], by: str | None) -> Conversation:
        written = await self.writer.append(Draft(conversation.id, "member.joined", by,
                                                 data=SystemData(by=by, user_ids=user_ids)))
        now = utcnow()
        await self.store.conversations.upsert_members([
            Member(id=member_id(conversation.id, uid), conversation_id=conversation.id, user_id=uid,
                   joined_seq=written.event.seq, joined_at=now, updated_at=now) for uid in user_ids])
        updated = await self.store.conversations.update(conversation.id, {}, now, inc={"member_count": len(user_ids)})
        assert updated is not None
        return updated

    async def remove_member(self, me: Principal, conversation_id: str, user_id: str) -> None:
        if user_id == me.user_id:
            return await self.leave(me, conversation_id)
        m = await self._managed(me, conversation_id)
        if m.conversation.kind == "unit":
            raise XtError("perm.forbidden", "Unit groups follow the directory: change the user's posts instead.")
        target = await self.store.conversations.get_member(member_id(conversation_id, user_id))
        if target is None or target.state != "active":
            raise XtError("not_found", "The user is not a member.")
        if target.role == "owner" or (target.role == "admin" and m.member.role != "owner"):
            raise XtError("perm.forbidden", "Admins remove plain members; only the owner removes admins.")
        await self._leave(m.conversation, [user_id], "member.removed", me.user_id)

    async def leave(self, me: Principal, conversation_id: str) -> None:
        m = await self.membership(me, conversation_id, active=True)
        if m.conversation.kind == "direct":
            raise XtError("perm.forbidden", "A direct chat cannot be left; mute or hide it instead.")
        if m.conversation.kind == "unit":
            raise XtError("perm.forbidden", "Unit groups follow the directory.")
        if m.member.role == "owner" and m.conversation.status == "active" and m.conversation.member_count > 1:
            raise XtError("conversation.owner_must_transfer")
        await self._leave(m.conversation, [me.user_id], "member.left", me.user_id)

    async def _leave(self, conversation: Conversation, user_ids: list[str], kind: str, by: str | None) -> None:
        written = await self.writer.append(Draft(conversation.id, kind, by,  # type: ignore[arg-type]
                                                 data=SystemData(by=by, user_ids=user_ids)))
        now = utcnow()
        left = await self.store.conversations.mark_left([member_id(conversation.id, u) for u in user_ids],
                                                        written.event.seq, now)
        await self.store.conversations.update(conversation.id, {}, now, inc={"member_count": -left})

    async def follow_unit_membership(self, user_id: str, joined: list[str], left: list[str]) -> None:
        """Admin-service listener: keep unit groups in step with the directory."""
        for unit_id in joined:
            conversation = await self.store.conversations.get_by_unit(unit_id)
            if conversation is None or conversation.status != "active":
                continue
            current = await self.store.conversations.get_member(member_id(conversation.id, user_id))
            if current is None or current.state != "active":
                await self._join(conversation, [user_id], None)
        for unit_id in left:
            conversation = await self.store.conversations.get_by_unit(unit_id)
            if conversation is None or conversation.status != "active":
                continue
            current = await self.store.conversations.get_member(member_id(conversation.id, user_id))
            if current is not None and current.state == "active":
                await self._leave(conversation, [user_id], "member.removed", None)

    # ---- group settings --------------------------------------------------------------------------------

    async def update(self, me: Principal, conversation_id: str, *, name: str | None = None,
                     avatar: str | None = None, mute_all: bool | None = None,
                     members_can_invite: bool | None = None) -> Conversation:
        m = await self._managed(me, conversation_id)
        changes: dict[str, object] = {}
        if name is not None:
            if m.conversation.kind == "unit":
                raise XtError("perm.forbidden", "A unit group is named after its unit.")
            changes["name"] = clean_name(name, "name")
        if avatar is not None:
            changes["avatar"] = avatar
        if mute_all is not None:
            changes["mute_all"] = mute_all
        if members_can_invite is not None:
            changes["members_can_invite"] = members_can_invite
        if not changes:
            return m.conversation
        # The event goes first: a member sees "renamed to X" at its place in the log.
        if "name" in changes and len(changes) == 1:
            await self.writer.append(Draft(conversation_id, "conversation.renamed", me.user_id,
                                           data=SystemData(by=me.user_id, name=str(changes["name"]))))
        else:
            await self.writer.append(Draft(conversation_id, "conversation.updated", me.user_id,
                                           data=SystemData(by=me.user_id, **changes)))  # type: ignore[arg-type]
        updated = await self.store.conversations.update(conversation_id, changes, utcnow())
        assert updated is not None
        return updated

    async def set_admin(self, me: Principal, conversation_id: str, user_id: str, admin: bool) -> None:
        await self._managed(me, conversation_id, owner_only=True)
        target = await self.store.conversations.get_member(member_id(conversation_id, user_id))
        if target is None or target.state != "active":
            raise XtError("not_found", "The user is not a member.")
        if target.role == "owner":
            raise XtError("request.invalid", "The owner is not an admin.")
        if (target.role == "admin") == admin:
            return
        await self.writer.append(Draft(conversation_id, "conversation.admins_changed", me.user_id, data=SystemData(
            by=me.user_id, user_ids=[user_id] if admin else [], removed_admin_ids=[] if admin else [user_id])))
        await self.store.conversations.update_member(target.id, {"role": "admin" if admin else "member"}, utcnow())

    async def transfer_owner(self, me: Principal, conversation_id: str, user_id: str) -> None:
        m = await self._managed(me, conversation_id, owner_only=True)
        target = await self.store.conversations.get_member(member_id(conversation_id, user_id))
        if target is None or target.state != "active" or user_id == me.user_id:
            raise XtError("not_found", "The user is not another member.")
        await self.writer.append(Draft(conversation_id, "conversation.owner_transferred", me.user_id,
                                       data=SystemData(by=me.user_id, from_user=me.user_id, to_user=user_id)))
        now = utcnow()
        await self.store.conversations.update_member(target.id, {"role": "owner"}, now)
        await self.store.conversations.update_member(m.member.id, {"role": "admin"}, now)
        await self.store.conversations.update(conversation_id, {"owner_id": user_id}, now)

    async def dissolve(self, me: Principal, conversation_id: str) -> None:
        await self._managed(me, conversation_id, owner_only=True)
        await self.writer.append(Draft(conversation_id, "conversation.dissolved", me.user_id,
                                       data=SystemData(by=me.user_id)))
        await self.store.conversations.update(conversation_id, {"status": "dissolved"}, utcnow())

    async def set_preferences(self, me: Principal, conversation_id: str, *, muted: bool | None,
                              pinned: bool | None) -> Member:
        m = await self.membership(me, conversation_id)
        changes = {k: v for k, v in (("muted", muted), ("pinned", pinned)) if v is not None}
        updated = await self.store.conversations.update_member(m.member.id, changes, utcnow())
        assert updated is not None
        return updated

    async def members_page(self, me: Principal, conversation_id: str, *, after: str | None,
                           limit: int) -> list[Member]:
        await self.membership(me, conversation_id, active=True)
        return await self.store.conversations.list_members(conversation_id, after_user=after, limit=limit)

    async def peers_among(self, user_id: str, candidates: list[str]) -> set[str]:
        return await self.store.conversations.peers_among(user_id, candidates)
