"""REST endpoints of graded administration (``/v1/admin``) and the audit log (``/v1/audit``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from ..admin.service import NewUnit, NewUser
from .auth_routes import origin
from .context import RequestContext
from .framework import RouteTable
from .views import AdminUserView, UnitView, admin_user_view, unit_view

routes = RouteTable("admin", "Graded administration of units, accounts, posts and roles; the audit log.")

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Title = Annotated[str, msgspec.Meta(max_length=64)]
Order = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
Code = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z-]{1,32}$")]
Level = Literal["national", "province", "city", "county", "department"]
SCOPE_ERRORS = ("perm.forbidden", "perm.out_of_scope", "not_found")


class UnitCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    level: Level
    parent_id: str | None = None
    order: Order = 0
    code: Code | None = None
    hidden: bool = False
    require_totp: bool = False


class UnitUpdate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    order: Order | msgspec.UnsetType = msgspec.UNSET
    code: Code | None | msgspec.UnsetType = msgspec.UNSET
    hidden: bool | msgspec.UnsetType = msgspec.UNSET
    require_totp: bool | msgspec.UnsetType = msgspec.UNSET


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(min_length=2, max_length=32)]
    display_name: Name
    unit_id: str
    title: Title = ""
    order: Order = 0
    phone: Annotated[str, msgspec.Meta(max_length=24)] | None = None
    password: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    directory_hidden: bool = False


class UserCreated(msgspec.Struct):
    user: AdminUserView
    initial_password: str | None


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    display_name: Name | msgspec.UnsetType = msgspec.UNSET
    phone: Annotated[str, msgspec.Meta(max_length=24)] | None | msgspec.UnsetType = msgspec.UNSET
    directory_hidden: bool | msgspec.UnsetType = msgspec.UNSET


class PasswordReset(msgspec.Struct, forbid_unknown_fields=True):
    reset_totp: bool = False


class NewPassword(msgspec.Struct):
    password: str


class MembershipSet(msgspec.Struct, forbid_unknown_fields=True):
    title: Title = ""
    order: Order = 0


class RoleChange(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["unit_admin", "auditor"]
    unit_id: str


class AuditQuery(msgspec.Struct, forbid_unknown_fields=True):
    unit_id: str | None = None
    action: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    actor_id: str | None = None
    target_id: str | None = None
    before: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50


class AuditEntryView(msgspec.Struct):
    id: str
    at: datetime
    action: str
    outcome: str
    actor_id: str | None
    target_type: str | None
    target_id: str | None
    ip: str | None
    user_agent: str | None
    details: dict[str, Any]


class AuditPage(msgspec.Struct):
    entries: list[AuditEntryView]
    next_before: str | None


def _changes(struct: msgspec.Struct) -> dict[str, Any]:
    return {name: value for name, value in msgspec.structs.asdict(struct).items() if value is not msgspec.UNSET}


async def _admin_view(ctx: RequestContext, user: Any) -> AdminUserView:
    units = await ctx.services.store.units.get_many(user.unit_ids)
    return admin_user_view(user, units)


@routes.route("POST", "/v1/admin/units", summary="Create a unit under one I administer", body=UnitCreate,
              response=UnitView, status=201, errors=SCOPE_ERRORS + ("unit.invalid_parent", "conflict.exists"))
async def create_unit(ctx: RequestContext, body: UnitCreate) -> UnitView:
    unit = await ctx.services.admin.create_unit(
        ctx.me, NewUnit(body.parent_id, body.name, body.level, body.order, body.code, body.hidden, body.require_totp),
        origin(ctx))
    return unit_view(unit)


@routes.route("PATCH", "/v1/admin/units/{unit_id}", summary="Rename, reorder, hide or require TOTP",
              body=UnitUpdate, response=UnitView, errors=SCOPE_ERRORS + ("conflict.exists",))
async def update_unit(ctx: RequestContext, body: UnitUpdate) -> UnitView:
    return unit_view(await ctx.services.admin.update_unit(ctx.me, ctx.param("unit_id"), _changes(body), origin(ctx)))


@routes.route("POST", "/v1/admin/units/{unit_id}/disable", summary="Disable an empty unit", response=UnitView,
              errors=SCOPE_ERRORS + ("unit.not_empty",))
async def disable_unit(ctx: RequestContext) -> UnitView:
    return unit_view(await ctx.services.admin.set_unit_status(ctx.me, ctx.param("unit_id"), "disabled", origin(ctx)))


@routes.route("POST", "/v1/admin/units/{unit_id}/enable", summary="Enable a disabled unit", response=UnitView,
              errors=SCOPE_ERRORS + ("conflict.state",))
async def enable_unit(ctx: RequestContext) -> UnitView:
    return unit_view(await ctx.services.admin.set_unit_status(ctx.me, ctx.param("unit_id"), "active", origin(ctx)))


@routes.route("POST", "/v1/admin/users", summary="Create an account in a unit I administer", body=UserCreate,
              response=UserCreated, status=201, errors=SCOPE_ERRORS + ("conflict.exists", "auth.password_weak"))
async def create_user(ctx: RequestContext, body: UserCreate) -> UserCreated:
    """Without `password`, an initial password is generated and returned once."""
    user, initial = await ctx.services.admin.create_user(
        ctx.me, NewUser(body.username, body.display_name, body.unit_id, body.title, body.order, body.phone,
                        body.password, body.directory_hidden), origin(ctx))
    return UserCreated(await _admin_view(ctx, user), initial)


@routes.route("GET", "/v1/admin/users/{user_id}", summary="An account as its administrators see it",
              response=AdminUserView, errors=SCOPE_ERRORS)
async def get_user(ctx: RequestContext) -> AdminUserView:
    return await _admin_view(ctx, await ctx.services.admin.get_user(ctx.me, ctx.param("user_id")))


@routes.route("PATCH", "/v1/admin/users/{user_id}", summary="Edit name, phone, directory visibility",
              body=UserUpdate, response=AdminUserView, errors=SCOPE_ERRORS)
async def update_user(ctx: RequestContext, body: UserUpdate) -> AdminUserView:
    user = await ctx.services.admin.update_user(ctx.me, ctx.param("user_id"), _changes(body), origin(ctx))
    return await _admin_view(ctx, user)


@routes.route("POST", "/v1/admin/users/{user_id}/disable", summary="Disable an account (signs it out everywhere)",
              response=AdminUserView, errors=SCOPE_ERRORS)
async def disable_user(ctx: RequestContext) -> AdminUserView:
    user = await ctx.services.admin.set_user_status(ctx.me, ctx.param("user_id"), "disabled", origin(ctx))
    return await _admin_view(ctx, user)


@routes.route("POST", "/v1/admin/users/{user_id}/enable", summary="Enable a disabled account",
              response=AdminUserView, errors=SCOPE_ERRORS)
async def enable_user(ctx: RequestContext) -> AdminUserView:
    user = await ctx.services.admin.set_user_status(ctx.me, ctx.param("user_id"), "active", origin(ctx))
    return await _admin_view(ctx, user)


@routes.route("POST", "/v1/admin/users/{user_id}/reset-password",
              summary="Set a generated password, sign out everywhere, lift a lockout", body=PasswordReset,
              response=NewPassword, errors=SCOPE_ERRORS)
async def reset_password(ctx: RequestContext, body: PasswordReset) -> NewPassword:
    password = await ctx.services.admin.reset_password(ctx.me, ctx.param("user_id"), origin(ctx),
                                                       reset_totp=body.reset_totp)
    return NewPassword(password)


@routes.route("POST", "/v1/admin/users/{user_id}/unlock", summary="Lift a login lockout", status=204,
              errors=SCOPE_ERRORS)
async def unlock_user(ctx: RequestContext) -> None:
    await ctx.services.admin.unlock(ctx.me, ctx.param("user_id"), origin(ctx))


@routes.route("PUT", "/v1/admin/users/{user_id}/posts/{unit_id}", summary="Add or change a post (兼职) in a unit",
              body=MembershipSet, response=AdminUserView, errors=SCOPE_ERRORS + ("conflict.state",))
async def set_post(ctx: RequestContext, body: MembershipSet) -> AdminUserView:
    user = await ctx.services.admin.set_membership(ctx.me, ctx.param("user_id"), ctx.param("unit_id"), body.title,
                                                   body.order, origin(ctx))
    return await _admin_view(ctx, user)


@routes.route("DELETE", "/v1/admin/users/{user_id}/posts/{unit_id}", summary="Remove a post",
              response=AdminUserView, errors=SCOPE_ERRORS + ("user.last_membership",))
async def remove_post(ctx: RequestContext) -> AdminUserView:
    user = await ctx.services.admin.remove_membership(ctx.me, ctx.param("user_id"), ctx.param("unit_id"), origin(ctx))
    return await _admin_view(ctx, user)


@routes.route("POST", "/v1/admin/users/{user_id}/roles", summary="Appoint a unit admin or auditor",
              body=RoleChange, response=AdminUserView, errors=SCOPE_ERRORS + ("conflict.state",))
async def grant_role(ctx: RequestContext, body: RoleChange) -> AdminUserView:
    user = await ctx.services.admin.set_role(ctx.me, ctx.param("user_id"), body.role, body.unit_id, True, origin(ctx))
    return await _admin_view(ctx, user)


@routes.route("POST", "/v1/admin/users/{user_id}/roles/revoke", summary="Withdraw a role", body=RoleChange,
              response=AdminUserView, errors=SCOPE_ERRORS)
async def revoke_role(ctx: RequestContext, body: RoleChange) -> AdminUserView:
    user = await ctx.services.admin.set_role(ctx.me, ctx.param("user_id"), body.role, body.unit_id, False, origin(ctx))
    return await _admin_view(ctx, user)


@routes.route("GET", "/v1/audit", summary="Read the audit log of a subtree I audit (newest first)",
              query=AuditQuery, response=AuditPage, errors=("perm.forbidden", "perm.out_of_scope", "not_found"))
async def read_audit(ctx: RequestContext, query: AuditQuery) -> AuditPage:
    actor = await ctx.services.admin.actor(ctx.me)
    entries = await ctx.services.audit.read(actor, unit_id=query.unit_id, before=query.before, limit=query.limit,
                                            action=query.action, actor_id=query.actor_id, target_id=query.target_id)
    views = [AuditEntryView(str(e.id), e.at, e.action, e.outcome, e.actor_id, e.target_type, e.target_id, e.ip,
                            e.user_agent, e.details) for e in entries]
    return AuditPage(views, views[-1].id if len(views) == query.limit else None)
