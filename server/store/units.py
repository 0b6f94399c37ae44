"""Queries on the organisation tree (``units``). A unit's ``path`` holds its ancestors and itself,
so "everything under X" is the single multikey index lookup ``{"path": X}``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from ..models import Unit, from_doc, to_doc
from .indexes import IndexSpec


class UnitsStore:
    INDEXES = (
        IndexSpec("units", [("parent_id", ASCENDING), ("order", ASCENDING), ("_id", ASCENDING)], "children"),
        IndexSpec("units", [("path", ASCENDING)], "subtree"),
        IndexSpec("units", [("code", ASCENDING)], "code_unique",
                  {"unique": True, "partialFilterExpression": {"code": {"$type": "string"}}}),
    )

    def __init__(self, db: AsyncDatabase[dict[str, Any]]):
        self.col = db["units"]

    async def insert(self, unit: Unit) -> None:
        await self.col.insert_one(to_doc(unit))

    async def get(self, unit_id: str) -> Unit | None:
        return from_doc(await self.col.find_one({"_id": unit_id}), Unit)

    async def get_many(self, unit_ids: list[str]) -> dict[str, Unit]:
        if not unit_ids:
            return {}
        docs = await self.col.find({"_id": {"$in": list(set(unit_ids))}}).to_list()
        return {d["_id"]: from_doc(d, Unit) for d in docs}

    async def children(self, parent_id: str | None, *, include_disabled: bool = False) -> list[Unit]:
        query: dict[str, Any] = {"parent_id": parent_id}
        if not include_disabled:
            query["status"] = "active"
        cursor = self.col.find(query).sort([("order", ASCENDING), ("_id", ASCENDING)])
        return [from_doc(d, Unit) for d in await cursor.to_list()]

    async def hidden_units(self) -> list[Unit]:
        return [from_doc(d, Unit) for d in await self.col.find({"hidden": True}).to_list()]

    async def count_active_children(self, unit_id: str) -> int:
        return await self.col.count_documents({"parent_id": unit_id, "status": "active"})

    async def update(self, unit_id: str, changes: dict[str, Any], now: datetime) -> Unit | None:
        doc = await self.col.find_one_and_update(
            {"_id": unit_id}, {"$set": {**changes, "updated_at": now}}, return_document=ReturnDocument.AFTER)
        return from_doc(doc, Unit)
