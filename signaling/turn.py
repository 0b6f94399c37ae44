"""Time-limited TURN credentials (coturn's "TURN REST API" scheme) and the ICE server list handed to clients.

coturn runs with ``use-auth-secret`` + ``static-auth-secret=<XT_TURN_SECRET>``. Nothing is stored per user:
the signaling service signs a credential, coturn recomputes it.

* username   = ``"<expiry unix time>:<user id>"``
* credential = ``base64(HMAC-SHA1(secret, username))``

coturn accepts the username while ``expiry >= now`` (its clock) and the HMAC matches; it logs the username,
so pass an opaque user id (ours are), never a name or a phone number.

What clients get (:meth:`TurnConfig.ice_servers`)::

    [{"urls": ["stun:turn.example.gov.cn:3478"]},
     {"urls": ["turn:turn.example.gov.cn:3478?transport=udp",
               "turn:turn.example.gov.cn:3478?transport=tcp",
               "turns:turn.example.gov.cn:443?transport=tcp"],
      "username": "1767225600:u-42", "credential": "…", "ttl": 3600}]

URL forms (the ``XT_TURN_URLS`` items, see ``server/config.py``):

* a plain ``host`` or ``host:port`` derives the standard set: TURN over UDP and over TCP on the port
  (default 3478) and TURN over TLS on 443, plus ``stun:host:port`` (coturn answers STUN binding
  requests on its listening port without credentials). TLS on 443 is the one that survives the
  firewalls of government networks, which commonly allow only outbound TCP 80/443, and being TLS it
  also passes firewalls that check the protocol on 443. UDP comes first: it is the best path when it works, and
  simple clients (aiortc) use only the first TURN URL they can parse.
* explicit ``turn:``/``turns:`` URIs (RFC 7065) are passed through in the given order, after validation;
  ``stun:`` URIs go to the STUN entry. A deployment with TLS on another port, or a TCP-only relay, lists
  its URIs explicitly.

Decision on the default lifetime: **1 hour** (``DEFAULT_TTL_SECONDS``, the default of
``XT_TURN_TTL_SECONDS``).

* coturn checks the expiry when an allocation is *created*; an allocation made with a valid credential
  keeps being refreshed after the credential expires (coturn maintainers in coturn/coturn#774 and #1204;
  not re-tested here, the tests run for seconds, not hours). So the TTL does not cap the length of a call, only how long a handed-out credential can *start*
  relaying — a 4-hour meeting works with a 1-hour credential.
* What needs a valid credential later is a new allocation within the same call: an ICE restart after a
  network change (Wi-Fi → 4G), or a client that prepared its peer connection early. One hour covers a
  ringing call and those restarts in an ordinary meeting; clients re-fetch the list (it is cheap: no
  I/O, one HMAC) on every call and on every ICE restart, and the ``ttl`` field tells them when to.
* Shorter is safer: a credential copied out of a log, a browser's devtools or a crash report is a free
  relay (bandwidth, and a foothold for reaching hosts behind the TURN server) until it expires. Days
  (common in examples) would make a leaked credential useful long after the call. Much shorter (minutes)
  would make clock skew between the signaling hosts and coturn (expiry is absolute Unix time: keep NTP
  on both) and long ring times fail calls.

Everything here is pure: no network, no clock except ``time.time()`` when ``now`` is not given.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import re
import time
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "TURN_PORT",
    "TURNS_PORT",
    "TurnConfig",
    "TurnCredential",
    "TurnConfigError",
    "ice_servers",
    "issue_credential",
    "verify_credential",
    "standard_urls",
]

DEFAULT_TTL_SECONDS = 3600
TURN_PORT = 3478  # TURN over UDP and TCP (RFC 8656 default port)
TURNS_PORT = 443  # TURN over TLS: the HTTPS port, open on restrictive networks

# A STUN USERNAME is at most 513 bytes (RFC 8489 §14.3); the expiry prefix takes 11.
_MAX_USER_ID = 256
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
# RFC 7065 turn URI (host, IPv4, or a bracketed IPv6 literal) and RFC 7064 stun URI (no stuns:
# — browsers do not support it).
_TURN_URI = re.compile(r"^(?P<scheme>turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[^\[\]:?/@\s]+)"
                       r"(?::(?P<port>\d{1,5}))?(?:\?transport=(?P<transport>udp|tcp))?$")
_STUN_URI = re.compile(r"^(?P<scheme>stun):(?P<host>\[[0-9A-Fa-f:.]+\]|[^\[\]:?/@\s]+)"
                       r"(?::(?P<port>\d{1,5}))?$")
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^\[\]:?/@\s]+)(?::(?P<port>\d{1,5}))?$")


class TurnConfigError(ValueError):
    """A TURN setting (URL, secret, TTL, user id) is malformed; the message says which and why."""


@dataclass(frozen=True)
class TurnCredential:
    """One issued credential: what a TURN client sends, and until when coturn accepts it."""

    username: str
    credential: str
    expires_at: int  # Unix seconds; coturn refuses new allocations after this
    ttl: int  # seconds from issue to expiry


# ---- credentials -------------------------------------------------------------------------------


def _sign(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _check_user_id(user_id: str) -> None:
    if not isinstance(user_id, str) or not user_id:
        raise TurnConfigError("user id: expected a non-empty string")
    if len(user_id.encode("utf-8")) > _MAX_USER_ID:
        raise TurnConfigError(f"user id: expected at most {_MAX_USER_ID} bytes")
    if any(ch.isspace() or not ch.isprintable() for ch in user_id):
        raise TurnConfigError("user id: expected no spaces or control characters")


def issue_credential(secret: str, user_id: str, ttl: int = DEFAULT_TTL_SECONDS, *,
                     now: float | None = None) -> TurnCredential:
    """Sign a credential for ``user_id`` valid for ``ttl`` seconds from ``now`` (default: the clock)."""
    if not isinstance(secret, str) or not secret:
        raise TurnConfigError("TURN secret: expected a non-empty string")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
        raise TurnConfigError(f"TURN TTL: expected a positive number of seconds, got {ttl!r}")
    _check_user_id(user_id)
    expires_at = int(time.time() if now is None else now) + ttl
    username = f"{expires_at}:{user_id}"
    return TurnCredential(username=username, credential=_sign(secret, username), expires_at=expires_at, ttl=ttl)


def verify_credential(secret: str, username: str, credential: str, *, now: float | None = None,
                      user_id: str | None = None) -> bool:
    """What coturn does with a REST credential: the HMAC matches (compared in constant time) and the
    expiry in the username is not in the past. With ``user_id``, the username must also name that user.
    Never raises for malformed input; it is simply not valid."""
    if not (isinstance(secret, str) and secret and isinstance(username, str) and isinstance(credential, str)):
        return False
    expected = _sign(secret, username).encode("ascii")
    signature_ok = hmac.compare_digest(expected, credential.encode("utf-8", "surrogatepass"))
    stamp, sep, who = username.partition(":")
    if not signature_ok or not sep or not (stamp.isascii() and stamp.isdigit()):
        return False
    current = int(time.time() if now is None else now)
    if int(stamp) < current:  # coturn: expired when the timestamp is before its clock
        return False
    return user_id is None or hmac.compare_digest(who.encode("utf-8"), user_id.encode("utf-8"))


# ---- URLs --------------------------------------------------------------------------------------


def _host(raw: str, what: str) -> str:
    """A hostname, IPv4 address or bracketed IPv6 literal, as it must appear in a URI."""
    if raw.startswith("["):
        try:
            ipaddress.IPv6Address(raw[1:-1])
        except ValueError:
            raise TurnConfigError(f"{what}: {raw!r} is not an IPv6 address") from None
        return raw
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        if not _HOSTNAME.match(raw):
            raise TurnConfigError(f"{what}: {raw!r} is not a host name or IP address") from None
        return raw.rstrip(".")
    return f"[{address}]" if address.version == 6 else str(address)


def _port(raw: str | None, default: int, what: str) -> int:
    if raw is None:
        return default
    port = int(raw)
    if not 1 <= port <= 65535:
        raise TurnConfigError(f"{what}: port {port} is outside 1-65535")
    return port


def standard_urls(host: str, *, port: int = TURN_PORT, tls_port: int = TURNS_PORT) -> list[str]:
    """The three TURN URLs of one coturn host: UDP and TCP on ``port``, TLS on ``tls_port``."""
    host = _host(host, "TURN host")
    return [f"turn:{host}:{port}?transport=udp",
            f"turn:{host}:{port}?transport=tcp",
            f"turns:{host}:{tls_port}?transport=tcp"]


def _parse_items(items: Iterable[str], tls_port: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    turn: list[str] = []
    stun: list[str] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        if item.startswith(("turn:", "turns:")):
            match = _TURN_URI.match(item)
            if not match:
                raise TurnConfigError(f"TURN URL {item!r}: expected turn:HOST[:PORT][?transport=udp|tcp] "
                                      "or turns:HOST[:PORT][?transport=tcp]")
            scheme, transport = match["scheme"], match["transport"]
            if scheme == "turns" and transport == "udp":
                raise TurnConfigError(f"TURN URL {item!r}: turns: is TLS over TCP (transport=udp is DTLS, "
                                      "which browsers do not support)")
            host = _host(match["host"], f"TURN URL {item!r}")
            port = _port(match["port"], TURNS_PORT if scheme == "turns" else TURN_PORT, f"TURN URL {item!r}")
            transport = transport or ("tcp" if scheme == "turns" else "udp")
            turn.append(f"{scheme}:{host}:{port}?transport={transport}")
        elif item.startswith("stun:"):
            match = _STUN_URI.match(item)
            if not match:
                raise TurnConfigError(f"STUN URL {item!r}: expected stun:HOST[:PORT]")
            host = _host(match["host"], f"STUN URL {item!r}")
            stun.append(f"stun:{host}:{_port(match['port'], TURN_PORT, f'STUN URL {item!r}')}")
        else:
            match = _HOST_PORT.match(item)
            if not match:
                raise TurnConfigError(f"TURN host {item!r}: expected HOST or HOST:PORT or a turn:/turns:/stun: URL")
            host = _host(match["host"], f"TURN host {item!r}")
            port = _port(match["port"], TURN_PORT, f"TURN host {item!r}")
            turn += standard_urls(host, port=port, tls_port=tls_port)
            stun.append(f"stun:{host}:{port}")
    return tuple(dict.fromkeys(turn)), tuple(dict.fromkeys(stun))


# ---- the ICE server list -----------------------------------------------------------------------


@dataclass(frozen=True)
class TurnConfig:
    """Validated TURN settings. Build with :meth:`from_items` (or :meth:`from_settings`)."""

    secret: str
    turn_urls: tuple[str, ...]
    stun_urls: tuple[str, ...] = ()
    ttl: int = DEFAULT_TTL_SECONDS

    def __post_init__(self) -> None:
        if not isinstance(self.secret, str) or not self.secret:
            raise TurnConfigError("TURN secret: expected a non-empty string (coturn's static-auth-secret)")
        if isinstance(self.ttl, bool) or not isinstance(self.ttl, int) or self.ttl < 1:
            raise TurnConfigError(f"TURN TTL: expected a positive number of seconds, got {self.ttl!r}")
        if isinstance(self.turn_urls, str) or isinstance(self.stun_urls, str):
            raise TurnConfigError("TurnConfig: turn_urls and stun_urls are sequences of URLs, not one string")
        if not all(isinstance(u, str) and u.startswith(("turn:", "turns:")) for u in self.turn_urls) or \
                not all(isinstance(u, str) and u.startswith("stun:") for u in self.stun_urls):
            raise TurnConfigError("TurnConfig: turn_urls must hold only turn:/turns: URLs and stun_urls only "
                                  "stun: URLs (TurnConfig.from_items accepts host names)")
        turn, stun = _parse_items((*self.turn_urls, *self.stun_urls), TURNS_PORT)
        if not turn:
            raise TurnConfigError("TURN URLs: expected at least one TURN host or turn:/turns: URL")
        object.__setattr__(self, "turn_urls", turn)
        object.__setattr__(self, "stun_urls", stun)

    @classmethod
    def from_items(cls, items: Iterable[str], secret: str, ttl: int = DEFAULT_TTL_SECONDS, *,
                   stun_urls: Iterable[str] = (), tls_port: int = TURNS_PORT) -> "TurnConfig":
        """From the ``XT_TURN_URLS`` shape: plain hosts (``host`` / ``host:port``, each expands to
        :func:`standard_urls` plus ``stun:host:port``) and/or explicit ``turn:``/``turns:``/``stun:``
        URLs, in order. Extra ``stun_urls`` come first in the STUN entry."""
        if isinstance(items, str):
            items = [items]
        if isinstance(tls_port, bool) or not isinstance(tls_port, int) or not 1 <= tls_port <= 65535:
            raise TurnConfigError(f"TURN TLS port: expected 1-65535, got {tls_port!r}")
        turn, stun = _parse_items(items, tls_port)
        extra_turn, extra_stun = _parse_items(stun_urls, TURNS_PORT)
        if extra_turn:
            raise TurnConfigError("STUN URLs: expected only stun: URLs")
        return cls(secret=secret, turn_urls=turn, stun_urls=tuple(dict.fromkeys((*extra_stun, *stun))), ttl=ttl)

    @classmethod
    def from_settings(cls, settings: Any) -> "TurnConfig | None":
        """From :class:`xietong.server.config.Settings` (``turn_urls``, ``turn_secret``, ``turn_ttl``);
        ``None`` when no TURN server is configured (clients then get host/STUN candidates only)."""
        items = getattr(settings, "turn_urls", None)
        if not items:
            return None
        return cls.from_items(items, settings.turn_secret, getattr(settings, "turn_ttl", DEFAULT_TTL_SECONDS))

    def credential(self, user_id: str, *, now: float | None = None) -> TurnCredential:
        return issue_credential(self.secret, user_id, self.ttl, now=now)

    def ice_servers(self, user_id: str, *, now: float | None = None) -> list[dict[str, Any]]:
        """The ``iceServers`` list for ``user_id``'s next peer connection: the STUN entry (when there
        are STUN URLs), then one TURN entry with a fresh credential and its ``ttl`` in seconds. A new
        list (new lists inside) on every call."""
        cred = self.credential(user_id, now=now)
        servers: list[dict[str, Any]] = []
        if self.stun_urls:
            servers.append({"urls": list(self.stun_urls)})
        servers.append({"urls": list(self.turn_urls), "username": cred.username,
                        "credential": cred.credential, "ttl": cred.ttl})
        return servers

    def verify(self, username: str, credential: str, *, now: float | None = None,
               user_id: str | None = None) -> bool:
        return verify_credential(self.secret, username, credential, now=now, user_id=user_id)

    def __repr__(self) -> str:  # never show the secret
        return f"TurnConfig(turn_urls={self.turn_urls!r}, stun_urls={self.stun_urls!r}, ttl={self.ttl!r})"


@functools.lru_cache(maxsize=8)
def _config(items: tuple[str, ...], secret: str, ttl: int) -> TurnConfig:
    return TurnConfig.from_items(items, secret, ttl)


def ice_servers(settings: Any, user_id: str, *, now: float | None = None) -> list[dict[str, Any]]:
    """The ICE server list for ``user_id`` from :class:`xietong.server.config.Settings`
    (``turn_urls``, ``turn_secret``, ``turn_ttl``): what the signaling service sends; ``[]`` when no
    TURN server is configured. The parsed configuration is cached per settings value."""
    items = getattr(settings, "turn_urls", None)
    if not items:
        return []
    config = _config(tuple(items), settings.turn_secret, getattr(settings, "turn_ttl", DEFAULT_TTL_SECONDS))
    return config.ice_servers(user_id, now=now)
