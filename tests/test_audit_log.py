"""The audit log: who did what to whom, when and from where; read by auditors within their subtree."""

from __future__ import annotations

import inspect
from datetime import datetime, timedelta, timezone

import pytest

from org_support import create_user, error_code, grant, snapshot
from xietong.server.store.audit import AuditStore


async def read(demo, reader: str, **params):
    return await demo.api.get("/v1/audit", token=await demo.token(reader), params=params)


async def entries(demo, reader: str, **params) -> list[dict]:
    status, page = await read(demo, reader, limit=200, **params)
    assert status == 200, page
    return page["entries"]


async def appoint_nanning_auditor(demo) -> None:
    await create_user(demo, "nanning.admin", "南宁市", "nanning.auditor", "南宁审计员", title="审计员")
    await grant(demo, "nanning.admin", "nanning.auditor", "auditor", "南宁市")


async def test_an_admin_action_is_recorded_with_actor_action_target_origin_and_time(demo):
    token = await demo.token("nanning.admin")
    await demo.token("wuqiang")  # signed in on one device
    started = datetime.now(timezone.utc) - timedelta(seconds=1)
    status, _ = await demo.api.post(f"/v1/admin/users/{demo.user('wuqiang')}/disable", token=token,
                                    headers={"User-Agent": "xietong-admin-console/1.0"})
    assert status == 200

    [entry] = await entries(demo, "gx.auditor", action="admin.user.disable")
    assert (entry["actor_id"], entry["target_type"], entry["target_id"], entry["outcome"]) == (
        demo.user("nanning.admin"), "user", demo.user("wuqiang"), "success")
    assert entry["ip"] == "127.0.0.1"
    assert entry["user_agent"] == "xietong-admin-console/1.0"
    at = datetime.fromisoformat(entry["at"])
    assert started <= at <= datetime.now(timezone.utc) + timedelta(seconds=1)
    # Disabling signed the account out: the revocation is on record too.
    [revocation] = await entries(demo, "gx.auditor", action="auth.revoke", target_id=demo.user("wuqiang"))
    assert (revocation["actor_id"], revocation["details"]) == (
        demo.user("nanning.admin"), {"reason": "account_disabled", "devices": 1})


@pytest.mark.parametrize("action, request_", [
    ("admin.unit.create", lambda d: ("POST", "/v1/admin/units",
                                     {"name": "审计科", "level": "department", "parent_id": d.unit("青秀区")})),
    ("admin.unit.update", lambda d: ("PATCH", f"/v1/admin/units/{d.unit('青秀区')}", {"order": 3})),
    ("admin.user.create", lambda d: ("POST", "/v1/admin/users",
                                     {"username": "audited", "display_name": "审", "unit_id": d.unit("南宁市")})),
    ("admin.user.update", lambda d: ("PATCH", f"/v1/admin/users/{d.user('xuna')}", {"phone": "0771-1111111"})),
    ("admin.user.reset_password", lambda d: ("POST", f"/v1/admin/users/{d.user('xuna')}/reset-password", {})),
    ("admin.user.unlock", lambda d: ("POST", f"/v1/admin/users/{d.user('xuna')}/unlock", None)),
    ("admin.user.membership_set", lambda d: ("PUT", f"/v1/admin/users/{d.user('xuna')}/posts/{d.unit('青秀区')}", {})),
    ("admin.user.membership_remove",
     lambda d: ("DELETE", f"/v1/admin/users/{d.user('lanting')}/posts/{d.unit('南宁市人民政府办公室')}", None)),
    ("admin.role.grant", lambda d: ("POST", f"/v1/admin/users/{d.user('xuna')}/roles",
                                    {"role": "auditor", "unit_id": d.unit("青秀区")})),
])
async def test_every_admin_change_is_on_record(demo, action, request_):
    method, path, body = request_(demo)
    status, response = await demo.api.request(method, path, body, token=await demo.token("nanning.admin"))
    assert status in (200, 201, 204), response
    recorded = await entries(demo, "gx.auditor", action=action, actor_id=demo.user("nanning.admin"))
    assert len(recorded) == 1
    assert recorded[0]["ip"] == "127.0.0.1"


async def test_the_province_auditor_reads_the_whole_province(demo):
    await demo.api.post(f"/v1/admin/users/{demo.user('wuqiang')}/disable", token=await demo.token("nanning.admin"))
    await demo.api.post(f"/v1/admin/users/{demo.user('xiebin')}/disable", token=await demo.token("liuzhou.admin"))
    targets = {e["target_id"] for e in await entries(demo, "gx.auditor", action="admin.user.disable")}
    assert targets == {demo.user("wuqiang"), demo.user("xiebin")}


async def test_a_city_auditor_reads_its_city_only(demo):
    await appoint_nanning_auditor(demo)
    await demo.api.post(f"/v1/admin/users/{demo.user('wuqiang')}/disable", token=await demo.token("nanning.admin"))
    await demo.api.post(f"/v1/admin/users/{demo.user('xiebin')}/disable", token=await demo.token("liuzhou.admin"))

    targets = {e["target_id"] for e in await entries(demo, "nanning.auditor", action="admin.user.disable")}
    assert targets == {demo.user("wuqiang")}
    within = {e["id"] for e in await entries(demo, "nanning.auditor", unit_id=demo.unit("青秀区"))}
    audit = demo.server.services.store.audit.col
    expected = {str(d["_id"]) for d in await audit.find({"scope_paths": demo.unit("青秀区")}, {"_id": 1}).to_list()}
    assert within == expected and len(within) >= 5  # 青秀区, its office and their staff

    for unit in ("柳州市", "广西壮族自治区", "应急管理厅"):
        status, body = await read(demo, "nanning.auditor", unit_id=demo.unit(unit))
        assert (status, error_code(body)) == (403, "perm.out_of_scope"), unit


