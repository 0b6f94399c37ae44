"""Queries on conversation logs (``events``) and on per-user hidden messages (delete-for-me).

An event's ``_id`` is ``"<conversation_id>:<seq as 12 digits>"``; the unique ``_id`` is the arbiter
of seq assignment (two writers cannot both store seq N). Reads always ask for a *bounded* seq range
(``lo <= seq <= hi``): seqs are gap-free, so a page of N events is a range of N seqs, which the
``(conversation_id, seq)`` index serves without scanning or sorting the whole log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from ..messaging.models import Event, event_id
from .indexes import IndexSpec


def event_to_doc(event: Event) -> dict[str, Any]:
    doc = msgspec.to_builtins(event, builtin_types=(datetime,))
    doc["_id"] = doc.pop("id")
    return doc


def doc_to_event(doc: dict[str, Any]) -> Event:
    doc = dict(doc)
    doc["id"] = doc.pop("_id")
    return msgspec.convert(doc, Event)


class EventsStore:
    INDEXES = (
        IndexSpec("events", [("conversation_id", ASCENDING), ("seq", ASCENDING)], "log", {"unique": True}),
        IndexSpec("events", [("sender_id", ASCENDING), ("client_msg_id", ASCENDING)], "idempotency",
                  {"unique": True, "partialFilterExpression": {"client_msg_id": {"$type": "string"}}}),
        IndexSpec("events", [("conversation_id", ASCENDING), ("target_seq", ASCENDING)], "changes",
                  {"partialFilterExpression": {"target_seq": {"$exists": True}}}),
        IndexSpec("hidden_events", [("user_id", ASCENDING), ("conversation_id", ASCENDING), ("seq", ASCENDING)],
                  "by_user", {"unique": True}),
    )

    def __init__(self, db: AsyncDatabase[dict[str, Any]]):
        self.col = db["events"]
        self.hidden = db["hidden_events"]

    async def insert_ordered(self, docs: list[dict[str, Any]]) -> None:
        """Insert in order, stopping at the first error (raises BulkWriteError with ``nInserted``)."""
        await self.col.insert_many(docs, ordered=True)

    async def get(self, conversation_id: str, seq: int) -> Event | None:
        doc = await self.col.find_one({"_id": event_id(conversation_id, seq)})
        return doc_to_event(doc) if doc else None

    async def get_by_client_id(self, sender_id: str, client_msg_id: str) -> Event | None:
        # Hinted: SecantusDB does not pick a partial index by itself and would scan every event.
        doc = await self.col.find_one({"sender_id": sender_id, "client_msg_id": client_msg_id}, hint="idempotency")
        return doc_to_event(doc) if doc else None

    async def range(self, conversation_id: str, lo: int, hi: int) -> list[Event]:
        """Events with lo <= seq <= hi, in seq order."""
        if hi < lo:
            return []
        docs = await self.col.find({"conversation_id": conversation_id, "seq": {"$gte": lo, "$lte": hi}}).to_list()
        events = [doc_to_event(d) for d in docs]
        events.sort(key=lambda e: e.seq)
        return events

    async def heads_after(self, conversation_id: str, after_seq: int, window: int) -> list[tuple[int, int]]:
        """(seq, count) of the events in (after_seq, after_seq + window]: how a writer finds the true
        head when the conversation document lags behind the log."""
        docs = await self.col.find({"conversation_id": conversation_id,
                                    "seq": {"$gt": after_seq, "$lte": after_seq + window}},
                                   {"seq": 1, "count": 1, "_id": 0}).to_list()
        return [(d["seq"], d["count"]) for d in docs]

    async def update_target(self, conversation_id: str, seq: int, condition: dict[str, Any],
                            changes: dict[str, Any], unset: list[str] | None = None,
                            inc: dict[str, int] | None = None) -> Event | None:
        update: dict[str, Any] = {"$set": changes}
        if unset:
            update["$unset"] = {name: "" for name in unset}
        if inc:
            update["$inc"] = inc
        doc = await self.col.find_one_and_update({"_id": event_id(conversation_id, seq), **condition}, update,
                                                 return_document=ReturnDocument.AFTER)
        return doc_to_event(doc) if doc else None

    async def strip_changes(self, conversation_id: str, target_seq: int) -> None:
        """Remove the content that edits and card updates copied from a message (when it is recalled)."""
        # Found through the "changes" index by name: the embedded database does not choose a partial
        # index by itself (and an update ignores the hint), so find first, then update by _id.
        docs = await self.col.find({"conversation_id": conversation_id, "target_seq": target_seq,
                                    "message": {"$exists": True}}, {"_id": 1}).hint("changes").to_list()
        if docs:
            await self.col.update_many({"_id": {"$in": [d["_id"] for d in docs]}}, {"$unset": {"message": ""}})

    # Delete-for-me.
    async def hide(self, user_id: str, conversation_id: str, seqs: list[int], now: datetime) -> None:
        ops = [UpdateOne({"user_id": user_id, "conversation_id": conversation_id, "seq": s},
                         {"$setOnInsert": {"at": now}}, upsert=True) for s in seqs]
        if ops:
            await self.hidden.bulk_write(ops, ordered=False)

    async def hidden_seqs(self, user_id: str, conversation_id: str, lo: int, hi: int) -> set[int]:
        docs = await self.hidden.find({"user_id": user_id, "conversation_id": conversation_id,
                                       "seq": {"$gte": lo, "$lte": hi}}, {"seq": 1, "_id": 0}).to_list()
        return {d["seq"] for d in docs}
