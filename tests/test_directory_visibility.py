"""Who sees what in the directory: hidden units (机要室) and directory-hidden users (李云)."""

from __future__ import annotations

import pytest
from org_support import create_user, error_code, grant, member_names, names, user_names

from xietong.server.access import Principal


async def browse(demo, viewer: str, unit: str):
    return await demo.api.get(f"/v1/directory/units/{demo.unit(unit)}", token=await demo.token(viewer))


async def search(demo, viewer: str, q: str):
    status, page = await demo.api.get("/v1/directory/search", token=await demo.token(viewer), params={"q": q})
    assert status == 200, page
    return user_names(page)


async def profile(demo, viewer: str, username: str):
    return await demo.api.get(f"/v1/directory/users/{demo.user(username)}", token=await demo.token(viewer))


# ---- a hidden unit --------------------------------------------------------------------------------


@pytest.mark.parametrize("outsider", ["zhouhui", "zhangwei", "nanning.admin", "gx.auditor"])
async def test_hidden_unit_and_its_members_are_invisible_to_outsiders(demo, outsider):
    status, page = await browse(demo, outsider, "自治区办公厅")
    assert status == 200
    assert "机要室" not in names(page["children"])

    status, body = await browse(demo, outsider, "机要室")
    assert status == 404 and error_code(body) == "not_found"

    assert await search(demo, outsider, "蒙") == set()
    assert await search(demo, outsider, "luox") == set()
    for member in ("mengqiang", "luoxue"):
        status, body = await profile(demo, outsider, member)
        assert status == 404 and error_code(body) == "not_found"


async def test_hidden_unit_is_visible_to_its_own_members(demo):
    status, page = await browse(demo, "luoxue", "自治区办公厅")
    assert status == 200 and "机要室" in names(page["children"])
    status, page = await browse(demo, "luoxue", "机要室")
    assert status == 200 and member_names(page) == ["蒙强", "罗雪"]
    assert await search(demo, "luoxue", "mengq") == {"蒙强"}
    status, body = await profile(demo, "luoxue", "mengqiang")
    assert status == 200 and body["posts"][0]["unit_name"] == "机要室"


@pytest.mark.parametrize("admin", ["admin", "office.admin"])
async def test_hidden_unit_is_visible_to_administrators_whose_scope_covers_it(demo, admin):
    await create_user(demo, "admin", "自治区办公厅", "office.admin", "办公厅管理员")
    await grant(demo, "admin", "office.admin", "unit_admin", "自治区办公厅")

    status, page = await browse(demo, admin, "自治区办公厅")
    assert status == 200 and "机要室" in names(page["children"])
    status, page = await browse(demo, admin, "机要室")
    assert status == 200 and member_names(page) == ["蒙强", "罗雪"]
    assert await search(demo, admin, "蒙强") == {"蒙强"}
    status, _ = await profile(demo, admin, "luoxue")
    assert status == 200


async def test_a_second_post_makes_a_hidden_member_visible_without_revealing_the_hidden_unit(demo):
    status, body = await demo.api.put(f"/v1/admin/users/{demo.user('luoxue')}/posts/{demo.unit('应急管理厅')}",
                                      {"title": "联络员"}, token=await demo.token("admin"))
    assert status == 200, body

    status, body = await profile(demo, "zhangwei", "luoxue")
    assert status == 200
    assert body["posts"] == [{"unit_id": demo.unit("应急管理厅"), "unit_name": "应急管理厅", "title": "联络员"}]
    assert "机要室" not in str(body) and demo.unit("机要室") not in str(body)

    status, page = await demo.api.get("/v1/directory/search", token=await demo.token("zhangwei"),
                                      params={"q": "罗雪"})
    assert [u["posts"] for u in page["users"]] == [body["posts"]]
    status, page = await browse(demo, "zhangwei", "应急管理厅")
    listed = next(m for m in page["members"] if m["user"]["display_name"] == "罗雪")
    assert demo.unit("机要室") not in str(listed)


async def test_hiding_a_unit_takes_effect_for_outsiders_at_once(demo):
    status, body = await demo.api.patch(f"/v1/admin/units/{demo.unit('青秀区')}", {"hidden": True},
                                        token=await demo.token("nanning.admin"))
    assert status == 200 and body["hidden"] is True

    status, page = await browse(demo, "zhangwei", "南宁市")
    assert names(page["children"]) == ["南宁市人民政府办公室"]
    assert await search(demo, "zhangwei", "孙丽") == set()
    # Inside the hidden subtree, and for its administrators, nothing changed.
    status, page = await browse(demo, "sunli", "南宁市")
    assert names(page["children"]) == ["南宁市人民政府办公室", "青秀区"]
    status, page = await browse(demo, "nanning.admin", "青秀区人民政府办公室")
    assert status == 200 and "孙丽" in member_names(page)


