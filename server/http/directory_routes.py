"""REST endpoints of the organisation directory (``/v1/directory``)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..directory.service import UnitPage
from .context import RequestContext
from .framework import RouteTable
from .views import PostView, UnitView, UserView, unit_view, user_view

routes = RouteTable("directory", "Browse the organisation tree and search colleagues.")

Limit = Annotated[int, msgspec.Meta(ge=1, le=200)]
Cursor = Annotated[str, msgspec.Meta(max_length=64)]


class PageQuery(msgspec.Struct, forbid_unknown_fields=True):
    cursor: Cursor | None = None
    limit: Limit = 50


class SearchQuery(msgspec.Struct, forbid_unknown_fields=True):
    q: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    cursor: Cursor | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 20


class MemberView(msgspec.Struct, kw_only=True):
    user: UserView
    title: str


class UnitPageView(msgspec.Struct, kw_only=True):
    unit: UnitView | None
    breadcrumbs: list[UnitView]
    children: list[UnitView]
    members: list[MemberView]
    next_cursor: str | None


class UserList(msgspec.Struct, kw_only=True):
    users: list[UserView]
    next_cursor: str | None


def _page_view(page: UnitPage) -> UnitPageView:
    return UnitPageView(
        unit=unit_view(page.unit) if page.unit else None,
        breadcrumbs=[unit_view(u) for u in page.breadcrumbs],
        children=[unit_view(u) for u in page.children],
        members=[MemberView(user=user_view(m.user, page.member_units), title=m.title) for m in page.members],
        next_cursor=page.next_cursor)


@routes.route("GET", "/v1/directory/units", summary="The top of the organisation tree",
              response=UnitPageView)
async def browse_top(ctx: RequestContext) -> UnitPageView:
    return _page_view(await ctx.services.directory.browse(ctx.me, None, cursor=None, limit=1))


@routes.route("GET", "/v1/directory/units/{unit_id}", summary="A unit: its sub-units and a page of members",
              query=PageQuery, response=UnitPageView, errors=("not_found",))
async def browse_unit(ctx: RequestContext, query: PageQuery) -> UnitPageView:
    """Members are ordered by their order in the unit (排序号), then pinyin. Hidden units and users
    answer `not_found` to those who may not see them."""
    page = await ctx.services.directory.browse(ctx.me, ctx.param("unit_id"), cursor=query.cursor, limit=query.limit)
    return _page_view(page)


@routes.route("GET", "/v1/directory/search", summary="Find colleagues by name, pinyin or initials",
              query=SearchQuery, response=UserList)
async def search(ctx: RequestContext, query: SearchQuery) -> UserList:
    page = await ctx.services.directory.search(ctx.me, query.q, cursor=query.cursor, limit=query.limit)
    return UserList(users=[user_view(u, page.units) for u in page.users], next_cursor=page.next_cursor)


@routes.route("GET", "/v1/directory/users/{user_id}", summary="A colleague's profile", response=UserView,
              errors=("not_found",))
async def get_user(ctx: RequestContext) -> UserView:
    user, units = await ctx.services.directory.get_user(ctx.me, ctx.param("user_id"))
    return user_view(user, units, with_phone=True)


__all__ = ["routes", "PostView"]
