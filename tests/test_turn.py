"""TURN: time-limited credentials (signaling/turn.py) checked against an independent computation, and a
real relay — two aiortc peers that can only reach each other through a private coturn, with credentials
issued by signaling/turn.py, over UDP, TCP and TLS; wrong or expired credentials fail fast with a 401.

Relay-only: both peers use ``iceTransportPolicy=RELAY`` (aioice then gathers no host or server-reflexive
candidates and hides the relay's related address); host-address discovery is also patched to return
nothing, so even a policy regression could not produce a direct path. Each test then checks that every
candidate in both SDPs is ``typ relay`` and that the pair ICE nominated is relay ↔ relay on both sides.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from pathlib import Path
from typing import Any

import aioice.turn
import pytest
from aiortc import RTCPeerConnection

from rtc_support import ColourTrack, FrameCounter
from turn_support import (Coturn, candidate_types, coturn, ice_transport, nominated_pair,  # noqa: F401
                          relay_only, relay_peer, wait_state)
from xietong.server.config import VARIABLES, Settings
from xietong.signaling.turn import (
    DEFAULT_TTL_SECONDS,
    TurnConfig,
    TurnConfigError,
    ice_servers,
    issue_credential,
    standard_urls,
    verify_credential,
)

pytestmark = pytest.mark.timeout(30)

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z


def reference_password(secret: str, username: str) -> str:
    """coturn's REST credential, computed here without signaling/turn.py."""
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


# ---- (a) credentials ----------------------------------------------------------------------------


def test_known_answer_from_openssl():
    # printf '%s' 1767225600:u-42 | openssl dgst -sha1 -hmac north-gate-7 -binary | base64
    cred = issue_credential("north-gate-7", "u-42", 1, now=NOW - 1)
    assert cred.username == "1767225600:u-42"
    assert cred.credential == "/23Mexc1ComNPudXTdba/S74s6o="


def test_username_is_expiry_then_user_and_password_is_base64_hmac_sha1():
    cred = issue_credential("s3cret", "u-42", 600, now=NOW + 0.9)
    assert cred.username == f"{NOW + 600}:u-42"
    assert (cred.expires_at, cred.ttl) == (NOW + 600, 600)
    assert cred.credential == reference_password("s3cret", cred.username)
    assert len(base64.b64decode(cred.credential, validate=True)) == 20  # SHA-1


def test_a_user_id_with_colons_or_chinese_keeps_the_expiry_first():
    # coturn takes the expiry from the all-digit part before the first colon
    cred = issue_credential("s", "org:某某省:u-1", 60, now=NOW)
    assert cred.username == f"{NOW + 60}:org:某某省:u-1"
    assert cred.credential == reference_password("s", cred.username)


@pytest.mark.parametrize("user_id", ["", "a b", "tab\tx", "x" * 300, None])
def test_unusable_user_ids_are_refused(user_id: Any):
    with pytest.raises(TurnConfigError):
        issue_credential("s", user_id, 60)


@pytest.mark.parametrize(("secret", "ttl"), [("", 60), ("s", 0), ("s", -5), ("s", True), ("s", 1.5)])
def test_bad_secret_or_ttl_is_refused(secret: str, ttl: Any):
    with pytest.raises(TurnConfigError):
        issue_credential(secret, "u", ttl)


def test_verification_accepts_until_expiry_and_rejects_after():
    cred = issue_credential("s3cret", "u-42", 3600, now=NOW)
    assert verify_credential("s3cret", cred.username, cred.credential, now=NOW)
    assert verify_credential("s3cret", cred.username, cred.credential, now=NOW + 3600)  # coturn: ts < now fails
    assert not verify_credential("s3cret", cred.username, cred.credential, now=NOW + 3601)
    assert verify_credential("s3cret", cred.username, cred.credential, now=NOW, user_id="u-42")
    assert not verify_credential("s3cret", cred.username, cred.credential, now=NOW, user_id="u-43")


