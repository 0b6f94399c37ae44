"""Signed-in devices, their refresh tokens (stored only as SHA-256 hashes) and login throttling."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from ..models import Device, from_doc, to_doc
from .indexes import IndexSpec


class DevicesStore:
    INDEXES = (
        IndexSpec("devices", [("user_id", ASCENDING), ("created_at", DESCENDING)], "by_user"),
        IndexSpec("refresh_tokens", [("device_id", ASCENDING)], "by_device"),
        # Expired refresh tokens are removed by MongoDB itself; the service also checks expires_at.
        IndexSpec("refresh_tokens", [("expires_at", ASCENDING)], "expiry", {"expireAfterSeconds": 0}),
    )

    def __init__(self, db: AsyncDatabase[dict[str, Any]]):
        self.col = db["devices"]
        self.tokens = db["refresh_tokens"]
        self.attempts = db["login_attempts"]

    # Devices.
    async def insert(self, device: Device) -> None:
        await self.col.insert_one(to_doc(device))

    async def get(self, device_id: str) -> Device | None:
        return from_doc(await self.col.find_one({"_id": device_id}), Device)

    async def list_active(self, user_id: str) -> list[Device]:
        cursor = self.col.find({"user_id": user_id, "revoked_at": None}).sort("created_at", DESCENDING)
        return [from_doc(d, Device) for d in await cursor.to_list()]

    async def touch(self, device_id: str, now: datetime, ip: str | None, user_agent: str | None) -> None:
        await self.col.update_one({"_id": device_id},
                                  {"$set": {"last_active_at": now, "last_ip": ip, "user_agent": user_agent}})

    async def revoke(self, device_id: str, now: datetime, reason: str) -> bool:
        """Revoke one device, and with it its whole refresh-token family (a refresh checks the
        device first). The tokens stay until they expire so that a late reuse is still recognised.
        False if the device was already revoked."""
        result = await self.col.update_one({"_id": device_id, "revoked_at": None},
                                           {"$set": {"revoked_at": now, "revoked_reason": reason}})
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
    async def get_attempts(self, key: str) -> dict[str, Any] | None:
        return await self.attempts.find_one({"_id": key})

    async def record_failure(self, key: str, now: datetime, max_failures: int,
                             lockout_seconds: int, lockout_max_seconds: int) -> dict[str, Any]:
        doc = await self.attempts.find_one_and_update(
            {"_id": key}, {"$inc": {"failures": 1}, "$set": {"last_failure_at": now}},
            upsert=True, return_document=ReturnDocument.AFTER)
        failures = int(doc["failures"])
        if failures >= max_failures:
            # Back-off: the first lockout lasts lockout_seconds, each further failure doubles it.
            seconds = min(lockout_seconds * 2 ** (failures - max_failures), lockout_max_seconds)
            locked_until = now + timedelta(seconds=seconds)
            await self.attempts.update_one({"_id": key}, {"$set": {"locked_until": locked_until}})
            doc["locked_until"] = locked_until
        return doc

    async def clear_attempts(self, key: str) -> None:
        await self.attempts.delete_one({"_id": key})
