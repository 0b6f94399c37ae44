"""The store: the one owner of the MongoDB client, the database and its indexes.

Services reach MongoDB only through the domain stores hung on :class:`Store` (``store.users``,
``store.units`` …). Store functions run queries; they never decide who may do what. Indexes are
declared beside the queries that need them and created idempotently by :meth:`Store.ensure_indexes`
at start-up.
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from .audit import AuditStore
from .conversations import ConversationsStore
from .devices import DevicesStore
from .events import EventsStore
from .indexes import IndexSpec
from .meta import MetaStore
from .push import PushStore
from .units import UnitsStore
from .users import UsersStore

log = logging.getLogger(__name__)


class Store:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], db_name: str):
        self.client = client
        self.db = client[db_name]
        self.units = UnitsStore(self.db)
        self.users = UsersStore(self.db)
        self.devices = DevicesStore(self.db)
        self.audit = AuditStore(self.db)
        self.meta = MetaStore(self.db)
        self.conversations = ConversationsStore(self.db)
        self.events = EventsStore(self.db)
        self.push = PushStore(self.db)

    @classmethod
    def connect(cls, url: str, db_name: str) -> "Store":
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url, tz_aware=True, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000, appname="xietong")
        return cls(client, db_name)

    def _domain_stores(self) -> list[Any]:
        return [self.units, self.users, self.devices, self.audit, self.meta, self.conversations, self.events,
                self.push]

    async def ensure_indexes(self) -> None:
        """Create every declared index; re-running with the same declarations changes nothing."""
        for domain in self._domain_stores():
            spec: IndexSpec
            for spec in getattr(domain, "INDEXES", ()):
                await self.db[spec.collection].create_index(spec.keys, name=spec.name, **spec.options)
        # Derived lookups kept by the stores themselves, completed for data written before they existed.
        await self.devices.rebuild_push_index()

    async def ping(self) -> bool:
        try:
            await self.client.admin.command("ping")
            return True
        except PyMongoError as exc:
            log.warning("database ping failed: %s", exc)
            return False

    async def close(self) -> None:
        await self.client.close()
