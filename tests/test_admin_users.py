"""Administering accounts: creation with an initial password, disabling (which signs the account
out everywhere), password resets, posts (兼职) and the membership hook, appointments."""

from __future__ import annotations

from org_support import create_unit, create_user, error_code, grant, member_names, snapshot
from xietong.server.seed import DEMO_PASSWORD


def user_url(demo, username: str, action: str = "") -> str:
    return f"/v1/admin/users/{demo.user(username)}" + (f"/{action}" if action else "")


async def login(demo, username: str, password: str = DEMO_PASSWORD) -> tuple[int, dict]:
    return await demo.api.post("/v1/auth/login", {"username": username, "password": password})


async def me(demo, token: str) -> str | None:
    """The user name an access token acts as, or the error code it is refused with."""
    status, body = await demo.api.get("/v1/me", token=token)
    return body["username"] if status == 200 else error_code(body)


# ---- creation ---------------------------------------------------------------------------------------


async def test_new_user_gets_an_initial_password_once_and_signs_in_with_it(demo):
    status, body = await demo.api.post("/v1/admin/users", {
        "username": "Lu.Ping", "display_name": "陆平", "unit_id": demo.unit("青秀区人民政府办公室"),
        "title": "科员", "order": 2, "phone": "+86 771 555-0101"}, token=await demo.token("nanning.admin"))
    assert status == 201, body
    password = body["initial_password"]
    assert len(password) == 16
    user = body["user"]
    assert (user["username"], user["display_name"], user["pinyin"], user["status"]) == ("lu.ping", "陆平", "luping", "active")
    assert user["posts"] == [{"unit_id": demo.unit("青秀区人民政府办公室"), "unit_name": "青秀区人民政府办公室", "title": "科员"}]

    stored = await demo.server.services.store.users.get(user["id"])
    assert password not in stored.password_hash
    status, again = await demo.api.get(f"/v1/admin/users/{user['id']}", token=await demo.token("nanning.admin"))
    assert status == 200 and password not in str(again) and "initial_password" not in again

    status, tokens = await login(demo, "lu.ping", password)
    assert status == 200 and tokens["user_id"] == user["id"]
    status, page = await demo.api.get(f"/v1/directory/units/{demo.unit('青秀区人民政府办公室')}",
                                      token=tokens["access_token"])
    assert member_names(page) == ["孙丽", "何欣", "郭平", "陆平", "马杰"]


async def test_a_chosen_password_is_used_and_not_echoed(demo):
    body = await create_user(demo, "nanning.admin", "南宁市", "chosen", "陈选", password="Chosen-Pass-42")
    assert body["initial_password"] is None
    assert (await login(demo, "chosen", "Chosen-Pass-42"))[0] == 200


async def test_a_taken_user_name_is_a_conflict_in_any_case(demo):
    token = await demo.token("nanning.admin")
    before = await snapshot(demo.server.services.store)
    for username in ("zhangwei", " ZhangWei ", "LINFENG"):
        status, body = await demo.api.post("/v1/admin/users", {
            "username": username, "display_name": "重名", "unit_id": demo.unit("南宁市")}, token=token)
        assert (status, error_code(body)) == (409, "conflict.exists"), username
    assert await snapshot(demo.server.services.store) == before


async def test_a_weak_password_is_refused_and_no_account_is_made(demo):
    token = await demo.token("nanning.admin")
    before = await snapshot(demo.server.services.store)
    for password in ("short1A!", "alllowercaseletters", "12345678901"):
        status, body = await demo.api.post("/v1/admin/users", {
            "username": "weakling", "display_name": "弱口令", "unit_id": demo.unit("南宁市"), "password": password},
            token=token)
        assert (status, error_code(body)) == (400, "auth.password_weak"), password
    assert await snapshot(demo.server.services.store) == before


# ---- disabling and enabling -------------------------------------------------------------------------


async def test_disabling_a_user_signs_out_every_device_at_once(demo):
    phone = (await login(demo, "zhangwei"))[1]
    laptop = (await login(demo, "zhangwei"))[1]
    assert await me(demo, phone["access_token"]) == "zhangwei"

    status, body = await demo.api.post(user_url(demo, "zhangwei", "disable"), token=await demo.token("nanning.admin"))
    assert status == 200 and body["status"] == "disabled"

    assert await me(demo, phone["access_token"]) == "auth.session_revoked"
    assert await me(demo, laptop["access_token"]) == "auth.session_revoked"
    status, body = await demo.api.post("/v1/auth/refresh", {"refresh_token": laptop["refresh_token"]})
    assert status == 401
    status, body = await login(demo, "zhangwei")
    assert (status, error_code(body)) == (403, "auth.account_disabled")


