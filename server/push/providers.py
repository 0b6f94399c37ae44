"""Push providers: FCM through firebase-admin (Android, iOS through APNs, web), and a logging
provider for installations without credentials.

A provider takes a batch of :class:`Outgoing` and reports one :class:`Outcome` per item, as soon
as that item's answer is known (so the worker records each delivery the moment it is accepted,
which keeps the window for a duplicate after a crash as small as one database write):
``sent``; ``invalid_token`` (the app was uninstalled or the token is wrong: the token is removed);
``retry`` (a transient failure: tried again later with back-off); ``quota`` (the sender is over
its quota: everything waits); ``failed`` (a permanent error for this message).

Vendor channels (Huawei, Xiaomi, OPPO, vivo) — which mainland deployments need, FCM being often
unreachable there — are further providers under their own names: a device registers with
``provider`` set accordingly, and :func:`build_providers` maps names to instances.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Protocol

from .rules import Notification

log = logging.getLogger("xietong.push")


@dataclass(frozen=True)
class Outgoing:
    delivery_id: str
    token: str
    platform: str  # android | ios | web
    notification: Notification
    token_type: str = "token"  # "token" (FCM registration token) or "fid" (Firebase installation id)


@dataclass(frozen=True)
class Outcome:
    delivery_id: str
    status: str  # sent | invalid_token | retry | quota | failed
    detail: str = ""


OnOutcome = Callable[[Outcome], Awaitable[None]]


class PushProvider(Protocol):
    name: str

    async def send(self, batch: list[Outgoing], on_outcome: OnOutcome) -> None: ...


class LoggingProvider:
    """Logs what would be sent: the embedded default, so development needs no FCM account."""

    name = "log"

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def send(self, batch: list[Outgoing], on_outcome: OnOutcome) -> None:
        for item in batch:
            log.info("push (log only) to %s…: %s — %s", item.token[:8], item.notification.title,
                     item.notification.body)
            self.sent.append(item)
            del self.sent[:-1000]
            await on_outcome(Outcome(item.delivery_id, "sent"))


class FcmProvider:
    """FCM HTTP v1 through the real firebase-admin SDK (``send_each_async``, at most 500 per call)."""

    name = "fcm"

    def __init__(self, credentials_path: Path, *, endpoint: str | None = None):
        import hashlib

        import firebase_admin
        from firebase_admin import credentials, messaging

        # One firebase app per configuration (the SDK keeps apps per process by name).
        app_name = "xietong-" + hashlib.sha256(f"{credentials_path.resolve()}|{endpoint}".encode()).hexdigest()[:12]
        if endpoint:
            # An FCM relay, or the local fake FCM of the tests. The SDK reads this class attribute
            # when the app's messaging service is first created (a private name: pinned version,
            # and a test fails loudly if it moves).
            messaging._MessagingService.FCM_URL = endpoint.rstrip("/") + "/v1/projects/{0}/messages:send"
        self._messaging = messaging
        try:
            self.app = firebase_admin.get_app(app_name)
        except ValueError:
            self.app = firebase_admin.initialize_app(credentials.Certificate(str(credentials_path)), name=app_name)

    def _message(self, item: Outgoing):  # -> messaging.Message
        m = self._messaging
        n = item.notification
        data = {**n.data, "title": n.title, "body": n.body}
        high = n.priority == "high"
        target = {"fid": item.token} if item.token_type == "fid" else {"token": item.token}
        if n.kind == "call":  # data only: the app rings itself
            return _message(m,
                **target, data=data,
                android=m.AndroidConfig(priority="high", ttl=n.ttl_seconds),
                apns=m.APNSConfig(headers={"apns-priority": "10", "apns-push-type": "background",
                                           "apns-expiration": "0"},
                                  payload=m.APNSPayload(aps=m.Aps(content_available=True))),
                webpush=m.WebpushConfig(headers={"TTL": str(n.ttl_seconds), "Urgency": "high"}))
        return _message(m,
            **target, data=data,
            android=m.AndroidConfig(
                priority="high" if high else "normal", ttl=n.ttl_seconds,
                notification=m.AndroidNotification(title=n.title, body=n.body, tag=n.tag,
                                                   notification_count=n.badge)),
            apns=m.APNSConfig(
                headers={"apns-priority": "10" if high else "5", "apns-collapse-id": n.tag[:64]},
                payload=m.APNSPayload(aps=m.Aps(alert=m.ApsAlert(title=n.title, body=n.body), badge=n.badge,
                                                sound="default", thread_id=n.tag))),
            webpush=m.WebpushConfig(headers={"TTL": str(n.ttl_seconds), "Urgency": "high" if high else "normal"},
                                    notification=m.WebpushNotification(title=n.title, body=n.body, tag=n.tag)))

    async def _fresh_credential(self) -> None:
        """The SDK refreshes its OAuth token with a blocking HTTP call inside the async send; do it in
        a worker thread first, so the event loop (every socket of this process) never waits on it."""
        credential = self.app.credential.get_credential()
        if not credential.valid:
            from google.auth.transport.requests import Request

            await asyncio.to_thread(credential.refresh, Request())

    async def send(self, batch: list[Outgoing], on_outcome: OnOutcome) -> None:
        """Each message is its own request (concurrently), reported as soon as it is answered."""
        from firebase_admin import exceptions

        m = self._messaging
        try:
            await self._fresh_credential()
        except Exception as exc:  # the token endpoint is unreachable: everything waits
            for item in batch:
                await on_outcome(Outcome(item.delivery_id, "retry", f"credentials: {exc}"))
            return

        async def one(item: Outgoing) -> None:
            try:
                response = await m.send_each_async([self._message(item)], app=self.app)
                outcome = Outcome(item.delivery_id, *_classify(response.responses[0].exception, m, exceptions))
            except exceptions.FirebaseError as exc:
                outcome = Outcome(item.delivery_id, "retry", str(exc))
            await on_outcome(outcome)

        await asyncio.gather(*(one(item) for item in batch))


def _message(m, **fields):
    # FCM registration tokens are what apps hand over; the SDK now prefers installation ids (fid)
    # and warns on every token message. Both are supported (PushRegistration.token_type).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return m.Message(**fields)


def _classify(error: Exception | None, m, exceptions) -> tuple[str, str]:
    if error is None:
        return "sent", ""
    text = str(error)
    if isinstance(error, (m.UnregisteredError, m.SenderIdMismatchError)):
        return "invalid_token", text
    if isinstance(error, exceptions.InvalidArgumentError) and "token" in text.lower():
        return "invalid_token", text
    if isinstance(error, m.QuotaExceededError):
        return "quota", text
    if isinstance(error, (exceptions.UnavailableError, exceptions.InternalError, exceptions.DeadlineExceededError,
                          exceptions.UnknownError)):
        return "retry", text
    return "failed", text


def build_providers(credentials_path: Path | None, endpoint: str | None) -> dict[str, PushProvider]:
    """Providers by the name devices register with. Without FCM credentials, "fcm" devices get the
    logging provider (and start-up says so)."""
    if credentials_path is None:
        log.info("push: no FCM credentials (XT_FCM_CREDENTIALS): notifications are logged, not sent")
        return {"fcm": LoggingProvider()}
    return {"fcm": FcmProvider(credentials_path, endpoint=endpoint)}
