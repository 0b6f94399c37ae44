"""Finding colleagues by name, full pinyin or pinyin initials."""

from __future__ import annotations

import pytest

from org_support import create_user, error_code, user_names
from xietong.server.directory.pinyin import pinyin_keys


async def search(demo, q: str, viewer: str = "zhangwei", **params):
    return await demo.api.get("/v1/directory/search", token=await demo.token(viewer), params={"q": q, **params})


@pytest.mark.parametrize("q", ["张", "张伟", "zhangw", "zhangwei", "zw", "ZhangW", "ZW", "  zhangw  ", "zhang w"])
async def test_zhang_wei_is_found_by_name_pinyin_or_initials(demo, q):
    status, page = await search(demo, q)
    assert status == 200
    assert user_names(page) == {"张伟"}
    assert page["users"][0]["posts"] == [
        {"unit_id": demo.unit("南宁市人民政府办公室"), "unit_name": "南宁市人民政府办公室", "title": "主任"}]


@pytest.mark.parametrize("name, full, initials", [
    ("单磊", "shanlei", "sl"), ("曾敏", "zengmin", "zm"), ("覃洁", "qinjie", "qj"),
    ("解放", "xiefang", "xf"), ("张伟", "zhangwei", "zw"), ("买买提·艾力", "maimaitiaili", "mmtal"),
    ("Li Lei", "lilei", "ll"),
])
def test_pinyin_keys_read_polyphonic_surnames_as_surnames(name, full, initials):
    assert pinyin_keys(name) == (full, initials)


@pytest.mark.parametrize("q, found", [
    ("shanl", "单磊"), ("zengm", "曾敏"), ("qinj", "覃洁"), ("sl", "单磊"), ("QJ", "覃洁"),
])
async def test_polyphonic_surnames_are_found_by_their_surname_reading(demo, q, found):
    status, page = await search(demo, q, viewer="admin")
    assert status == 200
    assert found in user_names(page)


@pytest.mark.parametrize("q", ["danl", "cengm", "tanj"])
async def test_the_non_surname_reading_does_not_find_the_surname(demo, q):
    status, page = await search(demo, q, viewer="admin")
    assert status == 200
    assert page["users"] == []


@pytest.mark.parametrize("limit", [1, 2, 4])
async def test_search_pages_return_every_match_exactly_once(demo, limit):
    # Two "l" matches (李云, directory-hidden, and 罗雪 of the hidden 机要室) are filtered out along the way.
    _, whole = await search(demo, "l", limit=50)
    assert user_names(whole) == {"刘洋", "蓝婷", "梁波", "林峰", "罗红", "柳州管理员"}
    assert whole["next_cursor"] is None

    seen: list[str] = []
    params: dict[str, object] = {"limit": limit}
    for _ in range(20):
        status, page = await search(demo, "l", **params)
        assert status == 200 and len(page["users"]) <= limit
        seen += [u["display_name"] for u in page["users"]]
        if page["next_cursor"] is None:
            break
        params = {"limit": limit, "cursor": page["next_cursor"]}
    assert sorted(seen) == sorted(user_names(whole))


@pytest.mark.parametrize("q", ["", " ", "\u3000"])
async def test_an_empty_query_is_refused(demo, q):
    status, body = await search(demo, q)
    assert status == 400 and error_code(body) == "request.invalid"


@pytest.mark.parametrize("q", [".*", "^", "z.*", "^zhang", "(", "[a-z]", "\\", "$", "zhang|li", "z+"])
async def test_regex_shaped_queries_match_only_literally(demo, q):
    status, page = await search(demo, q)
    assert status == 200
    assert page["users"] == []


async def test_a_latin_name_is_found_as_typed_and_by_its_key(demo):
    await create_user(demo, "admin", "南宁市人民政府办公室", "lilei", "Li Lei", title="顾问")
    for q in ("Li L", "Li Lei", "lil", "LiLei", "ll"):
        status, page = await search(demo, q)
        assert status == 200 and user_names(page) == {"Li Lei"}, q


async def test_a_name_with_regex_characters_is_found_literally(demo):
    await create_user(demo, "admin", "南宁市人民政府办公室", "agent.x", "A.B(x)", title="顾问")
    status, page = await search(demo, "A.B(")
    assert status == 200 and user_names(page) == {"A.B(x)"}
    status, page = await search(demo, "AxB(")
    assert status == 200 and page["users"] == []


async def test_a_renamed_user_is_found_by_the_new_pinyin_only(demo):
    status, body = await demo.api.patch(f"/v1/admin/users/{demo.user('wuqiang')}", {"display_name": "伍强"},
                                        token=await demo.token("nanning.admin"))
    assert status == 200 and body["pinyin"] == "wuqiang"
    status, page = await search(demo, "伍")
    assert user_names(page) == {"伍强"}
    status, page = await search(demo, "吴强")
    assert page["users"] == []


async def test_disabled_users_are_not_found(demo):
    status, _ = await demo.api.post(f"/v1/admin/users/{demo.user('xuna')}/disable",
                                    token=await demo.token("nanning.admin"))
    assert status == 200
    status, page = await search(demo, "xuna")
    assert status == 200 and page["users"] == []
