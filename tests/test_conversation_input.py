"""Bad input on the conversation endpoints: each gets a clear coded error, and nothing is written."""

from __future__ import annotations

import pytest

from conversation_support import (BASE, create_group, error_code, messaging_snapshot, ok, refused, send)

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def group(demo) -> str:
    created = await create_group(demo, "zhangwei", ["liuyang", "chenjing"], name="办公室")
    await send(demo, "liuyang", created["id"], "第一条")  # seq 2
    return created["id"]


def text_message(text: str = "你好", **extra) -> dict:
    return {"client_msg_id": "input-1", "message": {"kind": "text", "text": text}, **extra}


async def refused_raw(demo, code: str, method: str, path: str, data: bytes, headers: dict | None = None) -> None:
    before = await messaging_snapshot(demo)
    status, body = await demo.api.request(method, path, data=data, headers=headers or JSON,
                                          token=await demo.token("liuyang"))
    assert error_code(body) == code, (status, body)
    assert await messaging_snapshot(demo) == before


# ---- the body as a whole ----------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"{", b"{\"client_msg_id\": }", b"{'message': 1}", b"\xff\xfe{}", b"nul"])
async def test_malformed_json_is_refused(demo, group, raw):
    await refused_raw(demo, "request.malformed_json", "POST", f"{BASE}/{group}/messages", raw)
    await refused_raw(demo, "request.malformed_json", "POST", f"{BASE}/groups", raw)


@pytest.mark.parametrize("raw", [b"[]", b"\"hi\"", b"42", b"null"])
async def test_a_body_that_is_not_an_object_is_refused(demo, group, raw):
    await refused_raw(demo, "request.invalid", "POST", f"{BASE}/{group}/messages", raw)


async def test_a_body_that_is_not_json_is_refused(demo, group):
    await refused_raw(demo, "request.unsupported_media_type", "POST", f"{BASE}/{group}/messages", b"text=hi",
                      {"Content-Type": "application/x-www-form-urlencoded"})


# ---- unknown fields and wrong types -----------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    text_message(type="send"),  # the WebSocket frame's fields are not part of the REST body
    text_message(id="r1"),
    text_message(conversation_id="cnv_x"),
    {"client_msg_id": "input-1", "message": {"kind": "text", "text": "你好", "color": "red"}},
])
async def test_unknown_fields_in_a_send_are_refused(demo, group, body):
    await refused(demo, "liuyang", "request.invalid", "POST", f"{BASE}/{group}/messages", body)


@pytest.mark.parametrize("path, body", [
    ("groups", {"name": "群", "member_ids": ["usr_x"], "owner_id": "usr_y"}),
    ("groups", {"name": "群", "member_ids": "usr_x"}),
    ("groups", {"name": 7, "member_ids": ["usr_x"]}),
    ("groups", {"member_ids": ["usr_x"]}),
    ("direct", {"user_id": 12}),
    ("direct", {}),
    ("units", {"unit_id": None}),
])
async def test_wrong_creation_bodies_are_refused(demo, path, body):
    await refused(demo, "liuyang", "request.invalid", "POST", f"{BASE}/{path}", body)


@pytest.mark.parametrize("method, path, body", [
    ("PATCH", "", {"name": None}),
    ("PATCH", "", {"mute_all": "yes"}),
    ("PATCH", "", {"owner_id": "usr_x"}),
    ("PATCH", "", {"name": "长" * 65}),
    ("PUT", "/preferences", {"muted": 1}),
    ("POST", "/read", {"seq": "2"}),
    ("POST", "/read", {"seq": 0}),
    ("POST", "/read", {"seq": 2.5}),
    ("POST", "/read", {}),
    ("POST", "/transfer", {"user_id": ["usr_x"]}),
    ("PATCH", "/events/2", {"text": ""}),
    ("PATCH", "/events/2", {"text": "长" * 5001}),
])
async def test_wrong_types_and_values_are_refused(demo, group, method, path, body):
    await refused(demo, "zhangwei", "request.invalid", method, f"{BASE}/{group}{path}", body)


# ---- messages -------------------------------------------------------------------------------------


@pytest.mark.parametrize("message", [
    {"kind": "text", "text": "长" * 5001},
    {"kind": "text", "text": "   "},
    {"kind": "text"},
    {"kind": "text", "text": "a\x00b"},
    {"kind": "forward", "text": "转发"},
    {"kind": "voice", "text": "语音"},
    {"kind": "card", "text": "没有卡片"},
    {"kind": "text", "text": "hi", "mentions": ["usr_a", "usr_a"]},
    {"kind": "text", "text": "hi", "mentions": ["usr_a"] * 51},
])
async def test_bad_messages_are_refused(demo, group, message):
    await refused(demo, "liuyang", "request.invalid", "POST", f"{BASE}/{group}/messages",
                  {"client_msg_id": "input-1", "message": message})


async def test_the_longest_text_is_accepted(demo, group):
    await send(demo, "liuyang", group, "长" * 5000)


