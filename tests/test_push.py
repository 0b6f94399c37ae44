"""Push notifications through the real firebase-admin SDK, against a local fake FCM."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from conftest import make_settings
from messaging_support import RawSocket, direct_between, eventually, group_of, principal
from push_support import FakeFcm, service_account

from xietong.server.messaging.models import Message
from xietong.server.push import rules, service as push_service
from xietong.server.push.providers import FcmProvider, Outgoing


@pytest.fixture
async def fcm():
    fake = await FakeFcm().start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def previews() -> bool:
    return False


@pytest.fixture
def settings(mongo_url, db_name, tmp_path, keys_dir, fcm, previews):
    credentials = service_account(tmp_path, fcm.url + "/token")
    return make_settings(mongo_url, db_name, tmp_path, keys_dir, fcm_credentials=credentials, fcm_url=fcm.url,
                         push_previews=previews)


async def register(demo, username: str, token: str, platform: str = "android") -> dict:
    """Sign a phone of ``username`` in and register its push token; returns the login answer."""
    login = await demo.api.login(username)
    status, body = await demo.api.put("/v1/me/push", {"token": token, "platform": platform, "app_version": "2.1.0"},
                                      token=login["access_token"])
    assert status == 200, body
    return login


async def send(demo, sender: str, cid: str, text: str, **fields) -> int:
    written = await demo.server.services.messages.send(principal(demo, sender), cid, f"{cid}-{text}",
                                                       Message(kind="text", text=text, **fields))
    return written.event.seq


async def planned(demo, key: str, count: int = 1) -> None:
    """Wait until the push planner has counted ``count`` of ``key`` (e.g. a rule that held one back)."""
    metrics = demo.server.services.push.metrics
    await eventually(lambda: metrics[key] >= count)


def test_the_private_sdk_hooks_the_fake_relies_on_are_still_there():
    """The fake FCM is reached through two private SDK details; if a new firebase-admin moves them,
    this fails first and says so."""
    from firebase_admin import messaging

    url = getattr(messaging._MessagingService, "FCM_URL", None)
    assert isinstance(url, str) and "{0}" in url and url.endswith("messages:send"), \
        "firebase_admin.messaging._MessagingService.FCM_URL moved: update FcmProvider and the pinned version"
    assert hasattr(messaging, "send_each_async")


async def test_an_offline_recipient_gets_a_private_notification(demo, fcm):
    await register(demo, "huangjian", "tok-huangjian-phone")
    cid = await direct_between(demo, "zhangwei", "huangjian")
    seq = await send(demo, "zhangwei", cid, "晚上八点前报送汛情")
    [message] = await fcm.wait_accepted(1)
    assert message["token"] == "tok-huangjian-phone"
    android = message["android"]
    assert android["notification"]["title"] == "张伟" and "汛情" not in android["notification"]["body"]
    assert android["notification"]["tag"] == cid  # one notification per conversation
    assert android["notification"]["notification_count"] == 1  # badge = unread total
    assert android["priority"] == "normal" and android["ttl"] == "86400s"
    apns = message["apns"]
    assert apns["headers"]["apns-collapse-id"] == cid and apns["payload"]["aps"]["badge"] == 1
    assert "汛情" not in json_text(message)  # the text is nowhere in the push
    assert message["data"] == {"type": "message", "conversation_id": cid, "seq": str(seq),
                               "event_id": f"{cid}:{seq:012d}", "title": "张伟", "body": "发来一条消息"}


def json_text(value) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize("previews", [True])
async def test_previews_show_the_text_when_the_organisation_allows_them(demo, fcm, previews):
    await register(demo, "huangjian", "tok-huangjian-phone")
    cid = await group_of(demo, "zhangwei", ["huangjian"], "防汛群")
    await send(demo, "zhangwei", cid, "晚上八点前报送汛情")
    [message] = await fcm.wait_accepted(1)
    assert message["android"]["notification"]["title"] == "防汛群"
    assert message["android"]["notification"]["body"] == "张伟: 晚上八点前报送汛情"


async def test_no_push_while_the_app_is_in_the_foreground_but_one_in_the_background(demo, fcm):
    login = await register(demo, "huangjian", "tok-huangjian-phone")
    cid = await direct_between(demo, "zhangwei", "huangjian")
    phone = await RawSocket.open(demo, None, headers={"Authorization": f"Bearer {login['access_token']}"},
                                 hello=False)
    try:
        await phone.push("hello")
        await eventually(lambda: demo.server.services.presence.idle)
        await send(demo, "zhangwei", cid, "在吗")
        await planned(demo, "skipped_in_foreground")
        await phone.request({"type": "presence", "state": "away"})  # the app goes to the background
        await send(demo, "zhangwei", cid, "请回电")
        [message] = await fcm.wait_accepted(1)
        assert message["token"] == "tok-huangjian-phone"
    finally:
        await phone.close()


async def test_a_muted_conversation_is_silent_except_for_mentions_and_urgent_messages(demo, fcm):
    await register(demo, "huangjian", "tok-huangjian-phone")
    cid = await group_of(demo, "zhangwei", ["huangjian", "liuyang"])
    status, _ = await demo.api.put(f"/v1/conversations/{cid}/preferences", {"muted": True},
                                   token=await demo.token("huangjian"))
    assert status == 200
    await send(demo, "zhangwei", cid, "闲聊")
    await planned(demo, "skipped_muted")
    await send(demo, "zhangwei", cid, "请黄厅长确认", mentions=[demo.user("huangjian")])
    await send(demo, "zhangwei", cid, "紧急：堤坝险情", urgent=True)
    first, second = await fcm.wait_accepted(2)
    assert first["android"]["notification"]["body"] == "张伟在群里@了你"
    assert first["android"]["priority"] == "high"
    assert second["android"]["notification"]["body"].startswith("[紧急] ")


async def test_do_not_disturb_hours_hold_everything_but_urgent_messages(demo, fcm):
    await register(demo, "huangjian", "tok-huangjian-phone")
    now = datetime.now(ZoneInfo("Asia/Shanghai"))
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    status, body = await demo.api.put("/v1/me/notification-settings",
                                      {"dnd_start": f"{start:%H:%M}", "dnd_end": f"{end:%H:%M}"},
                                      token=await demo.token("huangjian"))
    assert status == 200 and body["timezone"] == "Asia/Shanghai"
    cid = await direct_between(demo, "zhangwei", "huangjian")
    await send(demo, "zhangwei", cid, "明早再说")
    await planned(demo, "skipped_do_not_disturb")
    await send(demo, "zhangwei", cid, "险情升级", urgent=True)
    [message] = await fcm.wait_accepted(1)
    assert message["android"]["notification"]["body"].startswith("[紧急] ")


def test_do_not_disturb_hours_cross_midnight_in_the_users_time_zone():
    settings = rules.NotificationSettings(dnd_start="22:00", dnd_end="07:00", timezone="Asia/Shanghai")
    at = lambda h, m=0: datetime(2026, 11, 21, h, m, tzinfo=ZoneInfo("Asia/Shanghai")).astimezone(timezone.utc)
    assert rules.in_do_not_disturb(settings, at(23))
    assert rules.in_do_not_disturb(settings, at(6, 59))
    assert not rules.in_do_not_disturb(settings, at(7))
    assert not rules.in_do_not_disturb(settings, at(12))
    assert not rules.in_do_not_disturb(rules.NotificationSettings(), at(23))


async def test_bad_notification_settings_are_refused(demo):
    token = await demo.token("huangjian")
    for body in ({"dnd_start": "25:00", "dnd_end": "07:00"}, {"dnd_start": "22:00"},
                 {"dnd_start": "22:00", "dnd_end": "07:00", "timezone": "Mars/Olympus"}, {"volume": 3}):
        status, answer = await demo.api.put("/v1/me/notification-settings", body, token=token)
        assert (status, answer["error"]["code"]) == (400, "request.invalid"), body
    status, answer = await demo.api.put("/v1/me/push", {"token": "x", "platform": "symbian"}, token=token)
    assert (status, answer["error"]["code"]) == (400, "request.invalid")


async def test_every_member_but_the_sender_is_notified_on_each_of_their_devices(demo, fcm):
    for username, token in [("huangjian", "tok-huang-1"), ("huangjian", "tok-huang-2"), ("liuyang", "tok-liu-1"),
                            ("zhangwei", "tok-zhang-1")]:
        await register(demo, username, token)
    cid = await group_of(demo, "zhangwei", ["huangjian", "liuyang"])
    await send(demo, "zhangwei", cid, "周五例会")
    accepted = await fcm.wait_accepted(3)
    assert sorted(m["token"] for m in accepted) == ["tok-huang-1", "tok-huang-2", "tok-liu-1"]


async def test_a_token_fcm_reports_unregistered_is_removed(demo, fcm):
    login = await register(demo, "huangjian", "tok-uninstalled")
    fcm.unregistered.add("tok-uninstalled")
    cid = await direct_between(demo, "zhangwei", "huangjian")
    await send(demo, "zhangwei", cid, "收到请回复")
    await planned(demo, "invalid_token")
    device = await demo.server.services.store.devices.get(login["device_id"])
    assert device.push is None and fcm.accepted == []
    await send(demo, "zhangwei", cid, "再发一条")
    await planned(demo, "no_device")  # the recipient has no push device left
    assert await demo.server.services.store.push.outbox.count_documents({"token": "tok-uninstalled"}) == 1


async def test_a_transient_failure_is_retried_with_back_off(demo, fcm, monkeypatch):
    monkeypatch.setattr(push_service, "BACKOFF_BASE_SECONDS", 0.05)
    await register(demo, "huangjian", "tok-huangjian-phone")
    fcm.unavailable = 2
    cid = await direct_between(demo, "zhangwei", "huangjian")
    await send(demo, "zhangwei", cid, "网络抖动")
    [message] = await fcm.wait_accepted(1)
    assert message["token"] == "tok-huangjian-phone"
    assert demo.server.services.push.metrics["retry"] == 2 and fcm.requests == 3
    outbox = demo.server.services.store.push.outbox
    doc = await eventually(lambda: outbox.find_one({"token": "tok-huangjian-phone", "state": "sent"}))
    assert doc["attempts"] == 2


async def test_quota_exceeded_pauses_the_sender_then_delivers(demo, fcm, monkeypatch):
    monkeypatch.setattr(push_service, "QUOTA_PAUSE_SECONDS", 0.4)
    await register(demo, "huangjian", "tok-huangjian-phone")
    fcm.quota = 1
    cid = await direct_between(demo, "zhangwei", "huangjian")
    await send(demo, "zhangwei", cid, "配额")
    await planned(demo, "quota")
    refused_at = datetime.now(timezone.utc).timestamp()
    [message] = await fcm.wait_accepted(1)
    assert message["at"] - refused_at >= 0.3  # it waited out the pause before trying again


async def test_signing_out_removes_the_devices_token(demo, fcm):
    login = await register(demo, "huangjian", "tok-huangjian-phone")
    status, _ = await demo.api.post("/v1/auth/logout", token=login["access_token"])
    assert status == 204
    device = await demo.server.services.store.devices.get(login["device_id"])
    assert device.push is None


async def test_incoming_calls_are_high_priority_data_pushes_with_a_short_ttl(settings, fcm):
    provider = FcmProvider(settings.fcm_credentials, endpoint=settings.fcm_url)
    call = rules.compose_call("call_1", "cnv_x", "张伟", "video")
    outcomes = []

    async def record(outcome) -> None:
        outcomes.append(outcome)

    await provider.send([Outgoing("d1", "tok-callee", "android", call)], record)
    assert [o.status for o in outcomes] == ["sent"]
    [message] = fcm.accepted
    assert "notification" not in message and "notification" not in message["android"]
    assert message["android"]["priority"] == "high" and message["android"]["ttl"] == "30s"
    assert message["apns"]["headers"]["apns-priority"] == "10"
    assert message["data"]["type"] == "call" and message["data"]["media"] == "video"


async def test_push_figures_are_for_system_administrators(demo, fcm):
    status, body = await demo.api.get("/v1/admin/push", token=await demo.token("admin"))
    assert status == 200 and body["this_process_sends"] is True and "pending" in body["queue"]
    status, body = await demo.api.get("/v1/admin/push", token=await demo.token("zhangwei"))
    assert (status, body["error"]["code"]) == (403, "perm.forbidden")


async def test_the_push_device_index_follows_registration_logout_and_is_rebuilt(demo):
    store = demo.server.services.store
    login = await register(demo, "huangjian", "tok-index-phone")
    index = store.devices.push_index
    assert await index.find_one({"_id": login["device_id"]}) == {"_id": login["device_id"],
                                                                 "user_id": demo.user("huangjian")}
    assert [d.id for d in await store.devices.push_targets([demo.user("huangjian")])] == [login["device_id"]]
    # Data written before the index existed: rebuilt at start-up.
    await index.delete_many({})
    assert await store.devices.rebuild_push_index() == 1
    assert await store.devices.rebuild_push_index() == 0
    # Logout revokes the device: gone from the index and from the targets.
    status, _ = await demo.api.post("/v1/auth/logout", {}, token=login["access_token"])
    assert status in (200, 204)
    assert await index.find_one({"_id": login["device_id"]}) is None
    assert await store.devices.push_targets([demo.user("huangjian")]) == []
