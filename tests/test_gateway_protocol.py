"""The WebSocket gateway's protocol: authenticating a socket, the Origin allow-list, one socket per
device, and requests answered by id while pushes carry none (server/gateway/handler.py)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from messaging_support import RawSocket, closed_with, direct_between, group_of

from xietong.server.gateway.frames import MAX_FRAME_BYTES


def ws_url(demo, path: str = "/v1/ws") -> str:
    return demo.server.url.replace("http", "ws", 1) + path


async def refused_upgrade(demo, *, path: str = "/v1/ws", headers: dict[str, str] | None = None) -> tuple[int, str]:
    """Try to open a socket that the server must refuse before the upgrade: (HTTP status, error code)."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(ws_url(demo, path), headers=headers or {})
        # The same request as plain HTTP shows the coded error body the upgrade was refused with.
        async with session.get(demo.server.url + path, headers=headers or {}) as response:
            body = await response.json(content_type=None)
    assert response.status == refused.value.status
    return refused.value.status, body["error"]["code"]


def bad_tokens(demo, token: str) -> dict[str, tuple[str, str]]:
    """Tokens that must not open a socket, with the code each is refused with."""
    expired = demo.server.services.issuer.issue(demo.user("zhangwei"), None, now=time.time() - 3600)
    head, payload, signature = token.split(".")
    tampered = ".".join([head, payload, ("A" if signature[0] != "A" else "B") + signature[1:]])
    return {"garbage": ("not-a-token", "auth.token_invalid"),
            "tampered": (tampered, "auth.token_invalid"),
            "expired": (expired, "auth.token_expired")}


# ---- authentication ----------------------------------------------------------------------------------


async def test_a_token_in_the_authorization_header_opens_a_socket_with_hello(demo):
    login = await demo.api.login("zhangwei")
    sock = await RawSocket.open(demo, None, headers={"Authorization": f"Bearer {login['access_token']}"})
    try:
        hello = await sock.ws.receive_json(timeout=5)
        assert hello["type"] == "hello" and "id" not in hello
        assert hello["protocol"] == 1
        assert (hello["user_id"], hello["device_id"]) == (demo.user("zhangwei"), login["device_id"])
        assert hello["heartbeat_seconds"] > 0 and hello["server_time"]
        assert hello["limits"]["max_frame_bytes"] == MAX_FRAME_BYTES
        assert {"max_in_flight", "frames_per_second", "sends_per_second"} <= set(hello["limits"])
    finally:
        await sock.close()


async def test_an_auth_frame_first_authenticates_a_socket_opened_without_a_header(demo):
    sock = await RawSocket.open(demo, None)
    try:
        answer = await sock.request({"type": "auth", "id": "login-1", "token": await demo.token("zhangwei")})
        assert answer == {"type": "result", "id": "login-1", "result": {"user_id": demo.user("zhangwei")}}
        hello = await sock.push("hello")
        assert hello["user_id"] == demo.user("zhangwei")
        assert (await sock.request({"type": "ping"}))["type"] == "result"
    finally:
        await sock.close()


@pytest.mark.parametrize("kind", ["garbage", "tampered", "expired"])
async def test_a_bad_token_in_the_auth_frame_is_answered_then_closed_4001(demo, kind):
    token, code = bad_tokens(demo, await demo.token("zhangwei"))[kind]
    sock = await RawSocket.open(demo, None)
    try:
        answer = await sock.request({"type": "auth", "id": "a1", "token": token})
        assert (answer["type"], answer["id"], answer["error"]["code"]) == ("error", "a1", code)
        assert await closed_with(sock.ws) == (4001, code)
    finally:
        await sock.close()


async def test_a_first_frame_other_than_auth_is_answered_then_closed_4001(demo):
    sock = await RawSocket.open(demo, None)
    try:
        answer = await sock.request({"type": "ping", "id": "p1"})
        assert (answer["id"], answer["error"]["code"]) == ("p1", "auth.required")
        assert (await closed_with(sock.ws))[0] == 4001
    finally:
        await sock.close()


