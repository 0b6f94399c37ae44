"""The project stays whole: packaging lists every package, the checked-in API document and the error
catalogue match the code."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from xietong.server.errors import CODES
from xietong.server.http import openapi_document

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = {"server": "xietong.server", "signaling": "xietong.signaling", "bots": "xietong.bots",
              "mini_apps": "xietong.mini_apps", "clients": "xietong.clients"}


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for folder, package in COMPONENTS.items():
        assert config["package-dir"][package] == folder
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *relative)))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == set(), "these listed packages have no folder"


def test_checked_in_openapi_matches_the_routes():
    checked_in = json.loads((ROOT / "docs/openapi.json").read_text(encoding="utf-8"))
    assert checked_in == json.loads(json.dumps(openapi_document())), "regenerate with: make openapi"
    assert checked_in["openapi"] == "3.1.0"


async def test_the_server_serves_the_same_openapi_document(api):
    status, served = await api.get("/v1/openapi.json")
    assert status == 200
    assert served == json.loads(json.dumps(openapi_document()))


def test_every_error_code_is_documented():
    doc = (ROOT / "docs/errors.md").read_text(encoding="utf-8")
    missing = [code for code in CODES if f"`{code}`" not in doc]
    assert not missing, f"document these codes in docs/errors.md: {missing}"


def test_every_route_declares_only_registered_error_codes():
    from xietong.server.http import ROUTE_TABLES

    for table in ROUTE_TABLES:
        for route in table.routes:
            unknown = set(route.errors) - set(CODES)
            assert not unknown, f"{route.method} {route.path} declares unregistered codes {unknown}"
