"""The HTTP transport: REST endpoints (parse and check input, call services, shape output).

Endpoints are declared in route tables (``framework.py``); one module per area. Handlers never talk
to MongoDB and never decide access: they call services.
"""

from __future__ import annotations

from typing import Any

from . import (admin_routes, auth_routes, conversation_routes, directory_routes, health_routes, presence_routes,
               push_routes)
from .framework import RouteTable

ROUTE_TABLES: list[RouteTable] = [health_routes.routes, auth_routes.routes, directory_routes.routes,
                                  conversation_routes.routes, presence_routes.routes, push_routes.routes,
                                  admin_routes.routes]


def openapi_document() -> dict[str, Any]:
    from importlib.metadata import version

    from .openapi import build

    return build(ROUTE_TABLES, version=version("xietong"))
