"""How a REST endpoint is declared, parsed and answered.

An endpoint is a :class:`Route` in a :class:`RouteTable`: method, path, the typed body and query
structs it accepts, the struct it returns, whether it needs an access token, and the error codes it
may answer. The wrapper built here does the transport work once for all endpoints — size limit,
content type, strict JSON decoding into the struct (unknown fields refused), authentication — so a
handler receives typed, validated input and only calls services. The same table generates the
OpenAPI document (``openapi.py``), so the document cannot drift from the code.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import msgspec
from aiohttp import web

from ..errors import XtError
from .context import RequestContext

Handler = Callable[..., Awaitable[Any]]

_JSON_TYPES = ("application/json",)
_encoder = msgspec.json.Encoder()


@dataclass
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type | None = None
    query: type | None = None
    response: type | None = None
    auth: bool = True
    status: int = 200
    errors: tuple[str, ...] = ()
    description: str = ""
    also_ok: tuple[int, ...] = ()  # other success statuses the handler may answer (e.g. 200 for a retry)

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)


@dataclass
class RouteTable:
    tag: str
    description: str = ""
    routes: list[Route] = field(default_factory=list)

    def route(self, method: str, path: str, *, summary: str, body: type | None = None,
              query: type | None = None, response: type | None = None, auth: bool = True,
              status: int = 200, errors: tuple[str, ...] = (), description: str = "",
              also_ok: tuple[int, ...] = ()) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, path, handler, summary, self.tag, body, query, response, auth,
                                     status, errors, description or inspect.cleandoc(handler.__doc__ or ""), also_ok))
            return handler

        return register


def decode_struct(raw: bytes, type_: type) -> Any:
    """Strict JSON → struct; malformed JSON and schema violations become coded errors."""
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        # msgspec validates while parsing, so a type error early in a body that is also broken later
        # is reported first: check the syntax before calling it a schema error.
        try:
            msgspec.json.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise XtError("request.malformed_json", "The body is not valid JSON.") from None
        raise XtError("request.invalid", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise XtError("request.malformed_json", str(exc)) from None
    except UnicodeDecodeError:
        raise XtError("request.malformed_json", "The body is not valid UTF-8.") from None


def convert_query(query: Any, type_: type) -> Any:
    values = {key: query.getall(key)[-1] for key in query.keys()}
    try:
        return msgspec.convert(values, type_, strict=False)
    except msgspec.ValidationError as exc:
        raise XtError("request.invalid", f"query: {exc}") from None


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(payload), status=status, content_type="application/json")


async def read_body(request: web.Request, type_: type, limit: int) -> Any:
    if request.content_length is not None and request.content_length > limit:
        raise XtError("request.too_large", details={"limit": limit})
    if request.content_type not in _JSON_TYPES:
        raise XtError("request.unsupported_media_type")
    try:
        raw = await request.read()  # aiohttp enforces client_max_size (= limit) while reading
    except web.HTTPRequestEntityTooLarge:
        raise XtError("request.too_large", details={"limit": limit}) from None
    return decode_struct(raw, type_)


def wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        ctx = RequestContext.of(request)
        if route.auth:
            await ctx.authenticate()
        kwargs: dict[str, Any] = {}
        if route.query is not None:
            kwargs["query"] = convert_query(request.query, route.query)
        elif request.query:
            raise XtError("request.invalid", f"unknown query parameter {next(iter(request.query))!r}")
        if route.body is not None:
            kwargs["body"] = await read_body(request, route.body, ctx.services.settings.max_body_bytes)
        result = await route.handler(ctx, **kwargs)
        if isinstance(result, web.StreamResponse):
            return result
        if result is None:
            return web.Response(status=204)
        return json_response(result, route.status)

    endpoint.__name__ = route.handler.__name__
    return endpoint


def add_routes(app: web.Application, tables: list[RouteTable]) -> None:
    for table in tables:
        for route in table.routes:
            app.router.add_route(route.method, route.path, wrap(route), name=f"{table.tag}.{route.handler.__name__}")