# ---- a directory-hidden user -----------------------------------------------------------------------


async def test_directory_hidden_user_is_not_listed_or_found_by_colleagues(demo):
    status, page = await browse(demo, "zhouhui", "自治区办公厅")
    assert status == 200
    assert "李云" not in member_names(page)
    assert member_names(page) == ["周慧", "单磊", "王芳", "覃洁"]
    assert await search(demo, "zhouhui", "李云") == set()
    assert await search(demo, "zhouhui", "liyun") == set()
    status, body = await profile(demo, "zhouhui", "liyun")
    assert status == 404 and error_code(body) == "not_found"


async def test_directory_hidden_user_sees_themself(demo):
    status, page = await browse(demo, "liyun", "自治区办公厅")
    assert member_names(page)[0] == "李云"
    assert await search(demo, "liyun", "liyun") == {"李云"}
    status, body = await profile(demo, "liyun", "liyun")
    assert status == 200 and body["display_name"] == "李云"


@pytest.mark.parametrize("admin", ["admin", "office.admin"])
async def test_directory_hidden_user_is_visible_to_the_administrators_of_their_unit(demo, admin):
    await create_user(demo, "admin", "自治区办公厅", "office.admin", "办公厅管理员")
    await grant(demo, "admin", "office.admin", "unit_admin", "自治区办公厅")
    status, page = await browse(demo, admin, "自治区办公厅")
    assert "李云" in member_names(page)
    assert await search(demo, admin, "liyun") == {"李云"}
    status, _ = await profile(demo, admin, "liyun")
    assert status == 200


async def test_directory_hidden_user_is_invisible_to_administrators_of_other_branches(demo):
    status, body = await profile(demo, "nanning.admin", "liyun")
    assert status == 404 and error_code(body) == "not_found"


async def share_a_group(demo, *usernames: str) -> None:
    """A group set up by the system administrator, who sees everyone."""
    await demo.server.services.conversations.create_group(
        Principal(demo.user("admin"), None), "工作群", [demo.user(u) for u in usernames], None)


async def test_people_already_in_a_conversation_with_a_hidden_user_still_reach_their_profile(demo):
    await share_a_group(demo, "zhouhui", "liyun")

    status, body = await profile(demo, "zhouhui", "liyun")
    assert status == 200 and body["display_name"] == "李云"
    # Only that pair: others still do not find her, and she is still not listed or searchable.
    status, body = await profile(demo, "zhangwei", "liyun")
    assert status == 404 and error_code(body) == "not_found"
    assert await search(demo, "zhouhui", "liyun") == set()
    status, page = await browse(demo, "zhouhui", "自治区办公厅")
    assert "李云" not in member_names(page)


async def test_unhiding_a_user_lists_them_again(demo):
    status, body = await demo.api.patch(f"/v1/admin/users/{demo.user('liyun')}", {"directory_hidden": False},
                                        token=await demo.token("admin"))
    assert status == 200 and body["directory_hidden"] is False
    assert await search(demo, "zhangwei", "liyun") == {"李云"}


async def test_disabled_colleague_disappears_from_the_directory_but_not_for_their_admin(demo):
    status, _ = await demo.api.post(f"/v1/admin/users/{demo.user('xuna')}/disable",
                                    token=await demo.token("nanning.admin"))
    assert status == 200
    status, page = await browse(demo, "zhangwei", "南宁市人民政府办公室")
    assert "徐娜" not in member_names(page)
    status, body = await profile(demo, "zhangwei", "xuna")
    assert status == 404 and error_code(body) == "not_found"

    status, page = await browse(demo, "nanning.admin", "南宁市人民政府办公室")
    xuna = next(m["user"] for m in page["members"] if m["user"]["display_name"] == "徐娜")
    assert xuna["status"] == "disabled"


async def test_everything_under_a_hidden_unit_is_hidden_too(demo):
    status, body = await demo.api.post("/v1/admin/units", {"name": "机要室档案组", "level": "department",
                                                           "parent_id": demo.unit("机要室")},
                                       token=await demo.token("admin"))
    assert status == 201
    status, body = await demo.api.get(f"/v1/directory/units/{body['id']}", token=await demo.token("zhouhui"))
    assert (status, error_code(body)) == (404, "not_found")
    status, page = await demo.api.get(f"/v1/directory/units/{demo.unit('机要室')}", token=await demo.token("mengqiang"))
    assert names(page["children"]) == ["机要室档案组"]


async def test_a_conversation_partner_in_a_hidden_unit_is_reachable_without_revealing_the_unit(demo):
    await share_a_group(demo, "zhouhui", "mengqiang")
    status, body = await profile(demo, "zhouhui", "mengqiang")
    assert status == 200 and body["display_name"] == "蒙强"
    assert body["posts"] == []
