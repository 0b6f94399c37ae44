"""REST endpoints of push notifications: the device's push token, the user's do-not-disturb hours,
and the worker's figures for operators."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ..errors import XtError
from ..models import NotificationSettings
from .context import RequestContext
from .framework import RouteTable

routes = RouteTable("push", "Push notifications: device tokens, do-not-disturb, worker figures.")

HHMM = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class PushTokenRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    token: Annotated[str, msgspec.Meta(min_length=8, max_length=4096)]
    token_type: Literal["token", "fid"] = "token"  # FCM registration token or Firebase installation id
    platform: Literal["android", "ios", "web"]
    provider: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,16}$")] = "fcm"
    app_version: Annotated[str, msgspec.Meta(max_length=32)] = ""
    locale: Annotated[str, msgspec.Meta(max_length=16)] = "zh-CN"


class PushTokenView(msgspec.Struct, kw_only=True):
    provider: str
    platform: str
    app_version: str
    locale: str


class NotificationSettingsBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    dnd_start: HHMM | None = None
    dnd_end: HHMM | None = None
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "Asia/Shanghai"


class PushFigures(msgspec.Struct, kw_only=True):
    this_process_sends: bool
    queue: dict[str, int]
    counters: dict[str, int]


@routes.route("PUT", "/v1/me/push", summary="Register this device's push token", body=PushTokenRequest,
              response=PushTokenView)
async def register_push(ctx: RequestContext, body: PushTokenRequest) -> PushTokenView:
    """One token per device: a refreshed token replaces the old one. Signing the device out removes it."""
    reg = await ctx.services.push.register(ctx.me, provider=body.provider, token=body.token, platform=body.platform,
                                           app_version=body.app_version, locale=body.locale,
                                           token_type=body.token_type)
    return PushTokenView(provider=reg.provider, platform=reg.platform, app_version=reg.app_version, locale=reg.locale)


@routes.route("DELETE", "/v1/me/push", summary="Stop push notifications to this device", status=204)
async def unregister_push(ctx: RequestContext) -> None:
    await ctx.services.push.unregister(ctx.me)


@routes.route("GET", "/v1/me/notification-settings", summary="My do-not-disturb hours",
              response=NotificationSettingsBody)
async def get_notification_settings(ctx: RequestContext) -> NotificationSettingsBody:
    s = await ctx.services.push.get_settings(ctx.me)
    return NotificationSettingsBody(dnd_start=s.dnd_start, dnd_end=s.dnd_end, timezone=s.timezone)


@routes.route("PUT", "/v1/me/notification-settings", summary="Set my do-not-disturb hours",
              body=NotificationSettingsBody, response=NotificationSettingsBody)
async def set_notification_settings(ctx: RequestContext, body: NotificationSettingsBody) -> NotificationSettingsBody:
    """Hours in the given time zone (`22:00`–`07:00` crosses midnight); both null: off. Urgent messages
    still come through."""
    await ctx.services.push.set_settings(ctx.me, NotificationSettings(dnd_start=body.dnd_start, dnd_end=body.dnd_end,
                                                                      timezone=body.timezone))
    return body


@routes.route("GET", "/v1/admin/push", summary="Push worker figures (system administrators)", response=PushFigures,
              errors=("perm.forbidden",))
async def push_figures(ctx: RequestContext) -> PushFigures:
    actor = await ctx.services.admin.actor(ctx.me)
    if not actor.system_admin:
        raise XtError("perm.forbidden", "Only system administrators read the push figures.")
    push = ctx.services.push
    return PushFigures(this_process_sends=push.holding, queue=await ctx.services.store.push.counts(),
                       counters=dict(push.metrics))
