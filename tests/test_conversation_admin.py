"""Running a group: owner, admins and members, invitations, removals, leaving, settings, transfer,
dissolution, the member cap — and every change in the group's log, in order."""

from __future__ import annotations

import pytest

from xietong.server.messaging import conversations as conversations_module

from conversation_support import (BASE, create_group, error_code, log, member_roles, messaging_snapshot, ok,
                                  open_direct, page, refused, send, send_text, view)


@pytest.fixture
async def group(demo) -> str:
    """黄建's group: 韦明 is an admin, 蓝婷 and 莫军 are members."""
    created = await create_group(demo, "huangjian", ["weiming", "lanting", "mojun"])
    await ok(demo, "huangjian", "PUT", f"{BASE}/{created['id']}/admins/{demo.user('weiming')}", status=204)
    return created["id"]


def member_path(demo, conversation_id: str, username: str) -> str:
    return f"{BASE}/{conversation_id}/members/{demo.user(username)}"


def roles_of(demo, roles: dict[str, str]) -> dict[str, str]:
    """Translate {user id: role} into {username: role} for readable assertions."""
    names = {uid: name for name, uid in demo.users.items()}
    return {names[uid]: role for uid, role in roles.items()}


# ---- invitations -----------------------------------------------------------------------------------


async def test_members_invite_while_the_group_allows_it(demo, group):
    after = await ok(demo, "mojun", "POST", f"{BASE}/{group}/members", {"user_ids": [demo.user("nongli")]})
    assert after["member_count"] == 5
    assert (await view(demo, "nongli", group))["role"] == "member"
    # The newcomer reads from the event that let them in.
    joined = (await page(demo, "nongli", group))["events"]
    assert [(e["type"], e["data"]["user_ids"], e["data"]["by"]) for e in joined] == [
        ("member.joined", [demo.user("nongli")], demo.user("mojun"))]


async def test_only_owner_and_admins_invite_once_members_may_not(demo, group):
    await ok(demo, "huangjian", "PATCH", f"{BASE}/{group}", {"members_can_invite": False})
    await refused(demo, "mojun", "perm.forbidden", "POST", f"{BASE}/{group}/members",
                  {"user_ids": [demo.user("nongli")]})
    after = await ok(demo, "weiming", "POST", f"{BASE}/{group}/members", {"user_ids": [demo.user("nongli")]})
    assert after["member_count"] == 5


async def test_inviting_current_members_again_writes_nothing(demo, group):
    before = await messaging_snapshot(demo)
    after = await ok(demo, "huangjian", "POST", f"{BASE}/{group}/members",
                     {"user_ids": [demo.user("lanting"), demo.user("mojun")]})
    assert after["member_count"] == 4
    assert await messaging_snapshot(demo) == before


async def test_inviting_a_user_the_directory_hides_is_refused(demo, group):
    await refused(demo, "huangjian", "conversation.contact_forbidden", "POST", f"{BASE}/{group}/members",
                  {"user_ids": [demo.user("nongli"), demo.user("mengqiang")]})


# ---- removals and leaving ---------------------------------------------------------------------------


async def test_admin_removes_plain_members(demo, group):
    await ok(demo, "weiming", "DELETE", member_path(demo, group, "mojun"), status=204)
    assert roles_of(demo, await member_roles(demo, "huangjian", group)) == {
        "huangjian": "owner", "weiming": "admin", "lanting": "member"}
    assert (await view(demo, "huangjian", group))["member_count"] == 3
    assert (await view(demo, "mojun", group))["membership"] == "left"


async def test_admins_do_not_remove_admins_or_the_owner(demo, group):
    await ok(demo, "huangjian", "PUT", f"{BASE}/{group}/admins/{demo.user('lanting')}", status=204)
    await refused(demo, "weiming", "perm.forbidden", "DELETE", member_path(demo, group, "lanting"))
    await refused(demo, "weiming", "perm.forbidden", "DELETE", member_path(demo, group, "huangjian"))


