"""Identifiers: a type prefix and 16 random base32 characters (80 bits), e.g. ``usr_k3q9…``.

Random (not sequential) so that an id reveals nothing and cannot be guessed; the prefix says what
kind of object an id names, which makes logs and support tickets readable.
"""

from __future__ import annotations

import base64
import secrets

PREFIXES = {"unit": "unt", "user": "usr", "device": "dev", "conversation": "cnv", "call": "cal", "meeting": "mtg"}


def new_id(kind: str) -> str:
    token = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
    return f"{PREFIXES[kind]}_{token}"


def is_id(value: str, kind: str) -> bool:
    prefix = PREFIXES[kind] + "_"
    return (len(value) == len(prefix) + 16 and value.startswith(prefix)
            and all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in value[len(prefix):]))
