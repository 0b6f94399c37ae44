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
from .bus import Bus, Envelope, InProcessBus
from .config import Settings
from .directory.service import DirectoryService
from .messaging.conversations import ConversationService
from .messaging.fanout import Fanout
from .messaging.messages import MessageService
from .messaging.receipts import ReadStateService
from .messaging.sync import SyncService
from .messaging.writer import EventWriter
from .presence.backend import MemoryPresenceBackend, PresenceBackend, RedisPresenceBackend
from .presence.service import PresenceService
from .push.providers import build_providers
from .push.service import PushService
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
    bus: Bus
    writer: EventWriter
    conversations: ConversationService
    messages: MessageService
    read_state: ReadStateService
    sync: SyncService
    presence: PresenceService
    push: PushService

    async def start(self) -> None:
        """Start the background work: presence renewal, the push worker (needs a running loop)."""
        self.presence.start()
        self.push.start()

    async def close(self) -> None:
        """Finish queued writes, then release push, presence, the bus and the database."""
        await self.writer.stop()
        await self.push.stop()
        await self.presence.stop()
        await self.bus.close()
        await self.store.close()


def build_services(settings: Settings, store: Store, keys: KeyRing | None = None) -> Services:
    """With ``XT_REDIS_URL``, the bus and presence live in Redis (several processes); without, in
    this process (the embedded default)."""
    keys = keys or KeyRing.load_or_create(settings.effective_keys_dir)
    bus: Bus
    presence_backend: PresenceBackend
    if settings.redis_url:
        from .redis_bus import RedisBus

        bus, presence_backend = RedisBus(settings.redis_url), RedisPresenceBackend(settings.redis_url)
    else:
        bus, presence_backend = InProcessBus(), MemoryPresenceBackend()
    issuer = TokenIssuer(keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                         ttl_seconds=settings.access_token_ttl)
    verifier = TokenVerifier.for_key_ring(keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    audit = AuditService(store)
    auth = AuthService(settings, store, issuer, verifier, audit)
    directory = DirectoryService(store)
    admin = AdminService(store, audit, auth)
    writer = EventWriter(store, Fanout(bus).events_written, lanes=settings.writer_lanes)
    conversations = ConversationService(store, writer, directory)
    messages = MessageService(store, writer, conversations, audit, bus)
    read_state = ReadStateService(store, conversations, bus)
    sync = SyncService(store, messages)
    presence = PresenceService(store, presence_backend, bus, directory, ttl=settings.presence_ttl,
                               debounce=settings.presence_debounce)
    push = PushService(settings, store, build_providers(settings.fcm_credentials, settings.fcm_url),
                       presence_backend)
    # Hooks between components: hidden users stay reachable for people who already talk with them;
    # unit groups follow the directory.
    directory.conversation_peers = conversations.peers_among
    admin.membership_listeners.append(conversations.follow_unit_membership)

    async def close_signed_out_sockets(user_id: str, device_ids: list[str]) -> None:
        for device_id in device_ids:
            await bus.publish(Envelope(kind="revoke", target=user_id, device_id=device_id))

    auth.signed_out_listeners.append(close_signed_out_sockets)
    return Services(settings, store, keys, issuer, verifier, audit, auth, directory, admin, Limits(), bus, writer,
                    conversations, messages, read_state, sync, presence, push)
