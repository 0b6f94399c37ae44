"""The TOTP second factor: enrolling, signing in with a code, replay, turning it off, and units that
require it (members without TOTP enrol with a narrow enrolment token).

Codes come from :class:`Authenticator`, which uses the current time step and then the next one —
the server accepts one step either side — so no test waits for the clock.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from auth_support import LOGIN, audit_entries, error_code, whoami
from xietong.server.auth.totp import code_at, current_step
from xietong.server.seed import DEMO_PASSWORD


class Authenticator:
    """The user's authenticator app. Each code is for a step not used before: at most two per 30 s."""

    def __init__(self, secret: str):
        self.secret = secret
        self.step: int | None = None

    def code(self) -> str:
        self.step = current_step() if self.step is None else max(self.step + 1, current_step())
        return code_at(self.secret, self.step)


async def enrol(demo, token: str) -> Authenticator:
    status, body = await demo.api.post("/v1/me/totp/setup", token=token)
    assert status == 200, body
    app = Authenticator(body["secret"])
    status, body = await demo.api.post("/v1/me/totp/confirm", {"code": app.code()}, token=token)
    assert status == 204, body
    return app


async def login(demo, username: str = "zhangwei", **extra) -> tuple[int, str | None, dict]:
    status, body = await demo.api.post(LOGIN, {"username": username, "password": DEMO_PASSWORD, **extra})
    return status, error_code(body), body


async def totp_enabled(demo, username: str = "zhangwei") -> bool:
    user = await demo.server.services.store.users.get(demo.user(username))
    return bool(user.totp and user.totp.enabled)


async def require_totp(demo, unit_name: str) -> None:
    status, body = await demo.api.patch(f"/v1/admin/units/{demo.unit(unit_name)}", {"require_totp": True},
                                        token=await demo.token("admin"))
    assert status == 200, body


# ---- enrolling and signing in ---------------------------------------------------------------------

async def test_setup_returns_a_secret_and_an_otpauth_uri_but_does_not_enable_totp(demo):
    token = await demo.token("zhangwei")
    status, body = await demo.api.post("/v1/me/totp/setup", token=token)
    assert status == 200
    uri = urlsplit(body["otpauth_uri"])
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp") and "zhangwei" in uri.path
    query = parse_qs(uri.query)
    assert query["secret"] == [body["secret"]] and query["digits"] == ["6"] and query["period"] == ["30"]
    assert (await demo.api.get("/v1/me", token=token))[1]["totp_enabled"] is False
    assert (await login(demo))[0] == 200  # not enabled until confirmed


async def test_confirming_with_a_code_enables_totp(demo):
    token = await demo.token("zhangwei")
    await enrol(demo, token)
    _, me = await demo.api.get("/v1/me", token=token)
    assert me["totp_enabled"] is True
    assert "secret" not in str(me).lower()
    entries = await audit_entries(demo, "auth.totp_enable", target_id=demo.user("zhangwei"))
    assert len(entries) == 1


async def test_confirming_with_a_wrong_code_leaves_totp_off(demo):
    token = await demo.token("zhangwei")
    _, body = await demo.api.post("/v1/me/totp/setup", token=token)
    wrong = code_at(body["secret"], current_step() + 5)
    status, answer = await demo.api.post("/v1/me/totp/confirm", {"code": wrong}, token=token)
    assert (status, error_code(answer)) == (401, "auth.totp_invalid")
    assert not await totp_enabled(demo)


async def test_setup_again_after_enabling_is_refused(demo):
    token = await demo.token("zhangwei")
    await enrol(demo, token)
    status, body = await demo.api.post("/v1/me/totp/setup", token=token)
    assert (status, error_code(body)) == (409, "auth.totp_already_enabled")


async def test_login_with_totp_needs_a_code_and_accepts_the_right_one(demo):
    app = await enrol(demo, await demo.token("zhangwei"))
    status, code, _ = await login(demo)
    assert (status, code) == (401, "auth.totp_required")
    status, code, _ = await login(demo, totp_code=code_at(app.secret, current_step() + 5))
    assert (status, code) == (401, "auth.totp_invalid")
    status, code, body = await login(demo, totp_code=app.code())
    assert status == 200, body
    assert await whoami(demo.api, body["access_token"]) == "zhangwei"


async def test_code_typed_with_the_space_the_app_shows_is_accepted(demo):
    app = await enrol(demo, await demo.token("zhangwei"))
    code = app.code()
    assert (await login(demo, totp_code=f"{code[:3]} {code[3:]}"))[0] == 200


async def test_a_totp_code_is_good_only_once(demo):
    app = await enrol(demo, await demo.token("zhangwei"))
    used = code_at(app.secret, app.step)  # the code that confirmed the enrolment
    assert (await login(demo, totp_code=used))[:2] == (401, "auth.totp_invalid")
    fresh = app.code()
    assert (await login(demo, totp_code=fresh))[0] == 200
    assert (await login(demo, totp_code=fresh))[:2] == (401, "auth.totp_invalid")


async def test_wrong_totp_codes_count_towards_the_lockout(demo):
    app = await enrol(demo, await demo.token("zhangwei"))
    for _ in range(demo.server.services.settings.login_max_failures):
        assert (await login(demo, totp_code="12345x"))[:2] == (401, "auth.totp_invalid")
    assert (await login(demo, totp_code=app.code()))[:2] == (429, "auth.locked")
    entries = await audit_entries(demo, "auth.login", target_id=demo.user("zhangwei"))
    assert "bad_totp" in {e["details"].get("reason") for e in entries}


