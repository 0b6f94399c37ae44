"""Liveness, readiness and the error envelope of unknown endpoints."""

from __future__ import annotations


async def test_healthz_and_readyz_answer(api):
    assert await api.get("/healthz") == (200, {"status": "ok"})
    assert await api.get("/readyz") == (200, {"status": "ready"})


async def test_unknown_endpoint_is_a_coded_404(api):
    status, body = await api.get("/v1/nothing-here")
    assert status == 404
    assert body["error"]["code"] == "request.not_found"


async def test_wrong_method_is_a_coded_405(api):
    status, body = await api.request("DELETE", "/healthz")
    assert status == 405
    assert body["error"]["code"] == "request.method_not_allowed"


async def test_demo_login_returns_tokens(demo):
    body = await demo.api.login("zhangwei")
    assert body["token_type"] == "Bearer"
    assert body["user_id"] == demo.user("zhangwei")
    status, me = await demo.api.get("/v1/me", token=body["access_token"])
    assert status == 200
    assert me["user"]["display_name"] == "张伟"
