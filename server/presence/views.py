"""What clients see of presence (REST and WebSocket alike)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from .service import UserPresence


class PresenceView(msgspec.Struct, kw_only=True):
    user_id: str
    state: str  # online | away | offline
    last_seen: datetime | None  # when offline, unless the user hides it


class PresenceList(msgspec.Struct, kw_only=True):
    presence: list[PresenceView]


def presence_view(p: UserPresence) -> PresenceView:
    return PresenceView(user_id=p.user_id, state=p.state, last_seen=p.last_seen)
