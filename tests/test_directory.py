"""Browsing the organisation tree (通讯录): the top, a unit's sub-units and its members, pages."""

from __future__ import annotations

import base64

import pytest

from org_support import create_user, error_code, names


def unit_path(demo, name: str) -> str:
    return f"/v1/directory/units/{demo.unit(name)}"


async def test_top_of_the_tree_is_the_province(demo):
    status, page = await demo.api.get("/v1/directory/units", token=await demo.token("zhangwei"))
    assert status == 200
    assert page["unit"] is None
    assert names(page["children"]) == ["广西壮族自治区"]
    assert page["members"] == [] and page["next_cursor"] is None


async def test_unit_lists_its_children_in_order_with_breadcrumbs(demo):
    status, page = await demo.api.get(unit_path(demo, "广西壮族自治区"), token=await demo.token("zhangwei"))
    assert status == 200
    assert page["unit"]["name"] == "广西壮族自治区"
    assert names(page["children"]) == ["自治区办公厅", "应急管理厅", "机关事务管理局", "南宁市", "柳州市"]

    status, page = await demo.api.get(unit_path(demo, "青秀区人民政府办公室"), token=await demo.token("zhangwei"))
    assert status == 200
    assert names(page["breadcrumbs"]) == ["广西壮族自治区", "南宁市", "青秀区"]


async def test_members_are_ordered_by_their_order_then_pinyin_with_titles(demo):
    # Two newcomers share order 3 with 吴强 (wuqiang): pinyin decides among the three.
    await create_user(demo, "admin", "南宁市人民政府办公室", "zoukai", "邹凯", title="科员", order=3)
    await create_user(demo, "admin", "南宁市人民政府办公室", "anran", "安然", title="见习", order=3)

    status, page = await demo.api.get(unit_path(demo, "南宁市人民政府办公室"), token=await demo.token("xuna"))
    assert status == 200
    assert [(m["user"]["display_name"], m["title"]) for m in page["members"]] == [
        ("张伟", "主任"), ("刘洋", "副主任"), ("陈静", "秘书科科长"),
        ("安然", "见习"), ("吴强", "科员"), ("邹凯", "科员"),
        ("徐娜", "科员"), ("蓝婷", "应急联络员"),
    ]


async def test_member_with_two_posts_shows_both_units_by_name(demo):
    status, page = await demo.api.get(unit_path(demo, "南宁市人民政府办公室"), token=await demo.token("zhangwei"))
    assert status == 200
    lanting = next(m for m in page["members"] if m["user"]["display_name"] == "蓝婷")
    assert lanting["title"] == "应急联络员"
    assert {(p["unit_name"], p["title"]) for p in lanting["user"]["posts"]} == {
        ("应急管理厅", "指挥中心主任"), ("南宁市人民政府办公室", "应急联络员")}


async def test_browse_does_not_show_phone_numbers_but_the_profile_does(demo):
    token = await demo.token("zhangwei")
    status, page = await demo.api.get(unit_path(demo, "青秀区人民政府办公室"), token=token)
    assert status == 200 and all(m["user"]["phone"] is None for m in page["members"])
    status, profile = await demo.api.get(f"/v1/directory/users/{demo.user('sunli')}", token=token)
    assert status == 200
    assert profile["display_name"] == "孙丽" and profile["phone"].startswith("0771-")


@pytest.mark.parametrize("limit", [1, 2, 5])
async def test_paging_through_members_returns_each_member_exactly_once(demo, limit):
    token = await demo.token("zhangwei")
    _, whole = await demo.api.get(unit_path(demo, "南宁市人民政府办公室"), token=token, params={"limit": 200})
    expected = [m["user"]["id"] for m in whole["members"]]
    assert len(expected) == 6

    seen: list[str] = []
    params: dict[str, object] = {"limit": limit}
    for _ in range(10):
        status, page = await demo.api.get(unit_path(demo, "南宁市人民政府办公室"), token=token, params=params)
        assert status == 200
        assert len(page["members"]) <= limit
        seen += [m["user"]["id"] for m in page["members"]]
        if page["next_cursor"] is None:
            break
        params = {"limit": limit, "cursor": page["next_cursor"]}
    assert seen == expected


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", ["not a cursor!", "%%%", _cursor("o:-1"), _cursor("x:2"), _cursor("o:two")])
async def test_a_cursor_not_issued_by_the_api_is_refused(demo, cursor):
    status, body = await demo.api.get(unit_path(demo, "南宁市人民政府办公室"), token=await demo.token("zhangwei"),
                                      params={"cursor": cursor})
    assert status == 400 and error_code(body) == "request.invalid"


async def test_unknown_unit_is_not_found(demo):
    status, body = await demo.api.get("/v1/directory/units/unt_doesnotexist00", token=await demo.token("zhangwei"))
    assert status == 404 and error_code(body) == "not_found"


async def test_directory_needs_a_signed_in_caller(demo):
    status, body = await demo.api.get("/v1/directory/units")
    assert status == 401 and error_code(body) == "auth.required"


def _stages(plan: dict) -> list[str]:
    """Every stage name in an explain() plan tree."""
    found = [plan["stage"]] if "stage" in plan else []
    for key in ("inputStage", "queryPlan"):
        if isinstance(plan.get(key), dict):
            found += _stages(plan[key])
    for child in plan.get("inputStages", []):
        found += _stages(child)
    return found


async def test_subtree_queries_are_single_index_lookups(demo):
    store = demo.server.services.store
    nanning = demo.unit("南宁市")

    units_plan = await store.units.col.find({"path": nanning}).explain()
    assert "IXSCAN" in _stages(units_plan["queryPlanner"]["winningPlan"])
    assert "COLLSCAN" not in _stages(units_plan["queryPlanner"]["winningPlan"])
    assert units_plan["executionStats"]["nReturned"] == 4  # 南宁市, its office, 青秀区, 青秀区's office

    users_plan = await store.users.col.find({"unit_paths": nanning}).explain()
    assert "IXSCAN" in _stages(users_plan["queryPlanner"]["winningPlan"])
