"""Ed25519 signing keys for access tokens, and their public JWKS.

Keys live in a folder (``XT_KEYS_DIR``), one PEM file per key id: ``<kid>.pem``. The newest kid (they
sort by creation date) signs; every key in the folder is published, so tokens signed by a key
that is being rotated out stay verifiable until they expire. All server processes of a deployment
mount the same folder. Rotation: ``xietong keys rotate`` adds a key; remove the old file after the
longest access-token lifetime has passed.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

ALGORITHM = "EdDSA"  # pinned: the only algorithm we sign with or accept


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, Any]:
        jwk = json.loads(OKPAlgorithm.to_jwk(self.public_key))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": ALGORITHM}


def new_kid(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


class KeyRing:
    def __init__(self, keys: list[SigningKey]):
        if not keys:
            raise ValueError("a key ring needs at least one key")
        self.keys = sorted(keys, key=lambda k: k.kid)

    @property
    def active(self) -> SigningKey:
        return self.keys[-1]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self.keys]}

    @classmethod
    def load_or_create(cls, folder: Path) -> "KeyRing":
        """Load every ``*.pem`` key in ``folder``; create the folder and a first key if there is none."""
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        keys = [_load(path) for path in sorted(folder.glob("*.pem"))]
        if not keys:
            keys = [write_new_key(folder)]
        return cls(keys)


def _load(path: Path) -> SigningKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return SigningKey(path.stem, key)


def write_new_key(folder: Path) -> SigningKey:
    key = SigningKey(new_kid(), Ed25519PrivateKey.generate())
    pem = key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    path = folder / f"{key.kid}.pem"
    # Written with owner-only permissions from the first byte; the key is never logged.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key
