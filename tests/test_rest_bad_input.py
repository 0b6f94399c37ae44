"""Bad input on the directory and admin endpoints: each gets a clear coded error, and nothing is written."""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

import pytest

from org_support import counts, create_user, error_code, snapshot, user_names


@pytest.fixture
async def admin_token(demo) -> str:
    return await demo.token("nanning.admin")


async def refused(demo, code: str, method: str, path: str, *, token: str, json=None, data: bytes | None = None,
                  headers: dict | None = None, params: dict | None = None) -> dict:
    """Send a request that must be refused with ``code``, and check that nothing was written."""
    store = demo.server.services.store
    before_counts, before = await counts(store), await snapshot(store)
    status, body = await demo.api.request(method, path, json, token=token, data=data, headers=headers, params=params)
    assert error_code(body) == code, (status, body)
    assert await counts(store) == before_counts
    assert await snapshot(store) == before
    return body


def unit_spec(demo, **overrides) -> dict:
    return {"name": "新设科室", "level": "department", "parent_id": demo.unit("青秀区"), **overrides}


def user_spec(demo, **overrides) -> dict:
    return {"username": "newcomer", "display_name": "新同事", "unit_id": demo.unit("南宁市"), **overrides}


JSON = {"Content-Type": "application/json"}


# ---- the body as a whole ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"{", b"{\"name\": }", b"{\"name\": \"a\",}", b"nul", b"{'name': 'a'}",
                                 b"\xff\xfe{}", b"{\"name\": \"\x00\"}"])
async def test_malformed_json_is_refused(demo, admin_token, raw):
    await refused(demo, "request.malformed_json", "POST", "/v1/admin/units", token=admin_token, data=raw, headers=JSON)


async def test_a_body_that_is_not_json_is_refused(demo, admin_token):
    await refused(demo, "request.unsupported_media_type", "POST", "/v1/admin/units", token=admin_token,
                  data=b"name=x", headers={"Content-Type": "application/x-www-form-urlencoded"})


@pytest.mark.parametrize("path", ["/v1/admin/units", "/v1/admin/users"])
async def test_an_oversize_body_is_refused(demo, admin_token, path):
    limit = demo.server.services.settings.max_body_bytes
    body = await refused(demo, "request.too_large", "POST", path, token=admin_token,
                         json=unit_spec(demo, name="长" * limit))
    assert body["error"]["details"]["limit"] == limit


async def test_an_oversize_body_without_a_length_is_refused(demo, admin_token):
    limit = demo.server.services.settings.max_body_bytes

    async def chunks():
        yield b"{\"name\": \""
        for _ in range(limit // 1024 + 2):
            yield b"x" * 1024
        yield b"\"}"

    await refused(demo, "request.too_large", "POST", "/v1/admin/units", token=admin_token, data=chunks(),
                  headers=JSON)


@pytest.mark.parametrize("raw", [b"[]", b"\"units\"", b"42", b"null"])
async def test_a_body_that_is_not_an_object_is_refused(demo, admin_token, raw):
    await refused(demo, "request.invalid", "POST", "/v1/admin/units", token=admin_token, data=raw, headers=JSON)


# ---- fields -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [
    {"order": "1"}, {"order": 1.5}, {"order": -1}, {"order": 10**12}, {"hidden": "yes"}, {"hidden": 1},
    {"level": "town"}, {"name": 42}, {"name": None}, {"code": "45 01"}, {"code": "x" * 40}, {"parent_id": 7},
])
async def test_wrong_types_and_values_in_a_new_unit_are_refused(demo, admin_token, overrides):
    await refused(demo, "request.invalid", "POST", "/v1/admin/units", token=admin_token,
                  json=unit_spec(demo, **overrides))


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v1/admin/units", lambda d: {**unit_spec(d), "path": [d.unit("柳州市")]}),
    ("POST", "/v1/admin/units", lambda d: {**unit_spec(d), "status": "disabled"}),
    ("POST", "/v1/admin/users", lambda d: {**user_spec(d), "system_admin": True}),
    ("POST", "/v1/admin/users", lambda d: {**user_spec(d), "roles": [{"role": "unit_admin", "unit_id": d.unit("广西壮族自治区")}]}),
    ("PATCH", "/v1/admin/units/{青秀区}", lambda d: {"parent_id": d.unit("柳州市")}),
    ("PATCH", "/v1/admin/users/{wuqiang}", lambda d: {"username": "root"}),
    ("PATCH", "/v1/admin/users/{wuqiang}", lambda d: {"status": "active", "memberships": []}),
    ("POST", "/v1/admin/users/{wuqiang}/reset-password", lambda d: {"password": "Chosen-Pass-42"}),
    ("PUT", "/v1/admin/users/{wuqiang}/posts/{青秀区}", lambda d: {"title": "x", "unit_id": d.unit("柳州市")}),
    ("POST", "/v1/admin/users/{wuqiang}/roles", lambda d: {"role": "system_admin", "unit_id": d.unit("南宁市")}),
])
async def test_unknown_fields_and_values_are_refused(demo, admin_token, method, path, body):
    path = path.replace("{青秀区}", demo.unit("青秀区")).replace("{wuqiang}", demo.user("wuqiang"))
    await refused(demo, "request.invalid", method, path, token=admin_token, json=body(demo))


