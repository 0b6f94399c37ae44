"""Queries on conversations and their members.

A member document's id is ``"<conversation_id>|<user_id>"``, so checking one membership is a point
lookup and checking a batch of them is one ``$in`` query.

Conversations and members are updated on every write batch (heads, read positions), and every index
costs on every update (measured on the embedded database), so they carry few indexes: the one-chat-
per-pair and one-group-per-unit rules live in a small ``conversation_keys`` collection (``_id`` =
``"direct:<pair>"`` or ``"unit:<unit id>"``) instead of partial unique indexes on conversations.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError
from pymongo.asynchronous.database import AsyncDatabase

from ..messaging.models import Conversation, Member
from ..models import from_doc, to_doc
from .indexes import IndexSpec


class ConversationsStore:
    INDEXES = (
        IndexSpec("members", [("user_id", ASCENDING), ("state", ASCENDING)], "by_user"),
        IndexSpec("members", [("conversation_id", ASCENDING), ("state", ASCENDING), ("user_id", ASCENDING)],
                  "by_conversation"),
    )

    def __init__(self, db: AsyncDatabase[dict[str, Any]]):
        self.col = db["conversations"]
        self.members = db["members"]
        self.keys = db["conversation_keys"]

    # Conversations.
    @staticmethod
    def _key(conversation: Conversation) -> str | None:
        if conversation.direct_key:
            return "direct:" + conversation.direct_key
        if conversation.unit_id:
            return "unit:" + conversation.unit_id
        return None

    async def insert(self, conversation: Conversation) -> None:
        """Store a new conversation; DuplicateKeyError if its pair (or unit) already has one."""
        await self.col.insert_one(to_doc(conversation))
        key = self._key(conversation)
        if key is not None:
            try:
                await self.keys.insert_one({"_id": key, "conversation_id": conversation.id})
            except DuplicateKeyError:
                await self.col.delete_one({"_id": conversation.id})  # the other creator won
                raise

    async def _by_key(self, key: str) -> Conversation | None:
        doc = await self.keys.find_one({"_id": key})
        return await self.get(doc["conversation_id"]) if doc else None

    async def get(self, conversation_id: str) -> Conversation | None:
        return from_doc(await self.col.find_one({"_id": conversation_id}), Conversation)

    async def get_many(self, ids: Iterable[str]) -> dict[str, Conversation]:
        ids = list(set(ids))
        if not ids:
            return {}
        return {d["_id"]: from_doc(d, Conversation) for d in await self.col.find({"_id": {"$in": ids}}).to_list()}

    async def get_by_direct_key(self, key: str) -> Conversation | None:
        return await self._by_key("direct:" + key)

    async def get_by_unit(self, unit_id: str) -> Conversation | None:
        return await self._by_key("unit:" + unit_id)

    async def update(self, conversation_id: str, changes: dict[str, Any], now: datetime,
                     inc: dict[str, int] | None = None) -> Conversation | None:
        update: dict[str, Any] = {"$set": {**changes, "updated_at": now}}
        if inc:
            update["$inc"] = inc
        doc = await self.col.find_one_and_update({"_id": conversation_id}, update,
                                                 return_document=ReturnDocument.AFTER)
        return from_doc(doc, Conversation)

    async def advance_heads(self, heads: list[UpdateOne]) -> None:
        """Apply the head updates of one write batch (built by the event writer) in one round trip."""
        if heads:
            await self.col.bulk_write(heads, ordered=False)

    # Members.
    async def get_member(self, mid: str) -> Member | None:
        return from_doc(await self.members.find_one({"_id": mid}), Member)

    async def get_members(self, ids: Iterable[str]) -> dict[str, Member]:
        ids = list(set(ids))
        if not ids:
            return {}
        return {d["_id"]: from_doc(d, Member) for d in await self.members.find({"_id": {"$in": ids}}).to_list()}

    async def upsert_members(self, members: list[Member]) -> None:
        """Insert new members or reactivate former ones (a re-join keeps read state, resets visibility)."""
        if not members:
            return
        ops = []
        for m in members:
            doc = to_doc(m)
            doc.pop("_id")
            on_insert = {k: doc.pop(k) for k in ("read_seq", "read_count", "delivered_seq", "muted", "pinned",
                                                  "mention_seqs") if k in doc}
            ops.append(UpdateOne({"_id": m.id}, {"$set": {**doc, "left_seq": None},
                                                 "$setOnInsert": on_insert}, upsert=True))
        await self.members.bulk_write(ops, ordered=False)

    async def update_member(self, mid: str, changes: dict[str, Any], now: datetime) -> Member | None:
        doc = await self.members.find_one_and_update({"_id": mid}, {"$set": {**changes, "updated_at": now}},
                                                     return_document=ReturnDocument.AFTER)
        return from_doc(doc, Member)

    async def mark_left(self, mids: list[str], left_seq: int, now: datetime) -> int:
        result = await self.members.update_many(
            {"_id": {"$in": mids}, "state": "active"},
            {"$set": {"state": "left", "left_seq": left_seq, "role": "member", "updated_at": now}})
        return result.modified_count

    async def memberships_of(self, user_id: str, *, include_left: bool = True) -> list[Member]:
        query: dict[str, Any] = {"user_id": user_id}
        if not include_left:
            query["state"] = "active"
        return [from_doc(d, Member) for d in await self.members.find(query).to_list()]

    async def active_conversation_ids(self, user_id: str) -> list[str]:
        docs = await self.members.find({"user_id": user_id, "state": "active"}, {"conversation_id": 1}).to_list()
        return [d["conversation_id"] for d in docs]

    async def list_members(self, conversation_id: str, *, after_user: str | None, limit: int) -> list[Member]:
        query: dict[str, Any] = {"conversation_id": conversation_id, "state": "active"}
        if after_user is not None:
            query["user_id"] = {"$gt": after_user}
        cursor = self.members.find(query).sort([("user_id", ASCENDING)]).limit(limit)
        return [from_doc(d, Member) for d in await cursor.to_list()]

    async def active_member_ids(self, conversation_id: str) -> list[str]:
        docs = await self.members.find({"conversation_id": conversation_id, "state": "active"},
                                       {"user_id": 1}).to_list()
        return [d["user_id"] for d in docs]

    async def members_with_role(self, conversation_id: str, role: str) -> list[Member]:
        docs = await self.members.find({"conversation_id": conversation_id, "state": "active",
                                        "role": role}).to_list()
        return [from_doc(d, Member) for d in docs]

    async def advance_read(self, mid: str, seq: int, count: int, now: datetime) -> Member | None:
        """Move the read position forward only (a late, older read never moves it back) and drop the
        mentions it covers."""
        doc = await self.members.find_one_and_update(
            {"_id": mid, "read_seq": {"$lt": seq}},
            {"$set": {"read_seq": seq, "read_count": count, "updated_at": now},
             "$max": {"delivered_seq": seq},
             "$pull": {"mention_seqs": {"$lte": seq}}},
            return_document=ReturnDocument.AFTER)
        return from_doc(doc, Member)

    async def advance_delivered(self, mid: str, seq: int) -> bool:
        result = await self.members.update_one({"_id": mid, "delivered_seq": {"$lt": seq}},
                                               {"$set": {"delivered_seq": seq}})
        return result.modified_count == 1

    async def count_readers(self, conversation_id: str, seq: int, exclude_user: str | None) -> int:
        query: dict[str, Any] = {"conversation_id": conversation_id, "read_seq": {"$gte": seq}, "state": "active"}
        if exclude_user:
            query["user_id"] = {"$ne": exclude_user}
        return await self.members.count_documents(query)

    async def readers(self, conversation_id: str, seq: int, *, exclude_user: str | None, after_user: str | None,
                      limit: int) -> list[Member]:
        query: dict[str, Any] = {"conversation_id": conversation_id, "read_seq": {"$gte": seq}, "state": "active"}
        user_filter: dict[str, Any] = {}
        if exclude_user:
            user_filter["$ne"] = exclude_user
        if after_user:
            user_filter["$gt"] = after_user
        if user_filter:
            query["user_id"] = user_filter
        cursor = self.members.find(query).sort("user_id", ASCENDING).limit(limit)
        return [from_doc(d, Member) for d in await cursor.to_list()]

    async def peers_among(self, user_id: str, candidates: list[str]) -> set[str]:
        """Those of ``candidates`` who share an active conversation with ``user_id``."""
        mine = await self.active_conversation_ids(user_id)
        if not mine or not candidates:
            return set()
        docs = await self.members.find({"conversation_id": {"$in": mine}, "user_id": {"$in": candidates},
                                        "state": "active"}, {"user_id": 1}).to_list()
        return {d["user_id"] for d in docs}
