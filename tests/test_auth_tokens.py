"""Access tokens: Ed25519-signed JWTs that other services verify offline, and the forgeries refused.

Forged tokens are built with pyjwt (or by hand where pyjwt refuses to make them), the way an
attacker would; the server must answer each with ``auth.token_invalid``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any, Callable

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auth_support import error_code, whoami
from xietong.server.auth.tokens import PURPOSE_TOTP_ENROLL, TokenVerifier


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 token made by hand: pyjwt rightly refuses a PEM public key as an HMAC secret."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


class Forge:
    """What an attacker knows: a real token's claims, the public JWKS, the server's settings. The
    server's own private key is used only to prove that a bad claim alone gets a token refused."""

    def __init__(self, demo, genuine: str):
        self.services = demo.server.services
        self.claims = jwt.decode(genuine, options={"verify_signature": False})
        self.header = jwt.get_unverified_header(genuine)
        self.kid = self.header["kid"]

    def public_pem(self) -> bytes:
        return self.services.keys.active.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def server_signed(self, **changes: Any) -> str:
        key = self.services.keys.active
        headers = {"kid": changes.pop("kid", key.kid)}
        return jwt.encode({**self.claims, **changes}, key.private_key, algorithm="EdDSA", headers=headers)


FORGERIES: dict[str, Callable[[Forge], str]] = {
    "alg_none": lambda f: jwt.encode(f.claims, None, algorithm="none", headers={"kid": f.kid}),
    "hs256_with_public_pem_as_secret": lambda f: _hs256({"alg": "HS256", "typ": "JWT", "kid": f.kid}, f.claims,
                                                        f.public_pem()),
    "hs256_with_raw_public_key_as_secret": lambda f: jwt.encode(
        f.claims, f.services.keys.active.public_key.public_bytes_raw(), algorithm="HS256", headers={"kid": f.kid}),
    "other_ed25519_key_same_kid": lambda f: jwt.encode(f.claims, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                                                       headers={"kid": f.kid}),
    "unknown_kid": lambda f: f.server_signed(kid="20200101T000000-abcdef"),
    "no_kid": lambda f: jwt.encode(f.claims, f.services.keys.active.private_key, algorithm="EdDSA"),
    "wrong_audience": lambda f: f.server_signed(aud="signaling"),
    "wrong_issuer": lambda f: f.server_signed(iss="someone-else"),
    "no_purpose": lambda f: f.server_signed(purpose=None),
    "totp_enrolment_token": lambda f: f.services.issuer.issue(f.claims["sub"], f.claims["sid"],
                                                              purpose=PURPOSE_TOTP_ENROLL),
    "tampered_claims": lambda f: _swap_payload(f.server_signed(), {**f.claims, "sub": "user_somebody_else"}),
    "garbage": lambda f: "garbage",
    "three_garbage_segments": lambda f: "eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl",
    "oversized": lambda f: f.server_signed(padding="x" * 5000),
}


def _swap_payload(token: str, claims: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


@pytest.fixture
async def signed_in(demo) -> dict[str, Any]:
    return await demo.api.login("zhangwei")


async def test_access_token_is_an_eddsa_jwt_with_a_published_kid(demo, signed_in):
    header = jwt.get_unverified_header(signed_in["access_token"])
    status, jwks = await demo.api.get("/.well-known/jwks.json")
    assert status == 200
    assert header["alg"] == "EdDSA"
    published = {k["kid"]: k for k in jwks["keys"]}
    assert header["kid"] in published
    assert published[header["kid"]]["kty"] == "OKP" and published[header["kid"]]["crv"] == "Ed25519"
    assert all("d" not in k for k in jwks["keys"])  # no private key material is ever published


async def test_access_token_names_user_device_issuer_audience_and_lives_at_most_15_minutes(demo, signed_in):
    settings = demo.server.services.settings
    claims = jwt.decode(signed_in["access_token"], options={"verify_signature": False})
    assert claims["iss"] == settings.jwt_issuer and claims["aud"] == settings.jwt_audience
    assert claims["sub"] == demo.user("zhangwei") and claims["sid"] == signed_in["device_id"]
    assert 0 < claims["exp"] - claims["iat"] <= 900
    assert abs(claims["iat"] - time.time()) < 60


async def test_another_service_verifies_an_access_token_offline_with_the_published_jwks(demo, signed_in):
    settings = demo.server.services.settings
    _, jwks = await demo.api.get("/.well-known/jwks.json")
    verifier = TokenVerifier(jwks, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    claims = verifier.verify(signed_in["access_token"])
    assert (claims.user_id, claims.device_id) == (demo.user("zhangwei"), signed_in["device_id"])


@pytest.mark.parametrize("forgery", FORGERIES, ids=list(FORGERIES))
async def test_forged_or_misdirected_token_is_refused_as_invalid(demo, signed_in, forgery):
    token = FORGERIES[forgery](Forge(demo, signed_in["access_token"]))
    status, body = await demo.api.get("/v1/me", token=token)
    assert (status, error_code(body)) == (401, "auth.token_invalid"), body
    # The genuine token of the same device keeps working: nothing was signed out by the attempt.
    assert await whoami(demo.api, signed_in["access_token"]) == "zhangwei"


async def test_expired_access_token_is_refused_as_expired(demo, signed_in):
    issuer = demo.server.services.issuer
    an_hour_ago = time.time() - 3600
    token = issuer.issue(demo.user("zhangwei"), signed_in["device_id"], now=an_hour_ago)
    status, body = await demo.api.get("/v1/me", token=token)
    assert (status, error_code(body)) == (401, "auth.token_expired")


@pytest.mark.parametrize("header", ["{token}", "Basic {token}", "Bearer", "Bearer "], ids=[
    "without_scheme", "basic_scheme", "scheme_without_token", "scheme_and_blank"])
async def test_authorization_header_without_a_bearer_token_is_refused_as_invalid(demo, signed_in, header):
    status, body = await demo.api.get(
        "/v1/me", headers={"Authorization": header.format(token=signed_in["access_token"])})
    assert (status, error_code(body)) == (401, "auth.token_invalid")


OLD_KID, NEW_KID = "20250101T000000-0a0a0a", "20260101T000000-0b0b0b"


class TestKeyRotation:
    """Two keys in the key folder, as during a rotation: the newer signs, both verify."""

    @pytest.fixture
    def settings(self, settings, tmp_path):
        folder = tmp_path / "rotating-keys"
        folder.mkdir()
        for kid in (OLD_KID, NEW_KID):
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            (folder / f"{kid}.pem").write_bytes(pem)
        return settings.replace(keys_dir=folder)

    async def test_new_tokens_are_signed_with_the_newest_key_and_both_keys_are_published(self, demo, signed_in):
        assert jwt.get_unverified_header(signed_in["access_token"])["kid"] == NEW_KID
        _, jwks = await demo.api.get("/.well-known/jwks.json")
        assert sorted(k["kid"] for k in jwks["keys"]) == [OLD_KID, NEW_KID]

    async def test_token_signed_by_the_key_being_rotated_out_stays_valid(self, demo, signed_in):
        old_key = next(k for k in demo.server.services.keys.keys if k.kid == OLD_KID)
        claims = jwt.decode(signed_in["access_token"], options={"verify_signature": False})
        token = jwt.encode(claims, old_key.private_key, algorithm="EdDSA", headers={"kid": OLD_KID})
        assert await whoami(demo.api, token) == "zhangwei"


async def test_request_without_authorization_header_needs_authentication(demo):
    status, body = await demo.api.get("/v1/me")
    assert (status, error_code(body)) == (401, "auth.required")
