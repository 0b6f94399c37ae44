"""REST endpoints of presence (``/v1/presence``) and of the caller's presence settings."""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..errors import XtError
from ..presence.views import PresenceList, presence_view
from .context import RequestContext
from .framework import RouteTable

routes = RouteTable("presence", "Who is online: batch look-ups and the caller's privacy setting.")

MAX_IDS = 200  # 200 ids fit a URL comfortably (the WebSocket presence_query takes 500)


class PresenceQuery(msgspec.Struct, forbid_unknown_fields=True):
    user_ids: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_IDS * 41)]  # comma-separated


class PresenceSettings(msgspec.Struct, forbid_unknown_fields=True):
    hide_last_seen: bool


@routes.route("GET", "/v1/presence", summary="Presence of up to 200 users", query=PresenceQuery,
              response=PresenceList)
async def query_presence(ctx: RequestContext, query: PresenceQuery) -> PresenceList:
    """`user_ids` is comma-separated. Users the caller may not see are left out, as if unknown;
    `last_seen` is given for offline users who do not hide it. Live changes: `presence_watch` on the
    WebSocket."""
    ids = [u.strip() for u in query.user_ids.split(",") if u.strip()]
    if not ids or len(ids) > MAX_IDS or any(len(u) > 40 for u in ids):
        raise XtError("request.invalid", f"user_ids: 1 to {MAX_IDS} comma-separated user ids")
    return PresenceList(presence=[presence_view(p) for p in await ctx.services.presence.query(ctx.me, ids)])


@routes.route("PUT", "/v1/me/presence-settings", summary="Hide or show my last-seen time",
              body=PresenceSettings, response=PresenceSettings)
async def presence_settings(ctx: RequestContext, body: PresenceSettings) -> PresenceSettings:
    await ctx.services.presence.set_hide_last_seen(ctx.me, body.hide_last_seen)
    return body
