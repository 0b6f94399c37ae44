"""Signed-in devices, their refresh tokens (stored only as SHA-256 hashes) and login throttling."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError
from pymongo.asynchronous.database import AsyncDatabase

from ..models import Device, from_doc, to_doc
from .indexes import IndexSpec


@dataclass(frozen=True)
class LoginAttempt:
    """A login attempt as counted by :meth:`DevicesStore.claim_attempt`."""

    counted: bool  # False: the name is locked and the attempt is refused
    failures: int  # the count, this attempt included when counted
    locked_until: datetime | None  # the lock in force (refused) or set by this attempt


class DevicesStore:
    INDEXES = (
        IndexSpec("devices", [("user_id", ASCENDING), ("created_at", DESCENDING)], "by_user"),
        IndexSpec("refresh_tokens", [("device_id", ASCENDING)], "by_device"),
        # Expired refresh tokens are removed by MongoDB itself; the service also checks expires_at.
        IndexSpec("refresh_tokens", [("expires_at", ASCENDING)], "expiry", {"expireAfterSeconds": 0}),
        # Failure counters of names nobody signs in with would pile up: they go 8 days after the last
        # failure, longer than the longest lock XT_LOGIN_LOCKOUT_MAX_SECONDS allows (7 days).
        IndexSpec("login_attempts", [("last_failure_at", ASCENDING)], "forget", {"expireAfterSeconds": 8 * 86400}),
        IndexSpec("push_devices", [("user_id", ASCENDING)], "by_user"),
    )

    def __init__(self, db: AsyncDatabase[dict[str, Any]]):
        self.col = db["devices"]
        self.tokens = db["refresh_tokens"]
        self.attempts = db["login_attempts"]
        # Which devices registered for push, by user: a small index the push planner asks first, so a
        # batch of messages whose recipients have no phone registered costs one cheap lookup instead of
        # reading every recipient's device documents. The device document stays the truth (a stale
        # entry is ignored); every write of `push` below keeps this collection in step.
        self.push_index = db["push_devices"]

    async def rebuild_push_index(self) -> int:
        """Add the registered devices the index lacks (data written before it existed); idempotent."""
        added = 0
        async for d in self.col.find({"push": {"$ne": None}, "revoked_at": None}, {"user_id": 1}):
            result = await self.push_index.update_one({"_id": d["_id"]}, {"$set": {"user_id": d["user_id"]}},
                                                      upsert=True)
            added += 1 if result.upserted_id is not None else 0
        return added

    # Devices.
    async def insert(self, device: Device) -> None:
        await self.col.insert_one(to_doc(device))

    async def get(self, device_id: str) -> Device | None:
        return from_doc(await self.col.find_one({"_id": device_id}), Device)

    async def revoked_among(self, device_ids: list[str]) -> set[str]:
        """Those of ``device_ids`` that are signed out (or gone)."""
        if not device_ids:
            return set()
        docs = await self.col.find({"_id": {"$in": device_ids}}, {"revoked_at": 1}).to_list()
        active = {d["_id"] for d in docs if d.get("revoked_at") is None}
        return set(device_ids) - active

    async def list_active(self, user_id: str) -> list[Device]:
        cursor = self.col.find({"user_id": user_id, "revoked_at": None}).sort("created_at", DESCENDING)
        return [from_doc(d, Device) for d in await cursor.to_list()]

    async def touch(self, device_id: str, now: datetime, ip: str | None, user_agent: str | None) -> None:
        await self.col.update_one({"_id": device_id},
                                  {"$set": {"last_active_at": now, "last_ip": ip, "user_agent": user_agent}})

    # Push registrations.
    async def set_push(self, device_id: str, push: dict[str, Any] | None) -> None:
        if push is None:
            await self.col.update_one({"_id": device_id}, {"$unset": {"push": ""}})
            await self.push_index.delete_one({"_id": device_id})
        else:
            device = await self.col.find_one_and_update({"_id": device_id}, {"$set": {"push": push}},
                                                     {"user_id": 1})
            if device is not None:
                await self.push_index.update_one({"_id": device_id}, {"$set": {"user_id": device["user_id"]}},
                                                 upsert=True)

    async def push_targets(self, user_ids: list[str]) -> list[Device]:
        """Signed-in devices of these users that registered for push."""
        if not user_ids:
            return []
        ids = [d["_id"] for d in await self.push_index.find({"user_id": {"$in": user_ids}}, {"_id": 1}).to_list()]
        if not ids:
            return []
        docs = await self.col.find({"_id": {"$in": ids}, "revoked_at": None, "push": {"$ne": None}}).to_list()
        return [from_doc(d, Device) for d in docs if d.get("push")]

    async def forget_push_token(self, token: str) -> int:
        """Remove a token the provider reported as invalid, from whichever device holds it."""
        holders = [d["_id"] for d in await self.col.find({"push.token": token}, {"_id": 1}).to_list()]
        result = await self.col.update_many({"push.token": token}, {"$unset": {"push": ""}})
        if holders:
            await self.push_index.delete_many({"_id": {"$in": holders}})
        return result.modified_count

    async def revoke(self, device_id: str, now: datetime, reason: str) -> bool:
        """Revoke one device, and with it its whole refresh-token family (a refresh checks the
        device first). The tokens stay until they expire so that a late reuse is still recognised.
        False if the device was already revoked."""
        result = await self.col.update_one({"_id": device_id, "revoked_at": None},
                                           {"$set": {"revoked_at": now, "revoked_reason": reason},
                                            "$unset": {"push": ""}})
        await self.push_index.delete_one({"_id": device_id})
        return result.modified_count == 1

    async def revoke_all(self, user_id: str, now: datetime, reason: str, *, except_device: str | None = None) -> list[str]:
        query: dict[str, Any] = {"user_id": user_id, "revoked_at": None}
        if except_device is not None:
            query["_id"] = {"$ne": except_device}
        ids = [d["_id"] for d in await self.col.find(query, {"_id": 1}).to_list()]
        for device_id in ids:
            await self.revoke(device_id, now, reason)
        return ids

    # Refresh tokens.
    async def insert_refresh_token(self, token_hash: str, device_id: str, user_id: str,
                                   now: datetime, expires_at: datetime) -> None:
        await self.tokens.insert_one({"_id": token_hash, "device_id": device_id, "user_id": user_id,
                                      "created_at": now, "expires_at": expires_at, "used_at": None})

    async def get_refresh_token(self, token_hash: str) -> dict[str, Any] | None:
        return await self.tokens.find_one({"_id": token_hash})

    async def mark_refresh_token_used(self, token_hash: str, now: datetime) -> bool:
        """Atomically mark a token used; False if someone else used it first (a reuse)."""
        doc = await self.tokens.find_one_and_update(
            {"_id": token_hash, "used_at": None}, {"$set": {"used_at": now}},
            return_document=ReturnDocument.AFTER)
        return doc is not None

    # Login throttling, keyed by the normalised user name (also for names that do not exist,
    # so that the answers do not reveal which accounts exist).
    async def claim_attempt(self, key: str, now: datetime, max_failures: int,
                            lockout_seconds: int, lockout_max_seconds: int) -> LoginAttempt:
        """Count a login attempt as a failure *before* its password is checked, unless ``key`` is locked.

        Counting first is what makes the limit hold for concurrent guesses: each attempt takes its
        number in one atomic write, and the attempt that reaches ``max_failures`` sets the lock in
        that same write, so the guesses racing with it are refused. Back-off: the first lock lasts
        ``lockout_seconds``, each further counted attempt doubles it, up to ``lockout_max_seconds``.
        A login that succeeds clears the count (:meth:`clear_attempts`); one that proved the password
        but stopped before signing in gives its number back (:meth:`release_attempt`)."""
        failures = {"$add": [{"$ifNull": ["$failures", 0]}, 1]}
        doubling = {"$pow": [2, {"$min": [{"$subtract": [failures, max_failures]}, 30]}]}
        seconds = {"$min": [lockout_max_seconds, {"$multiply": [lockout_seconds, doubling]}]}
        lock = {"$cond": [{"$gte": [failures, max_failures]}, {"$add": [now, {"$multiply": [seconds, 1000]}]}, None]}
        unlocked = {"_id": key, "$or": [{"locked_until": None}, {"locked_until": {"$lte": now}}]}
        count = [{"$set": {"failures": failures, "last_failure_at": now, "locked_until": lock}}]
        while True:
            # The record must exist for the conditional update; creating it counts nothing. (Not one
            # upserting update: when two race to create the record, SecantusDB applies both but
            # answers None to one, so that attempt could not know its number.)
            try:
                await self.attempts.update_one({"_id": key}, {"$setOnInsert": {"failures": 0, "locked_until": None}},
                                               upsert=True)
            except DuplicateKeyError:
                pass  # a concurrent attempt created it
            doc = await self.attempts.find_one_and_update(unlocked, count, return_document=ReturnDocument.AFTER)
            if doc is not None:
                return LoginAttempt(True, int(doc["failures"]), doc["locked_until"])
            doc = await self.attempts.find_one({"_id": key})
            if doc is not None and doc.get("locked_until") is not None and doc["locked_until"] > now:
                return LoginAttempt(False, int(doc["failures"]), doc["locked_until"])
            # Neither counted nor locked: a login that succeeded (or gave its number back) changed
            # the record just now; count again.

    async def release_attempt(self, key: str, attempt: LoginAttempt) -> None:
        """Take back a counted attempt (and the lock it set) if nothing was counted after it; an
        attempt that raced with others stays counted, which errs on the safe side."""
        as_counted = {"_id": key, "failures": attempt.failures, "locked_until": attempt.locked_until}
        if attempt.failures == 1:
            await self.attempts.delete_one(as_counted)  # as if the attempt had never been made
        else:
            await self.attempts.update_one(as_counted, {"$inc": {"failures": -1}, "$set": {"locked_until": None}})

    async def clear_attempts(self, key: str) -> None:
        await self.attempts.delete_one({"_id": key})
