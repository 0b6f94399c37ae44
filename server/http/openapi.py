"""The OpenAPI 3.1 document, generated from the route tables (``xietong openapi`` prints it; the
checked-in copy ``docs/openapi.json`` is kept equal by a test)."""

from __future__ import annotations

from typing import Any

import msgspec

from ..errors import CODES
from .framework import Route, RouteTable

REF = "#/components/schemas/{name}"


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


def build(tables: list[RouteTable], *, version: str) -> dict[str, Any]:
    routes = [r for t in tables for r in t.routes]
    types = sorted({t for r in routes for t in (r.body, r.query, r.response) if t is not None} | {ErrorResponse},
                   key=lambda t: t.__name__)
    (_, components) = msgspec.json.schema_components(types, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Xietong (协同) API", "version": version,
                 "description": "REST API of the Xietong messaging server. Errors are "
                                "`{\"error\": {\"code\", \"message\", \"details\"}}` with the codes listed "
                                "under `x-error-codes`; see docs/errors.md."},
        "servers": [{"url": "/"}],
        "tags": [{"name": t.tag, "description": t.description} for t in tables],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (EdDSA)"}},
        },
        "x-error-codes": {code: {"status": spec.status, "meaning": spec.meaning} for code, spec in CODES.items()},
    }


def _operation(route: Route, components: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"tags": [route.tag], "summary": route.summary, "operationId": route.handler.__name__}
    if route.description:
        op["description"] = route.description
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in route.path_params]
    if route.query is not None:
        schema = components[route.query.__name__]
        required = set(schema.get("required", []))
        for name, prop in schema["properties"].items():
            params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": REF.format(name=route.body.__name__)}}}}
    ok: dict[str, Any] = {"description": "OK"}
    if route.response is not None:
        ok["content"] = {"application/json": {"schema": {"$ref": REF.format(name=route.response.__name__)}}}
    responses: dict[str, Any] = {str(204 if route.response is None and route.status == 204 else route.status): ok}
    for status in route.also_ok:
        responses[str(status)] = ok
    error_ref = {"application/json": {"schema": {"$ref": REF.format(name="ErrorResponse")}}}
    codes = list(route.errors) + (["request.invalid", "request.malformed_json"] if route.body or route.query else [])
    if route.auth:
        codes += ["auth.required", "auth.token_invalid", "auth.token_expired", "auth.session_revoked"]
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(CODES[code].status, []).append(code)
    for status, status_codes in sorted(by_status.items()):
        responses[str(status)] = {"description": "Error: " + ", ".join(f"`{c}`" for c in status_codes),
                                  "content": error_ref}
    op["responses"] = responses
    if route.auth:
        op["security"] = [{"bearer": []}]
    return op
