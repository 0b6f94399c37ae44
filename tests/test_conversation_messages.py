"""Messages over REST: send (idempotent), forward, edit, recall, delete for me, read positions and
receipts."""

from __future__ import annotations

import pytest

from conversation_support import (BASE, call, create_group, error_code, messaging_snapshot, new_client_msg_id, ok,
                                  open_direct, page, refused, send, send_text, view)


@pytest.fixture
async def group(demo) -> str:
    return (await create_group(demo, "zhangwei", ["liuyang", "chenjing", "wuqiang"], name="办公室"))["id"]


async def test_sent_message_is_stored_in_order_and_unread_for_the_others(demo, group):
    first = await send(demo, "liuyang", group, "上午十点开会")
    second = await send(demo, "chenjing", group, "收到")
    assert (first["seq"], second["seq"]) == (2, 3)
    assert first["sender_id"] == demo.user("liuyang") and first["message"]["text"] == "上午十点开会"

    assert (await view(demo, "wuqiang", group))["unread"] == 2
    # Sending reads the conversation up to one's own message.
    assert (await view(demo, "liuyang", group))["unread"] == 1
    assert (await view(demo, "chenjing", group))["unread"] == 0
    assert [e["message"]["text"] for e in (await page(demo, "wuqiang", group, after=1))["events"]] == [
        "上午十点开会", "收到"]


async def test_retried_send_returns_the_original_event(demo, group):
    client_msg_id = new_client_msg_id()
    status, first = await send_text(demo, "liuyang", group, "请假条", client_msg_id=client_msg_id)
    assert status == 201 and first["duplicate"] is False
    status, retry = await send_text(demo, "liuyang", group, "请假条", client_msg_id=client_msg_id)
    assert status == 200 and retry["duplicate"] is True
    assert retry["event"] == first["event"]
    assert [e["seq"] for e in (await page(demo, "zhangwei", group))["events"]] == [1, 2]


async def test_a_client_msg_id_is_not_reused_across_conversations(demo, group):
    chat = (await open_direct(demo, "liuyang", "zhangwei"))["id"]
    client_msg_id = new_client_msg_id()
    status, _ = await send_text(demo, "liuyang", group, "第一次", client_msg_id=client_msg_id)
    assert status == 201
    before = await messaging_snapshot(demo)
    status, body = await send_text(demo, "liuyang", chat, "第二次", client_msg_id=client_msg_id)
    assert (status, error_code(body)) == (409, "message.client_id_reused")
    assert await messaging_snapshot(demo) == before


async def test_sender_edits_a_text_message_and_everyone_reads_the_new_text(demo, group):
    sent = await send(demo, "liuyang", group, "十点开会")
    answer = await ok(demo, "liuyang", "PATCH", f"{BASE}/{group}/events/{sent['seq']}", {"text": "十点半开会"})
    assert (answer["event"]["type"], answer["event"]["target_seq"]) == ("message.edited", sent["seq"])
    stored = (await page(demo, "wuqiang", group, after=sent["seq"] - 1, limit=1))["events"][0]
    assert stored["message"]["text"] == "十点半开会" and stored["edit_version"] == 1
    await refused(demo, "zhangwei", "perm.forbidden", "PATCH", f"{BASE}/{group}/events/{sent['seq']}",
                  {"text": "不是我的"})


async def test_editing_while_mute_all_is_on_is_refused_and_the_text_stays(demo, group):
    sent = await send(demo, "liuyang", group, "原文")
    await ok(demo, "zhangwei", "PATCH", f"{BASE}/{group}", {"mute_all": True})
    await refused(demo, "liuyang", "conversation.muted_all", "PATCH", f"{BASE}/{group}/events/{sent['seq']}",
                  {"text": "改过的"})
    stored = (await page(demo, "wuqiang", group, after=sent["seq"] - 1, limit=1))["events"][0]
    assert stored["message"]["text"] == "原文"


async def test_recall_erases_the_content_for_everyone(demo, group):
    sent = await send(demo, "liuyang", group, "发错了")
    answer = await ok(demo, "liuyang", "POST", f"{BASE}/{group}/events/{sent['seq']}/recall")
    assert (answer["event"]["type"], answer["event"]["target_seq"]) == ("message.recalled", sent["seq"])
    stored = (await page(demo, "wuqiang", group, after=sent["seq"] - 1, limit=1))["events"][0]
    assert stored["recalled"] is True and "message" not in stored
    # A retried recall answers the same event.
    again = await ok(demo, "liuyang", "POST", f"{BASE}/{group}/events/{sent['seq']}/recall")
    assert again["event"]["seq"] == answer["event"]["seq"]


