"""Access tokens: short-lived JWTs signed with Ed25519 (``alg`` pinned to EdDSA), with ``kid``.

:class:`TokenIssuer` signs (server only). :class:`TokenVerifier` checks a token offline against a
JWKS — the server's own, or one fetched once from ``/.well-known/jwks.json`` by another service
(signaling, bots). Verification pins the algorithm, requires ``exp``/``iat``/``iss``/``aud``/``sub``,
and checks the ``purpose`` claim so that a narrow token (TOTP enrolment) never passes as an access
token.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from ..errors import XtError
from .keys import ALGORITHM, KeyRing

PURPOSE_ACCESS = "access"
PURPOSE_TOTP_ENROLL = "totp_enroll"


@dataclass(frozen=True)
class Claims:
    user_id: str
    device_id: str | None
    purpose: str
    expires_at: int
    token_id: str


class TokenIssuer:
    def __init__(self, keys: KeyRing, *, issuer: str, audience: str, ttl_seconds: int):
        if ttl_seconds > 900:
            raise ValueError("access tokens live at most 15 minutes")
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = ttl_seconds

    def issue(self, user_id: str, device_id: str | None, *, purpose: str = PURPOSE_ACCESS,
              ttl_seconds: int | None = None, now: float | None = None) -> str:
        now = int(now if now is not None else time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer, "aud": self.audience, "sub": user_id, "iat": now, "nbf": now - 5,
            "exp": now + min(ttl_seconds or self.ttl_seconds, self.ttl_seconds),
            "jti": secrets.token_urlsafe(12), "purpose": purpose,
        }
        if device_id is not None:
            payload["sid"] = device_id
        key = self.keys.active
        return jwt.encode(payload, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "JWT"})


class TokenVerifier:
    """Verifies tokens offline against public keys given as a JWKS document."""

    LEEWAY_SECONDS = 5

    def __init__(self, jwks: dict[str, Any], *, issuer: str, audience: str):
        self.issuer = issuer
        self.audience = audience
        self._keys: dict[str, Any] = {}
        for jwk in jwks.get("keys", []):
            if jwk.get("alg", ALGORITHM) != ALGORITHM or "kid" not in jwk:
                continue
            self._keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm=ALGORITHM).key

    @classmethod
    def for_key_ring(cls, keys: KeyRing, *, issuer: str, audience: str) -> "TokenVerifier":
        return cls(keys.jwks(), issuer=issuer, audience=audience)

    def verify(self, token: str, *, purpose: str = PURPOSE_ACCESS) -> Claims:
        if not token or len(token) > 4096:
            raise XtError("auth.token_invalid")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise XtError("auth.token_invalid") from None
        # Check the algorithm and key id before touching the signature: alg=none, HS256 with the
        # public key as secret, and unknown kids are refused outright.
        if header.get("alg") != ALGORITHM:
            raise XtError("auth.token_invalid", "The token's algorithm is not accepted.")
        key = self._keys.get(header.get("kid", ""))
        if key is None:
            raise XtError("auth.token_invalid", "The token's key id is unknown.")
        try:
            payload = jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=self.audience, issuer=self.issuer,
                leeway=self.LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "purpose"]})
        except jwt.ExpiredSignatureError:
            raise XtError("auth.token_expired") from None
        except jwt.PyJWTError:
            raise XtError("auth.token_invalid") from None
        if payload.get("purpose") != purpose:
            raise XtError("auth.token_invalid", "The token is not valid for this use.")
        sub, sid = payload.get("sub"), payload.get("sid")
        if not isinstance(sub, str) or (sid is not None and not isinstance(sid, str)):
            raise XtError("auth.token_invalid")
        return Claims(user_id=sub, device_id=sid, purpose=purpose, expires_at=int(payload["exp"]),
                      token_id=str(payload.get("jti", "")))