async def test_plain_members_remove_nobody(demo, group):
    await refused(demo, "mojun", "perm.forbidden", "DELETE", member_path(demo, group, "lanting"))


async def test_owner_removes_admins(demo, group):
    await ok(demo, "huangjian", "DELETE", member_path(demo, group, "weiming"), status=204)
    assert demo.user("weiming") not in await member_roles(demo, "huangjian", group)


async def test_removing_someone_who_is_not_a_member_is_not_found(demo, group):
    await refused(demo, "huangjian", "not_found", "DELETE", member_path(demo, group, "nongli"))


@pytest.mark.parametrize("how", ["leave", "delete self"])
async def test_members_leave_on_their_own(demo, group, how):
    path = f"{BASE}/{group}/leave" if how == "leave" else member_path(demo, group, "lanting")
    await ok(demo, "lanting", "POST" if how == "leave" else "DELETE", path, status=204)
    left = (await page(demo, "huangjian", group))["events"][-1]
    assert (left["type"], left["data"]["user_ids"]) == ("member.left", [demo.user("lanting")])
    assert (await view(demo, "huangjian", group))["member_count"] == 3


@pytest.mark.parametrize("how", ["leave", "delete self"])
async def test_owner_must_transfer_before_leaving(demo, group, how):
    path = f"{BASE}/{group}/leave" if how == "leave" else member_path(demo, group, "huangjian")
    await refused(demo, "huangjian", "conversation.owner_must_transfer", "POST" if how == "leave" else "DELETE",
                  path)


async def test_former_owner_leaves_after_transferring(demo, group):
    await ok(demo, "huangjian", "POST", f"{BASE}/{group}/transfer", {"user_id": demo.user("lanting")}, status=204)
    await ok(demo, "huangjian", "POST", f"{BASE}/{group}/leave", status=204)
    assert roles_of(demo, await member_roles(demo, "lanting", group)) == {
        "lanting": "owner", "weiming": "admin", "mojun": "member"}


# ---- settings -------------------------------------------------------------------------------------


async def test_rename_shows_in_the_view_and_is_logged(demo, group):
    renamed = await ok(demo, "weiming", "PATCH", f"{BASE}/{group}", {"name": "防汛指挥部"})
    assert renamed["name"] == "防汛指挥部"
    assert (await view(demo, "mojun", group))["name"] == "防汛指挥部"
    event = (await page(demo, "mojun", group))["events"][-1]
    assert (event["type"], event["data"]["name"], event["data"]["by"]) == (
        "conversation.renamed", "防汛指挥部", demo.user("weiming"))


async def test_plain_members_change_no_settings(demo, group):
    for change in ({"name": "我的群"}, {"avatar": "file_abc"}, {"mute_all": True}, {"members_can_invite": False}):
        await refused(demo, "mojun", "perm.forbidden", "PATCH", f"{BASE}/{group}", change)


async def test_mute_all_silences_plain_members_but_not_the_owner_and_admins(demo, group):
    updated = await ok(demo, "huangjian", "PATCH", f"{BASE}/{group}", {"mute_all": True})
    assert updated["mute_all"] is True
    event = (await page(demo, "mojun", group))["events"][-1]
    assert (event["type"], event["data"]["mute_all"]) == ("conversation.updated", True)

    before = await messaging_snapshot(demo)
    status, body = await send_text(demo, "mojun", group, "我有个问题")
    assert (status, error_code(body)) == (403, "conversation.muted_all")
    assert await messaging_snapshot(demo) == before
    await send(demo, "weiming", group, "请大家按通知执行")
    await send(demo, "huangjian", group, "收到请回复")

    await ok(demo, "huangjian", "PATCH", f"{BASE}/{group}", {"mute_all": False})
    await send(demo, "mojun", group, "收到")