INJECTIONS = [{"$gt": ""}, {"$ne": None}, ["$where"], {"$regex": ".*"}]


@pytest.mark.parametrize("field", ["unit_id", "display_name", "username", "title", "phone", "password"])
async def test_operator_shaped_values_in_a_new_user_are_refused(demo, admin_token, field):
    for injection in INJECTIONS:
        await refused(demo, "request.invalid", "POST", "/v1/admin/users", token=admin_token,
                      json=user_spec(demo, **{field: injection}))


@pytest.mark.parametrize("field", ["parent_id", "name", "code"])
async def test_operator_shaped_values_in_a_new_unit_are_refused(demo, admin_token, field):
    for injection in INJECTIONS:
        await refused(demo, "request.invalid", "POST", "/v1/admin/units", token=admin_token,
                      json=unit_spec(demo, **{field: injection}))


async def test_operator_shaped_values_in_changes_and_posts_are_refused(demo, admin_token):
    for injection in INJECTIONS:
        await refused(demo, "request.invalid", "PATCH", f"/v1/admin/units/{demo.unit('青秀区')}", token=admin_token,
                      json={"name": injection})
        await refused(demo, "request.invalid", "PATCH", f"/v1/admin/users/{demo.user('wuqiang')}",
                      token=admin_token, json={"display_name": injection})
        await refused(demo, "request.invalid", "POST", f"/v1/admin/users/{demo.user('wuqiang')}/roles",
                      token=admin_token, json={"role": "auditor", "unit_id": injection})
        await refused(demo, "request.invalid", "PUT",
                      f"/v1/admin/users/{demo.user('wuqiang')}/posts/{demo.unit('青秀区')}", token=admin_token,
                      json={"title": injection})


@pytest.mark.parametrize("ident, code", [
    ('{"$gt": ""}', "request.not_found"),  # braces never match a path parameter: no such endpoint
    ("$gt", "not_found"), ("[$ne]=1", "not_found"), (".*", "not_found"), ("$where: 1", "not_found"),
])
async def test_operator_shaped_ids_in_paths_are_just_unknown_ids(demo, admin_token, ident, code):
    ident = quote(ident, safe="")
    await refused(demo, code, "POST", f"/v1/admin/users/{ident}/disable", token=admin_token)
    await refused(demo, code, "PATCH", f"/v1/admin/units/{ident}", token=admin_token, json={"order": 1})
    await refused(demo, code, "GET", f"/v1/directory/users/{ident}", token=admin_token)
    await refused(demo, code, "GET", f"/v1/directory/units/{ident}", token=admin_token)


async def test_operator_shaped_search_text_finds_nothing(demo, admin_token):
    status, page = await demo.api.get("/v1/directory/search", token=admin_token, params={"q": '{"$gt": ""}'})
    assert status == 200 and page["users"] == []


# ---- names: unicode edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "张\u202e伟",  # right-to-left override: disguises text
    "张\u200b伟",  # zero-width space
    "张\u2066伟\u2069",  # bidi isolates
    "\ufeff张伟",  # byte-order mark
    "张\x00伟",  # NUL
    "张\x07伟",  # bell
    "张\x1b[31m伟",  # terminal escape
    "张\x1f伟",  # unit separator (Python counts it as whitespace)
    "张\n伟",  # line break
    "张\t伟",
    "张\u0085伟",  # next line (C1 control)
    "张\ue000伟",  # private use
    "张\U000e0041伟",  # tag character
    "\u3000",  # only an ideographic space
    "   ",
])
async def test_names_with_control_or_invisible_characters_are_refused(demo, admin_token, name):
    await refused(demo, "request.invalid", "POST", "/v1/admin/users", token=admin_token,
                  json=user_spec(demo, display_name=name))
    await refused(demo, "request.invalid", "POST", "/v1/admin/units", token=admin_token,
                  json=unit_spec(demo, name=name))
    await refused(demo, "request.invalid", "PATCH", f"/v1/admin/users/{demo.user('wuqiang')}", token=admin_token,
                  json={"display_name": name})