def test_verification_rejects_tampering_and_garbage():
    cred = issue_credential("s3cret", "u-42", 3600, now=NOW)
    later = f"{NOW + 99999}:u-42"  # a client extending its own credential
    other = f"{NOW + 3600}:u-43"
    assert not verify_credential("other-secret", cred.username, cred.credential, now=NOW)
    assert not verify_credential("s3cret", later, cred.credential, now=NOW)
    assert not verify_credential("s3cret", other, cred.credential, now=NOW)
    flipped = ("B" if cred.credential[0] == "A" else "A") + cred.credential[1:]
    assert not verify_credential("s3cret", cred.username, flipped, now=NOW)
    assert not verify_credential("s3cret", cred.username, "", now=NOW)
    assert not verify_credential("s3cret", cred.username, "密码", now=NOW)
    # well signed, but not in the REST form: no expiry to check, so not valid
    for username in ("u-42", f"x{NOW}:u-42", f"{NOW}"):
        assert not verify_credential("s3cret", username, reference_password("s3cret", username), now=NOW)
    assert not verify_credential("", cred.username, cred.credential, now=NOW)


def test_verification_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch):
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    cred = issue_credential("s3cret", "u-42", 60, now=NOW)
    assert not verify_credential("s3cret", cred.username, "wrong", now=NOW)
    assert compared and compared[0][1] == b"wrong"


def test_a_plain_host_derives_udp_tcp_and_tls_on_443_and_stun():
    config = TurnConfig.from_items(["turn.example.gov.cn"], "s3cret")
    assert config.ttl == DEFAULT_TTL_SECONDS == 3600
    servers = config.ice_servers("u-42", now=NOW)
    assert servers == [
        {"urls": ["stun:turn.example.gov.cn:3478"]},
        {"urls": ["turn:turn.example.gov.cn:3478?transport=udp",
                  "turn:turn.example.gov.cn:3478?transport=tcp",
                  "turns:turn.example.gov.cn:443?transport=tcp"],
         "username": f"{NOW + 3600}:u-42",
         "credential": reference_password("s3cret", f"{NOW + 3600}:u-42"),
         "ttl": 3600},
    ]
    assert standard_urls("turn.example.gov.cn") == servers[1]["urls"]


def test_host_port_ipv6_and_explicit_urls_keep_their_order():
    config = TurnConfig.from_items(
        ["10.0.0.5:3479", "turns:relay.example.gov.cn:5349", "turn:relay.example.gov.cn?transport=tcp",
         "stun:stun.example.gov.cn", "[2001:db8::1]"], "s", 120, stun_urls=["stun:first.example.gov.cn:19302"])
    assert config.turn_urls == (
        "turn:10.0.0.5:3479?transport=udp", "turn:10.0.0.5:3479?transport=tcp", "turns:10.0.0.5:443?transport=tcp",
        "turns:relay.example.gov.cn:5349?transport=tcp", "turn:relay.example.gov.cn:3478?transport=tcp",
        "turn:[2001:db8::1]:3478?transport=udp", "turn:[2001:db8::1]:3478?transport=tcp",
        "turns:[2001:db8::1]:443?transport=tcp")
    assert config.stun_urls == ("stun:first.example.gov.cn:19302", "stun:10.0.0.5:3479",
                                "stun:stun.example.gov.cn:3478", "stun:[2001:db8::1]:3478")
    turn = config.ice_servers("u", now=NOW)[1]
    assert turn["ttl"] == 120 and turn["username"] == f"{NOW + 120}:u"
    # the TLS port of derived URLs is configurable
    assert TurnConfig.from_items(["h.example"], "s", tls_port=5349).turn_urls[2] == "turns:h.example:5349?transport=tcp"


def test_only_stun_is_not_a_turn_configuration():
    with pytest.raises(TurnConfigError):
        TurnConfig.from_items(["stun:stun.example.gov.cn"], "s")


