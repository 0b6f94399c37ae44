"""Token-bucket rate limits, per process, keyed by caller (IP address or user id).

Each named limit allows ``burst`` requests at once and refills at ``rate`` per second. Buckets that
are full again are dropped, so memory is bounded by the callers active within one refill period.
Limits are per process: with N server processes a caller can reach N times the rate, which is fine
for their purpose (slowing down guessing and floods, not metering).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .errors import XtError


@dataclass(frozen=True)
class Rule:
    rate: float  # tokens per second
    burst: int


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Spend ``cost``; returns 0 on success, else the seconds until it would succeed."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class Limits:
    DEFAULT_RULES = {
        # per IP: a whole office behind one NAT address signs in at 9:00, so the burst is generous;
        # per-account lockout is what stops guessing one account.
        "login": Rule(rate=2, burst=100),
        "password": Rule(rate=1 / 30, burst=5),  # per user
        "send": Rule(rate=20, burst=40),  # per user: messages, forwards

    }

    def __init__(self, rules: dict[str, Rule] | None = None, clock=time.monotonic):
        self.rules = dict(self.DEFAULT_RULES if rules is None else rules)
        self.clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._last_sweep = clock()

    def check(self, name: str, key: str) -> None:
        """Spend one token of ``name`` for ``key`` or raise ``request.rate_limited``."""
        rule = self.rules[name]
        now = self.clock()
        self._sweep(now)
        bucket = self._buckets.get((name, key))
        if bucket is None:
            bucket = self._buckets[(name, key)] = TokenBucket(rule.rate, rule.burst, now)
        wait = bucket.take(now)
        if wait:
            raise XtError("request.rate_limited", details={"retry_after": math.ceil(wait)})

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < 60:
            return
        self._last_sweep = now
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.stamp) * b.rate >= b.burst]
        for key in full:
            del self._buckets[key]
