"""Administration of units, users, posts and roles, each action scope-checked and audited.

Scope rules (from ``server/access.py``): an admin of X may create units and users under X (X itself
included), change or disable units strictly below X (X itself belongs to the admins above it), act
on accounts whose primary unit is in X's subtree, and appoint admins and auditors of units in X's
subtree. Nothing is written before every check has passed.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Awaitable, Callable

from pymongo.errors import DuplicateKeyError

from ..access import Principal, administers_user, covers, is_admin, require_admin_of, role_roots
from ..audit.service import AuditService, Origin
from ..auth import passwords
from ..auth.service import AuthService, login_key
from ..directory.pinyin import pinyin_keys
from ..errors import XtError
from ..ids import new_id
from ..models import LEVEL_RANK, Membership, RoleGrant, Unit, User, to_doc, utcnow
from ..store import Store
from ..text import clean_name, clean_phone, clean_username

# Called after a user's units changed: (user_id, units joined, units left). The messaging layer uses
# it to keep unit groups in step with the directory.
MembershipListener = Callable[[str, list[str], list[str]], Awaitable[None]]


@dataclass(frozen=True)
class NewUnit:
    parent_id: str | None
    name: str
    level: str
    order: int = 0
    code: str | None = None
    hidden: bool = False
    require_totp: bool = False


@dataclass(frozen=True)
class NewUser:
    username: str
    display_name: str
    unit_id: str
    title: str = ""
    order: int = 0
    phone: str | None = None
    password: str | None = None  # None: generate an initial password and return it once
    directory_hidden: bool = False


def generate_password() -> str:
    """A 16-character initial password meeting the password rules."""
    alphabet = string.ascii_letters + string.digits
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(14)) + "-" + secrets.choice(string.digits)
        try:
            passwords.check_strength(candidate)
            return candidate
        except XtError:
            continue


def check_level(parent: Unit | None, level: str) -> None:
    """Levels go down the tree (national → province → city → county → department); a department may
    hold departments (科室 in a 局); levels may be skipped (a county directly under a province)."""
    if parent is None:
        return
    parent_rank, rank = LEVEL_RANK[parent.level], LEVEL_RANK[level]
    if rank > parent_rank or (level == "department" and parent.level == "department"):
        return
    raise XtError("unit.invalid_parent", f"A {level} cannot be placed under a {parent.level}.")


class AdminService:
    def __init__(self, store: Store, audit: AuditService, auth: AuthService):
        self.store = store
        self.audit = audit
        self.auth = auth
        self.membership_listeners: list[MembershipListener] = []

    async def actor(self, me: Principal) -> User:
        user = await self.store.users.get(me.user_id)
        if user is None or user.status != "active":
            raise XtError("auth.session_revoked")
        return user

    async def _unit(self, unit_id: str) -> Unit:
        unit = await self.store.units.get(unit_id)
        if unit is None:
            raise XtError("not_found", "No such unit.")
        return unit

    async def _user(self, user_id: str) -> User:
        user = await self.store.users.get(user_id)
        if user is None:
            raise XtError("not_found", "No such user.")
        return user

    def _require_strictly_below(self, actor: User, unit: Unit) -> None:
        """Changing a unit itself needs a scope above it: the root of one's own scope is managed
        by the admins above."""
        require_admin_of(actor, unit)
        if not actor.system_admin and not covers(role_roots(actor, "unit_admin"), unit.path[:-1]):
            raise XtError("perm.out_of_scope", "The top unit of your scope is managed by the administrators above it.")

    # ---- units -------------------------------------------------------------------------------------

    async def create_unit(self, me: Principal, spec: NewUnit, origin: Origin) -> Unit:
        actor = await self.actor(me)
        parent: Unit | None = None
        if spec.parent_id is None:
            if not actor.system_admin:
                raise XtError("perm.forbidden", "Only system administrators create top-level units.")
        else:
            parent = await self._unit(spec.parent_id)
            require_admin_of(actor, parent)
            if parent.status != "active":
                raise XtError("conflict.state", "The parent unit is disabled.")
        check_level(parent, spec.level)
        now = utcnow()
        unit_id = new_id("unit")
        unit = Unit(id=unit_id, name=clean_name(spec.name, "name"), level=spec.level,  # type: ignore[arg-type]
                    parent_id=spec.parent_id, path=(parent.path if parent else []) + [unit_id], order=spec.order,
                    hidden=spec.hidden, require_totp=spec.require_totp, code=spec.code, created_at=now,
                    updated_at=now)
        try:
            await self.store.units.insert(unit)
        except DuplicateKeyError:
            raise XtError("conflict.exists", f"A unit with code {spec.code!r} already exists.") from None
        await self.audit.record("admin.unit.create", origin=origin, actor_id=actor.id, target_type="unit",
                                target_id=unit.id, scope_paths=unit.path,
                                details={"name": unit.name, "level": unit.level, "parent_id": unit.parent_id})
        return unit

    async def update_unit(self, me: Principal, unit_id: str, changes: dict[str, object], origin: Origin) -> Unit:
        actor = await self.actor(me)
        unit = await self._unit(unit_id)
        self._require_strictly_below(actor, unit)
        clean: dict[str, object] = {}
        for name, value in changes.items():
            if name == "name":
                clean["name"] = clean_name(str(value), "name")
            elif name in ("order", "hidden", "require_totp", "code"):
                clean[name] = value
            else:  # the request struct allows only the names above
                raise XtError("request.invalid", f"{name}: cannot be changed")
        if not clean:
            return unit
        try:
            updated = await self.store.units.update(unit.id, clean, utcnow())
        except DuplicateKeyError:
            raise XtError("conflict.exists", "A unit with this code already exists.") from None
        assert updated is not None
        await self.audit.record("admin.unit.update", origin=origin, actor_id=actor.id, target_type="unit",
                                target_id=unit.id, scope_paths=unit.path, details={"changes": clean})
        return updated

    async def set_unit_status(self, me: Principal, unit_id: str, status: str, origin: Origin) -> Unit:
        actor = await self.actor(me)
        unit = await self._unit(unit_id)
        self._require_strictly_below(actor, unit)
        if status == unit.status:
            return unit
        if status == "disabled":
            if await self.store.units.count_active_children(unit.id) or await self.store.users.count_active_members(unit.id):
                raise XtError("unit.not_empty")
        elif unit.parent_id is not None:
            parent = await self._unit(unit.parent_id)
            if parent.status != "active":
                raise XtError("conflict.state", "Enable the parent unit first.")
        updated = await self.store.units.update(unit.id, {"status": status}, utcnow())
        assert updated is not None
        await self.audit.record(f"admin.unit.{'disable' if status == 'disabled' else 'enable'}", origin=origin,
                                actor_id=actor.id, target_type="unit", target_id=unit.id, scope_paths=unit.path)
        return updated

    # ---- users -------------------------------------------------------------------------------------

    async def create_user(self, me: Principal, spec: NewUser, origin: Origin) -> tuple[User, str | None]:
        """Returns the user and, when the admin gave none, the generated initial password."""
        actor = await self.actor(me)
        unit = await self._unit(spec.unit_id)
        require_admin_of(actor, unit)
        if unit.status != "active":
            raise XtError("conflict.state", "The unit is disabled.")
        username = clean_username(spec.username)
        display_name = clean_name(spec.display_name, "display_name")
        title = clean_name(spec.title, "title", allow_empty=True)
        phone = clean_phone(spec.phone)
        generated = None
        password = spec.password
        if password is None:
            password = generated = generate_password()
        else:
            passwords.check_strength(password)
        full, initials = pinyin_keys(display_name)
        now = utcnow()
        user = User(id=new_id("user"), username=username, display_name=display_name, pinyin=full,
                    pinyin_initials=initials, phone=phone, directory_hidden=spec.directory_hidden,
                    memberships=[Membership(unit_id=unit.id, title=title, order=spec.order)],
                    unit_paths=list(unit.path), password_hash=await passwords.hash_password(password),
                    created_at=now, updated_at=now)
        try:
            await self.store.users.insert(user)
        except DuplicateKeyError:
            raise XtError("conflict.exists", f"The user name {username!r} is taken.") from None
        await self.audit.record("admin.user.create", origin=origin, actor_id=actor.id, target_type="user",
                                target_id=user.id, scope_paths=user.unit_paths,
                                details={"username": username, "unit_id": unit.id})
        await self._notify(user.id, [unit.id], [])
        return user, generated

    async def _administered_user(self, actor: User, user_id: str) -> User:
        target = await self._user(user_id)
        units = await self.store.units.get_many(target.unit_ids + [grant.unit_id for grant in target.roles])
        if not administers_user(actor, target, units):
            if not is_admin(actor):
                raise XtError("perm.forbidden", "Only administrators may do this.")
            raise XtError("perm.out_of_scope", "The user's primary unit is outside the part you administer.")
        return target

    async def get_user(self, me: Principal, user_id: str) -> User:
        actor = await self.actor(me)
        return await self._administered_user(actor, user_id)

    async def update_user(self, me: Principal, user_id: str, changes: dict[str, object], origin: Origin) -> User:
        actor = await self.actor(me)
        target = await self._administered_user(actor, user_id)
        clean: dict[str, object] = {}
        for name, value in changes.items():
            if name == "display_name":
                clean["display_name"] = clean_name(str(value), "display_name")
                clean["pinyin"], clean["pinyin_initials"] = pinyin_keys(clean["display_name"])  # type: ignore[arg-type]
            elif name == "phone":
                clean["phone"] = clean_phone(value)  # type: ignore[arg-type]
            elif name == "directory_hidden":
                clean["directory_hidden"] = bool(value)
            else:
                raise XtError("request.invalid", f"{name}: cannot be changed")
        if not clean:
            return target
        updated = await self.store.users.update(target.id, clean, utcnow())
        assert updated is not None
        await self.audit.record("admin.user.update", origin=origin, actor_id=actor.id, target_type="user",
                                target_id=target.id, scope_paths=target.unit_paths,
                                details={"fields": sorted(clean)})
        return updated

    async def set_user_status(self, me: Principal, user_id: str, status: str, origin: Origin) -> User:
        actor = await self.actor(me)
        target = await self._administered_user(actor, user_id)
        if target.id == actor.id:
            raise XtError("perm.forbidden", "You cannot change the status of your own account.")
        if status == target.status:
            return target
        updated = await self.store.users.update(target.id, {"status": status}, utcnow())
        assert updated is not None
        await self.audit.record(f"admin.user.{'disable' if status == 'disabled' else 'enable'}", origin=origin,
                                actor_id=actor.id, target_type="user", target_id=target.id,
                                scope_paths=target.unit_paths)
        if status == "disabled":
            await self.auth.revoke_all_devices(target, "account_disabled", origin, actor.id)
        return updated

    async def reset_password(self, me: Principal, user_id: str, origin: Origin, *, reset_totp: bool) -> str:
        """Set a generated password (returned once), sign the user out everywhere, lift a lockout,
        and optionally remove the second factor (a lost phone)."""
        actor = await self.actor(me)
        target = await self._administered_user(actor, user_id)
        password = generate_password()
        await self.store.users.update(target.id, {"password_hash": await passwords.hash_password(password)},
                                      utcnow(), unset=["totp"] if reset_totp else None)
        await self.store.devices.clear_attempts(login_key(target.username))
        await self.audit.record("admin.user.reset_password", origin=origin, actor_id=actor.id, target_type="user",
                                target_id=target.id, scope_paths=target.unit_paths,
                                details={"reset_totp": reset_totp})
        await self.auth.revoke_all_devices(target, "password_reset", origin, actor.id)
        return password

    async def unlock(self, me: Principal, user_id: str, origin: Origin) -> None:
        actor = await self.actor(me)
        target = await self._administered_user(actor, user_id)
        await self.store.devices.clear_attempts(login_key(target.username))
        await self.audit.record("admin.user.unlock", origin=origin, actor_id=actor.id, target_type="user",
                                target_id=target.id, scope_paths=target.unit_paths)

    # ---- posts (memberships) ---------------------------------------------------------------------------

    async def _write_memberships(self, user: User, memberships: list[Membership]) -> User:
        units = await self.store.units.get_many([m.unit_id for m in memberships])
        paths = sorted({unit_id for m in memberships for unit_id in units[m.unit_id].path})
        updated = await self.store.users.update(
            user.id, {"memberships": [to_doc(m) for m in memberships], "unit_paths": paths}, utcnow())
        assert updated is not None
        return updated

    async def set_membership(self, me: Principal, user_id: str, unit_id: str, title: str, order: int,
                             origin: Origin) -> User:
        """Add a post in ``unit_id`` (兼职) or change its title/order."""
        actor = await self.actor(me)
        unit = await self._unit(unit_id)
        require_admin_of(actor, unit)
        if unit.status != "active":
            raise XtError("conflict.state", "The unit is disabled.")
        target = await self._user(user_id)
        post = Membership(unit_id=unit.id, title=clean_name(title, "title", allow_empty=True), order=order)
        joined = unit.id not in target.unit_ids
        memberships = [post if m.unit_id == unit.id else m for m in target.memberships]
        if joined:
            memberships.append(post)
        updated = await self._write_memberships(target, memberships)
        await self.audit.record("admin.user.membership_set", origin=origin, actor_id=actor.id, target_type="user",
                                target_id=target.id, scope_paths=sorted(set(target.unit_paths) | set(unit.path)),
                                details={"unit_id": unit.id, "title": post.title, "joined": joined})
        if joined:
            await self._notify(target.id, [unit.id], [])
        return updated

    async def remove_membership(self, me: Principal, user_id: str, unit_id: str, origin: Origin) -> User:
        actor = await self.actor(me)
        unit = await self._unit(unit_id)
        require_admin_of(actor, unit)
        target = await self._user(user_id)
        if unit.id not in target.unit_ids:
            raise XtError("not_found", "The user has no post in this unit.")
        remaining = [m for m in target.memberships if m.unit_id != unit.id]
        if not remaining:
            raise XtError("user.last_membership")
        updated = await self._write_memberships(target, remaining)
        await self.audit.record("admin.user.membership_remove", origin=origin, actor_id=actor.id,
                                target_type="user", target_id=target.id, scope_paths=target.unit_paths,
                                details={"unit_id": unit.id})
        await self._notify(target.id, [], [unit.id])
        return updated

    # ---- roles -------------------------------------------------------------------------------------------

    async def set_role(self, me: Principal, user_id: str, role: str, unit_id: str, grant: bool,
                       origin: Origin) -> User:
        actor = await self.actor(me)
        unit = await self._unit(unit_id)
        require_admin_of(actor, unit)
        target = await self._user(user_id)
        if grant and target.status != "active":
            raise XtError("conflict.state", "The account is disabled.")
        role_grant = RoleGrant(role=role, unit_id=unit.id)  # type: ignore[arg-type]
        roles = [r for r in target.roles if not (r.role == role and r.unit_id == unit.id)]
        if grant:
            roles.append(role_grant)
        elif len(roles) == len(target.roles):
            raise XtError("not_found", "The user does not hold this role.")
        updated = await self.store.users.update(target.id, {"roles": [to_doc(r) for r in roles]}, utcnow())
        assert updated is not None
        await self.audit.record(f"admin.role.{'grant' if grant else 'revoke'}", origin=origin, actor_id=actor.id,
                                target_type="user", target_id=target.id,
                                scope_paths=sorted(set(target.unit_paths) | set(unit.path)),
                                details={"role": role, "unit_id": unit.id})
        return updated

    async def _notify(self, user_id: str, joined: list[str], left: list[str]) -> None:
        for listener in self.membership_listeners:
            await listener(user_id, joined, left)