@pytest.mark.parametrize("kind", ["garbage", "tampered", "expired"])
async def test_a_bad_token_in_the_header_is_refused_with_401_before_the_upgrade(demo, kind):
    token, code = bad_tokens(demo, await demo.token("zhangwei"))[kind]
    assert await refused_upgrade(demo, headers={"Authorization": f"Bearer {token}"}) == (401, code)


@pytest.mark.parametrize("name", ["token", "access_token", "auth"])
async def test_a_token_in_the_url_query_is_refused(demo, name):
    token = await demo.token("zhangwei")
    assert await refused_upgrade(demo, path=f"/v1/ws?{name}={token}") == (400, "request.invalid")


async def test_a_browser_origin_not_on_the_allow_list_is_refused(demo):
    token = await demo.token("zhangwei")
    assert await refused_upgrade(demo, headers={"Authorization": f"Bearer {token}",
                                                "Origin": "https://phishing.example.com"}) \
        == (403, "request.origin_forbidden")


async def test_the_servers_own_origin_is_allowed(demo):
    sock = await RawSocket.open(demo, "zhangwei", headers={"Origin": demo.server.url})
    try:
        assert (await sock.request({"type": "ping"}))["type"] == "result"
    finally:
        await sock.close()


async def test_a_socket_that_does_not_authenticate_in_time_is_closed_4002(demo, monkeypatch):
    monkeypatch.setattr("xietong.server.gateway.handler.AUTH_TIMEOUT", 0.2)
    sock = await RawSocket.open(demo, None)
    try:
        assert (await closed_with(sock.ws, timeout=5))[0] == 4002
    finally:
        await sock.close()


# ---- one socket per device ---------------------------------------------------------------------------


async def test_a_second_socket_of_the_same_device_replaces_the_first_with_4003(demo):
    cid = await direct_between(demo, "zhangwei", "huangjian")
    first = await RawSocket.open(demo, "zhangwei")
    second = await RawSocket.open(demo, "zhangwei")
    sender = await RawSocket.open(demo, "huangjian")
    try:
        assert (await closed_with(first.ws))[0] == 4003
        # The newer socket is the one that receives the device's messages now.
        await sender.request({"type": "send", "conversation_id": cid, "client_msg_id": "m1",
                              "message": {"kind": "text", "text": "收到请回复"}})
        pushed = await second.push("event")
        assert pushed["event"]["message"]["text"] == "收到请回复"
    finally:
        for sock in (first, second, sender):
            await sock.close()


async def test_a_device_reconnecting_while_its_first_socket_still_loads_is_served(demo, monkeypatch):
    """The replaced socket's load of the user's conversations is still running when the new one
    starts its own: both finish, and the new socket gets the device's messages."""
    store = demo.server.services.store.conversations
    load = store.active_conversation_ids

    async def slow_load(user_id: str):
        await asyncio.sleep(0.3)
        return await load(user_id)

    cid = await direct_between(demo, "zhangwei", "huangjian")
    monkeypatch.setattr(store, "active_conversation_ids", slow_load)
    first = await RawSocket.open(demo, "zhangwei")
    second = await RawSocket.open(demo, "zhangwei")  # while the first one's load sleeps
    monkeypatch.setattr(store, "active_conversation_ids", load)
    sender = await RawSocket.open(demo, "huangjian")
    try:
        assert (await closed_with(first.ws))[0] == 4003
        await asyncio.sleep(0.4)  # both loads are over
        await sender.request({"type": "send", "conversation_id": cid, "client_msg_id": "m1",
                              "message": {"kind": "text", "text": "重连后收到"}})
        assert (await second.push("event"))["event"]["message"]["text"] == "重连后收到"
    finally:
        for sock in (first, second, sender):
            await sock.close()


