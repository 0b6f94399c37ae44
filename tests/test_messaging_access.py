"""Who may touch a conversation: outsiders learn nothing and change nothing, members act only within
their role, former members keep read access up to the event that ended their membership."""

from __future__ import annotations

from typing import Any

import pytest

from conversation_support import (BASE, call, create_group, error_code, log, messaging_snapshot, ok, open_direct,
                                  page, refused, send, send_text, view)

# Every conversation endpoint, with a valid body: {c} is the conversation, {seq} a message in it,
# {member} one of its members, {mine} a conversation of the caller's own.
ENDPOINTS: list[tuple[str, str, Any, dict[str, Any] | None]] = [
    ("GET", "{c}", None, None),
    ("PATCH", "{c}", {"name": "改名"}, None),
    ("PUT", "{c}/preferences", {"pinned": True}, None),
    ("GET", "{c}/members", None, {"limit": 10}),
    ("POST", "{c}/members", {"user_ids": ["{caller}"]}, None),
    ("DELETE", "{c}/members/{member}", None, None),
    ("POST", "{c}/leave", None, None),
    ("PUT", "{c}/admins/{member}", None, None),
    ("DELETE", "{c}/admins/{member}", None, None),
    ("POST", "{c}/transfer", {"user_id": "{member}"}, None),
    ("POST", "{c}/dissolve", None, None),
    ("GET", "{c}/events", None, None),
    ("GET", "{c}/events", None, {"after": 0}),
    ("POST", "{c}/messages", {"client_msg_id": "probe-1", "message": {"kind": "text", "text": "在吗"}}, None),
    ("POST", "{c}/forward", {"client_msg_id": "probe-2", "source_conversation_id": "{mine}", "seqs": [2]}, None),
    ("POST", "{mine}/forward", {"client_msg_id": "probe-3", "source_conversation_id": "{c}", "seqs": ["{seq}"]},
     None),
    ("PATCH", "{c}/events/{seq}", {"text": "改了"}, None),
    ("POST", "{c}/events/{seq}/recall", None, None),
    ("POST", "{c}/events/{seq}/hide", None, None),
    ("POST", "{c}/read", {"seq": "{seq}"}, None),
    ("GET", "{c}/events/{seq}/receipts", None, None),
]


def fill(value: Any, slots: dict[str, Any]) -> Any:
    """Put the slot values into a path, body or query (a slot alone keeps its value's type)."""
    if isinstance(value, str):
        if value.startswith("{") and value.endswith("}") and value[1:-1] in slots:
            return slots[value[1:-1]]
        return value.format(**slots)
    if isinstance(value, list):
        return [fill(v, slots) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, slots) for k, v in value.items()}
    return value


@pytest.fixture
async def world(demo) -> dict[str, Any]:
    """黄建's group (韦明 admin; 蓝婷, 莫军 members) and 张伟's direct chat with 刘洋, each with a message;
    徐娜 is in neither and has a chat of her own with 吴强."""
    group = (await create_group(demo, "huangjian", ["weiming", "lanting", "mojun"]))["id"]
    await ok(demo, "huangjian", "PUT", f"{BASE}/{group}/admins/{demo.user('weiming')}", status=204)
    group_seq = (await send(demo, "lanting", group, "防汛物资清单"))["seq"]
    direct = (await open_direct(demo, "zhangwei", "liuyang"))["id"]
    direct_seq = (await send(demo, "liuyang", direct, "领导，文件已改好"))["seq"]
    mine = (await open_direct(demo, "xuna", "wuqiang"))["id"]
    await send(demo, "xuna", mine, "我的消息")
    return {"group": (group, group_seq, "mojun"), "direct": (direct, direct_seq, "liuyang"),
            "unknown": ("cnv_doesnotexist00", 2, "liuyang"), "mine": mine}


@pytest.mark.parametrize("target", ["group", "direct", "unknown"])
async def test_outsiders_get_not_found_everywhere_and_change_nothing(demo, world, target):
    conversation_id, seq, member = world[target]
    slots = {"c": conversation_id, "seq": seq, "member": demo.user(member), "mine": world["mine"],
             "caller": demo.user("xuna")}
    for method, path, body, params in ENDPOINTS:
        await refused(demo, "xuna", "not_found", method, f"{BASE}/" + fill(path, slots), fill(body, slots),
                      params=params)


async def test_outsiders_do_not_see_others_conversations_in_their_list(demo, world):
    listed = [c["id"] for c in (await ok(demo, "xuna", "GET", BASE))["conversations"]]
    assert listed == [world["mine"]]


async def test_every_endpoint_needs_a_token(demo, world):
    conversation_id, seq, member = world["group"]
    slots = {"c": conversation_id, "seq": seq, "member": demo.user(member), "mine": world["mine"],
             "caller": demo.user("xuna")}
    extra = [("GET", "", None, None), ("POST", "direct", {"user_id": demo.user(member)}, None),
             ("POST", "groups", {"name": "群", "member_ids": [demo.user(member)]}, None),
             ("POST", "units", {"unit_id": demo.unit("南宁市")}, None), ("POST", "read-all", None, None)]
    before = await messaging_snapshot(demo)
    for method, path, body, params in ENDPOINTS + extra:
        status, answer = await demo.api.request(method, f"{BASE}/" + fill(path, slots) if path else BASE,
                                                fill(body, slots), params=params)
        assert (status, error_code(answer)) == (401, "auth.required"), (method, path)
    assert await messaging_snapshot(demo) == before


# ---- members without the right ----------------------------------------------------------------------


