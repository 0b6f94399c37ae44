"""Unit groups: the group of a unit's direct members, created by its administrators, following the
directory as posts are added and removed."""

from __future__ import annotations

from org_support import create_user
from conversation_support import BASE, call, error_code, log, member_roles, ok, page, refused, send, view

OFFICE = "南宁市人民政府办公室"
OFFICE_STAFF = ["zhangwei", "liuyang", "chenjing", "wuqiang", "xuna", "lanting"]  # 蓝婷 holds a second post here


async def create_unit_group(demo, admin: str = "nanning.admin", unit: str = OFFICE) -> dict:
    return await ok(demo, admin, "POST", f"{BASE}/units", {"unit_id": demo.unit(unit)})


def post_path(demo, username: str, unit: str = OFFICE) -> str:
    return f"/v1/admin/users/{demo.user(username)}/posts/{demo.unit(unit)}"


async def test_unit_admin_creates_the_group_of_the_units_direct_members(demo):
    group = await create_unit_group(demo)

    assert (group["kind"], group["name"], group["unit_id"]) == ("unit", OFFICE, demo.unit(OFFICE))
    assert group["role"] == "owner" and group["member_count"] == len(OFFICE_STAFF) + 1
    roles = await member_roles(demo, "zhangwei", group["id"])
    assert roles == {demo.user("nanning.admin"): "owner", **{demo.user(u): "member" for u in OFFICE_STAFF}}
    for outsider in ("sunli", "linfeng"):  # other units
        status, body = await call(demo, outsider, "GET", f"{BASE}/{group['id']}")
        assert (status, error_code(body)) == (404, "not_found")
    assert group["id"] in [c["id"] for c in (await ok(demo, "xuna", "GET", BASE))["conversations"]]


async def test_staff_of_sub_units_are_not_members_of_the_parents_group(demo):
    city = await create_unit_group(demo, unit="南宁市")
    assert await member_roles(demo, "nanning.admin", city["id"]) == {demo.user("nanning.admin"): "owner"}
    status, body = await call(demo, "zhangwei", "GET", f"{BASE}/{city['id']}")
    assert (status, error_code(body)) == (404, "not_found")


async def test_creating_the_unit_group_again_returns_the_same_group(demo):
    first = await create_unit_group(demo)
    again = await create_unit_group(demo)
    assert again["id"] == first["id"]
    assert await log(demo, "nanning.admin", first["id"]) == [(1, "conversation.created")]


async def test_another_administrator_of_the_unit_is_told_where_the_group_is(demo):
    first = await create_unit_group(demo)
    body = await refused(demo, "admin", "conflict.exists", "POST", f"{BASE}/units", {"unit_id": demo.unit(OFFICE)})
    assert body["error"]["details"]["conversation_id"] == first["id"]


async def test_plain_members_and_other_branches_do_not_create_it(demo):
    await refused(demo, "zhangwei", "perm.forbidden", "POST", f"{BASE}/units", {"unit_id": demo.unit(OFFICE)})
    await refused(demo, "liuzhou.admin", "perm.forbidden", "POST", f"{BASE}/units", {"unit_id": demo.unit(OFFICE)})
    await refused(demo, "nanning.admin", "not_found", "POST", f"{BASE}/units", {"unit_id": "unit_nothere"})


async def test_a_new_post_joins_the_unit_group_and_a_removed_post_leaves_it(demo):
    group = (await create_unit_group(demo))["id"]
    await ok(demo, "nanning.admin", "PUT", post_path(demo, "sunli"), {"title": "挂职副主任"})

    assert (await view(demo, "sunli", group))["membership"] == "active"
    joined = (await page(demo, "sunli", group))["events"]
    assert [(e["type"], e["data"]["user_ids"]) for e in joined] == [("member.joined", [demo.user("sunli")])]
    await send(demo, "sunli", group, "大家好，我是孙丽")

    await ok(demo, "nanning.admin", "DELETE", post_path(demo, "sunli"))
    assert demo.user("sunli") not in await member_roles(demo, "zhangwei", group)
    removed = (await page(demo, "zhangwei", group))["events"][-1]
    assert (removed["type"], removed["data"]["user_ids"]) == ("member.removed", [demo.user("sunli")])
    # She keeps what she could read, and cannot speak any more.
    former = await view(demo, "sunli", group)
    assert (former["membership"], former["readable_until"]) == ("left", removed["seq"])
    status, body = await call(demo, "sunli", "POST", f"{BASE}/{group}/messages",
                              {"client_msg_id": "after-removal", "message": {"kind": "text", "text": "还在吗"}})
    assert (status, error_code(body)) == (404, "not_found")


async def test_changing_the_title_of_a_post_changes_no_membership(demo):
    group = (await create_unit_group(demo))["id"]
    before = await log(demo, "zhangwei", group)
    await ok(demo, "nanning.admin", "PUT", post_path(demo, "wuqiang"), {"title": "副科长"})
    assert await log(demo, "zhangwei", group) == before


async def test_a_new_account_in_the_unit_joins_its_group(demo):
    group = (await create_unit_group(demo))["id"]
    await create_user(demo, "nanning.admin", OFFICE, "newclerk", "新科员")
    assert (await view(demo, "newclerk", group))["role"] == "member"


async def test_unit_group_membership_follows_the_directory_only(demo):
    group = (await create_unit_group(demo))["id"]
    await refused(demo, "nanning.admin", "perm.forbidden", "POST", f"{BASE}/{group}/members",
                  {"user_ids": [demo.user("sunli")]})
    await refused(demo, "nanning.admin", "perm.forbidden", "DELETE", f"{BASE}/{group}/members/{demo.user('xuna')}")
    await refused(demo, "xuna", "perm.forbidden", "POST", f"{BASE}/{group}/leave")
    await refused(demo, "nanning.admin", "perm.forbidden", "PATCH", f"{BASE}/{group}", {"name": "改个名字"})


async def test_the_owning_administrator_moderates_the_unit_group(demo):
    group = (await create_unit_group(demo))["id"]
    await ok(demo, "nanning.admin", "PATCH", f"{BASE}/{group}", {"mute_all": True})
    status, body = await call(demo, "xuna", "POST", f"{BASE}/{group}/messages",
                              {"client_msg_id": "muted-1", "message": {"kind": "text", "text": "请问"}})
    assert (status, error_code(body)) == (403, "conversation.muted_all")
    await ok(demo, "nanning.admin", "PUT", f"{BASE}/{group}/admins/{demo.user('zhangwei')}", status=204)
    await send(demo, "zhangwei", group, "通知：明天上午全体会议")
