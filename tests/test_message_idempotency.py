"""Every change to a conversation can be retried safely: no second copy, no silent divergence."""

from __future__ import annotations

from messaging_support import RawSocket, direct_between, group_of, principal

from xietong.server.messaging.models import Event, Message, event_id
from xietong.server.messaging.writer import preview
from xietong.server.models import utcnow
from xietong.server.store.events import event_to_doc


async def test_client_ids_cannot_collide_with_the_ids_the_server_derives(demo):
    cid = await direct_between(demo, "zhangwei", "huangjian")
    sock = await RawSocket.open(demo, "zhangwei")
    try:
        # Ids the server once derived for its own events are ordinary client ids now …
        sent = await sock.request({"type": "send", "conversation_id": cid, "client_msg_id": f"created:{cid}",
                                   "message": {"kind": "text", "text": "普通消息"}})
        assert sent["result"]["duplicate"] is False and sent["result"]["event"]["type"] == "message"
        # … and the derived ones use a character clients may not send.
        refused = await sock.request({"type": "send", "conversation_id": cid, "client_msg_id": f"#created:{cid}",
                                      "message": {"kind": "text", "text": "x"}})
        assert refused["error"]["code"] == "request.invalid"
    finally:
        await sock.close()
    created = await demo.server.services.store.events.get(cid, 1)
    assert created.type == "conversation.created" and created.client_msg_id.startswith("#")


async def test_a_retried_edit_with_its_client_id_answers_the_first_edit(demo):
    cid = await direct_between(demo, "zhangwei", "huangjian")
    sock = await RawSocket.open(demo, "zhangwei")
    try:
        sent = await sock.request({"type": "send", "conversation_id": cid, "client_msg_id": "m1",
                                   "message": {"kind": "text", "text": "三点开会"}})
        seq = sent["result"]["event"]["seq"]
        edit = {"type": "edit", "conversation_id": cid, "seq": seq, "text": "四点开会", "client_msg_id": "e1"}
        first = await sock.request(edit)
        again = await sock.request(edit)
    finally:
        await sock.close()
    assert first["result"]["duplicate"] is False and again["result"]["duplicate"] is True
    assert again["result"]["event"] == first["result"]["event"]
    edits = await demo.server.services.store.events.col.count_documents({"conversation_id": cid,
                                                                        "type": "message.edited"})
    assert edits == 1


async def test_a_retried_card_update_with_other_content_changes_nothing(demo):
    cid = await group_of(demo, "zhangwei", ["huangjian"])
    sock = await RawSocket.open(demo, "zhangwei")
    try:
        sent = await sock.request({"type": "send", "conversation_id": cid, "client_msg_id": "card-1",
                                   "message": {"kind": "card", "card": {"title": "用车申请", "status": "待审批"}}})
        seq = sent["result"]["event"]["seq"]
        update = {"type": "update_card", "conversation_id": cid, "seq": seq, "client_msg_id": "card-1-u1",
                  "card": {"title": "用车申请", "status": "已同意"}}
        first = await sock.request(update)
        retry = await sock.request(dict(update, card={"title": "用车申请", "status": "已驳回"}))
    finally:
        await sock.close()
    assert retry["result"]["duplicate"] is True and retry["result"]["event"] == first["result"]["event"]
    stored = await demo.server.services.store.events.get(cid, seq)
    assert stored.message.card.status == "已同意"  # the card and its log still agree


async def test_a_card_too_large_is_refused_before_anything_is_stored(demo):
    cid = await group_of(demo, "zhangwei", ["huangjian"])
    before = await demo.server.services.store.events.col.count_documents({"conversation_id": cid})
    sock = await RawSocket.open(demo, "zhangwei")
    try:
        fields = [{"label": f"字段{i}", "value": "值" * 500} for i in range(20)]
        answer = await sock.request({"type": "send", "conversation_id": cid, "client_msg_id": "big",
                                     "message": {"kind": "card", "card": {"title": "t", "fields": fields}}})
        unknown = await sock.request({"type": "send", "conversation_id": cid, "client_msg_id": "odd",
                                      "message": {"kind": "card", "card": {"title": "t", "colour": "red"}}})
    finally:
        await sock.close()
    assert answer["error"]["code"] == "request.invalid" and "16384 bytes" in answer["error"]["message"]
    assert unknown["error"]["code"] == "request.invalid" and "colour" in unknown["error"]["message"]
    assert await demo.server.services.store.events.col.count_documents({"conversation_id": cid}) == before


async def test_a_retry_announces_an_event_whose_first_write_was_cut_off_before_announcing_it(demo):
    """The insert succeeded but the process died before the head update and the publish: the retry
    finds the stored event, and finishes that write's job."""
    services = demo.server.services
    cid = await direct_between(demo, "zhangwei", "huangjian")
    watcher = await RawSocket.open(demo, "huangjian")
    try:
        me = demo.user("zhangwei")
        orphan = Event(id=event_id(cid, 2), conversation_id=cid, seq=2, count=1, type="message",
                       created_at=utcnow(), sender_id=me, client_msg_id="cut-off",
                       message=Message(kind="text", text="断电前写入"))
        await services.store.events.col.insert_one(event_to_doc(orphan))
        assert (await services.store.conversations.get(cid)).last_seq == 1  # nobody can see it yet

        sender = await RawSocket.open(demo, "zhangwei")
        try:
            answer = await sender.request({"type": "send", "conversation_id": cid, "client_msg_id": "cut-off",
                                           "message": {"kind": "text", "text": "断电前写入"}})
        finally:
            await sender.close()
        assert answer["result"]["duplicate"] is True and answer["result"]["event"]["seq"] == 2
        pushed = await watcher.push("event")
        assert pushed["event"]["id"] == orphan.id
        conversation = await services.store.conversations.get(cid)
        assert conversation.last_seq == 2 and conversation.msg_count == 1
        assert conversation.last_event.preview == preview(orphan.message)
    finally:
        await watcher.close()


async def test_a_recall_retried_by_rest_answers_the_same_event(demo):
    cid = await group_of(demo, "zhangwei", ["huangjian"])
    sent = await demo.server.services.messages.send(principal(demo, "zhangwei"), cid, "r-1",
                                                   Message(kind="text", text="发错了"))
    token = await demo.token("zhangwei")
    path = f"/v1/conversations/{cid}/events/{sent.event.seq}/recall"
    first_status, first = await demo.api.post(path, token=token)
    again_status, again = await demo.api.post(path, token=token)
    assert (first_status, first["duplicate"]) == (200, False)
    assert (again_status, again["duplicate"]) == (200, True) and again["event"] == first["event"]
