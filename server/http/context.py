"""What a handler knows about the request it serves: the services, the caller, where it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from ..errors import XtError

if TYPE_CHECKING:
    from ..services import Services
    from ..access import Principal

SERVICES_KEY: web.AppKey["Services"] = web.AppKey("services")


def client_address(request: web.Request, trusted_proxies: tuple[str, ...] | None) -> str | None:
    """The client's address: the peer, or — when the peer is a trusted reverse proxy — the last
    address in X-Forwarded-For that is not itself a trusted proxy. Untrusted peers cannot forge it."""
    peer = request.remote
    if not trusted_proxies or peer not in trusted_proxies:
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted_proxies:
            return hop[:64]
    return peer
_CTX_KEY: web.RequestKey["RequestContext"] = web.RequestKey("xt_context")


@dataclass
class RequestContext:
    request: web.Request
    services: "Services"
    principal: "Principal | None" = None

    @classmethod
    def of(cls, request: web.Request) -> "RequestContext":
        ctx = request.get(_CTX_KEY)
        if ctx is None:
            ctx = cls(request, request.app[SERVICES_KEY])
            request[_CTX_KEY] = ctx
        return ctx

    @property
    def ip(self) -> str | None:
        return client_address(self.request, self.services.settings.trusted_proxies)

    @property
    def user_agent(self) -> str | None:
        value = self.request.headers.get("User-Agent")
        return value[:256] if value else None

    def param(self, name: str) -> str:
        return self.request.match_info[name]

    async def authenticate(self) -> "Principal":
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise XtError("auth.required")
        if scheme.lower() != "bearer" or not token.strip():
            raise XtError("auth.token_invalid", "Use the header 'Authorization: Bearer <access token>'.")
        self.principal = await self.services.auth.authenticate(token.strip())
        return self.principal

    @property
    def me(self) -> "Principal":
        if self.principal is None:  # a route declared auth=False asked for the caller
            raise XtError("auth.required")
        return self.principal
