"""Recording and reading audit entries (see ``server/access.py`` for who may read what)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from ..access import audit_roots, covers
from ..errors import XtError
from ..models import AuditEntry, User, utcnow
from ..store import Store

log = logging.getLogger("xietong.audit")


@dataclass(frozen=True)
class Origin:
    """Where a request came from, as recorded in the audit log."""

    ip: str | None = None
    user_agent: str | None = None


class AuditService:
    def __init__(self, store: Store):
        self.store = store

    async def record(self, action: str, *, origin: Origin, actor_id: str | None = None,
                     target_type: str | None = None, target_id: str | None = None,
                     scope_paths: list[str] | None = None, outcome: str = "success",
                     details: dict[str, Any] | None = None) -> None:
        entry = AuditEntry(at=utcnow(), action=action, outcome=outcome,  # type: ignore[arg-type]
                           actor_id=actor_id, target_type=target_type, target_id=target_id,
                           scope_paths=sorted(set(scope_paths or [])), ip=origin.ip,
                           user_agent=origin.user_agent, details=details or {})
        await self.store.audit.append(entry)
        log.debug("audit %s %s actor=%s target=%s:%s", action, outcome, actor_id, target_type, target_id)

    async def read(self, actor: User, *, unit_id: str | None, before: str | None, limit: int,
                   action: str | None, actor_id: str | None, target_id: str | None) -> list[AuditEntry]:
        roots = audit_roots(actor)
        if roots is not None and not roots:
            raise XtError("perm.forbidden", "Only auditors and system administrators read the audit log.")
        if unit_id is not None:
            unit = await self.store.units.get(unit_id)
            if unit is None:
                raise XtError("not_found", "No such unit.")
            if roots is not None and not covers(roots, unit.path):
                raise XtError("perm.out_of_scope", "You do not audit this unit.")
            scope: str | None = unit_id
        elif roots is None:
            scope = None
        elif len(roots) == 1:
            scope = roots[0]
        else:
            raise XtError("request.invalid", "You audit several units: choose one with unit_id.")
        before_id = None
        if before is not None:
            try:
                before_id = str(ObjectId(before))
            except (InvalidId, TypeError):
                raise XtError("request.invalid", "before: not a cursor returned by this API.") from None
        return await self.store.audit.read(scope_unit_id=scope, before_id=before_id, limit=limit,
                                           action_prefix=action, actor_id=actor_id, target_id=target_id)
