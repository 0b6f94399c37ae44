"""The people and conversations a benchmark needs, created directly in the database.

Logging in thousands of devices would mostly measure Argon2 (by design ~30 ms per password), so the
harness inserts users and signed-in devices in bulk and mints their access tokens with the
deployment's own signing key — exactly the tokens a login would return. Conversations are created
through the conversation service's internal constructor, which skips the per-member directory
visibility check (every benchmark user is visible to every other) but writes the same documents and
``conversation.created`` event as the public API.
"""

from __future__ import annotations

from dataclasses import dataclass

from xietong.server.auth.tokens import TokenIssuer
from xietong.server.ids import new_id
from xietong.server.messaging.models import Conversation, direct_key
from xietong.server.models import Device, Membership, Unit, User, to_doc, utcnow
from xietong.server.services import Services

BATCH = 1000


@dataclass(frozen=True)
class Account:
    user_id: str
    device_id: str
    token: str


class Population:
    def __init__(self, services: Services):
        self.services = services
        self.issuer = TokenIssuer(services.keys, issuer=services.settings.jwt_issuer,
                                  audience=services.settings.jwt_audience, ttl_seconds=900)
        self.unit_id: str | None = None

    async def _unit(self) -> str:
        if self.unit_id is None:
            now = utcnow()
            uid = new_id("unit")
            await self.services.store.units.insert(Unit(id=uid, name="基准测试单位", level="province", parent_id=None,
                                                        path=[uid], created_at=now, updated_at=now))
            self.unit_id = uid
        return self.unit_id

    async def accounts(self, count: int, prefix: str) -> list[Account]:
        """``count`` users, each with one signed-in device and a fresh access token."""
        unit = await self._unit()
        now = utcnow()
        users, devices = [], []
        for n in range(count):
            user = User(id=new_id("user"), username=f"{prefix}{n}", display_name=f"测试{prefix}{n}",
                        pinyin=f"ceshi{prefix}{n}", pinyin_initials="cs", memberships=[Membership(unit_id=unit)],
                        unit_paths=[unit], password_hash="!", created_at=now, updated_at=now)
            users.append(user)
            devices.append(Device(id=new_id("device"), user_id=user.id, name="bench", platform="cli",
                                  created_at=now, last_active_at=now))
        store = self.services.store
        for i in range(0, count, BATCH):
            await store.users.col.insert_many([to_doc(u) for u in users[i:i + BATCH]], ordered=False)
            await store.devices.col.insert_many([to_doc(d) for d in devices[i:i + BATCH]], ordered=False)
        return [Account(u.id, d.id, self.issuer.issue(u.id, d.id)) for u, d in zip(users, devices)]

    async def other_devices(self, accounts: list[Account]) -> list[Account]:
        """A second signed-in device for each account (a device holds one connection at a time)."""
        now = utcnow()
        devices = [Device(id=new_id("device"), user_id=a.user_id, name="bench-2", platform="cli", created_at=now,
                          last_active_at=now) for a in accounts]
        await self.services.store.devices.col.insert_many([to_doc(d) for d in devices], ordered=False)
        return [Account(d.user_id, d.id, self.issuer.issue(d.user_id, d.id)) for d in devices]

    def refresh_tokens(self, accounts: list[Account]) -> list[Account]:
        """New access tokens for the same devices (tokens live 15 minutes)."""
        return [Account(a.user_id, a.device_id, self.issuer.issue(a.user_id, a.device_id)) for a in accounts]

    async def direct(self, a: Account, b: Account) -> str:
        now = utcnow()
        conversation = Conversation(id=new_id("conversation"), kind="direct", direct_key=direct_key(a.user_id, b.user_id),
                                    member_count=2, created_by=a.user_id, created_at=now, updated_at=now)
        await self.services.conversations._create(conversation, {a.user_id: "member", b.user_id: "member"})
        return conversation.id

    async def group(self, owner: Account, members: list[Account], name: str) -> str:
        now = utcnow()
        roles = {m.user_id: "member" for m in members}
        roles[owner.user_id] = "owner"
        conversation = Conversation(id=new_id("conversation"), kind="group", name=name, owner_id=owner.user_id,
                                    member_count=len(roles), created_by=owner.user_id, created_at=now,
                                    updated_at=now)
        await self.services.conversations._create(conversation, roles)
        return conversation.id