async def test_plain_members_are_refused_what_only_owner_and_admins_may_do(demo, world):
    group, seq, _ = world["group"]
    weiming = demo.user("weiming")
    for method, path, body in [
        ("PATCH", "", {"name": "改名"}), ("PATCH", "", {"mute_all": True}),
        ("DELETE", f"/members/{demo.user('lanting')}", None), ("DELETE", f"/members/{weiming}", None),
        ("PUT", f"/admins/{demo.user('lanting')}", None), ("DELETE", f"/admins/{weiming}", None),
        ("POST", "/transfer", {"user_id": demo.user("mojun")}), ("POST", "/dissolve", None),
        ("POST", f"/events/{seq}/recall", None), ("PATCH", f"/events/{seq}", {"text": "替别人改"}),
    ]:
        await refused(demo, "mojun", "perm.forbidden", method, f"{BASE}/{group}{path}", body)


async def test_admins_are_refused_what_only_the_owner_may_do(demo, world):
    group, _, _ = world["group"]
    for method, path, body in [
        ("PUT", f"/admins/{demo.user('mojun')}", None), ("DELETE", f"/admins/{demo.user('weiming')}", None),
        ("POST", "/transfer", {"user_id": demo.user("weiming")}), ("POST", "/dissolve", None),
        ("DELETE", f"/members/{demo.user('huangjian')}", None),
    ]:
        await refused(demo, "weiming", "perm.forbidden", method, f"{BASE}/{group}{path}", body)


async def test_in_a_direct_chat_nobody_recalls_the_others_message_after_the_fact(demo, world):
    direct, seq, _ = world["direct"]
    await refused(demo, "zhangwei", "perm.forbidden", "POST", f"{BASE}/{direct}/events/{seq}/recall")


# ---- former members ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["removed", "left"])
async def test_former_members_read_up_to_their_departure_and_nothing_later(demo, world, how):
    group, first_seq, _ = world["group"]
    if how == "removed":
        await ok(demo, "weiming", "DELETE", f"{BASE}/{group}/members/{demo.user('mojun')}", status=204)
    else:
        await ok(demo, "mojun", "POST", f"{BASE}/{group}/leave", status=204)
    departure = (await page(demo, "huangjian", group))["events"][-1]
    assert departure["type"] == f"member.{how}"
    later = (await send(demo, "lanting", group, "他走后的消息"))["seq"]
    await ok(demo, "huangjian", "PATCH", f"{BASE}/{group}", {"name": "新群名"})

    seen = await page(demo, "mojun", group)
    assert [e["seq"] for e in seen["events"]][-1] == departure["seq"] == seen["readable_until"]
    assert (await page(demo, "mojun", group, after=departure["seq"]))["events"] == []
    former = await view(demo, "mojun", group)
    assert (former["membership"], former["last_seq"]) == ("left", departure["seq"])
    assert former["last_event"] is None  # no preview of what came later
    assert "他走后的消息" not in str(await ok(demo, "mojun", "GET", BASE))

    # What happened later is not theirs: not found, and nothing is written.
    await refused(demo, "mojun", "not_found", "GET", f"{BASE}/{group}/events/{later}/receipts")
    await refused(demo, "mojun", "not_found", "POST", f"{BASE}/{group}/events/{later}/hide")
    await refused(demo, "mojun", "not_found", "GET", f"{BASE}/{group}/members")
    await refused(demo, "mojun", "not_found", "POST", f"{BASE}/{group}/messages",
                  {"client_msg_id": "gone-1", "message": {"kind": "text", "text": "我还能说话吗"}})
    await refused(demo, "mojun", "not_found", "POST", f"{BASE}/{group}/members", {"user_ids": [demo.user("nongli")]})
    await refused(demo, "mojun", "not_found", "POST", f"{BASE}/{group}/leave")
    # Asking past their end of the log is like asking past the head.
    await refused(demo, "mojun", "message.seq_out_of_range", "POST", f"{BASE}/{group}/read", {"seq": later})
    await refused(demo, "mojun", "message.seq_out_of_range", "GET", f"{BASE}/{group}/events",
                  params={"after": later})
    # What they could read stays theirs: reading it, receipts, forwarding it on.
    assert (await ok(demo, "mojun", "POST", f"{BASE}/{group}/read", {"seq": departure["seq"]}))["read_seq"] == \
        departure["seq"]
    assert (await ok(demo, "mojun", "GET", f"{BASE}/{group}/events/{first_seq}/receipts"))["seq"] == first_seq
    chat = (await open_direct(demo, "mojun", "nongli"))["id"]
    status, _ = await call(demo, "mojun", "POST", f"{BASE}/{chat}/forward", {
        "client_msg_id": "fw-old", "source_conversation_id": group, "seqs": [first_seq], "mode": "single"})
    assert status == 201


async def test_a_member_who_rejoins_reads_from_the_new_join_and_speaks_again(demo, world):
    group, _, _ = world["group"]
    await ok(demo, "weiming", "DELETE", f"{BASE}/{group}/members/{demo.user('mojun')}", status=204)
    await send(demo, "lanting", group, "不在时的消息")
    await ok(demo, "weiming", "POST", f"{BASE}/{group}/members", {"user_ids": [demo.user("mojun")]})
    rejoined = await view(demo, "mojun", group)
    assert rejoined["membership"] == "active"
    assert [t for _, t in await log(demo, "mojun", group)] == ["member.joined"]
    status, body = await send_text(demo, "mojun", group, "我回来了")
    assert status == 201, body
