"""The durable push queue (``push_outbox``) and the push worker's state (``push_state``).

One outbox document per (device, event): its ``_id`` ``"<device_id>|<event id>"`` makes planning the
same event twice harmless (de-duplication), and the document survives a crash of the worker. States:
``pending`` (due at ``next_attempt_at``) → ``sending`` (claimed by the worker holding the lease) →
``sent`` or ``failed``; a transient failure puts it back to ``pending`` later. Sent and failed
documents expire after a week.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from .indexes import IndexSpec

KEEP_SECONDS = 7 * 86400


class PushStore:
    INDEXES = (
        IndexSpec("push_outbox", [("state", ASCENDING), ("next_attempt_at", ASCENDING)], "due"),
        IndexSpec("push_outbox", [("created_at", ASCENDING)], "expire", {"expireAfterSeconds": KEEP_SECONDS}),
    )

    def __init__(self, db: AsyncDatabase[dict[str, Any]]):
        self.outbox = db["push_outbox"]
        self.state = db["push_state"]

    async def enqueue(self, docs: list[dict[str, Any]]) -> int:
        """Queue deliveries; those queued before (same device and event) are skipped. Returns how
        many were new."""
        if not docs:
            return 0
        try:
            result = await self.outbox.insert_many(docs, ordered=False)
            return len(result.inserted_ids)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise
            return exc.details.get("nInserted", 0)

    async def claim_due(self, now: datetime, owner: str, limit: int) -> list[dict[str, Any]]:
        docs = await self.outbox.find({"state": "pending", "next_attempt_at": {"$lte": now}}).limit(limit).to_list()
        if not docs:
            return []
        ids = [d["_id"] for d in docs]
        await self.outbox.update_many({"_id": {"$in": ids}, "state": "pending"},
                                      {"$set": {"state": "sending", "claimed_by": owner, "claimed_at": now}})
        return docs

    async def finish(self, updates: list[tuple[str, dict[str, Any]]]) -> None:
        """Apply the outcome of a batch: (delivery id, fields to set) each."""
        if updates:
            await self.outbox.bulk_write([UpdateOne({"_id": i, "state": "sending"}, {"$set": fields})
                                          for i, fields in updates], ordered=False)

    async def release_claims(self, owner: str) -> int:
        """Deliveries left "sending" by a worker that died (the new lease holder sends them again)."""
        result = await self.outbox.update_many({"state": "sending", "claimed_by": {"$ne": owner}},
                                               {"$set": {"state": "pending"}})
        return result.modified_count

    async def counts(self) -> dict[str, int]:
        return {state: await self.outbox.count_documents({"state": state})
                for state in ("pending", "sending", "sent", "failed")}

    # The worker lease: one process plans and sends at a time.
    async def take_lease(self, owner: str, now: datetime, until: datetime) -> bool:
        try:
            doc = await self.state.find_one_and_update(
                {"_id": "lease", "$or": [{"owner": owner}, {"expires_at": {"$lt": now}}]},
                {"$set": {"owner": owner, "expires_at": until}}, upsert=True, return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:  # someone else holds it (the upsert collided with their document)
            return False
        return doc is not None and doc["owner"] == owner

    async def resume_token(self) -> Any:
        doc = await self.state.find_one({"_id": "planner"})
        return doc.get("resume_token") if doc else None

    async def save_resume_token(self, token: Any) -> None:
        await self.state.update_one({"_id": "planner"}, {"$set": {"resume_token": token}}, upsert=True)