@pytest.mark.parametrize("client_msg_id", ["", "有中文", "a b", "a/b", "x" * 65, "semi;colon", "new\nline"])
async def test_client_msg_ids_with_bad_characters_are_refused(demo, group, client_msg_id):
    await refused(demo, "liuyang", "request.invalid", "POST", f"{BASE}/{group}/messages",
                  text_message(client_msg_id=client_msg_id))


@pytest.mark.parametrize("body", [
    {"client_msg_id": "fw-1", "source_conversation_id": "GROUP", "seqs": []},
    {"client_msg_id": "fw-1", "source_conversation_id": "GROUP", "seqs": [0]},
    {"client_msg_id": "fw-1", "source_conversation_id": "GROUP", "seqs": list(range(1, 102))},
    {"client_msg_id": "fw-1", "source_conversation_id": "GROUP", "seqs": [2], "mode": "all"},
    {"client_msg_id": "fw-1", "source_conversation_id": "GROUP", "seqs": [1, 2], "mode": "single"},
    {"client_msg_id": "fw-1", "seqs": [2]},
])
async def test_bad_forwards_are_refused(demo, group, body):
    if "source_conversation_id" in body:  # "GROUP" stands for the fixture's group
        body = {**body, "source_conversation_id": group}
    await refused(demo, "liuyang", "request.invalid", "POST", f"{BASE}/{group}/forward", body)


# ---- seq in the path and in queries ------------------------------------------------------------------


@pytest.mark.parametrize("seq", ["0", "-1", "abc", "1.5", "1e3", "02", "99999999999999999999", "%20"])
@pytest.mark.parametrize("method, suffix, body", [
    ("PATCH", "", {"text": "改"}), ("POST", "/recall", None), ("POST", "/hide", None), ("GET", "/receipts", None)])
async def test_a_seq_in_the_path_must_be_a_positive_integer(demo, group, seq, method, suffix, body):
    answer = await refused(demo, "liuyang", "request.invalid", method, f"{BASE}/{group}/events/{seq}{suffix}", body)
    assert "seq" in answer["error"]["message"]


@pytest.mark.parametrize("method, suffix, body, code", [
    ("PATCH", "", {"text": "改"}, "not_found"), ("POST", "/recall", None, "not_found"),
    ("POST", "/hide", None, "not_found"), ("GET", "/receipts", None, "not_found")])
async def test_a_seq_from_the_future_is_not_found(demo, group, method, suffix, body, code):
    await refused(demo, "liuyang", code, method, f"{BASE}/{group}/events/99{suffix}", body)


async def test_reading_a_seq_from_the_future_is_out_of_range(demo, group):
    body = await refused(demo, "liuyang", "message.seq_out_of_range", "POST", f"{BASE}/{group}/read", {"seq": 3})
    assert body["error"]["details"]["last_seq"] == 2


@pytest.mark.parametrize("params, code", [
    ({"after": 3}, "message.seq_out_of_range"),
    ({"before": 4}, "message.seq_out_of_range"),
    ({"before": 0}, "request.invalid"),
    ({"after": -1}, "request.invalid"),
    ({"after": "abc"}, "request.invalid"),
    ({"before": 2, "after": 1}, "request.invalid"),
    ({"limit": 0}, "request.invalid"),
    ({"limit": 201}, "request.invalid"),
    ({"since": 1}, "request.invalid"),
])
async def test_bad_history_queries_are_refused(demo, group, params, code):
    await refused(demo, "liuyang", code, "GET", f"{BASE}/{group}/events", params=params)


async def test_history_at_the_edges_answers_empty_pages(demo, group):
    assert (await ok(demo, "liuyang", "GET", f"{BASE}/{group}/events", params={"after": 2}))["events"] == []
    assert (await ok(demo, "liuyang", "GET", f"{BASE}/{group}/events", params={"before": 1}))["events"] == []


@pytest.mark.parametrize("params", [{"which": "everyone"}, {"limit": 0}, {"after": ""}, {"sort": "name"}])
async def test_bad_receipt_queries_are_refused(demo, group, params):
    await refused(demo, "liuyang", "request.invalid", "GET", f"{BASE}/{group}/events/2/receipts", params=params)


# ---- member lists -----------------------------------------------------------------------------------


async def test_empty_member_lists_are_refused(demo, group):
    await refused(demo, "zhangwei", "request.invalid", "POST", f"{BASE}/groups", {"name": "群", "member_ids": []})
    await refused(demo, "zhangwei", "request.invalid", "POST", f"{BASE}/{group}/members", {"user_ids": []})


async def test_more_than_500_user_ids_at_once_are_refused(demo, group):
    ids = [f"usr_{i:012d}" for i in range(501)]
    await refused(demo, "zhangwei", "request.invalid", "POST", f"{BASE}/groups", {"name": "大群", "member_ids": ids})
    await refused(demo, "zhangwei", "request.invalid", "POST", f"{BASE}/{group}/members", {"user_ids": ids})


async def test_user_ids_that_are_too_long_are_refused(demo, group):
    await refused(demo, "zhangwei", "request.invalid", "POST", f"{BASE}/{group}/members", {"user_ids": ["u" * 41]})
    await refused(demo, "zhangwei", "request.invalid", "GET", f"{BASE}/{group}/members", params={"after": "u" * 41})