async def test_only_the_sender_or_a_group_admin_recalls(demo, group):
    sent = await send(demo, "liuyang", group, "内部资料")
    await refused(demo, "chenjing", "perm.forbidden", "POST", f"{BASE}/{group}/events/{sent['seq']}/recall")
    await ok(demo, "zhangwei", "POST", f"{BASE}/{group}/events/{sent['seq']}/recall")


async def test_delete_for_me_hides_an_event_from_me_only(demo, group):
    sent = await send(demo, "liuyang", group, "私事")
    await ok(demo, "wuqiang", "POST", f"{BASE}/{group}/events/{sent['seq']}/hide", status=204)
    assert sent["seq"] not in [e["seq"] for e in (await page(demo, "wuqiang", group))["events"]]
    assert sent["seq"] in [e["seq"] for e in (await page(demo, "chenjing", group))["events"]]


async def test_forwarded_messages_arrive_as_a_chat_record(demo, group):
    one = await send(demo, "liuyang", group, "第一条")
    two = await send(demo, "chenjing", group, "第二条")
    chat = (await open_direct(demo, "liuyang", "xuna"))["id"]
    status, body = await call(demo, "liuyang", "POST", f"{BASE}/{chat}/forward", {
        "client_msg_id": new_client_msg_id(), "source_conversation_id": group, "seqs": [one["seq"], two["seq"]],
        "mode": "merged", "title": "办公室的聊天记录"})
    assert status == 201, body
    record = (await page(demo, "xuna", chat))["events"][-1]["message"]
    assert record["kind"] == "forward" and record["forward"]["title"] == "办公室的聊天记录"
    assert [(i["sender_name"], i["text"]) for i in record["forward"]["items"]] == [("刘洋", "第一条"), ("陈静", "第二条")]


async def test_read_position_moves_forward_only_and_read_all_clears_unread(demo, group):
    for text in ("一", "二", "三"):
        await send(demo, "liuyang", group, text)
    state = await ok(demo, "wuqiang", "POST", f"{BASE}/{group}/read", {"seq": 3})  # 一 and 二
    assert (state["read_seq"], state["unread"]) == (3, 1)
    state = await ok(demo, "wuqiang", "POST", f"{BASE}/{group}/read", {"seq": 2})
    assert (state["read_seq"], state["unread"]) == (3, 1)

    chat = (await open_direct(demo, "xuna", "wuqiang"))["id"]
    await send(demo, "xuna", chat, "在吗")
    assert (await ok(demo, "wuqiang", "POST", f"{BASE}/read-all"))["conversations"] == 2
    listed = (await ok(demo, "wuqiang", "GET", BASE))["conversations"]
    assert [c["unread"] for c in listed] == [0, 0]
    assert (await ok(demo, "wuqiang", "POST", f"{BASE}/read-all"))["conversations"] == 0


async def test_reading_beyond_the_last_event_is_refused(demo, group):
    body = await refused(demo, "wuqiang", "message.seq_out_of_range", "POST", f"{BASE}/{group}/read", {"seq": 99})
    assert body["error"]["details"]["last_seq"] == 1


async def test_receipts_count_and_list_who_read_a_message(demo, group):
    sent = await send(demo, "liuyang", group, "请确认")
    await ok(demo, "chenjing", "POST", f"{BASE}/{group}/read", {"seq": sent["seq"]})
    path = f"{BASE}/{group}/events/{sent['seq']}/receipts"
    read = await ok(demo, "liuyang", "GET", path)
    assert (read["read_count"], read["total"], read["users"]) == (1, 3, [demo.user("chenjing")])
    unread = await ok(demo, "liuyang", "GET", path, params={"which": "unread"})
    assert sorted(unread["users"]) == sorted([demo.user("zhangwei"), demo.user("wuqiang")])
    first = await ok(demo, "liuyang", "GET", path, params={"which": "unread", "limit": 1})
    rest = await ok(demo, "liuyang", "GET", path, params={"which": "unread", "limit": 1,
                                                           "after": first["next_after"]})
    assert first["users"] + rest["users"] == unread["users"]