async def test_only_owner_and_admins_mention_everyone(demo, group):
    status, body = await send_text(demo, "mojun", group, "@所有人 开会", mention_all=True)
    assert (status, error_code(body)) == (403, "perm.forbidden")
    event = await send(demo, "weiming", group, "@所有人 开会", mention_all=True)
    assert event["message"]["mention_all"] is True
    # Everyone else has an @mention waiting.
    assert (await view(demo, "mojun", group))["mention_unread"] == 1
    # A plain member may still mention one colleague.
    await send(demo, "mojun", group, "@蓝婷 请看", mentions=[demo.user("lanting")])


# ---- admins and ownership ------------------------------------------------------------------------------


async def test_only_the_owner_appoints_and_withdraws_admins(demo, group):
    path = f"{BASE}/{group}/admins/{demo.user('lanting')}"
    await refused(demo, "weiming", "perm.forbidden", "PUT", path)
    await ok(demo, "huangjian", "PUT", path, status=204)
    assert (await view(demo, "lanting", group))["role"] == "admin"
    await ok(demo, "huangjian", "DELETE", path, status=204)
    assert (await view(demo, "lanting", group))["role"] == "member"
    changes = [e["data"] for e in (await page(demo, "lanting", group))["events"]
               if e["type"] == "conversation.admins_changed"]
    lanting = demo.user("lanting")
    assert [(c.get("user_ids", []), c.get("removed_admin_ids", [])) for c in changes][-2:] == [
        ([lanting], []), ([], [lanting])]


async def test_transfer_hands_the_group_to_another_member(demo, group):
    await refused(demo, "weiming", "perm.forbidden", "POST", f"{BASE}/{group}/transfer",
                  {"user_id": demo.user("weiming")})
    await ok(demo, "huangjian", "POST", f"{BASE}/{group}/transfer", {"user_id": demo.user("mojun")}, status=204)

    assert (await view(demo, "lanting", group))["owner_id"] == demo.user("mojun")
    assert roles_of(demo, await member_roles(demo, "lanting", group)) == {
        "huangjian": "admin", "weiming": "admin", "lanting": "member", "mojun": "owner"}
    event = (await page(demo, "lanting", group))["events"][-1]
    assert (event["type"], event["data"]["from_user"], event["data"]["to_user"]) == (
        "conversation.owner_transferred", demo.user("huangjian"), demo.user("mojun"))
    # The new owner runs the group; the former one no longer dissolves it.
    await refused(demo, "huangjian", "perm.forbidden", "POST", f"{BASE}/{group}/dissolve")
    await ok(demo, "mojun", "DELETE", member_path(demo, group, "huangjian"), status=204)


async def test_transfer_to_someone_outside_the_group_is_not_found(demo, group):
    await refused(demo, "huangjian", "not_found", "POST", f"{BASE}/{group}/transfer", {"user_id": demo.user("nongli")})


# ---- dissolution ------------------------------------------------------------------------------------


async def test_dissolved_group_refuses_sends_and_changes_but_keeps_its_history(demo, group):
    sent = await send(demo, "mojun", group, "汛情报告已上传")
    await refused(demo, "weiming", "perm.forbidden", "POST", f"{BASE}/{group}/dissolve")
    await ok(demo, "huangjian", "POST", f"{BASE}/{group}/dissolve", status=204)

    assert (await view(demo, "mojun", group))["status"] == "dissolved"
    for sender in ("mojun", "huangjian"):
        status, body = await send_text(demo, sender, group, "还在吗")
        assert (status, error_code(body)) == (409, "conversation.dissolved")
    await refused(demo, "huangjian", "conversation.dissolved", "PATCH", f"{BASE}/{group}", {"name": "新名字"})
    await refused(demo, "huangjian", "conversation.dissolved", "POST", f"{BASE}/{group}/members",
                  {"user_ids": [demo.user("nongli")]})
    await refused(demo, "mojun", "conversation.dissolved", "PATCH", f"{BASE}/{group}/events/{sent['seq']}",
                  {"text": "改一下"})
    assert [t for _, t in await log(demo, "mojun", group)][-2:] == ["message", "conversation.dissolved"]
    assert (await page(demo, "lanting", group))["events"][-2]["message"]["text"] == "汛情报告已上传"


