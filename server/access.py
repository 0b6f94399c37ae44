"""The one place that decides who may see what and who may administer what.

Two questions, answered only here:

* **Visibility** (Tchap-style directory rules). A unit marked ``hidden`` is invisible to users
  outside its subtree, and so is everything under it. A user marked ``directory_hidden`` is not
  listed or found by anyone but themselves and the administrators of their units. A user is
  visible to a viewer when at least one of the user's units is.
* **Graded administration** (分级权限). A unit admin of X administers X's subtree: X and every unit
  whose ``path`` contains X — never a sibling, never an ancestor. An auditor of X reads the audit
  log of the same subtree. A system admin administers everything. An account is administered from
  its primary unit, and only by those whose scope also covers every role it holds.

Services call these functions; handlers and stores never decide access themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .errors import XtError
from .models import Unit, User


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a request or a WebSocket."""

    user_id: str
    device_id: str | None


def role_roots(user: User, role: str) -> list[str]:
    """Unit ids at which ``user`` holds ``role`` (the roots of the subtrees it covers)."""
    return [grant.unit_id for grant in user.roles if grant.role == role]


def covers(roots: Iterable[str], path: Iterable[str]) -> bool:
    """True if a unit with this ``path`` lies in the subtree of one of ``roots``."""
    root_set = set(roots)
    return any(unit_id in root_set for unit_id in path)


def is_admin(user: User) -> bool:
    return user.system_admin or any(grant.role == "unit_admin" for grant in user.roles)


def administers_unit(actor: User, unit: Unit) -> bool:
    return actor.status == "active" and (actor.system_admin or covers(role_roots(actor, "unit_admin"), unit.path))


def require_admin_of(actor: User, unit: Unit) -> None:
    """Refuse unless ``actor`` administers ``unit``: ``perm.forbidden`` for non-admins,
    ``perm.out_of_scope`` for admins of another branch."""
    if administers_unit(actor, unit):
        return
    if not is_admin(actor):
        raise XtError("perm.forbidden", "Only administrators may do this.")
    raise XtError("perm.out_of_scope", f"Unit {unit.id} is outside the part of the organisation you administer.")


def administers_user(actor: User, target: User, units: dict[str, Unit]) -> bool:
    """Account-level actions (disable, reset password, edit profile) belong to the admins of the
    user's primary unit (主岗): a secondary post elsewhere gives that branch no power over the account.

    An account is only as administrable as its powers: one that is a system admin, or holds a role
    whose unit lies outside the actor's scope, belongs to the administrators above — otherwise an
    admin of 南宁 could reset the password of a 南宁 colleague who administers 柳州 and act as them.
    ``units`` must hold the target's primary unit and the units of its roles."""
    if actor.system_admin:
        return actor.status == "active"
    primary = units.get(target.primary_unit_id)
    if target.system_admin or primary is None or not administers_unit(actor, primary):
        return False
    return all(grant.unit_id in units and administers_unit(actor, units[grant.unit_id]) for grant in target.roles)


def audit_roots(actor: User) -> list[str] | None:
    """Subtrees whose audit log ``actor`` may read; None means all (system admins)."""
    if actor.system_admin:
        return None
    return role_roots(actor, "auditor")


class Visibility:
    """Visibility rules for one viewer, given the installation's hidden units."""

    def __init__(self, viewer: User, hidden_unit_ids: Iterable[str]):
        self.viewer = viewer
        admin_roots = set(role_roots(viewer, "unit_admin"))
        inside = set(viewer.unit_paths) | admin_roots
        # Hidden units the viewer is outside of: anything under them is invisible to this viewer.
        self.blocked = set() if viewer.system_admin else {u for u in hidden_unit_ids if u not in inside}
        self.admin_roots = admin_roots

    def unit_visible(self, unit: Unit) -> bool:
        if self.viewer.system_admin or covers(self.admin_roots, unit.path):
            return True  # administrators see their whole subtree, disabled units included
        return unit.status == "active" and not any(unit_id in self.blocked for unit_id in unit.path)

    def user_visible(self, target: User, units: dict[str, Unit]) -> bool:
        """``units`` must hold the target's member units."""
        if target.id == self.viewer.id or self.viewer.system_admin:
            return True
        member_units = [units[u] for u in target.unit_ids if u in units]
        if any(covers(self.admin_roots, unit.path) for unit in member_units):
            return True
        if target.directory_hidden or target.status != "active":
            return False
        return any(self.unit_visible(unit) for unit in member_units)
