"""The aiohttp application factory: routes, error handling, Origin checks, security headers.

``create_app`` receives everything it needs (no globals, no import-time side effects), so tests and
the process runner build the same app.
"""

from __future__ import annotations

import logging
import secrets
from typing import Awaitable, Callable

from aiohttp import web
from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError
from redis.exceptions import RedisError

from .errors import XtError
from .gateway.handler import Gateway
from .gateway.hub import Hub
from .http import ROUTE_TABLES
from .http.context import SERVICES_KEY
from .http.framework import add_routes, json_response
from .services import Services

log = logging.getLogger(__name__)

ORIGINS_KEY: web.AppKey[frozenset[str]] = web.AppKey("allowed_origins")
GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def error_response(exc: XtError) -> web.Response:
    response = json_response(exc.to_body(), exc.status)
    if exc.code in ("request.rate_limited", "auth.locked") and "retry_after" in exc.details:
        response.headers["Retry-After"] = str(exc.details["retry_after"])
    return response


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except XtError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        return error_response(XtError("request.too_large"))
    except web.HTTPNotFound:
        return error_response(XtError("request.not_found"))
    except web.HTTPMethodNotAllowed:
        return error_response(XtError("request.method_not_allowed"))
    except web.HTTPException:
        raise
    except (ConnectionFailure, ServerSelectionTimeoutError, RedisError) as exc:
        log.warning("a backing service is unavailable during %s %s: %s", request.method, request.path, exc)
        return error_response(XtError("server.unavailable"))
    except Exception:
        incident = secrets.token_hex(6)
        log.exception("internal error %s in %s %s", incident, request.method, request.path)
        return error_response(XtError("server.internal", details={"incident": incident}))


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Browsers send Origin on cross-site and state-changing requests: refuse origins not on the
    allow-list (non-browser clients send none and are authenticated by their token)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/") not in request.app[ORIGINS_KEY]:
        raise XtError("request.origin_forbidden")
    return await handler(request)


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if response.prepared:  # a WebSocket: its headers went out with the upgrade
        return response
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/v1/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def create_app(services: Services, *, allowed_origins: tuple[str, ...]) -> web.Application:
    app = web.Application(
        middlewares=[headers_middleware, errors_middleware, origin_middleware],
        client_max_size=services.settings.max_body_bytes,
    )
    app[SERVICES_KEY] = services
    app[ORIGINS_KEY] = frozenset(allowed_origins)
    add_routes(app, ROUTE_TABLES)
    hub = Hub(services.store, services.bus)
    gateway = Gateway(services, hub, app[ORIGINS_KEY])
    app[GATEWAY_KEY] = gateway
    app.router.add_get("/v1/ws", gateway.handle, name="gateway")

    services.presence.local_devices = hub.local_devices
    hub.on_resync += [services.presence.rebuild, gateway.close_signed_out]

    async def start_bus(app: web.Application) -> None:
        await services.bus.start(hub.handle)
        await services.start()

    async def drain_gateway(app: web.Application) -> None:
        await gateway.shutdown()

    app.on_startup.append(start_bus)
    app.on_shutdown.append(drain_gateway)
    return app
