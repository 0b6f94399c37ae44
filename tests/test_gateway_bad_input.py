"""Bad input on the WebSocket: every frame the gateway cannot serve is answered with a coded error
(carrying the request id when one could be read) or closes the socket with a reason — and nothing is
stored. Also the limits that protect the server: frame size, frame rate, in-flight requests and the
bounded send queue of a slow consumer."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import pytest
from aiohttp import WSMsgType

from messaging_support import (RawSocket, closed_with, direct_between, eventually, events_stored, group_of,
                               principal)

from xietong.server.app import GATEWAY_KEY
from xietong.server.gateway.connection import Connection
from xietong.server.gateway.frames import MAX_FRAME_BYTES
from xietong.server.messaging.models import Message


def send(cid: str, **message: Any) -> dict[str, Any]:
    return {"type": "send", "conversation_id": cid, "client_msg_id": "m1", "message": {"kind": "text", **message}}


def text(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False)


async def answers_to(sock: RawSocket, request_ids: list[str], timeout: float = 10) -> list[dict[str, Any]]:
    """The answers to requests sent without waiting, in the order of ``request_ids`` (requests of one
    socket run concurrently, so answers may arrive in another order)."""
    answers: dict[str, dict[str, Any]] = {}
    while len(answers) < len(request_ids):
        frame = await sock.ws.receive_json(timeout=timeout)
        if frame["type"] in ("result", "error"):
            assert frame["id"] not in answers, f"answered twice: {frame}"
            answers[frame["id"]] = frame
    return [answers[i] for i in request_ids]


@pytest.fixture
async def room(demo):
    """A group of three in one office, with zhangwei (its owner) connected."""
    cid = await group_of(demo, "zhangwei", ["liuyang", "chenjing"])
    sock = await RawSocket.open(demo, "zhangwei")
    yield cid, sock
    await sock.close()


# Frames that must be refused: (raw text, the id the error must carry, the error code).
BAD_FRAMES: dict[str, Callable[[str], tuple[str, str | None, str]]] = {
    "malformed_json": lambda cid: ('{"type": "ping", "id": "x1"', None, "request.malformed_json"),
    "json_array": lambda cid: (text([{"type": "ping", "id": "x1"}]), None, "request.invalid"),
    "json_string": lambda cid: ('"ping"', None, "request.invalid"),
    "unknown_type": lambda cid: (text({"type": "shout", "id": "x1"}), "x1", "request.invalid"),
    "missing_type": lambda cid: (text({"id": "x1"}), "x1", "request.invalid"),
    "missing_id": lambda cid: (text(send(cid, text="没有编号")), None, "request.invalid"),
    "oversize_id": lambda cid: (text({"type": "ping", "id": "x" * 65}), None, "request.invalid"),
    "unknown_field": lambda cid: (text({**send(cid, text="hi"), "id": "x1", "priority": 9}), "x1", "request.invalid"),
    "missing_message": lambda cid: (text({"type": "send", "id": "x1", "conversation_id": cid,
                                          "client_msg_id": "m1"}), "x1", "request.invalid"),
    "text_of_5001_chars": lambda cid: (text({**send(cid, text="长" * 5001), "id": "x1"}), "x1", "request.invalid"),
    "blank_text": lambda cid: (text({**send(cid, text="   "), "id": "x1"}), "x1", "request.invalid"),
    "51_mentions": lambda cid: (text({**send(cid, text="@", mentions=[f"u{i}" for i in range(51)]), "id": "x1"}),
                                "x1", "request.invalid"),
    "client_msg_id_with_spaces": lambda cid: (text({**send(cid, text="hi"), "client_msg_id": "my message",
                                                    "id": "x1"}), "x1", "request.invalid"),
    "text_as_number": lambda cid: (text({**send(cid), "message": {"kind": "text", "text": 42}, "id": "x1"}),
                                   "x1", "request.invalid"),
    "card_without_card": lambda cid: (text({**send(cid), "message": {"kind": "card"}, "id": "x1"}),
                                      "x1", "request.invalid"),
    "read_seq_0": lambda cid: (text({"type": "read", "id": "x1", "conversation_id": cid, "seq": 0}),
                               "x1", "request.invalid"),
    "read_negative_seq": lambda cid: (text({"type": "read", "id": "x1", "conversation_id": cid, "seq": -3}),
                                      "x1", "request.invalid"),
    "read_seq_as_string": lambda cid: (text({"type": "read", "id": "x1", "conversation_id": cid, "seq": "1"}),
                                       "x1", "request.invalid"),
    "history_before_and_after": lambda cid: (text({"type": "history", "id": "x1", "conversation_id": cid,
                                                   "before": 2, "after": 0}), "x1", "request.invalid"),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
async def test_a_bad_frame_is_answered_with_a_coded_error_and_nothing_is_stored(demo, room, case):
    cid, sock = room
    before = await events_stored(demo, cid)
    raw, request_id, code = BAD_FRAMES[case](cid)
    await sock.ws.send_str(raw)
    answer = await sock.answer(request_id)
    assert (answer["type"], answer["error"]["code"]) == ("error", code), answer
    assert answer["id"] == request_id
    assert await events_stored(demo, cid) == before
    # The socket stays open and keeps serving.
    assert (await sock.request({"type": "ping"}))["type"] == "result"


async def test_a_frame_of_exactly_64_kib_is_read_and_answered(demo, room):
    cid, sock = room
    frame = text({"type": "ping", "id": "big", "pad": ""})
    await sock.ws.send_str(frame.replace('"pad": ""', '"pad": "' + "x" * (MAX_FRAME_BYTES - len(frame)) + '"'))
    answer = await sock.answer("big")
    assert answer["error"]["code"] == "request.invalid"  # an unknown field, but read in full


async def test_a_frame_over_64_kib_closes_the_socket_with_1009(demo, room):
    cid, sock = room
    before = await events_stored(demo, cid)
    await sock.ws.send_str(text({**send(cid, text="长" * MAX_FRAME_BYTES), "id": "huge"}))
    assert (await closed_with(sock.ws))[0] == 1009
    assert await events_stored(demo, cid) == before


async def test_a_binary_frame_closes_the_socket_with_4010(demo, room):
    cid, sock = room
    before = await events_stored(demo, cid)
    await sock.ws.send_bytes(text({**send(cid, text="二进制"), "id": "b1"}).encode())
    code, reason = await closed_with(sock.ws)
    assert code == 4010 and "binary" in reason
    assert await events_stored(demo, cid) == before


async def test_a_second_auth_frame_is_refused_and_the_socket_stays_authenticated(demo, room):
    cid, sock = room
    answer = await sock.request({"type": "auth", "id": "again", "token": await demo.token("liuyang")})
    assert (answer["id"], answer["error"]["code"]) == ("again", "request.invalid")
    sent = await sock.request(send(cid, text="我还是张伟"))
    assert sent["result"]["event"]["sender_id"] == demo.user("zhangwei")


# ---- seqs and conversations that do not exist for the caller -------------------------------------------


@pytest.mark.parametrize("frame", [
    {"type": "read", "seq": 99}, {"type": "delivered", "seq": 99},
    {"type": "history", "after": 99}, {"type": "history", "before": 99},
], ids=["read", "delivered", "history_after", "history_before"])
async def test_a_seq_beyond_the_log_is_out_of_range(demo, room, frame):
    cid, sock = room
    await sock.request(send(cid, text="第一条"))
    await demo.server.services.messages.send(principal(demo, "liuyang"), cid, "l1", Message(kind="text", text="第二条"))
    before = await events_stored(demo, cid)

    def my_entry(synced: dict[str, Any]) -> dict[str, Any]:
        return next(c for c in synced["result"]["conversations"] if c["id"] == cid)

    state = my_entry(await sock.request({"type": "sync"}))
    answer = await sock.request({**frame, "conversation_id": cid})
    assert answer["error"]["code"] == "message.seq_out_of_range"
    assert answer["error"]["details"] == {"last_seq": before}
    after = my_entry(await sock.request({"type": "sync"}))
    assert (after["read_seq"], after["unread"]) == (state["read_seq"], state["unread"]) == (2, 1)
    assert await events_stored(demo, cid) == before


async def test_sync_since_a_future_seq_reports_that_conversation_in_errors(demo, room):
    cid, sock = room
    other = await direct_between(demo, "zhangwei", "liuyang")
    answer = await sock.request({"type": "sync", "since": {cid: 99, other: 0, "no-such-conversation": 0}})
    result = answer["result"]
    assert result["errors"][cid]["code"] == "message.seq_out_of_range"
    assert result["errors"]["no-such-conversation"]["code"] == "not_found"
    # The conversation the device holds correctly is served as usual.
    assert other not in result["errors"] and [e["seq"] for e in result["events"][other]] == [1]


async def test_sending_into_a_conversation_one_is_not_in_is_not_found(demo, room):
    cid, _ = room
    outsider = await RawSocket.open(demo, "wuqiang")
    try:
        before = await events_stored(demo, cid)
        typing = {"type": "typing", "conversation_id": cid}
        for frame in (send(cid, text="我也想说两句"), {"type": "history", "conversation_id": cid}, typing, typing,
                      {"type": "receipts", "conversation_id": cid, "seq": 1}):
            answer = await outsider.request(frame)
            assert answer["error"]["code"] == "not_found", frame
        assert await events_stored(demo, cid) == before
    finally:
        await outsider.close()


async def test_guessing_another_pairs_direct_chat_id_is_not_found(demo, room):
    _, sock = room
    theirs = await direct_between(demo, "liuyang", "chenjing")
    before = await events_stored(demo, theirs)
    for frame in (send(theirs, text="打扰了"), {"type": "history", "conversation_id": theirs},
                  {"type": "read", "conversation_id": theirs, "seq": 1},
                  {"type": "sync", "since": {theirs: 0}}):
        answer = await sock.request(frame)
        code = answer["result"]["errors"][theirs]["code"] if frame["type"] == "sync" else answer["error"]["code"]
        assert code == "not_found", frame
    assert await events_stored(demo, theirs) == before


# ---- limits -----------------------------------------------------------------------------------------


async def test_frames_beyond_the_rate_are_refused_and_a_flood_closes_the_socket_4008(demo, monkeypatch):
    monkeypatch.setattr(Connection, "FRAME_BURST", 5)
    monkeypatch.setattr(Connection, "FRAME_RATE", 0.01)  # no token comes back during the test
    monkeypatch.setattr(Connection, "FLOOD_LIMIT", 10)
    sock = await RawSocket.open(demo, "zhangwei")
    try:
        for i in range(8):
            await sock.ws.send_json({"type": "ping", "id": f"p{i}"})
        answers = await answers_to(sock, [f"p{i}" for i in range(8)])
        assert [a["type"] for a in answers] == ["result"] * 5 + ["error"] * 3
        assert {a["error"]["code"] for a in answers[5:]} == {"request.rate_limited"}
        assert answers[5]["error"]["details"]["retry_after"] >= 1
        # Keep flooding: the tenth refused frame closes the socket.
        for i in range(8, 20):
            await sock.ws.send_json({"type": "ping", "id": f"p{i}"})
        code, reason = await closed_with(sock.ws)
        assert code == 4008 and "flooding" in reason
    finally:
        await sock.close()


async def test_more_requests_than_the_in_flight_limit_are_all_answered_in_order(demo, monkeypatch):
    monkeypatch.setattr("xietong.server.gateway.handler.MAX_IN_FLIGHT", 3)
    cid = await group_of(demo, "zhangwei", ["liuyang"])
    sock = await RawSocket.open(demo, "zhangwei")
    try:
        for i in range(15):
            await sock.ws.send_json({"id": f"s{i}", **send(cid, text=f"第{i}条"), "client_msg_id": f"c{i}"})
        answers = await answers_to(sock, [f"s{i}" for i in range(15)])
        events = [a["result"]["event"] for a in answers]
        # One device's messages keep the order they were sent in.
        assert [e["message"]["text"] for e in sorted(events, key=lambda e: e["seq"])] == [f"第{i}条" for i in range(15)]
    finally:
        await sock.close()


async def flood_until_closed(demo, cid: str, conn: Connection) -> int:
    """Send big messages into ``cid`` until ``conn`` is closed; how many were sent."""
    me, sent = principal(demo, "zhangwei"), 0
    while not conn.closed and sent < 3000:  # they fill the socket buffers first, then the send queue
        await demo.server.services.messages.send(me, cid, f"c{sent}", Message(kind="text", text="报" * 5000))
        sent += 1
    return sent


async def test_a_slow_consumer_is_closed_4009_and_its_queue_released(demo, monkeypatch):
    monkeypatch.setattr("xietong.server.gateway.connection.MAX_QUEUED_FRAMES", 50)
    cid = await group_of(demo, "zhangwei", ["liuyang", "chenjing"])
    hub = demo.server.runner.app[GATEWAY_KEY].hub
    slow = await RawSocket.open(demo, "chenjing")
    await slow.request({"type": "ping"})  # and then reads nothing for a while
    conn = next(c for c in hub.devices.values() if c.user_id == demo.user("chenjing"))
    reader = await RawSocket.open(demo, "liuyang")
    received: list[dict[str, Any]] = []

    async def keep_reading() -> None:
        while (msg := await reader.ws.receive()).type == WSMsgType.TEXT:
            received.append(json.loads(msg.data))

    reading = asyncio.get_running_loop().create_task(keep_reading())
    try:
        sent = await flood_until_closed(demo, cid, conn)
        assert conn.close_reason.startswith("slow consumer")
        assert (len(conn.queue), conn.queued_bytes) == (0, 0)
        await demo.server.services.messages.send(principal(demo, "zhangwei"), cid, "after", Message(
            kind="text", text="还在吗"))
        assert len(conn.queue) == 0  # nothing more is queued for it
        # When it reads again it finds the close and its reason (then it reconnects and syncs).
        code, reason = await closed_with(slow.ws, timeout=30)
        assert code == 4009 and "slow consumer" in reason
        await eventually(lambda: conn.device_id not in hub.devices)
        # A member who keeps up received everything and stays connected.
        await eventually(lambda: sum(1 for f in received if f["type"] == "event") == sent + 1)
        assert not reader.ws.closed
    finally:
        reading.cancel()
        await slow.close()
        await reader.close()


async def test_a_consumer_that_never_reads_again_is_cut_off_after_the_close_timeout(demo, monkeypatch):
    monkeypatch.setattr("xietong.server.gateway.connection.MAX_QUEUED_FRAMES", 50)
    monkeypatch.setattr("xietong.server.gateway.connection.CLOSE_TIMEOUT", 0.5)
    cid = await group_of(demo, "zhangwei", ["chenjing"])
    hub = demo.server.runner.app[GATEWAY_KEY].hub
    stuck = await RawSocket.open(demo, "chenjing")
    await stuck.request({"type": "ping"})  # and never reads again
    conn = next(c for c in hub.devices.values() if c.user_id == demo.user("chenjing"))
    try:
        await flood_until_closed(demo, cid, conn)
        # The close frame cannot reach a peer that reads nothing: the server lets go of it anyway.
        await eventually(lambda: conn.device_id not in hub.devices and demo.user("chenjing") not in
                         hub.user_connections, timeout=10)
        assert conn.ws.closed
    finally:
        await stuck.close()
