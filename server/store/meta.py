"""Small named documents about the installation itself (e.g. whether the demo was seeded)."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError


class MetaStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]):
        self.col = db["meta"]

    async def get(self, name: str) -> dict[str, Any] | None:
        return await self.col.find_one({"_id": name})

    async def claim(self, name: str, value: dict[str, Any]) -> bool:
        """Create ``name`` once; False if it already exists (so only one process seeds)."""
        try:
            await self.col.insert_one({"_id": name, **value})
            return True
        except DuplicateKeyError:
            return False
