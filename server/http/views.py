"""What clients see of units and users: built from the stored models, never the models themselves,
so nothing stored (a password hash, a TOTP secret) reaches a client by accident."""

from __future__ import annotations

from datetime import datetime

import msgspec

from ..models import Unit, User


class UnitView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    level: str
    parent_id: str | None
    order: int
    code: str | None
    hidden: bool
    require_totp: bool
    status: str


class PostView(msgspec.Struct, kw_only=True):
    """A user's post (职务) in one unit."""

    unit_id: str
    unit_name: str
    title: str


class UserView(msgspec.Struct, kw_only=True):
    id: str
    display_name: str
    pinyin: str
    posts: list[PostView]
    phone: str | None = None
    status: str = "active"


class RoleView(msgspec.Struct, kw_only=True):
    role: str
    unit_id: str


class AdminUserView(msgspec.Struct, kw_only=True):
    """An account as its administrators see it."""

    id: str
    username: str
    display_name: str
    pinyin: str
    phone: str | None
    status: str
    directory_hidden: bool
    posts: list[PostView]
    roles: list[RoleView]
    system_admin: bool
    totp_enabled: bool
    created_at: datetime
    updated_at: datetime


def unit_view(unit: Unit) -> UnitView:
    return UnitView(id=unit.id, name=unit.name, level=unit.level, parent_id=unit.parent_id, order=unit.order,
                    code=unit.code, hidden=unit.hidden, require_totp=unit.require_totp, status=unit.status)


def _posts(user: User, units: dict[str, Unit]) -> list[PostView]:
    """The posts in ``units``: the directory passes only the units the viewer may see, so a post in a
    hidden unit is left out rather than shown with its name."""
    return [PostView(unit_id=m.unit_id, unit_name=units[m.unit_id].name, title=m.title)
            for m in user.memberships if m.unit_id in units]


def user_view(user: User, units: dict[str, Unit], *, with_phone: bool = False) -> UserView:
    return UserView(id=user.id, display_name=user.display_name, pinyin=user.pinyin, posts=_posts(user, units),
                    phone=user.phone if with_phone else None, status=user.status)


def admin_user_view(user: User, units: dict[str, Unit]) -> AdminUserView:
    return AdminUserView(id=user.id, username=user.username, display_name=user.display_name, pinyin=user.pinyin,
                         phone=user.phone, status=user.status, directory_hidden=user.directory_hidden,
                         posts=_posts(user, units), roles=[RoleView(role=r.role, unit_id=r.unit_id) for r in user.roles],
                         system_admin=user.system_admin, totp_enabled=bool(user.totp and user.totp.enabled),
                         created_at=user.created_at, updated_at=user.updated_at)
