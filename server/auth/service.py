"""Sign-in, token refresh with rotation, sign-out, devices, passwords and the TOTP second factor.

The model (see ``docs/auth.md``): a successful login creates a *device* — one signed-in app — that
holds a family of opaque refresh tokens. Each refresh spends the token and returns a new one; a
spent token presented again means it was copied, so the device (the whole family) is signed out.
Access tokens are short-lived JWTs naming the user (``sub``) and the device (``sid``); every request
checks that the device is still signed in, so sign-out takes effect at once.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from typing import Awaitable, Callable

from ..access import Principal
from ..audit.service import AuditService, Origin
from ..config import Settings
from ..errors import XtError
from ..ids import new_id
from ..models import Device, Totp, User, to_doc, utcnow
from ..store import Store
from . import passwords, totp
from .tokens import PURPOSE_ACCESS, PURPOSE_TOTP_ENROLL, Claims, TokenIssuer, TokenVerifier

ENROLLMENT_TOKEN_TTL = 600
# Refusals of a login that count against the name's failure limit: everything else proved the password.
_GUESSES = ("auth.invalid_credentials", "auth.totp_invalid")


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    platform: str


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    device_id: str
    user: User


def login_key(username: str) -> str:
    """The normalised form of a login name (also the key of its failure counter)."""
    return unicodedata.normalize("NFKC", username).strip().casefold()[:64]


def _hash_refresh(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AuthService:
    def __init__(self, settings: Settings, store: Store, issuer: TokenIssuer, verifier: TokenVerifier,
                 audit: AuditService):
        self.settings = settings
        self.store = store
        self.issuer = issuer
        self.verifier = verifier
        self.audit = audit
        # Called with (user_id, device ids) after devices are signed out.
        self.signed_out_listeners: list[Callable[[str, list[str]], Awaitable[None]]] = []

    # ---- requests -------------------------------------------------------------------------------

    async def authenticate(self, access_token: str) -> Principal:
        return await self.session(self.verifier.verify(access_token, purpose=PURPOSE_ACCESS))

    async def session(self, claims: Claims) -> Principal:
        """The caller of verified access-token claims, if its device is still signed in (other services
        verify the token with the published keys, then ask this)."""
        if claims.device_id is None:
            raise XtError("auth.token_invalid", "The token names no device.")
        device = await self.store.devices.get(claims.device_id)
        if device is None or device.revoked_at is not None or device.user_id != claims.user_id:
            raise XtError("auth.session_revoked")
        return Principal(user_id=claims.user_id, device_id=claims.device_id)

    # ---- login ----------------------------------------------------------------------------------

    async def login(self, username: str, password: str, totp_code: str | None, device: DeviceInfo,
                    origin: Origin) -> TokenPair:
        key = login_key(username)
        now = utcnow()
        s = self.settings
        attempt = await self.store.devices.claim_attempt(key, now, s.login_max_failures, s.login_lockout_seconds,
                                                         s.login_lockout_max_seconds)
        if not attempt.counted:
            assert attempt.locked_until is not None
            retry_after = int((attempt.locked_until - now).total_seconds()) + 1
            await self.audit.record("auth.login", origin=origin, outcome="failure", target_type="user",
                                    details={"username": key, "reason": "locked"})
            raise XtError("auth.locked", details={"retry_after": retry_after})
        try:
            user = await self._check_factors(key, password, totp_code, origin)
        except XtError as exc:
            if exc.code not in _GUESSES:  # the password was right: not a guess
                await self.store.devices.release_attempt(key, attempt)
            raise

        await self.store.devices.clear_attempts(key)
        if passwords.needs_rehash(user.password_hash):
            await self.store.users.update(user.id, {"password_hash": await passwords.hash_password(password)}, now)
        new_device = Device(id=new_id("device"), user_id=user.id, name=device.name, platform=device.platform,
                            created_at=now, last_active_at=now, last_ip=origin.ip, user_agent=origin.user_agent)
        await self.store.devices.insert(new_device)
        pair = await self._issue_pair(user, new_device.id)
        await self._audit_login(user, origin, "success", None, device_id=new_device.id)
        return pair

    async def _check_factors(self, key: str, password: str, totp_code: str | None, origin: Origin) -> User:
        """The user whose password (and TOTP code) these are, or the refusal of the login."""
        user = await self.store.users.get_by_username(key)
        if not await passwords.verify_password(user.password_hash if user else None, password):
            await self._audit_failure(key, user, origin, "bad_password")
            raise XtError("auth.invalid_credentials")
        assert user is not None
        if user.status != "active":
            await self._audit_login(user, origin, "failure", "disabled")
            raise XtError("auth.account_disabled")
        if user.totp is not None and user.totp.enabled:
            if not totp_code:
                raise XtError("auth.totp_required")
            if not await self._accept_totp(user, totp_code):
                await self._audit_failure(key, user, origin, "bad_totp")
                raise XtError("auth.totp_invalid")
        elif await self._totp_required_by_unit(user):
            await self._audit_login(user, origin, "failure", "totp_enrollment_required")
            ttl = min(ENROLLMENT_TOKEN_TTL, self.issuer.ttl_seconds)  # the issuer caps every token at this
            token = self.issuer.issue(user.id, None, purpose=PURPOSE_TOTP_ENROLL, ttl_seconds=ttl)
            raise XtError("auth.totp_enrollment_required", details={"enrollment_token": token, "expires_in": ttl})
        return user

    async def _audit_failure(self, key: str, user: User | None, origin: Origin, reason: str) -> None:
        if user is None:
            await self.audit.record("auth.login", origin=origin, outcome="failure", target_type="user",
                                    details={"username": key, "reason": "unknown_user"})
        else:
            await self._audit_login(user, origin, "failure", reason)

    async def _audit_login(self, user: User, origin: Origin, outcome: str, reason: str | None,
                           device_id: str | None = None) -> None:
        details = {"reason": reason} if reason else {}
        if device_id:
            details["device_id"] = device_id
        await self.audit.record("auth.login", origin=origin, actor_id=user.id, target_type="user",
                                target_id=user.id, scope_paths=user.unit_paths, outcome=outcome, details=details)

    async def _totp_required_by_unit(self, user: User) -> bool:
        units = await self.store.units.get_many(user.unit_paths)
        return any(unit.require_totp for unit in units.values())

    async def _accept_totp(self, user: User, code: str) -> bool:
        assert user.totp is not None
        # Apps show "123 456": the spaces a user types along are not part of the code.
        step = totp.matching_step(user.totp.secret, "".join(code.split()))
        return step is not None and await self.store.users.accept_totp_step(user.id, step)

    async def _issue_pair(self, user: User, device_id: str) -> TokenPair:
        now = utcnow()
        refresh = "xtr_" + secrets.token_urlsafe(32)
        ttl = self.settings.refresh_token_ttl
        await self.store.devices.insert_refresh_token(_hash_refresh(refresh), device_id, user.id, now,
                                                      now + timedelta(seconds=ttl))
        access = self.issuer.issue(user.id, device_id)
        return TokenPair(access, self.issuer.ttl_seconds, refresh, ttl, device_id, user)

    # ---- refresh --------------------------------------------------------------------------------

    async def refresh(self, refresh_token: str, origin: Origin) -> TokenPair:
        token_hash = _hash_refresh(refresh_token)
        record = await self.store.devices.get_refresh_token(token_hash)
        now = utcnow()
        if record is None or record["expires_at"] <= now:
            raise XtError("auth.refresh_invalid")
        device = await self.store.devices.get(record["device_id"])
        if device is None or device.revoked_at is not None:
            raise XtError("auth.session_revoked")
        if record["used_at"] is not None or not await self.store.devices.mark_refresh_token_used(token_hash, now):
            await self._revoke_for_reuse(device, origin)
            raise XtError("auth.refresh_reused")
        user = await self.store.users.get(device.user_id)
        if user is None or user.status != "active":
            await self._sign_out(device.user_id, [device.id], "account_disabled")
            raise XtError("auth.account_disabled")
        await self.store.devices.touch(device.id, now, origin.ip, origin.user_agent)
        return await self._issue_pair(user, device.id)

    async def _revoke_for_reuse(self, device: Device, origin: Origin) -> None:
        await self._sign_out(device.user_id, [device.id], "refresh_token_reused")
        user = await self.store.users.get(device.user_id)
        await self.audit.record("auth.refresh_reuse", origin=origin, actor_id=device.user_id,
                                target_type="device", target_id=device.id, outcome="failure",
                                scope_paths=user.unit_paths if user else [],
                                details={"revoked": "device_family"})

    # ---- sign-out and devices ----------------------------------------------------------------------

    async def logout(self, me: Principal, origin: Origin) -> None:
        assert me.device_id is not None
        await self._revoke(me, me.device_id, "logout", origin)

    async def logout_others(self, me: Principal, origin: Origin) -> int:
        user = await self._user(me)
        revoked = await self._sign_out_all(me.user_id, "signed_out_by_user", except_device=me.device_id)
        for device_id in revoked:
            await self.audit.record("auth.revoke", origin=origin, actor_id=me.user_id, target_type="device",
                                    target_id=device_id, scope_paths=user.unit_paths,
                                    details={"reason": "signed_out_by_user"})
        return len(revoked)

    async def list_devices(self, me: Principal) -> list[Device]:
        return await self.store.devices.list_active(me.user_id)

    async def revoke_device(self, me: Principal, device_id: str, origin: Origin) -> None:
        device = await self.store.devices.get(device_id)
        if device is None or device.user_id != me.user_id or device.revoked_at is not None:
            raise XtError("not_found", "No such signed-in device.")
        await self._revoke(me, device_id, "signed_out_by_user", origin)

    async def _revoke(self, me: Principal, device_id: str, reason: str, origin: Origin) -> None:
        if await self._sign_out(me.user_id, [device_id], reason):
            user = await self._user(me)
            await self.audit.record("auth.revoke", origin=origin, actor_id=me.user_id, target_type="device",
                                    target_id=device_id, scope_paths=user.unit_paths, details={"reason": reason})

    async def revoke_all_devices(self, user: User, reason: str, origin: Origin, actor_id: str) -> int:
        """Sign a user out everywhere (used when an administrator disables or resets an account)."""
        revoked = await self._sign_out_all(user.id, reason)
        if revoked:
            await self.audit.record("auth.revoke", origin=origin, actor_id=actor_id, target_type="user",
                                    target_id=user.id, scope_paths=user.unit_paths,
                                    details={"reason": reason, "devices": len(revoked)})
        return len(revoked)

    async def _sign_out(self, user_id: str, device_ids: list[str], reason: str) -> bool:
        """Revoke devices and tell the listeners (the gateway closes their sockets at once).
        True if any of them was signed in."""
        revoked = [d for d in device_ids if await self.store.devices.revoke(d, utcnow(), reason)]
        for listener in self.signed_out_listeners:
            await listener(user_id, revoked)
        return bool(revoked)

    async def _sign_out_all(self, user_id: str, reason: str, *, except_device: str | None = None) -> list[str]:
        revoked = await self.store.devices.revoke_all(user_id, utcnow(), reason, except_device=except_device)
        for listener in self.signed_out_listeners:
            await listener(user_id, revoked)
        return revoked

    async def _user(self, me: Principal) -> User:
        user = await self.store.users.get(me.user_id)
        if user is None:
            raise XtError("auth.session_revoked")
        return user

    # ---- passwords ---------------------------------------------------------------------------------

    async def change_password(self, me: Principal, old: str, new: str, origin: Origin) -> int:
        """Change the caller's password and sign out their other devices; returns how many."""
        user = await self._user(me)
        if not await passwords.verify_password(user.password_hash, old):
            await self.audit.record("auth.password_change", origin=origin, actor_id=user.id, target_type="user",
                                    target_id=user.id, scope_paths=user.unit_paths, outcome="failure")
            raise XtError("auth.invalid_credentials", "The current password is wrong.")
        passwords.check_strength(new)
        await self.store.users.update(user.id, {"password_hash": await passwords.hash_password(new)}, utcnow())
        await self.audit.record("auth.password_change", origin=origin, actor_id=user.id, target_type="user",
                                target_id=user.id, scope_paths=user.unit_paths)
        return len(await self._sign_out_all(user.id, "password_changed", except_device=me.device_id))

    # ---- TOTP --------------------------------------------------------------------------------------

    async def totp_subject(self, bearer: str) -> User:
        """The user a TOTP set-up request acts for: an access token, or the enrolment token that a
        login refused for a missing second factor."""
        try:
            user_id = self.verifier.verify(bearer, purpose=PURPOSE_TOTP_ENROLL).user_id
        except XtError:
            # Not an enrolment token: it must be a live access token, refused as any request would be
            # (a signed-out device hears auth.session_revoked, not that its token is malformed).
            user_id = (await self.authenticate(bearer)).user_id
        user = await self.store.users.get(user_id)
        if user is None or user.status != "active":
            raise XtError("auth.account_disabled")
        return user

    async def totp_begin(self, user: User) -> tuple[str, str]:
        """Start (or restart) enrolment: a new secret, not yet enabled. Returns (secret, otpauth URI)."""
        if user.totp is not None and user.totp.enabled:
            raise XtError("auth.totp_already_enabled")
        secret = totp.new_secret()
        record = Totp(secret=secret, enabled=False, last_step=0, created_at=utcnow())
        await self.store.users.update(user.id, {"totp": to_doc(record)}, utcnow())
        return secret, totp.provisioning_uri(secret, user.username)

    async def totp_confirm(self, user: User, code: str, origin: Origin) -> None:
        if user.totp is None:
            raise XtError("auth.totp_not_enabled", "Start with POST /v1/me/totp/setup.")
        if user.totp.enabled:
            raise XtError("auth.totp_already_enabled")
        if not await self._accept_totp(user, code):
            raise XtError("auth.totp_invalid")
        await self.store.users.update(user.id, {"totp.enabled": True}, utcnow())
        await self.audit.record("auth.totp_enable", origin=origin, actor_id=user.id, target_type="user",
                                target_id=user.id, scope_paths=user.unit_paths)

    async def totp_disable(self, me: Principal, code: str, origin: Origin) -> None:
        user = await self._user(me)
        if user.totp is None or not user.totp.enabled:
            raise XtError("auth.totp_not_enabled")
        if await self._totp_required_by_unit(user):
            raise XtError("perm.forbidden", "Your unit requires a second factor.")
        if not await self._accept_totp(user, code):
            raise XtError("auth.totp_invalid")
        await self.store.users.update(user.id, {}, utcnow(), unset=["totp"])
        await self.audit.record("auth.totp_disable", origin=origin, actor_id=user.id, target_type="user",
                                target_id=user.id, scope_paths=user.unit_paths)
