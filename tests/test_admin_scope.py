"""Graded administration (分级权限): every admin endpoint checks the caller's scope.

The matrix: for each endpoint of ``server/http/admin_routes.py`` (the audit log has its own tests in
``test_audit_log.py``), the admin of 南宁市 succeeds on targets in 南宁市's subtree, is refused with
``perm.out_of_scope`` on targets in 柳州市, 广西壮族自治区 itself, 应急管理厅 (and on 南宁市 itself where
the unit itself is changed), and a plain member is refused with ``perm.forbidden``. After every
refusal the store is exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from org_support import create_unit, error_code, grant, snapshot

Request = Callable[[Any], tuple[str, str, Any]]  # demo -> (method, path, json body)


def create_unit_under(parent: str) -> Request:
    return lambda d: ("POST", "/v1/admin/units", {"name": "新设科室", "level": "department", "parent_id": d.unit(parent)})


def update_unit(unit: str) -> Request:
    return lambda d: ("PATCH", f"/v1/admin/units/{d.unit(unit)}", {"name": "改名后", "order": 7})


def unit_action(unit: str, action: str) -> Request:
    return lambda d: ("POST", f"/v1/admin/units/{d.unit(unit)}/{action}", None)


def create_user_in(unit: str, username: str = "newcomer") -> Request:
    return lambda d: ("POST", "/v1/admin/users", {"username": username, "display_name": "新同事", "unit_id": d.unit(unit)})


def get_user(username: str) -> Request:
    return lambda d: ("GET", f"/v1/admin/users/{d.user(username)}", None)


def update_user(username: str) -> Request:
    return lambda d: ("PATCH", f"/v1/admin/users/{d.user(username)}", {"display_name": "改名", "phone": "0771-1234567"})


def user_action(username: str, action: str, body: Any = None) -> Request:
    return lambda d: ("POST", f"/v1/admin/users/{d.user(username)}/{action}", body)


def set_post(username: str, unit: str) -> Request:
    return lambda d: ("PUT", f"/v1/admin/users/{d.user(username)}/posts/{d.unit(unit)}", {"title": "兼职", "order": 9})


def remove_post(username: str, unit: str) -> Request:
    return lambda d: ("DELETE", f"/v1/admin/users/{d.user(username)}/posts/{d.unit(unit)}", None)


def role(username: str, name: str, unit: str, revoke: bool = False) -> Request:
    suffix = "/revoke" if revoke else ""
    return lambda d: ("POST", f"/v1/admin/users/{d.user(username)}/roles{suffix}", {"role": name, "unit_id": d.unit(unit)})


async def prepare(demo) -> None:
    """Targets some endpoints need: empty units in both branches, disabled ones, disabled accounts,
    a lockout counter, a post in 柳州, a role to revoke, and a 南宁 colleague who administers 柳州."""
    for parent, name in [("青秀区", "青秀区档案室"), ("城中区", "城中区档案室"), ("应急管理厅", "应急档案室"),
                         ("青秀区", "青秀区停用科"), ("城中区", "城中区停用科"), ("应急管理厅", "应急停用科")]:
        await create_unit(demo, "admin", parent, name)
    token = await demo.token("admin")
    for name in ("青秀区停用科", "城中区停用科", "应急停用科"):
        assert (await demo.api.post(f"/v1/admin/units/{demo.unit(name)}/disable", token=token))[0] == 200
    for username in ("guoping", "xiebin", "mojun"):
        assert (await demo.api.post(f"/v1/admin/users/{demo.user(username)}/disable", token=token))[0] == 200
    for username in ("majie", "tangyu"):
        status, _ = await demo.api.post("/v1/auth/login", {"username": username, "password": "wrong password 1"})
        assert status == 401
    status, _ = await demo.api.put(f"/v1/admin/users/{demo.user('zhangwei')}/posts/{demo.unit('柳州市人民政府办公室')}",
                                   {"title": "挂职"}, token=token)
    assert status == 200
    await grant(demo, "admin", "hexin", "auditor", "青秀区")
    await grant(demo, "admin", "xuna", "unit_admin", "柳州市")


@dataclass
class Endpoint:
    in_scope: list[Request]
    out_of_scope: list[Request]
    forbidden: list[Request] = field(default_factory=list)  # for a plain member; in_scope[0] when empty


# Users whose accounts nanning.admin does not administer: other branches, a secondary post in 南宁 with
# the primary elsewhere (蓝婷), the system admin, officials of 广西 itself, and a 南宁 colleague who
# administers 柳州 (taking over that account would reach into 柳州).
FOREIGN_ACCOUNTS = ["linfeng", "fengtao", "huangjian", "lanting", "admin", "gx.auditor", "liuzhou.admin", "xuna"]
FOREIGN_UNITS = ["柳州市", "柳州市人民政府办公室", "广西壮族自治区", "应急管理厅"]

ENDPOINTS = {
    "create unit": Endpoint(
        in_scope=[create_unit_under("南宁市"), create_unit_under("青秀区"), create_unit_under("青秀区人民政府办公室")],
        out_of_scope=[create_unit_under(u) for u in [*FOREIGN_UNITS, "城中区"]]),
    "update unit": Endpoint(
        in_scope=[update_unit("青秀区"), update_unit("南宁市人民政府办公室")],
        out_of_scope=[update_unit(u) for u in [*FOREIGN_UNITS, "城中区", "南宁市"]]),
    "disable unit": Endpoint(
        in_scope=[unit_action("青秀区档案室", "disable")],
        out_of_scope=[unit_action(u, "disable") for u in ["城中区档案室", "应急档案室", "南宁市", *FOREIGN_UNITS]]),
    "enable unit": Endpoint(
        in_scope=[unit_action("青秀区停用科", "enable")],
        out_of_scope=[unit_action(u, "enable") for u in ["城中区停用科", "应急停用科"]]),
    "create user": Endpoint(
        in_scope=[create_user_in("南宁市", "newcomer1"), create_user_in("青秀区人民政府办公室", "newcomer2")],
        out_of_scope=[create_user_in(u) for u in [*FOREIGN_UNITS, "城中区"]]),
    "get user": Endpoint(
        in_scope=[get_user("wuqiang"), get_user("sunli"), get_user("hexin")],
        out_of_scope=[get_user(u) for u in FOREIGN_ACCOUNTS]),
    "update user": Endpoint(
        in_scope=[update_user("wuqiang"), update_user("sunli")],
        out_of_scope=[update_user(u) for u in FOREIGN_ACCOUNTS]),
    "disable user": Endpoint(
        in_scope=[user_action("wuqiang", "disable"), user_action("hexin", "disable")],
        out_of_scope=[user_action(u, "disable") for u in FOREIGN_ACCOUNTS]),
    "enable user": Endpoint(
        in_scope=[user_action("guoping", "enable")],
        out_of_scope=[user_action(u, "enable") for u in ["xiebin", "mojun"]]),
    "reset password": Endpoint(
        in_scope=[user_action("wuqiang", "reset-password", {}), user_action("sunli", "reset-password", {})],
        out_of_scope=[user_action(u, "reset-password", {}) for u in FOREIGN_ACCOUNTS]),
    "unlock user": Endpoint(
        in_scope=[user_action("majie", "unlock")],
        out_of_scope=[user_action(u, "unlock") for u in ["tangyu", "xuna", "lanting"]]),
    "set post": Endpoint(
        in_scope=[set_post("zhangwei", "青秀区人民政府办公室"), set_post("lanting", "青秀区"),
                  set_post("linfeng", "南宁市人民政府办公室")],
        out_of_scope=[set_post("zhangwei", u) for u in FOREIGN_UNITS] + [set_post("wuqiang", "城中区")]),
    "remove post": Endpoint(
        in_scope=[remove_post("lanting", "南宁市人民政府办公室")],
        out_of_scope=[remove_post("lanting", "应急管理厅"), remove_post("zhangwei", "柳州市人民政府办公室")]),
    "grant role": Endpoint(
        in_scope=[role("zhangwei", "auditor", "南宁市"), role("sunli", "unit_admin", "青秀区")],
        out_of_scope=[role("zhangwei", "auditor", "柳州市"), role("nanning.admin", "unit_admin", "广西壮族自治区"),
                      role("zhangwei", "unit_admin", "应急管理厅"), role("linfeng", "auditor", "柳州市人民政府办公室")]),
    "revoke role": Endpoint(
        in_scope=[role("hexin", "auditor", "青秀区", revoke=True)],
        out_of_scope=[role("liuzhou.admin", "unit_admin", "柳州市", revoke=True),
                      role("gx.auditor", "auditor", "广西壮族自治区", revoke=True),
                      role("xuna", "unit_admin", "柳州市", revoke=True)]),
}


async def send(demo, actor: str, request: Request) -> tuple[int, Any]:
    method, path, body = request(demo)
    return await demo.api.request(method, path, body, token=await demo.token(actor))


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_unit_admin_acts_within_its_subtree(demo, endpoint):
    await prepare(demo)
    store = demo.server.services.store
    for request in ENDPOINTS[endpoint].in_scope:
        before = await snapshot(store)
        status, body = await send(demo, "nanning.admin", request)
        assert status in (200, 201, 204), (request(demo), body)
        if request(demo)[0] != "GET":
            assert await snapshot(store) != before, request(demo)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_unit_admin_is_refused_outside_its_subtree_and_nothing_changes(demo, endpoint):
    await prepare(demo)
    store = demo.server.services.store
    await demo.token("nanning.admin")
    for request in ENDPOINTS[endpoint].out_of_scope:
        before = await snapshot(store)
        status, body = await send(demo, "nanning.admin", request)
        assert (status, error_code(body)) == (403, "perm.out_of_scope"), (request(demo), body)
        assert await snapshot(store) == before, request(demo)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_plain_member_is_forbidden_and_nothing_changes(demo, endpoint):
    await prepare(demo)
    store = demo.server.services.store
    await demo.token("zhangwei")
    for request in ENDPOINTS[endpoint].in_scope:
        before = await snapshot(store)
        status, body = await send(demo, "zhangwei", request)
        assert (status, error_code(body)) == (403, "perm.forbidden"), (request(demo), body)
        assert await snapshot(store) == before, request(demo)


async def test_the_other_city_admin_cannot_reach_into_nanning(demo):
    await prepare(demo)
    store = demo.server.services.store
    await demo.token("liuzhou.admin")
    for request in [create_unit_under("南宁市"), update_unit("青秀区"), unit_action("青秀区档案室", "disable"),
                    create_user_in("青秀区人民政府办公室"), user_action("wuqiang", "disable"),
                    user_action("sunli", "reset-password", {}), set_post("linfeng", "南宁市人民政府办公室"),
                    role("linfeng", "unit_admin", "南宁市")]:
        before = await snapshot(store)
        status, body = await send(demo, "liuzhou.admin", request)
        assert (status, error_code(body)) == (403, "perm.out_of_scope"), (request(demo), body)
        assert await snapshot(store) == before


async def test_only_the_system_admin_creates_top_level_units(demo):
    store = demo.server.services.store
    spec = {"name": "钦州市", "level": "city", "parent_id": None, "order": 1}
    for actor in ("nanning.admin", "zhangwei"):
        await demo.token(actor)
        before = await snapshot(store)
        status, body = await demo.api.post("/v1/admin/units", spec, token=await demo.token(actor))
        assert (status, error_code(body)) == (403, "perm.forbidden")
        assert await snapshot(store) == before

    status, body = await demo.api.post("/v1/admin/units", spec, token=await demo.token("admin"))
    assert status == 201 and body["parent_id"] is None
    status, page = await demo.api.get("/v1/directory/units", token=await demo.token("zhangwei"))
    assert [u["name"] for u in page["children"]] == ["广西壮族自治区", "钦州市"]


async def test_system_admin_changes_the_top_unit_of_a_city_admins_scope(demo):
    status, body = await demo.api.patch(f"/v1/admin/units/{demo.unit('南宁市')}", {"name": "南宁市（首府）"},
                                        token=await demo.token("admin"))
    assert status == 200 and body["name"] == "南宁市（首府）"


async def test_a_revoked_unit_admin_loses_its_powers_at_once(demo):
    token = await demo.token("nanning.admin")
    status, _ = await demo.api.post(f"/v1/admin/users/{demo.user('nanning.admin')}/roles/revoke",
                                    {"role": "unit_admin", "unit_id": demo.unit("南宁市")}, token=await demo.token("admin"))
    assert status == 200
    status, body = await demo.api.post(f"/v1/admin/users/{demo.user('wuqiang')}/disable", token=token)
    assert (status, error_code(body)) == (403, "perm.forbidden")


async def test_an_unknown_target_is_not_found_for_an_admin(demo):
    token = await demo.token("nanning.admin")
    status, body = await demo.api.post("/v1/admin/users/usr_nosuchuser0000/disable", token=token)
    assert (status, error_code(body)) == (404, "not_found")
    status, body = await demo.api.patch("/v1/admin/units/unt_nosuchunit0000", {"order": 1}, token=token)
    assert (status, error_code(body)) == (404, "not_found")
