"""The first top-level unit and the first system administrator of an empty installation.

Every later unit and account is created by an administrator through the admin service; this is the
one place that writes them directly, because before it there is no administrator to act.
"""

from __future__ import annotations

from .audit.service import AuditService, Origin
from .auth import passwords
from .directory.pinyin import pinyin_keys
from .errors import XtError
from .ids import new_id
from .models import Membership, Unit, User, utcnow
from .store import Store
from .text import clean_name, clean_username


async def create_root_and_admin(store: Store, audit: AuditService, *, unit_name: str, unit_level: str,
                                unit_code: str | None, username: str, display_name: str, password: str,
                                title: str = "系统管理员") -> tuple[Unit, User]:
    if await store.users.count() > 0:
        raise XtError("conflict.state", "The installation already has users; use the admin API.")
    passwords.check_strength(password)
    now = utcnow()
    unit_id = new_id("unit")
    unit = Unit(id=unit_id, name=clean_name(unit_name, "unit name"), level=unit_level,  # type: ignore[arg-type]
                parent_id=None, path=[unit_id], code=unit_code, created_at=now, updated_at=now)
    name = clean_name(display_name, "display name")
    full, initials = pinyin_keys(name)
    user = User(id=new_id("user"), username=clean_username(username), display_name=name, pinyin=full,
                pinyin_initials=initials, memberships=[Membership(unit_id=unit_id, title=title)],
                unit_paths=[unit_id], system_admin=True, password_hash=await passwords.hash_password(password),
                created_at=now, updated_at=now)
    await store.units.insert(unit)
    await store.users.insert(user)
    await audit.record("system.bootstrap", origin=Origin(ip="local"), actor_id=user.id, target_type="user",
                       target_id=user.id, scope_paths=[unit_id], details={"unit_id": unit_id})
    return unit, user