async def test_enabling_a_user_lets_them_sign_in_again(demo):
    token = await demo.token("nanning.admin")
    assert (await demo.api.post(user_url(demo, "wuqiang", "disable"), token=token))[0] == 200
    assert (await login(demo, "wuqiang"))[0] == 403
    status, body = await demo.api.post(user_url(demo, "wuqiang", "enable"), token=token)
    assert status == 200 and body["status"] == "active"
    status, tokens = await login(demo, "wuqiang")
    assert status == 200 and await me(demo, tokens["access_token"]) == "wuqiang"


async def test_an_admin_cannot_disable_themself(demo):
    store = demo.server.services.store
    for admin in ("nanning.admin", "admin"):
        token = await demo.token(admin)
        before = await snapshot(store)
        status, body = await demo.api.post(user_url(demo, admin, "disable"), token=token)
        assert (status, error_code(body)) == (403, "perm.forbidden"), admin
        assert await snapshot(store) == before
        assert await me(demo, token) == admin


# ---- passwords and lockouts --------------------------------------------------------------------------


async def test_reset_password_gives_a_new_password_and_retires_the_old_one(demo):
    session = (await login(demo, "chenjing"))[1]
    status, body = await demo.api.post(user_url(demo, "chenjing", "reset-password"), {},
                                       token=await demo.token("nanning.admin"))
    assert status == 200
    new_password = body["password"]
    assert new_password != DEMO_PASSWORD and len(new_password) == 16

    assert await me(demo, session["access_token"]) == "auth.session_revoked"
    status, body = await login(demo, "chenjing", DEMO_PASSWORD)
    assert (status, error_code(body)) == (401, "auth.invalid_credentials")
    assert (await login(demo, "chenjing", new_password))[0] == 200


async def lock_out(demo, username: str) -> None:
    limit = demo.server.services.settings.login_max_failures
    for _ in range(limit):
        await login(demo, username, "Wrong-password-1")
    status, body = await login(demo, username)
    assert (status, error_code(body)) == (429, "auth.locked")


async def test_reset_password_lifts_a_lockout(demo):
    token = await demo.token("nanning.admin")
    await lock_out(demo, "xuna")
    status, body = await demo.api.post(user_url(demo, "xuna", "reset-password"), {}, token=token)
    assert status == 200
    assert (await login(demo, "xuna", body["password"]))[0] == 200


async def test_unlock_lifts_a_lockout_without_changing_the_password(demo):
    token = await demo.token("nanning.admin")
    await lock_out(demo, "xuna")
    status, _ = await demo.api.post(user_url(demo, "xuna", "unlock"), token=token)
    assert status == 204
    assert (await login(demo, "xuna"))[0] == 200


# ---- profile ---------------------------------------------------------------------------------------------


async def test_admin_edits_name_phone_and_directory_visibility(demo):
    status, body = await demo.api.patch(user_url(demo, "wuqiang"), {
        "display_name": "吴刚强", "phone": "0771-7654321", "directory_hidden": True},
        token=await demo.token("nanning.admin"))
    assert status == 200
    assert (body["display_name"], body["pinyin"], body["phone"], body["directory_hidden"]) == (
        "吴刚强", "wugangqiang", "0771-7654321", True)
    status, page = await demo.api.get("/v1/directory/search", token=await demo.token("zhangwei"), params={"q": "wu"})
    assert page["users"] == []


async def test_a_malformed_phone_number_is_refused(demo):
    token = await demo.token("nanning.admin")
    before = await snapshot(demo.server.services.store)
    status, body = await demo.api.patch(user_url(demo, "wuqiang"), {"phone": "call me maybe"}, token=token)
    assert (status, error_code(body)) == (400, "request.invalid")
    assert await snapshot(demo.server.services.store) == before


# ---- posts (兼职) -------------------------------------------------------------------------------------------


async def test_a_new_post_lists_the_user_in_that_unit_and_removing_it_takes_them_out(demo):
    token = await demo.token("nanning.admin")
    store = demo.server.services.store
    office = demo.unit("青秀区人民政府办公室")

    status, body = await demo.api.put(f"{user_url(demo, 'zhangwei')}/posts/{office}", {"title": "督查专员", "order": 1},
                                      token=token)
    assert status == 200
    assert [p["title"] for p in body["posts"]] == ["主任", "督查专员"]
    stored = await store.users.get(demo.user("zhangwei"))
    assert {demo.unit("青秀区"), office} <= set(stored.unit_paths)
    status, page = await demo.api.get(f"/v1/directory/units/{office}", token=await demo.token("sunli"))
    assert ("张伟", "督查专员") in [(m["user"]["display_name"], m["title"]) for m in page["members"]]

    # Setting the post again changes its title and order in place.
    status, body = await demo.api.put(f"{user_url(demo, 'zhangwei')}/posts/{office}", {"title": "副主任", "order": 0},
                                      token=token)
    assert [p["title"] for p in body["posts"]] == ["主任", "副主任"]

    status, body = await demo.api.delete(f"{user_url(demo, 'zhangwei')}/posts/{office}", token=token)
    assert status == 200 and [p["title"] for p in body["posts"]] == ["主任"]
    stored = await store.users.get(demo.user("zhangwei"))
    assert sorted(stored.unit_paths) == sorted([demo.unit("广西壮族自治区"), demo.unit("南宁市"),
                                                demo.unit("南宁市人民政府办公室")])
    status, page = await demo.api.get(f"/v1/directory/units/{office}", token=await demo.token("sunli"))
    assert "张伟" not in member_names(page)


