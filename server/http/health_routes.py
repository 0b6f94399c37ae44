"""Liveness, readiness and the API description."""

from __future__ import annotations

import msgspec

from .context import RequestContext
from .framework import RouteTable, json_response

routes = RouteTable("health", "Liveness, readiness, API description.")


class Health(msgspec.Struct):
    status: str


@routes.route("GET", "/healthz", summary="The process is up", response=Health, auth=False)
async def healthz(ctx: RequestContext) -> Health:
    return Health("ok")


@routes.route("GET", "/readyz", summary="The process can serve: the database answers", response=Health,
              auth=False, errors=("server.unavailable",))
async def readyz(ctx: RequestContext) -> object:
    if await ctx.services.store.ping():
        return Health("ready")
    return json_response({"error": {"code": "server.unavailable", "message": "The database does not answer."}}, 503)


@routes.route("GET", "/v1/openapi.json", summary="This API as an OpenAPI 3.1 document", auth=False)
async def openapi(ctx: RequestContext) -> object:
    from . import openapi_document  # the document is built from the route tables

    return json_response(openapi_document())
