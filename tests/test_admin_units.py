"""Administering units: creation under the level rules, unique codes, renaming and reordering,
disabling only empty units, enabling only under an active parent."""

from __future__ import annotations

import pytest

from org_support import create_unit, error_code, names, snapshot


async def post_unit(demo, actor: str, parent: str | None, name: str, level: str, **extra):
    return await demo.api.post("/v1/admin/units", {"name": name, "level": level,
                                                   "parent_id": demo.unit(parent) if parent else None, **extra},
                               token=await demo.token(actor))


async def children(demo, viewer: str, unit: str) -> list[str]:
    status, page = await demo.api.get(f"/v1/directory/units/{demo.unit(unit)}", token=await demo.token(viewer))
    assert status == 200, page
    return names(page["children"])


async def test_admin_creates_a_unit_that_appears_in_its_parent_and_in_subtree_queries(demo):
    body = await create_unit(demo, "nanning.admin", "青秀区", "青秀区应急管理局", order=5, code="450103-YJ")
    assert (body["name"], body["level"], body["parent_id"], body["code"], body["status"]) == (
        "青秀区应急管理局", "department", demo.unit("青秀区"), "450103-YJ", "active")

    assert await children(demo, "zhangwei", "青秀区") == ["青秀区人民政府办公室", "青秀区应急管理局"]
    stored = await demo.server.services.store.units.get(body["id"])
    assert stored.path == [demo.unit("广西壮族自治区"), demo.unit("南宁市"), demo.unit("青秀区"), body["id"]]
    under_nanning = await demo.server.services.store.units.col.distinct("_id", {"path": demo.unit("南宁市")})
    assert body["id"] in under_nanning


@pytest.mark.parametrize("parent, level", [
    ("青秀区", "city"),  # a city under a county
    ("南宁市", "city"),  # a city under a city
    ("南宁市", "province"),
    ("南宁市人民政府办公室", "county"),  # a county under a department
    ("广西壮族自治区", "national"),
])
async def test_a_unit_cannot_sit_above_its_level(demo, parent, level):
    await demo.token("admin")
    before = await snapshot(demo.server.services.store)
    status, body = await post_unit(demo, "admin", parent, "错位单位", level)
    assert (status, error_code(body)) == (400, "unit.invalid_parent")
    assert await snapshot(demo.server.services.store) == before


@pytest.mark.parametrize("parent, level", [
    ("南宁市人民政府办公室", "department"),  # a 科室 inside an office
    ("广西壮族自治区", "county"),  # levels may be skipped
    ("南宁市", "county"),
])
async def test_levels_go_down_the_tree_and_departments_nest(demo, parent, level):
    status, body = await post_unit(demo, "admin", parent, "新单位", level)
    assert status == 201, body
    assert body["level"] == level


async def test_a_duplicate_code_is_a_conflict(demo):
    await demo.token("admin")
    before = await snapshot(demo.server.services.store)
    status, body = await post_unit(demo, "admin", "南宁市", "另一个青秀区", "county", code="450103")
    assert (status, error_code(body)) == (409, "conflict.exists")
    assert await snapshot(demo.server.services.store) == before

    status, body = await demo.api.patch(f"/v1/admin/units/{demo.unit('青秀区')}", {"code": "450202"},
                                        token=await demo.token("admin"))
    assert (status, error_code(body)) == (409, "conflict.exists")
    assert await snapshot(demo.server.services.store) == before


async def test_units_without_a_code_do_not_collide(demo):
    for name in ("甲科", "乙科"):
        status, body = await post_unit(demo, "nanning.admin", "南宁市人民政府办公室", name, "department")
        assert status == 201 and body["code"] is None


async def test_rename_and_reorder_show_in_the_directory(demo):
    token = await demo.token("admin")
    status, body = await demo.api.patch(f"/v1/admin/units/{demo.unit('柳州市')}", {"name": "柳州市（工业城）"},
                                        token=token)
    assert status == 200 and body["name"] == "柳州市（工业城）"
    status, body = await demo.api.patch(f"/v1/admin/units/{demo.unit('南宁市')}", {"order": 9}, token=token)
    assert status == 200 and body["order"] == 9 and body["name"] == "南宁市"
    assert await children(demo, "zhangwei", "广西壮族自治区") == [
        "自治区办公厅", "应急管理厅", "机关事务管理局", "柳州市（工业城）", "南宁市"]


