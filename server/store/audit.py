"""The audit log: an append-only collection. This module has no update or delete on purpose."""

from __future__ import annotations

import re
from typing import Any

from bson import ObjectId
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from ..models import AuditEntry, from_doc, to_doc
from .indexes import IndexSpec


class AuditStore:
    INDEXES = (
        IndexSpec("audit", [("scope_paths", 1), ("_id", DESCENDING)], "by_scope"),
        IndexSpec("audit", [("actor_id", 1), ("_id", DESCENDING)], "by_actor"),
    )

    def __init__(self, db: AsyncDatabase[dict[str, Any]]):
        self.col = db["audit"]

    async def append(self, entry: AuditEntry) -> None:
        doc = to_doc(entry)
        doc.pop("_id", None)
        await self.col.insert_one(doc)

    async def read(self, *, scope_unit_id: str | None, before_id: str | None, limit: int,
                   action_prefix: str | None = None, actor_id: str | None = None,
                   target_id: str | None = None) -> list[AuditEntry]:
        """Newest first. ``scope_unit_id=None`` reads everything (system administrators)."""
        query: dict[str, Any] = {}
        if scope_unit_id is not None:
            query["scope_paths"] = scope_unit_id
        if before_id is not None:
            query["_id"] = {"$lt": ObjectId(before_id)}
        if action_prefix:
            query["action"] = {"$regex": "^" + re.escape(action_prefix)}
        if actor_id:
            query["actor_id"] = actor_id
        if target_id:
            query["target_id"] = target_id
        docs = await self.col.find(query).sort("_id", DESCENDING).limit(limit).to_list()
        return [from_doc(d, AuditEntry) for d in docs]