async def test_being_asked_for_the_code_does_not_count_towards_the_lockout(demo):
    app = await enrol(demo, await demo.token("zhangwei"))
    max_failures = demo.server.services.settings.login_max_failures
    for _ in range(max_failures - 1):  # one mistake short of the lock
        assert (await login(demo, totp_code=code_at(app.secret, current_step() + 5)))[:2] == (
            401, "auth.totp_invalid")
    for _ in range(max_failures + 1):  # the right password, the code not yet typed
        assert (await login(demo))[:2] == (401, "auth.totp_required")
    assert (await login(demo, totp_code=app.code()))[0] == 200


async def test_one_code_sent_twice_at_once_signs_in_only_once(demo):
    app = await enrol(demo, await demo.token("zhangwei"))
    code = app.code()
    results = await asyncio.gather(login(demo, totp_code=code), login(demo, totp_code=code))
    assert sorted(result[:2] for result in results) == [(200, None), (401, "auth.totp_invalid")]


# ---- turning it off -------------------------------------------------------------------------------

async def test_disabling_totp_needs_a_valid_code(demo):
    token = await demo.token("zhangwei")
    app = await enrol(demo, token)
    wrong = code_at(app.secret, current_step() + 5)
    status, body = await demo.api.post("/v1/me/totp/disable", {"code": wrong}, token=token)
    assert (status, error_code(body)) == (401, "auth.totp_invalid")
    assert await totp_enabled(demo)

    status, _ = await demo.api.post("/v1/me/totp/disable", {"code": app.code()}, token=token)
    assert status == 204
    assert (await login(demo))[0] == 200  # no code needed any more
    assert len(await audit_entries(demo, "auth.totp_disable", target_id=demo.user("zhangwei"))) == 1


async def test_a_signed_out_device_cannot_set_up_totp(demo):
    phone = await demo.api.login("zhangwei")
    await demo.api.post("/v1/auth/logout", token=phone["access_token"])
    status, body = await demo.api.post("/v1/me/totp/setup", token=phone["access_token"])
    assert (status, error_code(body)) == (401, "auth.session_revoked")
    status, body = await demo.api.post("/v1/me/totp/setup")
    assert (status, error_code(body)) == (401, "auth.required")
    assert (await demo.server.services.store.users.get(demo.user("zhangwei"))).totp is None


# ---- units that require a second factor -----------------------------------------------------------

async def test_member_of_a_unit_requiring_totp_must_enrol_before_signing_in(demo):
    await require_totp(demo, "南宁市")  # zhangwei works in its office: the whole subtree is covered
    status, code, body = await login(demo)
    assert (status, code) == (403, "auth.totp_enrollment_required")
    assert body["error"]["details"]["enrollment_token"] and body["error"]["details"]["expires_in"] > 0
    assert await demo.server.services.store.devices.list_active(demo.user("zhangwei")) == []
    # Colleagues elsewhere in the province are not affected.
    assert (await login(demo, "huangjian"))[0] == 200


async def test_enrolment_token_sets_up_totp_and_then_login_with_a_code_works(demo):
    await require_totp(demo, "南宁市人民政府办公室")
    enrolment = (await login(demo))[2]["error"]["details"]["enrollment_token"]

    app = await enrol(demo, enrolment)
    assert await totp_enabled(demo)
    assert (await login(demo))[:2] == (401, "auth.totp_required")
    status, _, body = await login(demo, totp_code=app.code())
    assert status == 200
    assert await whoami(demo.api, body["access_token"]) == "zhangwei"


class TestWithShortLivedAccessTokens:
    @pytest.fixture
    def settings(self, settings):
        return settings.replace(access_token_ttl=120)

    async def test_enrolment_token_announces_the_lifetime_it_really_has(self, demo):
        await require_totp(demo, "南宁市人民政府办公室")
        details = (await login(demo))[2]["error"]["details"]
        claims = jwt.decode(details["enrollment_token"], options={"verify_signature": False})
        assert details["expires_in"] == claims["exp"] - claims["iat"] <= 120


async def test_enrolment_token_is_not_an_access_token(demo):
    await require_totp(demo, "南宁市人民政府办公室")
    enrolment = (await login(demo))[2]["error"]["details"]["enrollment_token"]
    assert await whoami(demo.api, enrolment) == "auth.token_invalid"
    for method, path in (("GET", "/v1/me/devices"), ("POST", "/v1/auth/logout-others")):
        status, body = await demo.api.request(method, path, token=enrolment)
        assert (status, error_code(body)) == (401, "auth.token_invalid"), path
    status, body = await demo.api.post("/v1/me/totp/disable", {"code": "123456"}, token=enrolment)
    assert (status, error_code(body)) == (401, "auth.token_invalid")


async def test_member_of_a_unit_requiring_totp_cannot_turn_it_off(demo):
    token = await demo.token("zhangwei")
    app = await enrol(demo, token)
    await require_totp(demo, "南宁市人民政府办公室")
    status, body = await demo.api.post("/v1/me/totp/disable", {"code": app.code()}, token=token)
    assert (status, error_code(body)) == (403, "perm.forbidden")
    assert await totp_enabled(demo)
