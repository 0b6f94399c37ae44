"""Clients of Xietong: the Python client SDK (``xietong.clients.sdk``) and, later, the CLI and the
mobile-first web client."""

from .sdk import ConnectionClosed, XietongClient, XietongError

__all__ = ["XietongClient", "XietongError", "ConnectionClosed"]