@pytest.mark.parametrize("item", [
    "turns:h.example?transport=udp", "turn:h.example?transport=sctp", "turn:", "http://h.example",
    "h.example:99999", "h_example!", "turn:h.example:3478/path", "stuns:h.example", "::1", "[zz::1]",
])
def test_malformed_urls_are_refused(item: str):
    with pytest.raises(TurnConfigError):
        TurnConfig.from_items([item], "s")


def test_every_call_gets_fresh_lists_and_the_secret_is_never_shown():
    config = TurnConfig.from_items(["h.example"], "very-secret-value")
    first, second = config.ice_servers("u"), config.ice_servers("u")
    first[1]["urls"].append("turn:evil.example")
    assert "turn:evil.example" not in second[1]["urls"] and "turn:evil.example" not in config.turn_urls
    assert "very-secret-value" not in repr(config)
    assert config.verify(second[1]["username"], second[1]["credential"], user_id="u")


def test_built_from_the_server_settings():
    settings = Settings.from_env({"XT_TURN_URLS": "turn.example.gov.cn, stun:stun.example.gov.cn",
                                  "XT_TURN_SECRET": "s3cret", "XT_TURN_TTL_SECONDS": "900"})
    config = TurnConfig.from_settings(settings)
    assert config is not None and config.ttl == 900
    assert config.turn_urls == tuple(standard_urls("turn.example.gov.cn"))
    assert config.stun_urls == ("stun:turn.example.gov.cn:3478", "stun:stun.example.gov.cn:3478")
    assert TurnConfig.from_settings(Settings.from_env({})) is None
    # what the signaling service calls (signaling/service.py)
    assert ice_servers(settings, "u-42", now=NOW) == config.ice_servers("u-42", now=NOW)
    assert ice_servers(settings, "u-42", now=NOW)[1]["username"] == f"{NOW + 900}:u-42"
    assert ice_servers(Settings.from_env({}), "u-42") == []


# ---- (b, c) a real relay ------------------------------------------------------------------------


async def negotiate(caller: RTCPeerConnection, callee: RTCPeerConnection) -> tuple[str, str]:
    offer = await caller.createOffer()
    await caller.setLocalDescription(offer)
    await callee.setRemoteDescription(caller.localDescription)
    await callee.setLocalDescription(await callee.createAnswer())
    await caller.setRemoteDescription(callee.localDescription)
    return caller.localDescription.sdp, callee.localDescription.sdp


def issued(coturn: Coturn, transport: str, user_id: str) -> list[dict[str, Any]]:
    """The ICE servers signaling/turn.py hands ``user_id``; the first TURN URL is the one aiortc uses."""
    if transport == "derived":  # XT_TURN_URLS=127.0.0.1:PORT — UDP first
        config = TurnConfig.from_items(coturn.items, coturn.secret, 60, tls_port=coturn.tls_port or 443)
    else:
        config = TurnConfig.from_items([coturn.url(transport)], coturn.secret, 60)
    return config.ice_servers(user_id)


