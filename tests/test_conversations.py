"""Direct chats and groups as their users see them: creation, the conversation list, preferences."""

from __future__ import annotations

import asyncio

import pytest

from conversation_support import (BASE, call, create_group, error_code, log, member_roles, ok, open_direct, refused,
                                  send, view)


# ---- direct chats ------------------------------------------------------------------------------------


async def test_direct_chat_is_one_per_pair_whichever_side_opens_it(demo):
    first = await open_direct(demo, "zhangwei", "liuyang")
    again = await open_direct(demo, "zhangwei", "liuyang")
    other_side = await open_direct(demo, "liuyang", "zhangwei")

    assert first["id"] == again["id"] == other_side["id"]
    assert first["kind"] == "direct" and first["member_count"] == 2
    assert first["peer_id"] == demo.user("liuyang") and other_side["peer_id"] == demo.user("zhangwei")
    assert await log(demo, "liuyang", first["id"]) == [(1, "conversation.created")]


async def test_direct_chat_opened_by_both_at_the_same_moment_is_one_chat(demo):
    tokens = {u: await demo.token(u) for u in ("chenjing", "wuqiang")}

    async def open_(me: str, other: str):
        return await demo.api.post(f"{BASE}/direct", {"user_id": demo.user(other)}, token=tokens[me])

    answers = await asyncio.gather(open_("chenjing", "wuqiang"), open_("wuqiang", "chenjing"),
                                   open_("chenjing", "wuqiang"), open_("wuqiang", "chenjing"))

    assert [status for status, _ in answers] == [200] * 4, answers
    ids = {body["id"] for _, body in answers}
    assert len(ids) == 1
    conversation_id = ids.pop()
    # Every answer shows the caller as a member of a complete chat, created by exactly one event.
    assert all(body["membership"] == "active" and body["member_count"] == 2 for _, body in answers)
    assert await log(demo, "wuqiang", conversation_id) == [(1, "conversation.created")]
    store = demo.server.services.store
    assert await store.db["conversations"].count_documents({"kind": "direct"}) == 1
    assert await store.db["members"].count_documents({"conversation_id": conversation_id}) == 2


async def test_direct_chat_with_oneself_is_refused(demo):
    await refused(demo, "zhangwei", "request.invalid", "POST", f"{BASE}/direct", {"user_id": demo.user("zhangwei")})


async def test_direct_chat_with_an_unknown_user_is_refused(demo):
    await refused(demo, "zhangwei", "not_found", "POST", f"{BASE}/direct", {"user_id": "user_doesnotexist"})


@pytest.mark.parametrize("outsider, hidden", [("zhangwei", "mengqiang"), ("huangjian", "luoxue"),
                                               ("nanning.admin", "mengqiang")])
async def test_direct_chat_toward_a_user_the_directory_hides_is_refused(demo, outsider, hidden):
    body = await refused(demo, outsider, "conversation.contact_forbidden", "POST", f"{BASE}/direct",
                         {"user_id": demo.user(hidden)})
    assert body["error"]["details"]["user_id"] == demo.user(hidden)


async def test_members_of_the_hidden_unit_chat_with_colleagues_outside_it(demo):
    chat = await open_direct(demo, "luoxue", "zhouhui")
    await send(demo, "luoxue", chat["id"], "文件已登记")
    assert (await view(demo, "zhouhui", chat["id"]))["unread"] == 1


async def test_existing_direct_chat_keeps_working_after_the_other_user_is_hidden(demo):
    chat = await open_direct(demo, "zhangwei", "wuqiang")
    await send(demo, "zhangwei", chat["id"], "下午的会改到三点")
    await ok(demo, "nanning.admin", "PATCH", f"/v1/admin/users/{demo.user('wuqiang')}", {"directory_hidden": True})
    status, _ = await call(demo, "xuna", "POST", f"{BASE}/direct", {"user_id": demo.user("wuqiang")})
    assert status == 403  # a newcomer to the pair is refused ...

    again = await open_direct(demo, "zhangwei", "wuqiang")  # ... but the pair's chat is theirs for good
    assert again["id"] == chat["id"]
    await send(demo, "zhangwei", chat["id"], "收到请回复")
    await send(demo, "wuqiang", chat["id"], "收到")
    assert [t for _, t in await log(demo, "zhangwei", chat["id"])] == ["conversation.created"] + ["message"] * 3


# ---- groups -----------------------------------------------------------------------------------------