async def test_disabling_a_unit_with_members_or_active_children_is_refused(demo):
    await demo.token("admin")
    store = demo.server.services.store
    before = await snapshot(store)
    for unit in ("南宁市人民政府办公室", "青秀区", "南宁市"):  # members; an active child; both
        status, body = await demo.api.post(f"/v1/admin/units/{demo.unit(unit)}/disable", token=await demo.token("admin"))
        assert (status, error_code(body)) == (409, "unit.not_empty"), unit
    assert await snapshot(store) == before


async def test_a_disabled_unit_leaves_the_directory_but_its_admins_still_see_it(demo):
    await create_unit(demo, "nanning.admin", "青秀区", "临时专班", order=1)
    status, body = await demo.api.post(f"/v1/admin/units/{demo.unit('临时专班')}/disable",
                                       token=await demo.token("nanning.admin"))
    assert status == 200 and body["status"] == "disabled"

    assert await children(demo, "sunli", "青秀区") == ["青秀区人民政府办公室"]
    status, body = await demo.api.get(f"/v1/directory/units/{demo.unit('临时专班')}", token=await demo.token("sunli"))
    assert (status, error_code(body)) == (404, "not_found")
    assert await children(demo, "nanning.admin", "青秀区") == ["青秀区人民政府办公室", "临时专班"]


async def test_no_new_users_or_units_in_a_disabled_unit(demo):
    await create_unit(demo, "nanning.admin", "青秀区", "临时专班")
    token = await demo.token("nanning.admin")
    assert (await demo.api.post(f"/v1/admin/units/{demo.unit('临时专班')}/disable", token=token))[0] == 200
    before = await snapshot(demo.server.services.store)
    status, body = await post_unit(demo, "nanning.admin", "临时专班", "下设组", "department")
    assert (status, error_code(body)) == (409, "conflict.state")
    status, body = await demo.api.post("/v1/admin/users", {"username": "late", "display_name": "迟到",
                                                           "unit_id": demo.unit("临时专班")}, token=token)
    assert (status, error_code(body)) == (409, "conflict.state")
    assert await snapshot(demo.server.services.store) == before


async def test_enabling_under_a_disabled_parent_is_refused_until_the_parent_is_enabled(demo):
    await create_unit(demo, "nanning.admin", "青秀区", "专班")
    await create_unit(demo, "nanning.admin", "专班", "专班一组")
    token = await demo.token("nanning.admin")

    def url(unit: str, action: str) -> str:
        return f"/v1/admin/units/{demo.unit(unit)}/{action}"

    assert (await demo.api.post(url("专班", "disable"), token=token))[1]["error"]["code"] == "unit.not_empty"
    assert (await demo.api.post(url("专班一组", "disable"), token=token))[0] == 200
    assert (await demo.api.post(url("专班", "disable"), token=token))[0] == 200

    before = await snapshot(demo.server.services.store)
    status, body = await demo.api.post(url("专班一组", "enable"), token=token)
    assert (status, error_code(body)) == (409, "conflict.state")
    assert await snapshot(demo.server.services.store) == before

    assert (await demo.api.post(url("专班", "enable"), token=token))[0] == 200
    status, body = await demo.api.post(url("专班一组", "enable"), token=token)
    assert status == 200 and body["status"] == "active"
    assert await children(demo, "sunli", "专班") == ["专班一组"]


async def test_disabling_twice_changes_nothing_the_second_time(demo):
    await create_unit(demo, "nanning.admin", "青秀区", "专班")
    token = await demo.token("nanning.admin")
    assert (await demo.api.post(f"/v1/admin/units/{demo.unit('专班')}/disable", token=token))[0] == 200
    before = await snapshot(demo.server.services.store, ("units", "users", "audit"))
    status, body = await demo.api.post(f"/v1/admin/units/{demo.unit('专班')}/disable", token=token)
    assert status == 200 and body["status"] == "disabled"
    assert await snapshot(demo.server.services.store, ("units", "users", "audit")) == before