@pytest.mark.parametrize("transport", ["derived", "tcp", "tls"])
async def test_two_peers_talk_only_through_the_relay(coturn: Coturn, relay_only: None, transport: str,
                                                     monkeypatch: pytest.MonkeyPatch):
    coturn.trust_certificate(monkeypatch)
    alice_servers, bob_servers = issued(coturn, transport, "alice"), issued(coturn, transport, "bob")
    alice, bob = relay_peer(alice_servers), relay_peer(bob_servers)
    counters: dict[str, FrameCounter] = {}
    bob.on("track", lambda track: counters.__setitem__("bob", FrameCounter(track)))
    alice.on("track", lambda track: counters.__setitem__("alice", FrameCounter(track)))
    alice.addTrack(ColourTrack(60))
    bob.addTrack(ColourTrack(200))
    try:
        offer_sdp, answer_sdp = await negotiate(alice, bob)
        for sdp in (offer_sdp, answer_sdp):
            candidates = re.findall(r"^a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ (\w+)", sdp, flags=re.M)
            assert candidates and len(candidates) == len(candidate_types(sdp)), sdp
            for address, port, kind in candidates:  # only coturn's relayed addresses are offered
                assert (address, kind) == ("127.0.0.1", "relay") and coturn.min_port <= int(port) <= coturn.max_port
        await wait_state(alice, {"connected"}, 10)
        await wait_state(bob, {"connected"}, 10)

        for pc in (alice, bob):
            assert {c.type for c in ice_transport(pc).iceGatherer.getLocalCandidates()} == {"relay"}
            assert {c.type for c in ice_transport(pc).getRemoteCandidates()} == {"relay"}
            pair = nominated_pair(pc)
            assert (pair.local_candidate.type, pair.remote_candidate.type) == ("relay", "relay")
            assert coturn.min_port <= pair.local_candidate.port <= coturn.max_port
            assert coturn.min_port <= pair.remote_candidate.port <= coturn.max_port
            assert isinstance(pair.protocol.transport, aioice.turn.TurnTransport)  # sends go through TURN

        assert await counters["bob"].wait(5, timeout=10) >= 5
        assert await counters["alice"].wait(5, timeout=10) >= 5
        assert (counters["bob"].luma, counters["alice"].luma) == (60, 200)  # each got the other's video
    finally:
        for counter in counters.values():
            counter.stop()
        await alice.close()
        await bob.close()

    # coturn's side of the story: both allocations used this issuer's credentials, over the asked transport
    realm = re.escape(coturn.realm)
    for servers in (alice_servers, bob_servers):
        user = re.escape(servers[-1]["username"])
        new = await coturn.wait_for_log(rf"new, realm=<{realm}>, username=<{user}>, lifetime=\d+(.*)")
        assert ("cipher=" in new.group(1)) == (transport == "tls")
        if transport in ("tcp", "tls"):
            port = coturn.tls_port if transport == "tls" else coturn.port
            kind = "TLS/TCP" if transport == "tls" else "TCP"
            await coturn.wait_for_log(rf"closed \(2nd stage\), user <{user}> realm <{realm}> origin <>, "
                                      rf"local 127\.0\.0\.1:{port}, remote [\d.:]+, reason: {kind} connection closed")
            usage = await coturn.wait_for_log(rf"peer usage: realm=<{realm}>, username=<{user}>, "
                                              r"rp=(\d+), rb=(\d+), sp=(\d+), sb=(\d+)")
            assert int(usage.group(2)) > 1000 and int(usage.group(4)) > 1000  # media went through the relay
        else:  # UDP: deallocated cleanly; no TCP or TLS client ever connected
            await coturn.wait_for_log(rf"refreshed, realm=<{realm}>, username=<{user}>, lifetime=0")
            assert "tcp or tls connected" not in coturn.session_log()
    assert " 401: Unauthorized" not in re.sub(r"user <>: .*", "", coturn.log())  # only the usual first challenge


