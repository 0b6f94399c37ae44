"""REST endpoints of sign-in, tokens, devices, password and second factor (``/v1/auth``, ``/v1/me``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from ..audit.service import Origin
from ..auth.service import DeviceInfo, TokenPair
from ..errors import XtError
from .context import RequestContext
from .framework import RouteTable, json_response
from .views import RoleView, UserView, user_view

routes = RouteTable("auth", "Sign-in, token refresh, sign-out, devices, password, TOTP.")

Username = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
TotpCode = Annotated[str, msgspec.Meta(min_length=6, max_length=8)]
Platform = Literal["android", "ios", "web", "desktop", "cli", "other"]


class DeviceSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "unnamed device"
    platform: Platform = "other"


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Password
    totp_code: TotpCode | None = None
    device: DeviceSpec = msgspec.field(default_factory=DeviceSpec)


class TokenResponse(msgspec.Struct):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    device_id: str
    user_id: str


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class DeviceView(msgspec.Struct):
    id: str
    name: str
    platform: str
    created_at: datetime
    last_active_at: datetime
    last_ip: str | None
    current: bool


class DeviceList(msgspec.Struct):
    devices: list[DeviceView]


class RevokedCount(msgspec.Struct):
    revoked: int


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current_password: Password
    new_password: Password


class TotpSetup(msgspec.Struct):
    secret: str
    otpauth_uri: str


class TotpCodeRequest(msgspec.Struct, forbid_unknown_fields=True):
    code: TotpCode


class MeView(msgspec.Struct):
    user: UserView
    username: str
    system_admin: bool
    roles: list[RoleView]
    totp_enabled: bool
    hide_last_seen: bool
    device_id: str | None


def origin(ctx: RequestContext) -> Origin:
    return Origin(ip=ctx.ip, user_agent=ctx.user_agent)


def token_response(pair: TokenPair) -> TokenResponse:
    return TokenResponse(pair.access_token, "Bearer", pair.expires_in, pair.refresh_token, pair.refresh_expires_in,
                         pair.device_id, pair.user.id)


@routes.route("POST", "/v1/auth/login", summary="Sign in with user name and password (and TOTP code)",
              body=LoginRequest, response=TokenResponse, auth=False,
              errors=("auth.invalid_credentials", "auth.locked", "auth.account_disabled", "auth.totp_required",
                      "auth.totp_invalid", "auth.totp_enrollment_required", "request.rate_limited"))
async def login(ctx: RequestContext, body: LoginRequest) -> TokenResponse:
    """Creates a signed-in device and returns its first token pair. With TOTP enabled, call again with
    `totp_code` after `auth.totp_required`. Repeated failures lock the account with growing back-off."""
    ctx.services.limits.check("login", ctx.ip or "?")
    pair = await ctx.services.auth.login(body.username, body.password, body.totp_code,
                                         DeviceInfo(body.device.name, body.device.platform), origin(ctx))
    return token_response(pair)


@routes.route("POST", "/v1/auth/refresh", summary="Exchange a refresh token for a new pair (rotation)",
              body=RefreshRequest, response=TokenResponse, auth=False,
              errors=("auth.refresh_invalid", "auth.refresh_reused", "auth.session_revoked", "auth.account_disabled"))
async def refresh(ctx: RequestContext, body: RefreshRequest) -> TokenResponse:
    """The refresh token is spent; keep the new one. Presenting a spent token signs the device out."""
    return token_response(await ctx.services.auth.refresh(body.refresh_token, origin(ctx)))


@routes.route("POST", "/v1/auth/logout", summary="Sign this device out", status=204)
async def logout(ctx: RequestContext) -> None:
    await ctx.services.auth.logout(ctx.me, origin(ctx))


@routes.route("POST", "/v1/auth/logout-others", summary="Sign out every other device of mine",
              response=RevokedCount)
async def logout_others(ctx: RequestContext) -> RevokedCount:
    return RevokedCount(await ctx.services.auth.logout_others(ctx.me, origin(ctx)))


@routes.route("GET", "/.well-known/jwks.json", summary="Public keys that verify access tokens (JWKS)", auth=False)
async def jwks(ctx: RequestContext) -> Any:
    response = json_response(ctx.services.keys.jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@routes.route("GET", "/v1/me", summary="Who am I", response=MeView)
async def me(ctx: RequestContext) -> MeView:
    user, _ = await ctx.services.directory.viewer(ctx.me)
    units = await ctx.services.store.units.get_many(user.unit_ids)
    return MeView(user=user_view(user, units, with_phone=True), username=user.username,
                  system_admin=user.system_admin, roles=[RoleView(role=r.role, unit_id=r.unit_id) for r in user.roles],
                  totp_enabled=bool(user.totp and user.totp.enabled), hide_last_seen=user.hide_last_seen,
                  device_id=ctx.me.device_id)


@routes.route("GET", "/v1/me/devices", summary="My signed-in devices", response=DeviceList)
async def list_devices(ctx: RequestContext) -> DeviceList:
    devices = await ctx.services.auth.list_devices(ctx.me)
    return DeviceList([DeviceView(d.id, d.name, d.platform, d.created_at, d.last_active_at, d.last_ip,
                                  d.id == ctx.me.device_id) for d in devices])


@routes.route("DELETE", "/v1/me/devices/{device_id}", summary="Sign one of my devices out", status=204,
              errors=("not_found",))
async def revoke_device(ctx: RequestContext) -> None:
    await ctx.services.auth.revoke_device(ctx.me, ctx.param("device_id"), origin(ctx))


@routes.route("POST", "/v1/me/password", summary="Change my password (signs out my other devices)",
              body=PasswordChange, response=RevokedCount, errors=("auth.invalid_credentials", "auth.password_weak"))
async def change_password(ctx: RequestContext, body: PasswordChange) -> RevokedCount:
    ctx.services.limits.check("password", ctx.me.user_id)
    return RevokedCount(await ctx.services.auth.change_password(ctx.me, body.current_password, body.new_password,
                                                                origin(ctx)))


async def _totp_user(ctx: RequestContext) -> Any:
    scheme, _, token = ctx.request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise XtError("auth.required")
    return await ctx.services.auth.totp_subject(token.strip())


@routes.route("POST", "/v1/me/totp/setup", summary="Begin TOTP enrolment (access or enrolment token)",
              response=TotpSetup, auth=False, errors=("auth.totp_already_enabled",))
async def totp_setup(ctx: RequestContext) -> TotpSetup:
    """Returns a new secret and an `otpauth://` URI for an authenticator app; TOTP is enabled only by
    `/v1/me/totp/confirm`. Accepts the `enrollment_token` of `auth.totp_enrollment_required`."""
    secret, uri = await ctx.services.auth.totp_begin(await _totp_user(ctx))
    return TotpSetup(secret, uri)


@routes.route("POST", "/v1/me/totp/confirm", summary="Confirm TOTP enrolment with a first code",
              body=TotpCodeRequest, auth=False, status=204,
              errors=("auth.totp_invalid", "auth.totp_already_enabled", "auth.totp_not_enabled"))
async def totp_confirm(ctx: RequestContext, body: TotpCodeRequest) -> None:
    await ctx.services.auth.totp_confirm(await _totp_user(ctx), body.code, origin(ctx))


@routes.route("POST", "/v1/me/totp/disable", summary="Turn TOTP off (needs a current code)",
              body=TotpCodeRequest, status=204, errors=("auth.totp_invalid", "auth.totp_not_enabled", "perm.forbidden"))
async def totp_disable(ctx: RequestContext, body: TotpCodeRequest) -> None:
    await ctx.services.auth.totp_disable(ctx.me, body.code, origin(ctx))
