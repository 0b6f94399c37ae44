"""Browsing and searching the organisation directory (通讯录), filtered by ``server/access.py``."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Awaitable, Callable

from ..access import Principal, Visibility, covers, role_roots
from ..errors import XtError
from ..models import Unit, User
from ..store import Store

SEARCH_ROUNDS = 5  # bounded over-fetching when visibility filters out candidates


@dataclass(frozen=True)
class MemberEntry:
    user: User
    unit_id: str  # the unit the listing is for
    title: str


@dataclass(frozen=True)
class UnitPage:
    unit: Unit | None  # None for the top of the tree
    breadcrumbs: list[Unit]  # visible ancestors, root first
    children: list[Unit]
    members: list[MemberEntry]
    member_units: dict[str, Unit]  # the visible units the listed members belong to, for their posts
    next_cursor: str | None


@dataclass(frozen=True)
class UserPage:
    users: list[User]
    units: dict[str, Unit]  # the visible units the listed users belong to, for names and titles
    next_cursor: str | None


# A hook the messaging layer fills in: do two users share a conversation? A user hidden from the
# directory stays reachable (profile, messages) for people who already talk with them.
ConversationPeers = Callable[[str, list[str]], Awaitable[set[str]]]


def _encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _decode_offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = raw.partition(":")
        offset = int(value)
        if kind != "o" or offset < 0:
            raise ValueError
        return offset
    except (ValueError, UnicodeDecodeError):
        raise XtError("request.invalid", "cursor: not a cursor returned by this API") from None


def _visible(vis: Visibility, units: dict[str, Unit]) -> dict[str, Unit]:
    """Only the units the viewer may see: a post in a hidden unit must not name (or reveal) it."""
    return {unit_id: unit for unit_id, unit in units.items() if vis.unit_visible(unit)}


class DirectoryService:
    def __init__(self, store: Store):
        self.store = store
        # Which of these users share an active conversation with the viewer? (Set by the messaging
        # layer.) A user hidden from the directory stays reachable for people who already talk with them.
        self.conversation_peers: ConversationPeers | None = None

    async def viewer(self, me: Principal) -> tuple[User, Visibility]:
        user = await self.store.users.get(me.user_id)
        if user is None:
            raise XtError("auth.session_revoked")
        hidden = [unit.id for unit in await self.store.units.hidden_units()]
        return user, Visibility(user, hidden)

    async def browse(self, me: Principal, unit_id: str | None, *, cursor: str | None, limit: int) -> UnitPage:
        """A unit's visible sub-units and a page of its visible members; ``unit_id=None`` lists the
        top of the tree."""
        viewer, vis = await self.viewer(me)
        unit: Unit | None = None
        breadcrumbs: list[Unit] = []
        if unit_id is not None:
            unit = await self.store.units.get(unit_id)
            if unit is None or not vis.unit_visible(unit):
                raise XtError("not_found", "No such unit.")
            ancestors = await self.store.units.get_many(unit.path[:-1])
            breadcrumbs = [ancestors[a] for a in unit.path[:-1] if a in ancestors and vis.unit_visible(ancestors[a])]
        admin = unit is not None and (viewer.system_admin or covers(role_roots(viewer, "unit_admin"), unit.path))
        children = [c for c in await self.store.units.children(unit_id, include_disabled=admin) if vis.unit_visible(c)]
        members: list[MemberEntry] = []
        member_units: dict[str, Unit] = {}
        next_cursor = None
        if unit is not None:
            offset = _decode_offset(cursor)
            users = await self.store.users.members_of_unit(unit.id, include_disabled=admin)
            units = await self.store.units.get_many([u for user in users for u in user.unit_ids])
            units[unit.id] = unit
            entries = []
            for user in users:
                if not vis.user_visible(user, units):
                    continue
                membership = next(m for m in user.memberships if m.unit_id == unit.id)
                entries.append((membership.order, user.pinyin, user.id, MemberEntry(user, unit.id, membership.title)))
            entries.sort(key=lambda e: e[:3])
            members = [e[3] for e in entries[offset:offset + limit]]
            if offset + limit < len(entries):
                next_cursor = _encode_offset(offset + limit)
            member_units = _visible(vis, units)
        return UnitPage(unit, breadcrumbs, children, members, member_units, next_cursor)

    async def search(self, me: Principal, q: str, *, cursor: str | None, limit: int) -> UserPage:
        """Users whose name, pinyin or pinyin initials start with ``q`` (case-insensitive pinyin)."""
        viewer, vis = await self.viewer(me)
        name_prefix = q.strip()
        if not name_prefix:
            raise XtError("request.invalid", "q: must not be empty")
        # Names are matched as typed ("Li L" finds "Li Lei"); pinyin keys are stored in lower case
        # without spaces, so the query is matched against them the same way ("Zhang W" finds 张伟).
        key_prefix = "".join(name_prefix.lower().split())
        found: list[User] = []
        units: dict[str, Unit] = {}
        after = cursor or None
        exhausted = False
        for _ in range(SEARCH_ROUNDS):
            batch = await self.store.users.search_prefix(name_prefix, key_prefix, limit=limit * 2, after_id=after)
            if not batch:
                exhausted = True
                break
            units.update(await self.store.units.get_many([u for user in batch for u in user.unit_ids]))
            for user in batch:
                after = user.id
                if vis.user_visible(user, units):
                    found.append(user)
                    if len(found) == limit:
                        break
            if len(found) == limit:
                break
            if len(batch) < limit * 2:
                exhausted = True
                break
        return UserPage(found, _visible(vis, units), None if exhausted and len(found) < limit else after)

    async def get_user(self, me: Principal, user_id: str) -> tuple[User, dict[str, Unit]]:
        viewer, vis = await self.viewer(me)
        user = await self.store.users.get(user_id)
        if user is None:
            raise XtError("not_found", "No such user.")
        units = await self.store.units.get_many(user.unit_ids)
        if vis.user_visible(user, units) or user.id in await self._peers(viewer.id, [user.id]):
            return user, _visible(vis, units)
        raise XtError("not_found", "No such user.")

    async def _peers(self, viewer_id: str, user_ids: list[str]) -> set[str]:
        if self.conversation_peers is None or not user_ids:
            return set()
        return await self.conversation_peers(viewer_id, user_ids)

    async def visible_among(self, me: Principal, user_ids: list[str]) -> set[str]:
        """Those of ``user_ids`` the caller may see — in the directory or through a shared
        conversation — in a fixed number of queries (for presence and batch look-ups)."""
        _, vis = await self.viewer(me)
        users = await self.store.users.get_many(user_ids)
        units = await self.store.units.get_many([u for user in users.values() for u in user.unit_ids])
        visible = {uid for uid, user in users.items() if vis.user_visible(user, units)}
        rest = [uid for uid in users if uid not in visible]
        return visible | await self._peers(me.user_id, rest)

    async def can_contact(self, viewer_id: str, target_id: str) -> bool:
        """May ``viewer`` start a conversation with ``target``? The directory's visibility decides."""
        try:
            await self.get_user(Principal(viewer_id, None), target_id)
            return True
        except XtError:
            return False
