"""Hostile and malformed login requests are refused with a coded 4xx before anything is looked up."""

from __future__ import annotations

import json
from typing import AsyncIterator

import pytest

from auth_support import LOGIN, error_code
from xietong.server.seed import DEMO_PASSWORD

JSON = {"Content-Type": "application/json"}


async def assert_nobody_signed_in(demo) -> None:
    store = demo.server.services.store
    assert await store.devices.col.count_documents({}) == 0
    assert await store.devices.attempts.count_documents({}) == 0  # not even counted as an attempt


@pytest.mark.parametrize("body", [
    {"username": "zhangwei", "password": {"$gt": ""}},
    {"username": {"$ne": None}, "password": DEMO_PASSWORD},
    {"username": "zhangwei", "password": [DEMO_PASSWORD]},
    {"username": "zhangwei", "password": DEMO_PASSWORD, "totp_code": {"$exists": False}},
    {"username": "zhangwei", "password": DEMO_PASSWORD, "device": {"name": {"$gt": ""}}},
], ids=["operator_password", "operator_username", "list_password", "operator_totp", "operator_device_name"])
async def test_query_operators_in_place_of_strings_are_refused_and_sign_nobody_in(demo, body):
    status, answer = await demo.api.post(LOGIN, body)
    assert (status, error_code(answer)) == (400, "request.invalid"), answer
    await assert_nobody_signed_in(demo)


@pytest.mark.parametrize("body", [
    {"username": "zhangwei", "password": DEMO_PASSWORD, "is_admin": True},
    {"username": "zhangwei", "password": DEMO_PASSWORD, "device": {"name": "phone", "trusted": True}},
    {"username": "zhangwei"},
    {"username": "", "password": DEMO_PASSWORD},
    {"username": "z" * 65, "password": DEMO_PASSWORD},
    {"username": "zhangwei", "password": "x" * 129},
    {"username": "zhangwei", "password": DEMO_PASSWORD, "device": {"platform": "toaster"}},
    [{"username": "zhangwei", "password": DEMO_PASSWORD}],
], ids=["unknown_field", "unknown_device_field", "missing_password", "empty_username", "long_username",
        "long_password", "unknown_platform", "array_body"])
async def test_unknown_missing_or_out_of_range_fields_are_refused(demo, body):
    status, answer = await demo.api.post(LOGIN, body)
    assert (status, error_code(answer)) == (400, "request.invalid"), answer
    assert answer["error"]["message"]  # names what is wrong
    await assert_nobody_signed_in(demo)


@pytest.mark.parametrize("raw", [
    b'{"username": "zhangwei", "password": ',
    b"username=zhangwei&password=x",
    b"",
    b'{"username": "zhangwei", "password": "\xff\xfe"}',
    b'{"username": "\xc0\xafzhangwei", "password": "Xietong@2026"}',
], ids=["truncated", "form_encoded", "empty", "invalid_utf8", "overlong_utf8"])
async def test_malformed_json_is_refused(demo, raw):
    status, answer = await demo.api.post(LOGIN, data=raw, headers=JSON)
    assert (status, error_code(answer)) == (400, "request.malformed_json"), answer
    await assert_nobody_signed_in(demo)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_body_that_is_not_declared_json_is_refused(demo, content_type):
    body = json.dumps({"username": "zhangwei", "password": DEMO_PASSWORD}).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    status, answer = await demo.api.post(LOGIN, data=body, headers=headers)
    assert (status, error_code(answer)) == (415, "request.unsupported_media_type"), answer
    await assert_nobody_signed_in(demo)


async def test_json_with_charset_parameter_is_accepted(demo):
    body = json.dumps({"username": "zhangwei", "password": DEMO_PASSWORD}).encode()
    status, _ = await demo.api.post(LOGIN, data=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 200


def oversized_login(limit: int) -> bytes:
    return json.dumps({"username": "zhangwei", "password": DEMO_PASSWORD, "device": {"name": "x" * limit}}).encode()


async def test_body_over_the_size_limit_is_refused_as_too_large(demo):
    limit = demo.server.services.settings.max_body_bytes
    status, answer = await demo.api.post(LOGIN, data=oversized_login(limit), headers=JSON)
    assert (status, error_code(answer)) == (413, "request.too_large"), answer
    await assert_nobody_signed_in(demo)


async def test_chunked_body_over_the_size_limit_is_refused_as_too_large(demo):
    limit = demo.server.services.settings.max_body_bytes
    raw = oversized_login(limit)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit must hold while reading
        for start in range(0, len(raw), 16 * 1024):
            yield raw[start:start + 16 * 1024]

    status, answer = await demo.api.post(LOGIN, data=chunks(), headers=JSON)
    assert (status, error_code(answer)) == (413, "request.too_large"), answer
    await assert_nobody_signed_in(demo)


async def test_login_posted_from_a_foreign_web_page_is_refused(demo):
    body = {"username": "zhangwei", "password": DEMO_PASSWORD}
    status, answer = await demo.api.post(LOGIN, body, headers={"Origin": "https://evil.example"})
    assert (status, error_code(answer)) == (403, "request.origin_forbidden")
    await assert_nobody_signed_in(demo)
    status, _ = await demo.api.post(LOGIN, body, headers={"Origin": demo.server.url})
    assert status == 200
