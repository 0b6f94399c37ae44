"""Clients of Xietong: the Python client SDK and CLI, and the mobile-first web client."""