async def test_group_creator_owns_it_and_the_others_are_members(demo):
    group = await create_group(demo, "huangjian", ["weiming", "lanting", "mojun"], name="  防汛  值班群 ")

    assert group["kind"] == "group" and group["name"] == "防汛 值班群"
    assert group["role"] == "owner" and group["owner_id"] == demo.user("huangjian")
    # Every field is present, defaults included (members may invite, no mute-all).
    assert group["member_count"] == 4 and group["members_can_invite"] is True and group["mute_all"] is False
    assert await member_roles(demo, "mojun", group["id"]) == {
        demo.user("huangjian"): "owner", demo.user("weiming"): "member", demo.user("lanting"): "member",
        demo.user("mojun"): "member"}
    created = (await ok(demo, "mojun", "GET", f"{BASE}/{group['id']}/events"))["events"][0]
    assert created["type"] == "conversation.created" and created["seq"] == 1
    assert created["data"]["name"] == "防汛 值班群" and created["data"]["by"] == demo.user("huangjian")
    assert sorted(created["data"]["user_ids"]) == sorted(demo.user(u) for u in
                                                         ("huangjian", "weiming", "lanting", "mojun"))


async def test_member_list_is_paged_by_user_id(demo):
    group = await create_group(demo, "huangjian", ["weiming", "lanting", "mojun", "nongli"])
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        body = await ok(demo, "nongli", "GET", f"{BASE}/{group['id']}/members", params=params)
        seen += [m["user_id"] for m in body["members"]]
        after = body["next_after"]
        if after is None:
            break
    assert seen == sorted(demo.user(u) for u in ("huangjian", "weiming", "lanting", "mojun", "nongli"))


async def test_group_with_a_user_the_directory_hides_is_refused_whole(demo):
    await refused(demo, "zhangwei", "conversation.contact_forbidden", "POST", f"{BASE}/groups",
                  {"name": "办公室", "member_ids": [demo.user("liuyang"), demo.user("luoxue")]})


async def test_group_with_an_unknown_user_is_refused(demo):
    await refused(demo, "zhangwei", "not_found", "POST", f"{BASE}/groups",
                  {"name": "办公室", "member_ids": [demo.user("liuyang"), "user_nobody"]})


async def test_group_name_of_blanks_or_control_characters_is_refused(demo):
    for name in ("   ", "值班\n群", "值班\u202e群"):
        await refused(demo, "zhangwei", "request.invalid", "POST", f"{BASE}/groups",
                      {"name": name, "member_ids": [demo.user("liuyang")]})


# ---- the conversation list and preferences ----------------------------------------------------------------


async def test_conversation_list_shows_my_conversations_with_unread_counts_newest_first(demo):
    older = await create_group(demo, "zhangwei", ["liuyang", "chenjing"], name="周例会")
    chat = await open_direct(demo, "liuyang", "zhangwei")
    await send(demo, "zhangwei", older["id"], "周一例会材料")
    await send(demo, "zhangwei", chat["id"], "请看一下")
    await send(demo, "zhangwei", chat["id"], "急")

    listed = (await ok(demo, "liuyang", "GET", BASE))["conversations"]
    assert [(c["id"], c["unread"]) for c in listed] == [(chat["id"], 2), (older["id"], 1)]
    assert listed[0]["last_event"]["preview"] == "急"
    # chenjing is not in the direct chat and does not see it.
    assert [c["id"] for c in (await ok(demo, "chenjing", "GET", BASE))["conversations"]] == [older["id"]]


def prefs(conversation: dict) -> tuple[bool, bool]:
    """(muted, pinned) of a conversation view (false values are left out of the view)."""
    return conversation.get("muted", False), conversation.get("pinned", False)


async def test_preferences_are_per_member_and_show_in_the_list(demo):
    first = await create_group(demo, "zhangwei", ["liuyang"], name="第一个群")
    second = await create_group(demo, "zhangwei", ["liuyang"], name="第二个群")

    pinned = await ok(demo, "liuyang", "PUT", f"{BASE}/{first['id']}/preferences", {"pinned": True})
    assert prefs(pinned) == (False, True)
    muted = await ok(demo, "liuyang", "PUT", f"{BASE}/{second['id']}/preferences", {"muted": True})
    assert prefs(muted) == (True, False)

    mine = {c["id"]: c for c in (await ok(demo, "liuyang", "GET", BASE))["conversations"]}
    assert prefs(mine[first["id"]]) == (False, True)
    assert prefs(mine[second["id"]]) == (True, False)
    # Pinned comes first although the other group is newer.
    assert [c["id"] for c in (await ok(demo, "liuyang", "GET", BASE))["conversations"]] == [first["id"], second["id"]]
    # The owner's own preferences did not move.
    theirs = {c["id"]: c for c in (await ok(demo, "zhangwei", "GET", BASE))["conversations"]}
    assert [prefs(c) for c in theirs.values()] == [(False, False)] * 2
    # Unpinning keeps the mute.
    assert prefs(await ok(demo, "liuyang", "PUT", f"{BASE}/{second['id']}/preferences", {"pinned": False})) == (
        True, False)


async def test_preferences_need_a_body_of_known_fields(demo):
    group = await create_group(demo, "zhangwei", ["liuyang"])
    status, body = await call(demo, "liuyang", "PUT", f"{BASE}/{group['id']}/preferences", {"starred": True})
    assert status == 400 and error_code(body) == "request.invalid"