@pytest.mark.parametrize("wrong", ["bad password", "expired"])
async def test_wrong_credentials_fail_fast_and_coturn_says_401(coturn: Coturn, relay_only: None, wrong: str):
    config = TurnConfig.from_items(coturn.items, coturn.secret, 60, tls_port=coturn.tls_port or 443)
    mallory_servers = config.ice_servers("mallory", now=None if wrong == "bad password" else 0)
    if wrong == "bad password":
        mallory_servers[-1]["credential"] = reference_password("not-the-secret", mallory_servers[-1]["username"])
    else:
        assert mallory_servers[-1]["username"].startswith("60:")  # expired in 1970, correctly signed
        assert mallory_servers[-1]["credential"] == reference_password(coturn.secret, "60:mallory")
    mallory, bob = relay_peer(mallory_servers), relay_peer(config.ice_servers("bob"))
    mallory.addTrack(ColourTrack(60))
    bob.addTrack(ColourTrack(200))
    started = asyncio.get_running_loop().time()
    try:
        # bob calls: an answerer given no candidates would not even gather (aioice prunes the component)
        offer_sdp, answer_sdp = await negotiate(bob, mallory)
        assert set(candidate_types(offer_sdp)) == {"relay"}  # bob's credentials work
        assert candidate_types(answer_sdp) == []  # coturn refused mallory's allocation: nothing to answer
        assert await wait_state(bob, {"connected", "failed"}, 5) == "failed"  # nothing to pair with
        # aiortc never starts ICE on a transport without local candidates: mallory stays "new", never connects
        assert mallory.iceGatheringState == "complete"
        assert ice_transport(mallory).iceGatherer.getLocalCandidates() == []
        assert mallory.connectionState in ("new", "failed")
    finally:
        await mallory.close()
        await bob.close()
    assert asyncio.get_running_loop().time() - started < 5
    user = re.escape(mallory_servers[-1]["username"])
    await coturn.wait_for_log(rf"realm <{re.escape(coturn.realm)}> user <{user}>: "
                              r"incoming packet message processed, error 401: Unauthorized")
    assert not re.search(rf"username=<{user}>", coturn.log())  # no session was ever created for it


# ---- the deployed coturn serves what signaling/turn.py hands out --------------------------------


def test_compose_coturn_matches_the_issued_urls_and_secret():
    import yaml

    compose = yaml.safe_load((Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text())
    coturn = compose["services"]["coturn"]
    assert coturn["image"].startswith("coturn/coturn:")
    args = dict(a.split("=", 1) if "=" in a else (a, "") for a in coturn["command"])
    # REST credentials with the secret signaling signs with (expanded inside the container; refused if empty)
    assert "--use-auth-secret" in args and "--lt-cred-mech" not in args
    assert args["--static-auth-secret"] == "$${XT_TURN_SECRET:?set XT_TURN_SECRET}"
    assert coturn["environment"]["XT_TURN_SECRET"] == "${XT_TURN_SECRET:-}"
    assert "XT_TURN_SECRET" in {v.name for v in VARIABLES}
    # the derived URLs: turn:HOST:3478 over UDP and TCP, turns:HOST:443 (TLS) — published to those host ports
    listening, tls = int(args["--listening-port"]), args["--tls-listening-port"]
    assert set(coturn["ports"]) >= {f"3478:{listening}/udp", f"3478:{listening}/tcp", f"443:{tls}/tcp"}
    assert [u.split(":")[2].split("?")[0] for u in standard_urls("h.example")] == ["3478", "3478", "443"]
    assert "--no-tls" not in args and args["--cert"].startswith("/etc/coturn/certs/")
    assert args["--pkey"].startswith("/etc/coturn/certs/") and "turn-certs:/etc/coturn/certs:ro" in coturn["volumes"]
    assert "turn-certs" in compose["volumes"]
    # the relay range in the command is the one published
    relay = f"{args['--min-port']}-{args['--max-port']}"
    assert f"{relay}:{relay}/udp" in coturn["ports"]
    # never relays to loopback (default), link-local/metadata addresses or our own services
    assert "--allow-loopback-peers" not in args and "--no-cli" in args
    denied = [a for a in coturn["command"] if a.startswith("--denied-peer-ip=")]
    assert "--denied-peer-ip=169.254.0.0-169.254.255.255" in denied
    subnet = compose["networks"]["xietong"]["ipam"]["config"][0]["subnet"]
    assert subnet == "172.28.0.0/24" and "--denied-peer-ip=172.28.0.0-172.28.0.255" in denied
    assert "networks" not in coturn  # not on the services' network at all
