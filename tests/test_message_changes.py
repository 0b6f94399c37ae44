"""Changing sent messages: recall (撤回), edit, forward (single and merged), delete-for-me, and card
updates — who may, until when, and what every later read returns (server/messaging/messages.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from auth_support import audit_entries
from messaging_support import client_for, direct_between, group_of, principal

from xietong.clients import XietongClient
from xietong.clients.sdk import XietongError
from xietong.server.messaging.models import event_id
from xietong.server.models import utcnow

CARD = {"title": "用车申请", "body": "6月3日 南宁→柳州", "status": "待审批"}


async def stored(demo, cid: str, seq: int) -> dict:
    """The event as the database holds it."""
    return await demo.server.services.store.events.col.find_one({"conversation_id": cid, "seq": seq})


async def age(demo, cid: str, seq: int, minutes: float) -> None:
    """Make a stored message ``minutes`` old."""
    await demo.server.services.store.events.col.update_one(
        {"conversation_id": cid, "seq": seq}, {"$set": {"created_at": utcnow() - timedelta(minutes=minutes)}})


async def refused(code: str, call) -> None:
    with pytest.raises(XietongError) as error:
        await call
    assert error.value.code == code


async def count_of(demo, cid: str, kind: str) -> int:
    return await demo.server.services.store.events.col.count_documents({"conversation_id": cid, "type": kind})


@pytest.fixture
async def office(demo):
    """A group owned by zhangwei with liuyang and chenjing; all three connected."""
    cid = await group_of(demo, "zhangwei", ["liuyang", "chenjing"])
    clients = {name: await client_for(demo, name) for name in ("zhangwei", "liuyang", "chenjing")}
    yield cid, clients
    for client in clients.values():
        await client.close()


def event_at(client: XietongClient, cid: str, seq: int) -> dict:
    return client.logs[cid].events[seq]


# ---- recall -------------------------------------------------------------------------------------------


async def test_the_sender_recalls_within_two_minutes_and_the_content_is_gone_from_every_read(demo, office):
    cid, c = office
    sent = await c["liuyang"].send_text(cid, "会议改到明天上午")
    await c["zhangwei"].next_push("event")

    recall = await c["liuyang"].recall(cid, sent["seq"])
    assert (recall["type"], recall["target_seq"]) == ("message.recalled", sent["seq"])
    doc = await stored(demo, cid, sent["seq"])
    assert doc["recalled"] is True and doc["recalled_by"] == demo.user("liuyang") and "message" not in doc
    # Devices that hold the message are told, and drop their copy.
    pushed = await c["zhangwei"].next_push("event")
    assert (pushed["event"]["type"], pushed["event"]["target_seq"]) == ("message.recalled", sent["seq"])
    assert "message" not in event_at(c["zhangwei"], cid, sent["seq"])
    # Every later read returns the message without its content: history, and a new device's sync.
    page = await c["chenjing"].history(cid)
    recalled = next(e for e in page["events"] if e["seq"] == sent["seq"])
    assert recalled["recalled"] is True and "message" not in recalled
    new_device = await client_for(demo, "chenjing")
    try:
        assert event_at(new_device, cid, sent["seq"])["recalled"] is True
        assert "message" not in event_at(new_device, cid, sent["seq"])
    finally:
        await new_device.close()


async def test_recalling_an_edited_message_leaves_no_trace_of_either_text(demo, office):
    cid, c = office
    sent = await c["liuyang"].send_text(cid, "名单：张三、李四")
    await c["liuyang"].edit(cid, sent["seq"], "名单：张三、李四、王五")
    await c["liuyang"].recall(cid, sent["seq"])
    page = await c["chenjing"].history(cid)
    assert "名单" not in str(page["events"])
    assert await demo.server.services.store.events.col.count_documents(
        {"conversation_id": cid, "message.text": {"$regex": "名单"}}) == 0


async def test_recall_after_two_minutes_is_refused(demo, office):
    cid, c = office
    sent = await c["liuyang"].send_text(cid, "已发文件")
    await age(demo, cid, sent["seq"], minutes=2.5)
    await refused("message.recall_window_passed", c["liuyang"].recall(cid, sent["seq"]))
    assert (await stored(demo, cid, sent["seq"]))["message"]["text"] == "已发文件"
    assert await count_of(demo, cid, "message.recalled") == 0


async def test_a_group_admin_recalls_anothers_message_at_any_time(demo, office):
    cid, c = office
    await demo.server.services.conversations.set_admin(principal(demo, "zhangwei"), cid, demo.user("liuyang"), True)
    sent = await c["chenjing"].send_text(cid, "不当言论")
    await age(demo, cid, sent["seq"], minutes=60 * 24)
    await c["liuyang"].recall(cid, sent["seq"])
    doc = await stored(demo, cid, sent["seq"])
    assert doc["recalled"] is True and doc["recalled_by"] == demo.user("liuyang")
    # The owner too.
    other = await c["chenjing"].send_text(cid, "又一条")
    await age(demo, cid, other["seq"], minutes=60)
    await c["zhangwei"].recall(cid, other["seq"])
    assert (await stored(demo, cid, other["seq"]))["recalled"] is True


async def test_a_plain_member_cannot_recall_anothers_message(demo, office):
    cid, c = office
    sent = await c["liuyang"].send_text(cid, "通知")
    await refused("perm.forbidden", c["chenjing"].recall(cid, sent["seq"]))
    assert (await stored(demo, cid, sent["seq"]))["message"]["text"] == "通知"


async def test_retrying_a_recall_adds_no_second_recalled_event(demo, office):
    cid, c = office
    sent = await c["liuyang"].send_text(cid, "发错群了")
    first = await c["liuyang"].recall(cid, sent["seq"])
    again = await c["liuyang"].recall(cid, sent["seq"])
    assert again["seq"] == first["seq"]
    # An owner recalling it too (two moderators at once) finds it recalled already.
    assert (await c["zhangwei"].recall(cid, sent["seq"]))["seq"] == first["seq"]
    assert await count_of(demo, cid, "message.recalled") == 1


async def test_a_recall_is_in_the_audit_log(demo, office):
    cid, c = office
    sent = await c["liuyang"].send_text(cid, "内部材料")
    await c["zhangwei"].recall(cid, sent["seq"])
    [entry] = await audit_entries(demo, "message.recall")
    assert (entry["actor_id"], entry["target_type"], entry["target_id"]) == (
        demo.user("zhangwei"), "event", event_id(cid, sent["seq"]))
    assert entry["details"]["sender_id"] == demo.user("liuyang")
    assert "内部材料" not in str(entry)


# ---- edit ---------------------------------------------------------------------------------------------


async def test_the_sender_edits_a_text_within_fifteen_minutes(demo, office):
    cid, c = office
    sent = await c["liuyang"].send_text(cid, "下午三点开会")
    await age(demo, cid, sent["seq"], minutes=14)
    await c["chenjing"].next_push("event")
    edit = await c["liuyang"].edit(cid, sent["seq"], "下午四点开会")
    assert (edit["type"], edit["target_seq"], edit["message"]["text"]) == ("message.edited", sent["seq"], "下午四点开会")
    pushed = await c["chenjing"].next_push("event")
    assert pushed["event"]["id"] == edit["id"]
    held = event_at(c["chenjing"], cid, sent["seq"])
    assert held["message"]["text"] == "下午四点开会" and held["edited_at"]  # shown as edited
    page = await c["zhangwei"].history(cid)
    original = next(e for e in page["events"] if e["seq"] == sent["seq"])
    assert original["message"]["text"] == "下午四点开会" and original["edited_at"]


async def test_editing_after_fifteen_minutes_is_refused(demo, office):
    cid, c = office
    sent = await c["liuyang"].send_text(cid, "下午三点开会")
    await age(demo, cid, sent["seq"], minutes=16)
    await refused("message.edit_window_passed", c["liuyang"].edit(cid, sent["seq"], "下午四点开会"))
    assert (await stored(demo, cid, sent["seq"]))["message"]["text"] == "下午三点开会"
    assert await count_of(demo, cid, "message.edited") == 0


async def test_only_the_sender_edits_even_in_a_group_they_own(demo, office):
    cid, c = office
    sent = await c["liuyang"].send_text(cid, "原话")
    await refused("perm.forbidden", c["zhangwei"].edit(cid, sent["seq"], "改过的话"))
    assert (await stored(demo, cid, sent["seq"]))["message"]["text"] == "原话"


async def test_only_text_messages_that_still_exist_are_edited(demo, office):
    cid, c = office
    card = await c["liuyang"].send(cid, {"kind": "card", "card": CARD})
    await refused("message.not_editable", c["liuyang"].edit(cid, card["seq"], "文字"))
    recalled = await c["liuyang"].send_text(cid, "撤回了")
    await c["liuyang"].recall(cid, recalled["seq"])
    await refused("message.not_editable", c["liuyang"].edit(cid, recalled["seq"], "复活"))
    assert await count_of(demo, cid, "message.edited") == 0


# ---- forward ------------------------------------------------------------------------------------------


async def test_forwarding_one_message_copies_it_with_its_senders_name(demo, office):
    cid, c = office
    target = await direct_between(demo, "chenjing", "wuqiang")
    sent = await c["liuyang"].send_text(cid, "请各单位周五前报送材料")
    forwarded = await c["chenjing"].forward(target, cid, [sent["seq"]], mode="single")
    forward = forwarded["message"]["forward"]
    assert (forwarded["message"]["kind"], forward["mode"], forward["source_conversation_id"]) == (
        "forward", "single", cid)
    [item] = forward["items"]
    assert (item["sender_id"], item["sender_name"], item["kind"], item["text"]) == (
        demo.user("liuyang"), "刘洋", "text", "请各单位周五前报送材料")


async def test_a_merged_forward_is_a_chat_record_in_seq_order(demo, office):
    cid, c = office
    target = await direct_between(demo, "chenjing", "wuqiang")
    first = await c["zhangwei"].send_text(cid, "明天检查")
    second = await c["liuyang"].send_text(cid, "收到")
    forwarded = await c["chenjing"].forward(target, cid, [second["seq"], first["seq"]], title="检查安排")
    forward = forwarded["message"]["forward"]
    assert (forward["mode"], forward["title"]) == ("merged", "检查安排")
    assert [(i["sender_name"], i["text"]) for i in forward["items"]] == [("张伟", "明天检查"), ("刘洋", "收到")]


async def test_forwarding_from_a_conversation_one_is_not_in_is_not_found(demo, office):
    cid, c = office
    await c["liuyang"].send_text(cid, "内部讨论")
    target = await direct_between(demo, "wuqiang", "zhangwei")
    outsider = await client_for(demo, "wuqiang")
    try:
        await refused("not_found", outsider.forward(target, cid, [2]))
        assert await count_of(demo, target, "message") == 0
    finally:
        await outsider.close()


async def test_a_recalled_message_cannot_be_forwarded(demo, office):
    cid, c = office
    target = await direct_between(demo, "chenjing", "wuqiang")
    sent = await c["liuyang"].send_text(cid, "发错了")
    await c["liuyang"].recall(cid, sent["seq"])
    await refused("not_found", c["chenjing"].forward(target, cid, [sent["seq"]], mode="single"))


async def test_recalling_the_original_later_leaves_the_forwarded_copy(demo, office):
    cid, c = office
    target = await direct_between(demo, "chenjing", "wuqiang")
    sent = await c["liuyang"].send_text(cid, "值班表已更新")
    forwarded = await c["chenjing"].forward(target, cid, [sent["seq"]], mode="single")
    await c["liuyang"].recall(cid, sent["seq"])
    page = await c["chenjing"].history(target)
    copy = next(e for e in page["events"] if e["seq"] == forwarded["seq"])
    assert copy["message"]["forward"]["items"][0]["text"] == "值班表已更新"


# ---- delete for me ------------------------------------------------------------------------------------


async def test_delete_for_me_hides_the_message_from_my_reads_only(demo, office):
    cid, c = office
    keep = await c["liuyang"].send_text(cid, "留着")
    gone = await c["liuyang"].send_text(cid, "删掉")
    answer = await c["chenjing"].request("delete_for_me", conversation_id=cid, seqs=[gone["seq"], gone["seq"]])
    assert answer == {"hidden": [gone["seq"]]}
    seqs = [e["seq"] for e in (await c["chenjing"].history(cid))["events"]]
    assert keep["seq"] in seqs and gone["seq"] not in seqs
    my_new_device = await client_for(demo, "chenjing")
    try:
        assert gone["seq"] not in my_new_device.logs[cid].events and keep["seq"] in my_new_device.logs[cid].events
    finally:
        await my_new_device.close()
    # Everyone else still has it.
    assert gone["seq"] in [e["seq"] for e in (await c["zhangwei"].history(cid))["events"]]
    assert (await stored(demo, cid, gone["seq"]))["message"]["text"] == "删掉"


# ---- card update --------------------------------------------------------------------------------------


async def test_the_sender_of_a_card_updates_it_for_everyone(demo, office):
    cid, c = office
    card = await c["liuyang"].send(cid, {"kind": "card", "card": CARD})
    await c["chenjing"].next_push("event")
    approved = {**CARD, "status": "已同意"}
    answer = await c["liuyang"].request("update_card", conversation_id=cid, seq=card["seq"], card=approved,
                                        client_msg_id="approve-1")
    assert (answer["event"]["type"], answer["event"]["target_seq"]) == ("card.updated", card["seq"])
    assert (await stored(demo, cid, card["seq"]))["message"]["card"]["status"] == "已同意"
    pushed = await c["chenjing"].next_push("event")
    assert pushed["event"]["type"] == "card.updated"
    assert event_at(c["chenjing"], cid, card["seq"])["message"]["card"]["status"] == "已同意"


async def test_only_the_sender_of_a_card_updates_it(demo, office):
    cid, c = office
    card = await c["liuyang"].send(cid, {"kind": "card", "card": CARD})
    await refused("perm.forbidden", c["zhangwei"].request(
        "update_card", conversation_id=cid, seq=card["seq"], card={**CARD, "status": "已驳回"}, client_msg_id="x"))
    assert (await stored(demo, cid, card["seq"]))["message"]["card"]["status"] == "待审批"
    assert await count_of(demo, cid, "card.updated") == 0
