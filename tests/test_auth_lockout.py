"""Guessing passwords: the account locks with a growing back-off, and each address is rate-limited.

This module runs with a lockout after 3 failures of 60 s, doubling up to 240 s. Locks are never
waited out: ``expire_lock`` moves ``locked_until`` into the past, as if the time had passed.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from auth_support import LOGIN, audit_entries, error_code, expire_lock
from conftest import make_settings
from xietong.server.ratelimit import Limits
from xietong.server.seed import DEMO_PASSWORD

MAX_FAILURES = 3
WRONG = "Xietong@2025"


@pytest.fixture
def settings(mongo_url, db_name, tmp_path, keys_dir):
    return make_settings(mongo_url, db_name, tmp_path, keys_dir, login_max_failures=MAX_FAILURES,
                         login_lockout_seconds=60, login_lockout_max_seconds=240)


async def attempt(demo, password: str, username: str = "zhangwei") -> tuple[int, str | None]:
    status, body = await demo.api.post(LOGIN, {"username": username, "password": password})
    return status, error_code(body)


async def lock_seconds(demo, username: str = "zhangwei") -> int:
    """Try the right password: the account must answer auth.locked; returns the announced wait."""
    status, body = await demo.api.post(LOGIN, {"username": username, "password": DEMO_PASSWORD})
    assert (status, error_code(body)) == (429, "auth.locked"), body
    retry_after = body["error"]["details"]["retry_after"]
    assert demo.api.last_headers["Retry-After"] == str(retry_after)
    return retry_after


async def test_account_locks_after_max_failures_even_for_the_right_password(demo):
    for _ in range(MAX_FAILURES):
        assert await attempt(demo, WRONG) == (401, "auth.invalid_credentials")
    assert 59 <= await lock_seconds(demo) <= 61
    assert await demo.server.services.store.devices.list_active(demo.user("zhangwei")) == []


async def test_failures_below_the_limit_do_not_lock(demo):
    for _ in range(MAX_FAILURES - 1):
        assert await attempt(demo, WRONG) == (401, "auth.invalid_credentials")
    assert (await attempt(demo, DEMO_PASSWORD))[0] == 200


async def test_each_failure_after_a_lock_expires_doubles_the_lock_up_to_the_maximum(demo):
    for _ in range(MAX_FAILURES):
        await attempt(demo, WRONG)
    waits = [await lock_seconds(demo)]
    for _ in range(3):
        await expire_lock(demo, "zhangwei")
        assert await attempt(demo, WRONG) == (401, "auth.invalid_credentials")
        waits.append(await lock_seconds(demo))
    assert [round(w, -1) for w in waits] == [60, 120, 240, 240]


async def test_right_password_after_the_lock_expires_signs_in_and_clears_the_count(demo):
    for _ in range(MAX_FAILURES):
        await attempt(demo, WRONG)
    await expire_lock(demo, "zhangwei")
    assert (await attempt(demo, DEMO_PASSWORD))[0] == 200
    # A fresh count: the same number of mistakes as before the first lock is allowed again.
    for _ in range(MAX_FAILURES - 1):
        assert await attempt(demo, WRONG) == (401, "auth.invalid_credentials")
    assert (await attempt(demo, DEMO_PASSWORD))[0] == 200


async def test_unknown_user_names_lock_like_real_ones(demo):
    for _ in range(MAX_FAILURES):
        assert await attempt(demo, WRONG, "nobody") == (401, "auth.invalid_credentials")
    assert await attempt(demo, WRONG, "nobody") == (429, "auth.locked")


async def test_a_lock_is_per_account(demo):
    for _ in range(MAX_FAILURES):
        await attempt(demo, WRONG)
    assert await attempt(demo, DEMO_PASSWORD, "huangjian") == (200, None)


async def test_a_locked_attempt_is_audited(demo):
    for _ in range(MAX_FAILURES):
        await attempt(demo, WRONG)
    await lock_seconds(demo)
    entries = [e for e in await audit_entries(demo, "auth.login") if e["actor_id"] != demo.user("admin")]
    assert [(e["outcome"], e["details"]["reason"]) for e in entries] == (
        [("failure", "locked")] + [("failure", "bad_password")] * MAX_FAILURES)


async def test_concurrent_guesses_do_not_get_past_the_failure_limit(demo):
    results = await asyncio.gather(*(attempt(demo, f"Guess#{i:04d}x") for i in range(10)))
    # Only MAX_FAILURES guesses were checked against the password; the rest found the name locked.
    assert results.count((401, "auth.invalid_credentials")) == MAX_FAILURES, results
    assert results.count((429, "auth.locked")) == 10 - MAX_FAILURES


class FrozenClock:
    """The rate limiter's clock, standing still unless a test moves it."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


async def test_login_attempts_from_one_address_are_rate_limited_after_the_burst(demo):
    rule = Limits.DEFAULT_RULES["login"]
    clock = demo.server.services.limits.clock = FrozenClock()
    # The whole burst on one (soon locked) name: past the lock, each attempt is answered cheaply.
    answers = {await attempt(demo, WRONG, "nobody") for _ in range(rule.burst)}
    assert answers == {(401, "auth.invalid_credentials"), (429, "auth.locked")}

    # The address is spent: even the right password of another account is refused.
    assert await attempt(demo, DEMO_PASSWORD, "huangjian") == (429, "request.rate_limited")
    assert int(demo.api.last_headers["Retry-After"]) >= 1
    clock.now += 1 / rule.rate
    assert await attempt(demo, DEMO_PASSWORD, "huangjian") == (200, None)
