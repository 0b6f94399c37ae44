"""A local fake FCM for the real firebase-admin SDK: an OAuth token endpoint and the FCM v1
``messages:send`` endpoint, with the failures a test asks for (ENVIRONMENT.md: there is no FCM
emulator; the SDK's token URI comes from the service account, its FCM URL from a class attribute)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass
class FakeFcm:
    """Records what it accepted; ``unregistered`` tokens get 404 UNREGISTERED; ``unavailable``
    next requests get 502 UNAVAILABLE (not retried inside the SDK); ``quota`` next requests get 429
    QUOTA_EXCEEDED; ``delay`` holds each request before answering (a request whose client goes
    away meanwhile is not accepted)."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    unregistered: set[str] = field(default_factory=set)
    unavailable: int = 0
    quota: int = 0
    delay: float = 0.0
    delay_after: int = 0  # the first this-many requests are answered at once, later ones after `delay`
    requests: int = 0
    tokens_issued: int = 0
    in_flight: int = 0
    url: str = ""
    runner: web.AppRunner | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def messages_to(self, token: str) -> list[dict[str, Any]]:
        return [m for m in self.accepted if m.get("token") == token]

    async def token(self, request: web.Request) -> web.Response:
        self.tokens_issued += 1
        return web.json_response({"access_token": f"fake-access-{self.tokens_issued}", "expires_in": 3600,
                                  "token_type": "Bearer"})

    async def send(self, request: web.Request) -> web.Response:
        self.requests += 1
        ordinal = self.requests
        if not request.headers.get("Authorization", "").startswith("Bearer fake-access-"):
            return web.json_response({"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "no"}}, status=401)
        body = await request.json()
        message = body["message"]
        if self.delay and ordinal > self.delay_after:
            self.in_flight += 1
            try:
                await asyncio.sleep(self.delay)  # cancelled if the client disconnects
            finally:
                self.in_flight -= 1
        if self.unavailable > 0:
            self.unavailable -= 1
            return web.json_response({"error": {"code": 503, "status": "UNAVAILABLE", "message": "try later"}},
                                     status=502)
        if self.quota > 0:
            self.quota -= 1
            return fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "quota exceeded")
        if message.get("token") in self.unregistered:
            return fcm_error(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.")
        self.accepted.append({**message, "at": time.time()})
        self.changed.set()
        return web.json_response({"name": f"projects/xietong-test/messages/{len(self.accepted)}"})

    async def start(self) -> "FakeFcm":
        app = web.Application()
        app.router.add_post("/token", self.token)
        app.router.add_post("/v1/projects/{project}/messages:send", self.send)
        # A request whose client went away is cancelled, not accepted: like FCM, which only counts
        # what it answered.
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def wait_accepted(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.accepted) < count:
            self.changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"fake FCM accepted {len(self.accepted)} messages, expected {count}")
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return self.accepted


def fcm_error(status: int, state: str, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": status, "status": state, "message": message, "details": [
        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]}}, status=status)


def service_account(folder: Path, token_uri: str) -> Path:
    """A throw-away service account whose token URI is the fake's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = folder / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "xietong-test", "private_key_id": "test-key",
        "private_key": pem, "client_email": "push@xietong-test.iam.gserviceaccount.com", "client_id": "1",
        "auth_uri": token_uri, "token_uri": token_uri,
        "auth_provider_x509_cert_url": "http://127.0.0.1/certs", "client_x509_cert_url": "http://127.0.0.1/x509"}))
    return path