# ---- the member cap -----------------------------------------------------------------------------------


async def test_group_cannot_grow_past_its_member_cap(demo, group, monkeypatch):
    monkeypatch.setattr(conversations_module, "MAX_GROUP_MEMBERS", 5)
    await ok(demo, "huangjian", "POST", f"{BASE}/{group}/members", {"user_ids": [demo.user("nongli")]})
    body = await refused(demo, "huangjian", "conversation.full", "POST", f"{BASE}/{group}/members",
                         {"user_ids": [demo.user("liangbo")]})
    assert body["error"]["details"]["limit"] == 5
    # Creating a group beyond the cap is refused too; at the cap it is fine.
    too_many = ["weiming", "lanting", "mojun", "nongli", "liangbo"]
    await refused(demo, "huangjian", "conversation.full", "POST", f"{BASE}/groups",
                  {"name": "大群", "member_ids": [demo.user(u) for u in too_many]})
    assert (await create_group(demo, "huangjian", too_many[:4]))["member_count"] == 5
    # A place freed by someone leaving can be taken again.
    await ok(demo, "mojun", "POST", f"{BASE}/{group}/leave", status=204)
    await ok(demo, "huangjian", "POST", f"{BASE}/{group}/members", {"user_ids": [demo.user("liangbo")]})


# ---- the log ---------------------------------------------------------------------------------------


async def test_every_change_is_an_event_in_the_log_in_order(demo, group):
    await send(demo, "mojun", group, "第一条")
    await ok(demo, "weiming", "POST", f"{BASE}/{group}/members", {"user_ids": [demo.user("nongli")]})
    await ok(demo, "weiming", "PATCH", f"{BASE}/{group}", {"name": "值班群"})
    await ok(demo, "huangjian", "PATCH", f"{BASE}/{group}", {"mute_all": True, "members_can_invite": False})
    await ok(demo, "weiming", "DELETE", member_path(demo, group, "nongli"), status=204)
    await ok(demo, "lanting", "POST", f"{BASE}/{group}/leave", status=204)
    await ok(demo, "huangjian", "DELETE", f"{BASE}/{group}/admins/{demo.user('weiming')}", status=204)
    await ok(demo, "huangjian", "POST", f"{BASE}/{group}/transfer", {"user_id": demo.user("mojun")}, status=204)
    await ok(demo, "mojun", "POST", f"{BASE}/{group}/dissolve", status=204)

    assert await log(demo, "mojun", group) == list(enumerate([
        "conversation.created", "conversation.admins_changed", "message", "member.joined", "conversation.renamed",
        "conversation.updated", "member.removed", "member.left", "conversation.admins_changed",
        "conversation.owner_transferred", "conversation.dissolved"], start=1))
    assert (await view(demo, "mojun", group))["last_seq"] == 11


async def test_direct_chat_has_no_administration(demo):
    chat = (await open_direct(demo, "zhangwei", "liuyang"))["id"]
    await refused(demo, "zhangwei", "perm.forbidden", "PATCH", f"{BASE}/{chat}", {"name": "改名"})
    await refused(demo, "zhangwei", "perm.forbidden", "POST", f"{BASE}/{chat}/members",
                  {"user_ids": [demo.user("chenjing")]})
    await refused(demo, "zhangwei", "perm.forbidden", "DELETE", member_path(demo, chat, "liuyang"))
    await refused(demo, "zhangwei", "perm.forbidden", "POST", f"{BASE}/{chat}/leave")
    await refused(demo, "zhangwei", "perm.forbidden", "POST", f"{BASE}/{chat}/dissolve")
