"""One typed settings object for every Xietong process, read from ``XT_*`` environment variables.

Every variable is parsed and validated once, at start-up; a bad value raises :class:`ConfigError`
naming the variable and what it expects, and the process does not start. The README's
configuration table is generated from :data:`VARIABLES` (see ``xietong config --markdown``), so the
documentation and the parser cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def _range(kind: Callable[[str], Any], what: str, lo: float, hi: float) -> Callable[[str], Any]:
    expected = f"{what} from {kind(lo)!r} to {kind(hi)!r}" if kind is int else f"{what} from {lo:g} to {hi:g}"

    def parse(raw: str) -> Any:
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ValueError(expected) from None
        if not lo <= value <= hi:
            raise ValueError(expected)
        return value

    return parse


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    return _range(int, "an integer", lo, hi)


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("one of true/false/1/0/yes/no/on/off")


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("a non-empty string")
    return raw.strip()


def _mongo_url(raw: str) -> str:
    raw = raw.strip()
    if not raw.startswith(("mongodb://", "mongodb+srv://")):
        raise ValueError("a MongoDB URI starting with mongodb:// or mongodb+srv://")
    return raw


def _redis_url(raw: str) -> str:
    raw = raw.strip()
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("a Redis URL starting with redis://, rediss:// or unix://")
    return raw


def _http_url(raw: str) -> str:
    raw = raw.strip().rstrip("/")
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("an absolute http:// or https:// URL")
    return raw


def _origins(raw: str) -> tuple[str, ...]:
    items = tuple(item.strip().rstrip("/") for item in raw.split(",") if item.strip())
    for item in items:
        if item == "*":
            raise ValueError("a comma-separated list of origins (the wildcard * is not allowed)")
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ValueError("a comma-separated list of origins such as https://im.example.gov.cn")
    return items


def _float_range(lo: float, hi: float) -> Callable[[str], float]:
    return _range(float, "a number", lo, hi)


def _addresses(raw: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    for item in items:
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise ValueError("a comma-separated list of IP addresses such as 10.0.0.2,10.0.0.3") from None
    return items


def _existing_file(raw: str) -> Path:
    path = Path(raw.strip())
    if not path.is_file():
        raise ValueError("the path of an existing file")
    return path


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("one of DEBUG, INFO, WARNING, ERROR")
    return value


def _ws_url(raw: str) -> str:
    raw = raw.strip().rstrip("/")
    parts = urlsplit(raw)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError("a ws:// or wss:// URL")
    return raw


def _url_list(schemes: tuple[str, ...], what: str) -> Callable[[str], tuple[str, ...]]:
    def parse(raw: str) -> tuple[str, ...]:
        items = tuple(x.strip().rstrip("/") for x in raw.split(",") if x.strip())
        if not items or any(urlsplit(x).scheme not in schemes or not urlsplit(x).hostname for x in items):
            raise ValueError(what)
        return items

    return parse


def _turn_uris(raw: str) -> tuple[str, ...]:
    """TURN hosts (``host`` or ``host:port``) or full ``turn:``/``turns:``/``stun:`` URIs."""
    items = tuple(x.strip() for x in raw.split(",") if x.strip())

    def valid(item: str) -> bool:
        if item.startswith(("turn:", "turns:", "stun:")):
            return len(item.split(":", 1)[1]) > 0
        host, _, port = item.partition(":")
        return bool(host) and "/" not in item and (not port or port.isdigit())

    if not items or not all(valid(x) for x in items):
        raise ValueError("comma-separated TURN hosts (host or host:port) or turn:/turns:/stun: URIs")
    return items


def _path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("a file-system path")
    return Path(raw.strip())


@dataclass(frozen=True)
class Variable:
    """One ``XT_*`` variable: the field it fills, its parser, default and documentation."""

    name: str
    field: str
    parse: Callable[[str], Any]
    default: str | None
    doc: str


# The single list of variables. `default=None` means unset (the feature it configures is off or
# embedded). Defaults are strings so they go through the same parser as user input.
VARIABLES: tuple[Variable, ...] = (
    Variable("XT_HOST", "host", _nonempty, "127.0.0.1", "Interface the HTTP/WebSocket server binds to."),
    Variable("XT_PORT", "port", _int_range(0, 65535), "8080", "Port of the HTTP/WebSocket server (0 = any free port)."),
    Variable("XT_PUBLIC_URL", "public_url", _http_url, None,
             "URL users open; also the default allowed Origin. Default: http://HOST:PORT."),
    Variable("XT_DATA_DIR", "data_dir", _path, "var", "Where the embedded database, signing keys and uploads live."),
    Variable("XT_MONGO_URL", "mongo_url", _mongo_url, None,
             "MongoDB URI. Unset: start the embedded SecantusDB child process under XT_DATA_DIR/db."),
    Variable("XT_MONGO_DB", "mongo_db", _nonempty, "xietong", "Database name."),
    Variable("XT_REDIS_URL", "redis_url", _redis_url, None,
             "Redis URL for the cross-process bus and presence. Unset: in-process (one server process)."),
    Variable("XT_JWT_ISSUER", "jwt_issuer", _nonempty, "xietong", "`iss` of access tokens."),
    Variable("XT_JWT_AUDIENCE", "jwt_audience", _nonempty, "xietong", "`aud` of access tokens."),
    Variable("XT_ACCESS_TOKEN_TTL", "access_token_ttl", _int_range(60, 900), "600",
             "Access-token lifetime in seconds (at most 15 minutes)."),
    Variable("XT_REFRESH_TOKEN_TTL", "refresh_token_ttl", _int_range(3600, 180 * 86400), str(30 * 86400),
             "Lifetime in seconds of a device's refresh token (renewed at each rotation)."),
    Variable("XT_KEYS_DIR", "keys_dir", _path, None,
             "Folder of Ed25519 signing keys (PEM, one per kid). Default: XT_DATA_DIR/keys, created on first start."),
    Variable("XT_ALLOWED_ORIGINS", "allowed_origins", _origins, None,
             "Comma-separated browser Origins allowed on the WebSocket and REST API. Default: XT_PUBLIC_URL."),
    Variable("XT_MAX_BODY_BYTES", "max_body_bytes", _int_range(1024, 64 * 1024 * 1024), str(256 * 1024),
             "Largest accepted JSON request body in bytes."),
    Variable("XT_LOGIN_MAX_FAILURES", "login_max_failures", _int_range(1, 100), "5",
             "Failed logins on one account before it is locked."),
    Variable("XT_LOGIN_LOCKOUT_SECONDS", "login_lockout_seconds", _int_range(1, 86400), "60",
             "First lockout; doubles with each further failure."),
    Variable("XT_LOGIN_LOCKOUT_MAX_SECONDS", "login_lockout_max_seconds", _int_range(1, 7 * 86400), "3600",
             "Longest lockout."),
    Variable("XT_WRITER_LANES", "writer_lanes", _int_range(1, 64), "1",
             "Concurrent write batches of a server process: 1 for the embedded database, 4-8 for MongoDB."),
    Variable("XT_PRESENCE_TTL_SECONDS", "presence_ttl", _int_range(3, 600), "45",
             "A device not renewed for this long (its server process died) is offline; renewed every TTL/3."),
    Variable("XT_PRESENCE_DEBOUNCE_SECONDS", "presence_debounce", _float_range(0, 60), "2",
             "Presence changes are announced after this delay, and only if the state still differs."),
    Variable("XT_TRUSTED_PROXIES", "trusted_proxies", _addresses, None,
             "Comma-separated addresses of reverse proxies whose X-Forwarded-For gives the client address."),
    Variable("XT_FCM_CREDENTIALS", "fcm_credentials", _existing_file, None,
             "Firebase service-account JSON for push through FCM. Unset: notifications are only logged."),
    Variable("XT_FCM_URL", "fcm_url", _http_url, None,
             "FCM endpoint override: a relay reachable from your network (default: Google's)."),
    Variable("XT_PUSH_PREVIEWS", "push_previews", _bool, "false",
             "Show message text in notifications. Off: they name sender and conversation only."),
    Variable("XT_PUSH_LEASE_SECONDS", "push_lease_seconds", _int_range(3, 300), "15",
             "One process plans and sends pushes; another takes over this long after it dies."),
    Variable("XT_SIGNALING_PORT", "signaling_port", _int_range(0, 65535), "8081",
             "Port of the signaling service (calls and meetings, WebSocket). `xietong up` runs it in-process."),
    Variable("XT_SIGNALING_PUBLIC_URL", "signaling_public_url", _ws_url, None,
             "WebSocket URL clients use for signaling. Default: ws://HOST:XT_SIGNALING_PORT/v1/signal."),
    Variable("XT_JWKS_URL", "jwks_url", _http_url, None,
             "Signaling as its own process: where it reads the published token keys. Default: XT_KEYS_DIR."),
    Variable("XT_MESH_MAX_PARTICIPANTS", "mesh_max", _int_range(2, 8), "4",
             "Meetings up to this size are a full mesh; larger ones go through the SFU (Janus)."),
    Variable("XT_MEETING_MAX_PARTICIPANTS", "meeting_cap", _int_range(2, 1000), "100",
             "Most participants a meeting admits (a host may set a lower cap)."),
    Variable("XT_CALL_RING_SECONDS", "call_ring_seconds", _float_range(1, 300), "45",
             "An unanswered call rings this long, then ends as missed."),
    Variable("XT_MEETING_REJOIN_SECONDS", "rejoin_grace", _float_range(0.5, 600), "30",
             "A participant whose connection dropped keeps its place (and state) this long."),
    Variable("XT_JANUS_URLS", "janus_urls", _url_list(("http", "https"), "comma-separated http(s):// URLs"), None,
             "Janus HTTP API endpoints (e.g. http://janus:8088/janus) for meetings beyond the mesh size."),
    Variable("XT_TURN_URLS", "turn_urls", _turn_uris, None,
             "TURN servers handed to clients: hosts (UDP/TCP 3478 and TLS 443 are derived) or turn:/turns: URIs."),
    Variable("XT_TURN_SECRET", "turn_secret", _nonempty, None,
             "coturn's static-auth-secret: signs the time-limited TURN credentials (never logged)."),
    Variable("XT_TURN_TTL_SECONDS", "turn_ttl", _int_range(60, 7 * 86400), "3600",
             "Lifetime of issued TURN credentials."),
    Variable("XT_SEED_DEMO", "seed_demo", _bool, "true",
             "`xietong up`: seed the demo organisation into an empty database. Set false in production."),
    Variable("XT_LOG_LEVEL", "log_level", _log_level, "INFO", "Log level."),
)


@dataclass(frozen=True)
class Settings:
    """Validated configuration. Build it with :meth:`from_env`; tests use :meth:`replace`."""

    host: str
    port: int
    public_url: str | None
    data_dir: Path
    mongo_url: str | None
    mongo_db: str
    redis_url: str | None
    jwt_issuer: str
    jwt_audience: str
    access_token_ttl: int
    refresh_token_ttl: int
    keys_dir: Path | None
    allowed_origins: tuple[str, ...] | None
    max_body_bytes: int
    writer_lanes: int
    presence_ttl: int
    presence_debounce: float
    trusted_proxies: tuple[str, ...] | None
    fcm_credentials: Path | None
    fcm_url: str | None
    push_previews: bool
    push_lease_seconds: int
    signaling_port: int
    signaling_public_url: str | None
    jwks_url: str | None
    mesh_max: int
    meeting_cap: int
    call_ring_seconds: float
    rejoin_grace: float
    janus_urls: tuple[str, ...] | None
    turn_urls: tuple[str, ...] | None
    turn_secret: str | None
    turn_ttl: int
    login_max_failures: int
    login_lockout_seconds: int
    login_lockout_max_seconds: int
    seed_demo: bool
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Parse ``XT_*`` variables; unknown ``XT_*`` names are refused too (a typo must not pass)."""
        env = os.environ if environ is None else environ
        known = {v.name for v in VARIABLES}
        unknown = sorted(name for name in env if name.startswith("XT_") and name not in known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {}
        for var in VARIABLES:
            raw = env.get(var.name)
            if raw is None or raw == "":
                raw = var.default
            if raw is None:
                values[var.field] = None
                continue
            try:
                values[var.field] = var.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{var.name}: expected {exc}, got {raw!r}") from None
        values.update(overrides)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if self.login_lockout_max_seconds < self.login_lockout_seconds:
            raise ConfigError("XT_LOGIN_LOCKOUT_MAX_SECONDS: expected a value >= XT_LOGIN_LOCKOUT_SECONDS")
        if self.turn_urls and not self.turn_secret:
            raise ConfigError("XT_TURN_SECRET: expected coturn's shared secret when XT_TURN_URLS is set")

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    # Derived values, computed from the fields above (never stored twice).
    @property
    def effective_keys_dir(self) -> Path:
        return self.keys_dir if self.keys_dir is not None else self.data_dir / "keys"

    def effective_public_url(self, bound_port: int | None = None) -> str:
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{bound_port if bound_port is not None else self.port}"

    def effective_signaling_url(self, bound_port: int | None = None) -> str:
        if self.signaling_public_url:
            return self.signaling_public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"ws://{host}:{bound_port if bound_port is not None else self.signaling_port}/v1/signal"

    def effective_origins(self, bound_port: int | None = None) -> tuple[str, ...]:
        if self.allowed_origins is not None:
            return self.allowed_origins
        url = self.effective_public_url(bound_port)
        origins = {url}
        # The same server reached as localhost or 127.0.0.1 is one origin to a user.
        if "://127.0.0.1:" in url:
            origins.add(url.replace("://127.0.0.1:", "://localhost:"))
        return tuple(sorted(origins))


def variables_markdown() -> str:
    """The README table of settings."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for var in VARIABLES:
        default = f"`{var.default}`" if var.default is not None else "unset"
        lines.append(f"| `{var.name}` | {default} | {var.doc} |")
    return "\n".join(lines)