async def test_the_last_post_cannot_be_removed(demo):
    token = await demo.token("nanning.admin")
    before = await snapshot(demo.server.services.store)
    status, body = await demo.api.delete(f"{user_url(demo, 'wuqiang')}/posts/{demo.unit('南宁市人民政府办公室')}",
                                         token=token)
    assert (status, error_code(body)) == (409, "user.last_membership")
    status, body = await demo.api.delete(f"{user_url(demo, 'wuqiang')}/posts/{demo.unit('青秀区')}", token=token)
    assert (status, error_code(body)) == (404, "not_found")
    assert await snapshot(demo.server.services.store) == before


async def test_no_post_in_a_disabled_unit(demo):
    await create_unit(demo, "nanning.admin", "青秀区", "撤销科")
    token = await demo.token("nanning.admin")
    assert (await demo.api.post(f"/v1/admin/units/{demo.unit('撤销科')}/disable", token=token))[0] == 200
    status, body = await demo.api.put(f"{user_url(demo, 'wuqiang')}/posts/{demo.unit('撤销科')}", {}, token=token)
    assert (status, error_code(body)) == (409, "conflict.state")


async def test_membership_listeners_hear_who_joined_and_left_which_unit(demo):
    heard: list[tuple[str, list[str], list[str]]] = []

    async def listener(user_id: str, joined: list[str], left: list[str]) -> None:
        heard.append((user_id, joined, left))

    demo.server.services.admin.membership_listeners.append(listener)
    token = await demo.token("nanning.admin")
    office = demo.unit("青秀区人民政府办公室")

    created = await create_user(demo, "nanning.admin", "南宁市人民政府办公室", "newbie", "牛犇")
    newbie = created["user"]["id"]
    await demo.api.put(f"{user_url(demo, 'newbie')}/posts/{office}", {"title": "借调"}, token=token)
    await demo.api.put(f"{user_url(demo, 'newbie')}/posts/{office}", {"title": "借调组长"}, token=token)  # not a join
    await demo.api.delete(f"{user_url(demo, 'newbie')}/posts/{office}", token=token)
    await demo.api.delete(f"{user_url(demo, 'newbie')}/posts/{office}", token=token)  # refused: no such post

    assert heard == [(newbie, [demo.unit("南宁市人民政府办公室")], []), (newbie, [office], []), (newbie, [], [office])]


# ---- appointments -------------------------------------------------------------------------------------------


async def test_an_appointed_district_admin_administers_the_district_only(demo):
    await grant(demo, "nanning.admin", "sunli", "unit_admin", "青秀区")
    token = await demo.token("sunli")
    status, body = await demo.api.post(user_url(demo, "guoping", "disable"), token=token)
    assert status == 200 and body["status"] == "disabled"
    status, body = await demo.api.post(user_url(demo, "wuqiang", "disable"), token=token)
    assert (status, error_code(body)) == (403, "perm.out_of_scope")
    status, body = await demo.api.get(user_url(demo, "sunli"), token=await demo.token("admin"))
    assert body["roles"] == [{"role": "unit_admin", "unit_id": demo.unit("青秀区")}]


async def test_a_disabled_account_cannot_be_appointed(demo):
    token = await demo.token("nanning.admin")
    assert (await demo.api.post(user_url(demo, "wuqiang", "disable"), token=token))[0] == 200
    before = await snapshot(demo.server.services.store)
    status, body = await demo.api.post(user_url(demo, "wuqiang", "roles"),
                                       {"role": "auditor", "unit_id": demo.unit("南宁市")}, token=token)
    assert (status, error_code(body)) == (409, "conflict.state")
    status, body = await demo.api.post(user_url(demo, "zhangwei", "roles/revoke"),
                                       {"role": "auditor", "unit_id": demo.unit("南宁市")}, token=token)
    assert (status, error_code(body)) == (404, "not_found")
    assert await snapshot(demo.server.services.store) == before