async def test_another_device_of_the_same_user_keeps_its_socket(demo):
    phone = await RawSocket.open(demo, "zhangwei")
    laptop_login = await demo.api.login("zhangwei", device={"name": "laptop"})
    laptop = await RawSocket.open(demo, None, headers={"Authorization": f"Bearer {laptop_login['access_token']}"})
    try:
        assert (await laptop.push("hello"))["device_id"] == laptop_login["device_id"]
        assert (await phone.request({"type": "ping"}))["type"] == "result"
    finally:
        await phone.close()
        await laptop.close()


async def test_signing_the_device_out_closes_its_socket_with_4004(demo):
    phone_login = await demo.api.login("zhangwei", device={"name": "phone"})
    phone = await RawSocket.open(demo, None, headers={"Authorization": f"Bearer {phone_login['access_token']}"})
    laptop = await RawSocket.open(demo, "zhangwei")
    try:
        await phone.push("hello")
        status, _ = await demo.api.post("/v1/auth/logout", token=phone_login["access_token"])
        assert status == 204
        code, reason = await closed_with(phone.ws)
        assert code == 4004 and "signed out" in reason
        # The user's other device stays connected.
        assert (await laptop.request({"type": "ping"}))["type"] == "result"
    finally:
        await phone.close()
        await laptop.close()


# ---- requests and pushes -----------------------------------------------------------------------------


async def test_ping_is_answered_with_the_server_time(demo):
    sock = await RawSocket.open(demo, "zhangwei")
    try:
        answer = await sock.request({"type": "ping", "id": "are-you-there"})
        assert (answer["type"], answer["id"]) == ("result", "are-you-there")
        assert answer["result"]["server_time"]
    finally:
        await sock.close()


async def test_every_request_is_answered_once_with_its_own_id(demo):
    cid = await group_of(demo, "zhangwei", ["liuyang"])
    sock = await RawSocket.open(demo, "zhangwei")
    try:
        requests = {
            "q-ping": {"type": "ping"},
            "q-sync": {"type": "sync", "since": {}},
            "q-history": {"type": "history", "conversation_id": cid},
            "q-send": {"type": "send", "conversation_id": cid, "client_msg_id": "c1",
                       "message": {"kind": "text", "text": "各位好"}},
            "q-missing": {"type": "history", "conversation_id": "no-such-conversation"},
            "q-typing": {"type": "typing", "conversation_id": cid},
        }
        for request_id, frame in requests.items():  # all at once, without waiting for answers
            await sock.ws.send_json({"id": request_id, **frame})
        answers: dict[str, list[dict]] = {}
        while sum(len(a) for a in answers.values()) < len(requests):
            frame = await sock.ws.receive_json(timeout=10)
            if frame["type"] in ("result", "error"):
                answers.setdefault(frame["id"], []).append(frame)
        assert set(answers) == set(requests)
        assert all(len(a) == 1 for a in answers.values())
        assert answers["q-missing"][0]["error"]["code"] == "not_found"
        assert answers["q-send"][0]["result"]["event"]["message"]["text"] == "各位好"
    finally:
        await sock.close()


async def test_pushes_carry_no_id(demo):
    cid = await direct_between(demo, "zhangwei", "huangjian")
    alice = await RawSocket.open(demo, "zhangwei")
    bob = await RawSocket.open(demo, "huangjian")
    try:
        sent = await alice.request({"type": "send", "conversation_id": cid, "client_msg_id": "m1",
                                    "message": {"kind": "text", "text": "文件已发"}})
        event = await bob.push("event")
        await bob.request({"type": "read", "conversation_id": cid, "seq": sent["result"]["event"]["seq"]})
        read = await alice.push("read")
        await bob.request({"type": "typing", "conversation_id": cid})
        typing = await alice.push("typing")
        for push in (event, read, typing):
            assert "id" not in push, push
    finally:
        await alice.close()
        await bob.close()
