"""Typed shapes of what the store holds: units, users, devices, audit entries.

These are the documents as stored (``_id`` included). Services pass these objects around; what
clients see is built from them by the HTTP layer's view structs, so a stored secret (a password
hash, a TOTP secret) can never leak by being returned as is.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

import msgspec

UnitLevel = Literal["national", "province", "city", "county", "department"]
LEVEL_RANK: dict[str, int] = {"national": 0, "province": 1, "city": 2, "county": 3, "department": 4}
Status = Literal["active", "disabled"]
RoleName = Literal["unit_admin", "auditor"]


def utcnow() -> datetime:
    # MongoDB keeps milliseconds; truncating here makes a value read back equal to the one written.
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class Unit(msgspec.Struct, kw_only=True):
    id: str = msgspec.field(name="_id")
    name: str
    level: UnitLevel
    parent_id: str | None
    path: list[str]  # ancestor ids from the root down to and including this unit
    order: int = 0
    hidden: bool = False  # hidden from users outside this unit's subtree
    require_totp: bool = False  # users in this subtree must use a second factor
    status: Status = "active"
    code: str | None = None  # e.g. the administrative division code 450100
    created_at: datetime
    updated_at: datetime


class Membership(msgspec.Struct, kw_only=True):
    unit_id: str
    title: str = ""
    order: int = 0


class RoleGrant(msgspec.Struct, kw_only=True):
    role: RoleName
    unit_id: str


class Totp(msgspec.Struct, kw_only=True):
    secret: str  # base32
    enabled: bool
    last_step: int = 0  # the last accepted time step: a code is good once
    created_at: datetime


class NotificationSettings(msgspec.Struct, kw_only=True):
    """A user's do-not-disturb hours, in their time zone ("22:00" to "07:00" crosses midnight)."""

    dnd_start: str | None = None  # "HH:MM", None: no do-not-disturb
    dnd_end: str | None = None
    timezone: str = "Asia/Shanghai"


class User(msgspec.Struct, kw_only=True):
    id: str = msgspec.field(name="_id")
    username: str  # login name, lower case, unique
    display_name: str
    pinyin: str  # full pinyin, lower case, no spaces: 张伟 -> zhangwei
    pinyin_initials: str  # zw
    phone: str | None = None
    status: Status = "active"
    directory_hidden: bool = False
    memberships: list[Membership]  # the first one is the primary post (主岗)
    unit_paths: list[str]  # union of the paths of the member units, for subtree queries
    roles: list[RoleGrant] = []
    system_admin: bool = False
    password_hash: str
    totp: Totp | None = None
    hide_last_seen: bool = False
    notifications: NotificationSettings = msgspec.field(default_factory=NotificationSettings)
    created_at: datetime
    updated_at: datetime

    @property
    def primary_unit_id(self) -> str:
        return self.memberships[0].unit_id

    @property
    def unit_ids(self) -> list[str]:
        return [m.unit_id for m in self.memberships]


class PushRegistration(msgspec.Struct, kw_only=True):
    """Where a device receives push notifications (one per device; a refresh replaces it)."""

    provider: str  # "fcm" (Android, iOS through APNs, web); vendor channels later ("huawei", ...)
    token: str
    token_type: Literal["token", "fid"] = "token"  # FCM registration token or Firebase installation id
    platform: Literal["android", "ios", "web"]
    app_version: str = ""
    locale: str = "zh-CN"
    updated_at: datetime


class Device(msgspec.Struct, kw_only=True):
    """One signed-in device: the holder of one refresh-token family."""

    id: str = msgspec.field(name="_id")
    user_id: str
    name: str
    platform: str
    created_at: datetime
    last_active_at: datetime
    last_ip: str | None = None
    user_agent: str | None = None
    revoked_at: datetime | None = None
    revoked_reason: str | None = None
    push: PushRegistration | None = None


class AuditEntry(msgspec.Struct, kw_only=True):
    id: Any = msgspec.field(name="_id", default=None)  # ObjectId, assigned on insert
    at: datetime
    action: str  # e.g. auth.login, admin.user.create
    outcome: Literal["success", "failure"] = "success"
    actor_id: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    scope_paths: list[str] = []  # unit ids whose auditors may read this entry
    ip: str | None = None
    user_agent: str | None = None
    details: dict[str, Any] = {}


def from_doc(doc: dict[str, Any] | None, type_: type[Any]) -> Any:
    return None if doc is None else msgspec.convert(doc, type_)


def to_doc(obj: msgspec.Struct) -> dict[str, Any]:
    return msgspec.to_builtins(obj, builtin_types=(datetime,))
