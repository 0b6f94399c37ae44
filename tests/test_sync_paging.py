"""A device far behind catches up in bounded answers: no sync answer outgrows the socket."""

from __future__ import annotations

import asyncio

import pytest
from messaging_support import RawSocket, client_for, group_of, principal

from xietong.server.messaging import messages, sync
from xietong.server.messaging.models import Message


@pytest.fixture
def small_budgets(monkeypatch):
    monkeypatch.setattr(sync, "MAX_SYNC_BYTES", 60_000)
    monkeypatch.setattr(sync, "PAGE_BYTES", 40_000)


async def _fill(demo, cid: str, count: int, text: str) -> None:
    me = principal(demo, "zhangwei")
    for n in range(count):
        await demo.server.services.messages.send(me, cid, f"{cid}-{n}", Message(kind="text", text=f"{n}:{text}"))


async def test_a_large_catch_up_comes_in_bounded_answers_and_converges(demo, small_budgets):
    long_text = "防汛值班安排" * 800  # ~14 KB of JSON per message
    first = await group_of(demo, "zhangwei", ["huangjian"], "一组")
    second = await group_of(demo, "zhangwei", ["huangjian"], "二组")
    await asyncio.gather(_fill(demo, first, 12, long_text), _fill(demo, second, 12, long_text))

    sock = await RawSocket.open(demo, "huangjian")
    try:
        since = {first: 0, second: 0}
        held: dict[str, list[int]] = {first: [], second: []}
        rounds = 0
        while True:
            rounds += 1
            answer = (await sock.request({"type": "sync", "since": since, "limit": 500}))["result"]
            size = sum(len(str(e)) for events in answer["events"].values() for e in events)
            assert size < 3 * 60_000, "an answer outgrew its budget"
            for cid, events in answer["events"].items():
                held[cid] += [e["seq"] for e in events]
                since[cid] = answer["through"][cid]
            if not any(answer["has_more"].values()):
                break
            assert rounds < 50
    finally:
        await sock.close()
    assert rounds > 2  # it really was paged
    for cid in (first, second):
        assert held[cid] == list(range(1, 14)), "every event exactly once, in order"


async def test_a_history_page_is_cut_at_its_byte_limit_but_holds_at_least_one_event(demo, monkeypatch):
    monkeypatch.setattr(messages, "MAX_PAGE_BYTES", 20_000)
    cid = await group_of(demo, "zhangwei", ["huangjian"])
    await _fill(demo, cid, 6, "长" * 5000)  # each event is larger than the whole page budget
    sock = await RawSocket.open(demo, "huangjian")
    try:
        newest = (await sock.request({"type": "history", "conversation_id": cid, "limit": 50}))["result"]
        oldest = (await sock.request({"type": "history", "conversation_id": cid, "after": 0, "limit": 50}))["result"]
    finally:
        await sock.close()
    assert [e["seq"] for e in newest["events"]] == [7] and newest["first"] == 7 and newest["has_more"] is True
    assert [e["seq"] for e in oldest["events"]][0] == 1 and oldest["has_more"] is True


async def test_the_sdk_pages_through_a_bounded_sync_by_itself(demo, small_budgets):
    cid = await group_of(demo, "zhangwei", ["huangjian"])
    await _fill(demo, cid, 10, "通知" * 3000)
    client = await client_for(demo, "huangjian")
    try:
        assert [e["seq"] for e in client.logs[cid].ordered()] == list(range(1, 12))
    finally:
        await client.close()
