"""Shared test fixtures: real components only.

* one embedded MongoDB (SecantusDB child process, in-memory storage) per test session; every test
  gets its own database in it, so tests never share state;
* a real messaging server per test, listening on a free loopback port, reached over real HTTP;
* the demo organisation, seeded once per session into a template database and copied into each
  test's database (copying ~100 documents is much faster than hashing 37 passwords again).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import aiohttp
import pytest
from pymongo import AsyncMongoClient

from xietong.server.config import Settings
from xietong.server.runtime import RunningServer, start_server
from xietong.server.seed import DEMO_PASSWORD, seed_demo
from xietong.server.services import build_services
from xietong.server.store import Store
from xietong.server.store.embedded import EmbeddedMongo

TEMPLATE_DB = "template_demo"


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    db = EmbeddedMongo(None)
    db.start()
    try:
        yield db.url
    finally:
        db.stop()


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


def make_settings(mongo_url: str, db_name: str, data_dir: Path, keys_dir: Path, **overrides: Any) -> Settings:
    # A short presence debounce: a stopping server waits for announcements in their debounce window.
    values: dict[str, Any] = {"presence_debounce": 0.05, **overrides}
    return Settings.from_env({}, mongo_url=mongo_url, mongo_db=db_name, port=0, data_dir=data_dir,
                             keys_dir=keys_dir, seed_demo=False, **values)


@pytest.fixture(scope="session")
def demo_template(mongo_url: str, keys_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Seed the demo organisation once into a template database."""

    async def seed() -> None:
        settings = make_settings(mongo_url, TEMPLATE_DB, tmp_path_factory.mktemp("tpl"), keys_dir)
        store = Store.connect(mongo_url, TEMPLATE_DB)
        await store.client.drop_database(TEMPLATE_DB)
        await store.ensure_indexes()
        assert await seed_demo(build_services(settings, store))
        await store.close()

    asyncio.run(seed())
    return TEMPLATE_DB


async def copy_database(mongo_url: str, source: str, target: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        for name in await client[source].list_collection_names():
            docs = await client[source][name].find().to_list()
            if docs:
                await client[target][name].insert_many(docs)
    finally:
        await client.close()


@pytest.fixture
def db_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(mongo_url: str, db_name: str, tmp_path: Path, keys_dir: Path) -> Settings:
    return make_settings(mongo_url, db_name, tmp_path, keys_dir)


@pytest.fixture
async def server(settings: Settings, mongo_url: str) -> AsyncIterator[RunningServer]:
    running = await start_server(settings)
    try:
        yield running
    finally:
        await running.stop()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
        await client.drop_database(settings.mongo_db)
        await client.close()


class Api:
    """A tiny HTTP client for tests: ``status, body = await api.post(path, json, token=...)``."""

    def __init__(self, session: aiohttp.ClientSession, base: str):
        self.session = session
        self.base = base

    async def request(self, method: str, path: str, json: Any = None, *, token: str | None = None,
                      data: bytes | None = None, headers: dict[str, str] | None = None,
                      params: dict[str, Any] | None = None) -> tuple[int, Any]:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, json=json, data=data, headers=hdrs,
                                        params=params) as response:
            body: Any = None
            if response.status != 204:
                text = await response.text()
                body = await response.json(content_type=None) if text else None
            self.last_headers = response.headers
            return response.status, body

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("PATCH", path, json, **kw)

    async def put(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("PUT", path, json, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, **kw)

    async def login(self, username: str, password: str = DEMO_PASSWORD, **extra: Any) -> dict[str, Any]:
        status, body = await self.post("/v1/auth/login", {"username": username, "password": password, **extra})
        assert status == 200, body
        return body


@pytest.fixture
async def api(server: RunningServer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, server.url)


class Demo:
    """The seeded demo organisation, looked up by user name and unit name."""

    def __init__(self, server: RunningServer, api: Api, users: dict[str, str], units: dict[str, str]):
        self.server = server
        self.api = api
        self.users = users  # username -> id
        self.units = units  # unit name -> id
        self._tokens: dict[str, str] = {}

    def user(self, username: str) -> str:
        return self.users[username]

    def unit(self, name: str) -> str:
        return self.units[name]

    async def token(self, username: str) -> str:
        """An access token of ``username`` (logs in once per test)."""
        if username not in self._tokens:
            self._tokens[username] = (await self.api.login(username))["access_token"]
        return self._tokens[username]


@pytest.fixture
async def demo(demo_template: str, mongo_url: str, settings: Settings) -> AsyncIterator[Demo]:
    """A server whose database starts as a copy of the demo organisation."""
    await copy_database(mongo_url, demo_template, settings.mongo_db)
    running = await start_server(settings)
    try:
        store = running.services.store
        users = {d["username"]: d["_id"] for d in await store.users.col.find({}, {"username": 1}).to_list()}
        units = {d["name"]: d["_id"] for d in await store.units.col.find({}, {"name": 1}).to_list()}
        async with aiohttp.ClientSession() as session:
            yield Demo(running, Api(session, running.url), users, units)
    finally:
        await running.stop()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
        await client.drop_database(settings.mongo_db)
        await client.close()