async def test_a_failed_login_of_a_nanning_user_is_seen_by_the_nanning_auditor(demo):
    await appoint_nanning_auditor(demo)
    status, _ = await demo.api.post("/v1/auth/login", {"username": "chenjing", "password": "Wrong-password-1"})
    assert status == 401

    failures = [e for e in await entries(demo, "nanning.auditor", action="auth.login")
                if e["outcome"] == "failure"]
    assert [(e["target_id"], e["details"]["reason"], e["ip"]) for e in failures] == [
        (demo.user("chenjing"), "bad_password", "127.0.0.1")]
    status, _ = await demo.api.post("/v1/auth/login", {"username": "zengmin", "password": "Wrong-password-1"})
    assert demo.user("zengmin") not in {e["target_id"] for e in await entries(demo, "nanning.auditor")}


@pytest.mark.parametrize("reader", ["zhangwei", "nanning.admin"])
async def test_people_who_are_not_auditors_cannot_read_the_log(demo, reader):
    status, body = await read(demo, reader)
    assert (status, error_code(body)) == (403, "perm.forbidden")


async def test_the_system_admin_reads_everything_including_unknown_user_names(demo):
    await demo.api.post("/v1/auth/login", {"username": "nobody.here", "password": "Wrong-password-1"})
    recorded = await entries(demo, "admin", action="auth.login")
    assert any(e["details"].get("username") == "nobody.here" for e in recorded)
    assert not any(e["details"].get("username") == "nobody.here" for e in await entries(demo, "gx.auditor"))


@pytest.mark.parametrize("limit", [1, 7, 50])
async def test_paging_with_before_returns_each_entry_once_newest_first(demo, limit):
    everything = [e["id"] for e in await entries(demo, "gx.auditor")]
    assert len(everything) > 50

    seen: list[str] = []
    params: dict[str, object] = {"limit": limit}
    for _ in range(200):
        status, page = await read(demo, "gx.auditor", **params)
        assert status == 200 and len(page["entries"]) <= limit
        seen += [e["id"] for e in page["entries"]]
        if page["next_before"] is None:
            break
        params = {"limit": limit, "before": page["next_before"]}
    assert seen == everything
    times = [datetime.fromisoformat(e["at"]) for e in await entries(demo, "gx.auditor")]
    assert times == sorted(times, reverse=True)


@pytest.mark.parametrize("before", ["yesterday", "0" * 25, "abcdefghijkl", "{\"$gt\": \"\"}", "zzzzzzzzzzzzzzzzzzzzzzzz"])
async def test_a_before_cursor_not_issued_by_the_api_is_refused(demo, before):
    status, body = await read(demo, "gx.auditor", before=before)
    assert (status, error_code(body)) == (400, "request.invalid")


async def test_filters_are_literal_not_patterns(demo):
    assert await entries(demo, "gx.auditor", action=".*") == []
    assert await entries(demo, "gx.auditor", actor_id="{\"$ne\": null}") == []
    status, body = await read(demo, "gx.auditor", unit_id="{\"$gt\": \"\"}")
    assert (status, error_code(body)) == (404, "not_found")


async def test_an_auditor_of_two_subtrees_chooses_one(demo):
    await grant(demo, "admin", "gx.auditor", "auditor", "柳州市")
    await demo.token("gx.auditor")
    status, body = await read(demo, "gx.auditor")
    assert (status, error_code(body)) == (400, "request.invalid")
    assert (await read(demo, "gx.auditor", unit_id=demo.unit("柳州市")))[0] == 200


def test_the_audit_store_can_only_append_and_read():
    public = {name for name, _ in inspect.getmembers(AuditStore, inspect.isfunction) if not name.startswith("_")}
    assert public == {"append", "read"}
    source = inspect.getsource(AuditStore)
    for write in ("update_one", "update_many", "replace_one", "find_one_and_", "delete_one", "delete_many",
                  "bulk_write", "drop"):
        assert write not in source, write


async def test_a_successful_login_is_on_record_for_the_auditor(demo):
    await appoint_nanning_auditor(demo)
    tokens = await demo.api.login("sunli")
    logins = [e for e in await entries(demo, "nanning.auditor", action="auth.login", target_id=demo.user("sunli"))]
    assert [(e["outcome"], e["actor_id"], e["details"]["device_id"]) for e in logins] == [
        ("success", demo.user("sunli"), tokens["device_id"])]


async def test_reading_the_log_writes_nothing(demo):
    await demo.token("gx.auditor")
    store = demo.server.services.store
    before = await snapshot(store, ("units", "users", "audit"))
    await entries(demo, "gx.auditor")
    assert await snapshot(store, ("units", "users", "audit")) == before
