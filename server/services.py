"""Composition: build every service of the messaging server from the settings and the store.

This is the only place that wires components together; handlers receive the :class:`Services`
object through the aiohttp app, tests build it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from .admin.service import AdminService
from .audit.service import AuditService
from .auth.keys import KeyRing
from .auth.service import AuthService
from .auth.tokens import TokenIssuer, TokenVerifier
from .config import Settings
from .directory.service import DirectoryService
from .ratelimit import Limits
from .store import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    keys: KeyRing
    issuer: TokenIssuer
    verifier: TokenVerifier
    audit: AuditService
    auth: AuthService
    directory: DirectoryService
    admin: AdminService
    limits: Limits


def build_services(settings: Settings, store: Store, keys: KeyRing | None = None) -> Services:
    keys = keys or KeyRing.load_or_create(settings.effective_keys_dir)
    issuer = TokenIssuer(keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                         ttl_seconds=settings.access_token_ttl)
    verifier = TokenVerifier.for_key_ring(keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    audit = AuditService(store)
    auth = AuthService(settings, store, issuer, verifier, audit)
    directory = DirectoryService(store)
    admin = AdminService(store, audit, auth)
    return Services(settings, store, keys, issuer, verifier, audit, auth, directory, admin, Limits())
