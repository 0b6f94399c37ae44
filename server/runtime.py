"""Running Xietong processes: ``serve`` (one messaging-server process) and ``up`` (the whole system
on the embedded default: the database child process, then the server).

Start-up order: database reachable → indexes → services → (demo seed) → listen → banner.
Shutdown on SIGINT/SIGTERM: stop listening, finish in-flight requests, close the store, then stop
the embedded database — so nothing is left running and no acknowledged write is cut off.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

from .app import create_app
from .config import Settings
from .seed import DEMO_ACCOUNTS, SEED_MARK, seed_demo
from .services import Services, build_services
from .store import Store
from .store.embedded import EmbeddedMongo, EmbeddedMongoError

log = logging.getLogger("xietong")


LISTEN_BACKLOG = 8192


class StartupError(RuntimeError):
    """A reason the system cannot start, worded for the person running it."""


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("pymongo").setLevel(logging.WARNING)


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port} ({exc.strerror}); set XT_PORT to a free port") from None
    # A reconnect storm (a replica restarting under thousands of devices) arrives within a second or two:
    # with a short accept queue the kernel drops SYNs and clients wait out TCP's 1-3-7-15 s retransmits.
    # The kernel caps this at net.core.somaxconn (4096 on current Linux).
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


@dataclass
class RunningServer:
    """A started messaging server (used by ``serve`` and by tests)."""

    services: Services
    runner: web.AppRunner
    url: str
    port: int
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def stop(self) -> None:
        # Stop accepting, tell connected devices to reconnect, finish in-flight requests and
        # queued writes, then release the bus and the database.
        await self.runner.cleanup()
        await self.services.close()
        self.stopped.set()


async def start_server(settings: Settings, *, seed: bool = False, announce: Callable[[str], None] | None = None) -> RunningServer:
    if settings.mongo_url is None:
        raise StartupError("XT_MONGO_URL is not set (use `xietong up` for the embedded database)")
    store = Store.connect(settings.mongo_url, settings.mongo_db)
    if not await store.ping():
        await store.close()
        raise StartupError(f"the database at XT_MONGO_URL does not answer")
    await store.ensure_indexes()
    services = build_services(settings, store)
    if seed and await seed_demo(services):
        log.info("seeded the demo organisation")
    sock = bind_socket(settings.host, settings.port)
    port = sock.getsockname()[1]
    app = create_app(services, allowed_origins=settings.effective_origins(port))
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=10)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=LISTEN_BACKLOG).start()  # create_server listens again: default 128
    url = settings.effective_public_url(port)
    server = RunningServer(services, runner, url, port)
    if announce:
        announce(await banner(server))
    return server


async def banner(server: RunningServer, signaling_url: str | None = None) -> str:
    lines = [f"Xietong is running at {server.url}",
             f"  health: {server.url}/healthz   API: {server.url}/v1/openapi.json"]
    if signaling_url:
        lines.append(f"  calls and meetings (signaling): {signaling_url}")
    seeded = await server.services.store.meta.get(SEED_MARK)
    if seeded:
        lines.append(f"  demo accounts (password {seeded['password']}):")
        lines += [f"    {name:<16} {what}" for name, what in DEMO_ACCOUNTS]
        lines.append(f"  try: curl -s {server.url}/v1/auth/login -H 'Content-Type: application/json' "
                     f"-d '{{\"username\":\"zhangwei\",\"password\":\"{seeded['password']}\"}}'")
    lines.append("  stop with Ctrl-C")
    return "\n".join(lines)


async def serve_until_signalled(settings: Settings, *, seed: bool, with_signaling: bool = False) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await start_server(settings, seed=seed, announce=None if with_signaling else
                                lambda text: print(text, flush=True))
    signaling = None
    try:
        if with_signaling:  # the embedded default: calls and meetings in this process too
            from xietong.signaling.service import start_signaling

            try:
                signaling = await start_signaling(settings, server.services)
            except OSError as exc:
                raise StartupError(f"cannot listen on {settings.host}:{settings.signaling_port} ({exc.strerror}); "
                                   "set XT_SIGNALING_PORT to a free port") from None
            print(await banner(server, signaling_url=signaling.url), flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        if signaling is not None:
            await signaling.stop()
        await server.stop()


async def signaling_until_signalled(settings: Settings) -> None:
    """The signaling service as its own process (the distributed deployment)."""
    from xietong.signaling.service import start_signaling

    if settings.mongo_url is None:
        raise StartupError("XT_MONGO_URL is not set: the signaling service shares the messaging database")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    store = Store.connect(settings.mongo_url, settings.mongo_db)
    if not await store.ping():
        await store.close()
        raise StartupError("the database at XT_MONGO_URL does not answer")
    services = build_services(settings, store)
    service = await start_signaling(settings, services)
    print(f"Xietong signaling is running at {service.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await service.stop()
        await services.close()


def signaling(settings: Settings) -> int:
    configure_logging(settings.log_level)
    try:
        run_async(signaling_until_signalled(settings))
        return 0
    except StartupError as exc:
        print(f"xietong: {exc}", file=sys.stderr)
        return 1


def run_async(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)


def up(settings: Settings) -> int:
    """The whole system on one machine. Returns the process exit code."""
    configure_logging(settings.log_level)
    embedded: EmbeddedMongo | None = None
    try:
        if settings.mongo_url is None:
            data = settings.data_dir.resolve()
            data.mkdir(parents=True, exist_ok=True)
            embedded = EmbeddedMongo(data / "db", log_path=data / "db.log")
            log.info("starting the embedded database (SecantusDB) in %s", data / "db")
            embedded.start()
            settings = settings.replace(mongo_url=embedded.url)
        run_async(serve_until_signalled(settings, seed=settings.seed_demo, with_signaling=True))
        return 0
    except (StartupError, EmbeddedMongoError) as exc:
        print(f"xietong: {exc}", file=sys.stderr)
        return 1
    finally:
        if embedded is not None:
            embedded.stop()
            log.info("embedded database stopped")


def serve(settings: Settings) -> int:
    """One messaging-server process against XT_MONGO_URL (the distributed deployment)."""
    configure_logging(settings.log_level)
    try:
        run_async(serve_until_signalled(settings, seed=False))
        return 0
    except StartupError as exc:
        print(f"xietong: {exc}", file=sys.stderr)
        return 1
