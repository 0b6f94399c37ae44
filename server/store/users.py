"""Queries on users. ``unit_paths`` (the union of the paths of a user's units) makes "users under
unit X" one multikey index lookup; ``memberships.unit_id`` lists a unit's direct members."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from ..models import User, from_doc, to_doc
from .indexes import IndexSpec

class UsersStore:
    INDEXES = (
        IndexSpec("users", [("username", ASCENDING)], "username_unique", {"unique": True}),
        IndexSpec("users", [("memberships.unit_id", ASCENDING)], "unit_members"),
        IndexSpec("users", [("unit_paths", ASCENDING)], "subtree_members"),
        IndexSpec("users", [("pinyin", ASCENDING)], "search_pinyin"),
        IndexSpec("users", [("pinyin_initials", ASCENDING)], "search_initials"),
        IndexSpec("users", [("display_name", ASCENDING)], "search_name"),
    )

    def __init__(self, db: AsyncDatabase[dict[str, Any]]):
        self.col = db["users"]
        self.last_seen = db["last_seen"]

    async def insert(self, user: User) -> None:
        await self.col.insert_one(to_doc(user))

    async def get(self, user_id: str) -> User | None:
        return from_doc(await self.col.find_one({"_id": user_id}), User)

    async def get_by_username(self, username: str) -> User | None:
        return from_doc(await self.col.find_one({"username": username}), User)

    async def get_many(self, user_ids: list[str]) -> dict[str, User]:
        if not user_ids:
            return {}
        docs = await self.col.find({"_id": {"$in": list(set(user_ids))}}).to_list()
        return {d["_id"]: from_doc(d, User) for d in docs}

    async def members_of_unit(self, unit_id: str, *, include_disabled: bool = False) -> list[User]:
        query: dict[str, Any] = {"memberships.unit_id": unit_id}
        if not include_disabled:
            query["status"] = "active"
        docs = await self.col.find(query).to_list()
        return [from_doc(d, User) for d in docs]

    async def count_active_members(self, unit_id: str) -> int:
        return await self.col.count_documents({"memberships.unit_id": unit_id, "status": "active"})

    async def search_prefix(self, name_prefix: str, key_prefix: str, *, limit: int,
                            after_id: str | None) -> list[User]:
        """Active users whose display name starts with ``name_prefix`` or whose pinyin or pinyin
        initials start with ``key_prefix``, in id order from ``after_id`` (exclusive)."""
        name, key = "^" + re.escape(name_prefix), "^" + re.escape(key_prefix)
        query: dict[str, Any] = {
            "status": "active",
            "$or": [{"display_name": {"$regex": name}},
                    {"pinyin": {"$regex": key}},
                    {"pinyin_initials": {"$regex": key}}],
        }
        if after_id is not None:
            query["_id"] = {"$gt": after_id}
        docs = await self.col.find(query).sort("_id", ASCENDING).limit(limit).to_list()
        return [from_doc(d, User) for d in docs]

    async def update(self, user_id: str, changes: dict[str, Any], now: datetime,
                     *, unset: list[str] | None = None) -> User | None:
        update: dict[str, Any] = {"$set": {**changes, "updated_at": now}}
        if unset:
            update["$unset"] = {name: "" for name in unset}
        doc = await self.col.find_one_and_update({"_id": user_id}, update, return_document=ReturnDocument.AFTER)
        return from_doc(doc, User)

    # Last seen lives in its own collection: it is written at every offline transition, and an
    # update of a user document pays for the user collection's six indexes (measured: a burst of
    # disconnections then stalls the database for seconds).
    async def set_last_seen_many(self, user_ids: list[str], at: datetime) -> None:
        await self.last_seen.bulk_write([UpdateOne({"_id": u}, {"$set": {"at": at}}, upsert=True) for u in user_ids],
                                        ordered=False)

    async def last_seen_of(self, user_ids: list[str]) -> dict[str, datetime]:
        if not user_ids:
            return {}
        docs = await self.last_seen.find({"_id": {"$in": user_ids}}).to_list()
        return {d["_id"]: d["at"] for d in docs}

    async def accept_totp_step(self, user_id: str, step: int) -> bool:
        """Record ``step`` as used, only if it is newer than the last one used (no replay)."""
        result = await self.col.update_one(
            {"_id": user_id, "totp.last_step": {"$lt": step}}, {"$set": {"totp.last_step": step}})
        return result.modified_count == 1

    async def count(self) -> int:
        return await self.col.estimated_document_count()