async def test_a_lone_surrogate_in_a_name_is_refused(demo, admin_token):
    raw = b'{"username": "newcomer", "display_name": "\\ud800", "unit_id": "' + demo.unit("南宁市").encode() + b'"}'
    await refused(demo, "request.malformed_json", "POST", "/v1/admin/users", token=admin_token, data=raw,
                  headers=JSON)


@pytest.mark.parametrize("title", ["科员\u202e", "\x00"])
async def test_titles_are_cleaned_like_names(demo, admin_token, title):
    await refused(demo, "request.invalid", "PUT",
                  f"/v1/admin/users/{demo.user('wuqiang')}/posts/{demo.unit('青秀区')}", token=admin_token,
                  json={"title": title})


async def test_a_decomposed_name_is_stored_composed(demo, admin_token):
    decomposed = "Ame\u0301lie"
    assert unicodedata.normalize("NFC", decomposed) != decomposed
    body = await create_user(demo, "nanning.admin", "南宁市", "amelie", decomposed)
    assert body["user"]["display_name"] == "Am\u00e9lie"
    stored = await demo.server.services.store.users.get(body["user"]["id"])
    assert stored.display_name == "Am\u00e9lie"
    status, page = await demo.api.get("/v1/directory/search", token=admin_token, params={"q": "Am\u00e9"})
    assert user_names(page) == {"Am\u00e9lie"}


@pytest.mark.parametrize("name, pinyin", [
    ("买买提·艾力", "maimaitiaili"),
    ("👩\u200d💻 小李", "xiaoli"),  # an emoji joined with ZWJ
    ("👨\u200d👩\u200d👧\u200d👦", ""),
    ("艾力·买买提", "ailimaimaiti"),
    ("Ｌｉ　Ｌｅｉ", "lilei"),  # full-width letters and an ideographic space stay as typed
])
async def test_real_names_from_every_corner_are_accepted(demo, admin_token, name, pinyin):
    body = await create_user(demo, "nanning.admin", "南宁市", "someone", name)
    expected = " ".join(unicodedata.normalize("NFC", name).split())
    assert body["user"]["display_name"] == expected
    assert body["user"]["pinyin"] == pinyin


async def test_inner_spaces_are_collapsed_and_ends_trimmed(demo, admin_token):
    body = await create_user(demo, "nanning.admin", "南宁市", "spacey", "  Li \u3000  Lei  ")
    assert body["user"]["display_name"] == "Li Lei"


async def test_the_longest_name_is_accepted_and_one_more_character_is_refused(demo, admin_token):
    await create_user(demo, "nanning.admin", "南宁市", "longname", "长" * 64)
    await refused(demo, "request.invalid", "POST", "/v1/admin/users", token=admin_token,
                  json=user_spec(demo, display_name="长" * 65))
    await refused(demo, "request.invalid", "POST", "/v1/admin/units", token=admin_token,
                  json=unit_spec(demo, name="长" * 65))


@pytest.mark.parametrize("username", ["张伟2", "a", "-lead", "has space", "x" * 33, "root/admin", "a\u0130b"])
async def test_user_names_outside_the_login_alphabet_are_refused(demo, admin_token, username):
    await refused(demo, "request.invalid", "POST", "/v1/admin/users", token=admin_token,
                  json=user_spec(demo, username=username))


# ---- query strings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, params", [
    ("/v1/directory/units", {"limit": "5"}),
    ("/v1/directory/units/{南宁市}", {"sort": "name"}),
    ("/v1/directory/units/{南宁市}", {"limit": "0"}),
    ("/v1/directory/units/{南宁市}", {"limit": "201"}),
    ("/v1/directory/units/{南宁市}", {"limit": "ten"}),
    ("/v1/directory/units/{南宁市}", {"cursor": "x" * 65}),
    ("/v1/directory/search", {"q": "zhang", "unit_id[$ne]": "x"}),
    ("/v1/directory/search", {"q": "z" * 65}),
    ("/v1/directory/search", {"q": "zhang", "limit": "51"}),
    ("/v1/directory/search", {}),
    ("/v1/directory/users/{wuqiang}", {"fields": "phone"}),
    ("/v1/admin/users/{wuqiang}", {"include": "password_hash"}),
    ("/v1/audit", {"since": "yesterday"}),
    ("/v1/audit", {"limit": "-1"}),
])
async def test_unknown_or_invalid_query_parameters_are_refused(demo, path, params):
    path = path.replace("{南宁市}", demo.unit("南宁市")).replace("{wuqiang}", demo.user("wuqiang"))
    await refused(demo, "request.invalid", "GET", path, token=await demo.token("admin"), params=params)
