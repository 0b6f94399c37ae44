"""Queries on conversation logs (``events``) and on per-user hidden messages (delete-for-me).

Two indexes only, because every index costs on every insert (measured: each secondary index roughly
halves SecantusDB's insert rate):

* ``_id`` is the **idempotency key**: ``"<sender_id>|<client_msg_id>"`` (``"#<conversation>:<seq>"``
  for system events without one). A retried send collides here and finds its original by ``_id``.
* the unique ``(conversation_id, seq)`` index is the **seq arbiter** (two writers cannot both store
  seq N) and serves every read. Reads always ask for a *bounded* seq range (``lo <= seq <= hi``):
  seqs are gap-free, so a page of N events is a range of N seqs, served without scanning or sorting.

The event's public ``id`` (``"<conversation_id>:<seq>"``) is derived, not stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from ..messaging.models import Event, event_id
from .indexes import IndexSpec


def storage_key(conversation_id: str, seq: int, sender_id: str | None, client_msg_id: str | None) -> str:
    if client_msg_id is not None:
        return f"{sender_id or ''}|{client_msg_id}"
    return f"#{conversation_id}:{seq}"


def event_to_doc(event: Event) -> dict[str, Any]:
    doc = msgspec.to_builtins(event, builtin_types=(datetime,))
    del doc["id"]
    doc["_id"] = storage_key(event.conversation_id, event.seq, event.sender_id, event.client_msg_id)
    return doc


def doc_to_event(doc: dict[str, Any]) -> Event:
    doc = dict(doc)
    del doc["_id"]
    doc.pop("change_ids", None)  # store-only: the edits and card updates that copied this message
    doc["id"] = event_id(doc["conversation_id"], doc["seq"])
    return msgspec.convert(doc, Event)


class EventsStore:
    INDEXES = (
        IndexSpec("events", [("conversation_id", ASCENDING), ("seq", ASCENDING)], "log", {"unique": True}),
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
        doc = await self.col.find_one({"conversation_id": conversation_id, "seq": seq})
        return doc_to_event(doc) if doc else None

    async def get_by_client_id(self, sender_id: str | None, client_msg_id: str) -> Event | None:
        doc = await self.col.find_one({"_id": storage_key("", 0, sender_id, client_msg_id)})
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
                            inc: dict[str, int] | None = None, change_id: str | None = None) -> Event | None:
        """Change a stored message in place; ``change_id`` records the storage key of the edit or card
        update about to copy its content (so that a recall can strip the copy too)."""
        update: dict[str, Any] = {"$set": changes}
        if unset:
            update["$unset"] = {name: "" for name in unset}
        if inc:
            update["$inc"] = inc
        if change_id is not None:
            update["$push"] = {"change_ids": change_id}
        doc = await self.col.find_one_and_update({"conversation_id": conversation_id, "seq": seq, **condition},
                                                 update, return_document=ReturnDocument.AFTER)
        return doc_to_event(doc) if doc else None

    async def strip_changes(self, conversation_id: str, target_seq: int) -> None:
        """Remove the content that edits and card updates copied from a message (when it is recalled)."""
        target = await self.col.find_one({"conversation_id": conversation_id, "seq": target_seq},
                                         {"change_ids": 1})
        keys = (target or {}).get("change_ids") or []
        if keys:
            await self.col.update_many({"_id": {"$in": keys}}, {"$unset": {"message": ""}})

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
