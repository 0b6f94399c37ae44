"""A private coturn (``turnserver``, Debian package coturn) on loopback for a test.

:class:`Coturn` runs it with REST credentials (``use-auth-secret`` + a random ``static-auth-secret``), on
127.0.0.1 only: TURN over UDP and TCP on one free port, TURN over TLS on another (a throw-away self-signed
certificate for 127.0.0.1), relays from a small private port range on 127.0.0.1, loopback peers allowed
(both test peers live on 127.0.0.1), no CLI, no RFC 5780 alternate ports, its user database, log and pid
file in the test's directory. ``start()`` returns once it answers a STUN Binding request on UDP and accepts
TCP and TLS connections; ``stop()`` kills it by PID (teardown always calls it).

A missing ``turnserver`` fails the test (it never skips): install the Debian package coturn.

Ports are picked below the kernel's ephemeral range (32768-60999): a benchmark running alongside opens
thousands of loopback connections, whose local ports can take a port between our check and coturn's bind
(coturn then logs "Cannot bind TLS/TCP listener socket ... errno=98" and keeps retrying). ``start()``
checks every listener and fails with the log tail if one is missing.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import random
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

MISSING = ("turnserver (coturn) is not installed: install the Debian package coturn "
           "(apt-get install -y coturn; `make test` as root does it via scripts/ensure-system-deps)")
HOST = "127.0.0.1"
REALM = "xietong.test"
RELAY_PORTS = 24  # relay endpoints: two peers need two, a few tests in a row a few more


PORTS = (20000, 32000)  # below the ephemeral range (cat /proc/sys/net/ipv4/ip_local_port_range)


def _udp_and_tcp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            tcp.bind((HOST, port))
            udp.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(listeners: int, relays: int = RELAY_PORTS) -> tuple[list[int], tuple[int, int]]:
    """``listeners`` single ports and a range of ``relays`` consecutive ports (coturn's relay endpoints),
    all free for UDP and TCP on 127.0.0.1 and disjoint."""
    for _ in range(200):
        base = random.randrange(PORTS[0], PORTS[1] - relays)
        if not all(_udp_and_tcp_free(p) for p in range(base, base + relays)):
            continue
        singles: list[int] = []
        for _ in range(200):
            port = random.randrange(*PORTS)
            if not base <= port < base + relays and port not in singles and _udp_and_tcp_free(port):
                singles.append(port)
                if len(singles) == listeners:
                    return singles, (base, base + relays - 1)
    raise RuntimeError(f"no free ports in {PORTS} on 127.0.0.1")


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1/localhost (valid one day); returns (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "xietong test coturn")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST)),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "turn-cert.pem", directory / "turn-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def _stun_binding_answered(port: int, timeout: float = 0.2) -> bool:
    from aioice import stun

    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(bytes(request), (HOST, port))
            data, _ = sock.recvfrom(2048)
        except OSError:
            return False
    try:
        answer = stun.parse_message(data)
    except ValueError:
        return False
    return answer.transaction_id == request.transaction_id and answer.message_class == stun.Class.RESPONSE


def _tcp_accepts(port: int, context: ssl.SSLContext | None = None) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2) as sock:
            if context is None:
                return True
            with context.wrap_socket(sock, server_hostname=HOST):
                return True
    except (OSError, ssl.SSLError):
        return False


class Coturn:
    """A private ``turnserver``. Attributes: ``port`` (UDP+TCP), ``tls_port``, ``secret``, ``realm``,
    ``cert_path``, ``log_path``, ``pid``."""

    def __init__(self, workdir: Path, *, tls: bool = True):
        if shutil.which("turnserver") is None:
            pytest.fail(MISSING, pytrace=False)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.secret = secrets.token_urlsafe(24)
        self.realm = REALM
        listeners, (self.min_port, self.max_port) = free_ports(2 if tls else 1)
        self.port = listeners[0]
        self.tls_port = listeners[1] if tls else None
        self.cert_path: Path | None = None
        self.key_path: Path | None = None
        if tls:
            self.cert_path, self.key_path = self_signed_certificate(self.workdir)
        self.log_path = self.workdir / "turnserver.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready_at = 0  # log offset once the readiness probes are done

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        cmd = [
            shutil.which("turnserver") or "turnserver",
            "-n",  # no configuration file (never /etc/turnserver.conf)
            "-v",  # per-session lines, including every 401 with its user name
            f"--listening-ip={HOST}", f"--relay-ip={HOST}",
            f"--listening-port={self.port}",
            f"--min-port={self.min_port}", f"--max-port={self.max_port}",
            "--use-auth-secret", f"--static-auth-secret={self.secret}", f"--realm={self.realm}",
            "--allow-loopback-peers",  # both peers' relayed addresses are on 127.0.0.1
            "--no-cli", "--no-rfc5780", "--no-dtls", "--no-multicast-peers",
            f"--userdb={self.workdir / 'turndb'}",
            f"--log-file={self.log_path}", "--simple-log", "--no-stdout-log",
            f"--pidfile={self.workdir / 'turnserver.pid'}",
        ]
        if self.tls:
            cmd += [f"--tls-listening-port={self.tls_port}", f"--cert={self.cert_path}", f"--pkey={self.key_path}"]
        else:
            cmd += ["--no-tls"]
        return cmd

    def start(self, timeout: float = 10.0) -> "Coturn":
        with open(self.workdir / "turnserver.out", "wb") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir)
        context = self.client_ssl_context() if self.tls else None
        waiting = {"UDP": lambda: _stun_binding_answered(self.port), "TCP": lambda: _tcp_accepts(self.port)}
        if self.tls:
            assert self.tls_port is not None
            tls_port = self.tls_port
            waiting["TLS"] = lambda: _tcp_accepts(tls_port, context)
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            for name, check in list(waiting.items()):
                if check():
                    del waiting[name]
            if waiting:
                time.sleep(0.02)
        if waiting:
            self.stop()
            raise AssertionError(f"coturn did not come up ({', '.join(waiting)} listener missing); "
                                 f"command: {' '.join(self.command())}\n{self.log_tail()}")
        # Mark the log after the probes' own TCP/TLS sessions (one each), so session_log() is the test's.
        probes = 2 if self.tls else 1
        deadline = time.monotonic() + 2
        while self.log().count("tcp or tls connected") < probes and time.monotonic() < deadline:
            time.sleep(0.01)
        self._ready_at = len(self.log())
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    # ---- what tests use ------------------------------------------------------------------------

    @property
    def items(self) -> list[str]:
        """The ``XT_TURN_URLS`` value for this server: host:port (TLS port given separately)."""
        return [f"{HOST}:{self.port}"]

    def url(self, transport: str) -> str:
        """One TURN URL: ``udp``, ``tcp`` or ``tls``."""
        if transport == "tls":
            return f"turns:{HOST}:{self.tls_port}?transport=tcp"
        return f"turn:{HOST}:{self.port}?transport={transport}"

    def client_ssl_context(self) -> ssl.SSLContext:
        """Verifies this server's throw-away certificate (and nothing else)."""
        assert self.cert_path is not None, "started without TLS"
        return ssl.create_default_context(cafile=str(self.cert_path))

    def trust_certificate(self, monkeypatch: Any) -> None:
        """Make aioice's TURN-over-TLS client verify against this server's certificate: aiortc passes
        ``ssl=True`` (the system trust store), which rejects a self-signed certificate."""
        import aioice.turn

        original = aioice.turn.create_turn_endpoint
        context = self.client_ssl_context()

        async def create_turn_endpoint(*args: Any, ssl: Any = None, **kwargs: Any) -> Any:
            return await original(*args, ssl=context if ssl is True else ssl, **kwargs)

        monkeypatch.setattr(aioice.turn, "create_turn_endpoint", create_turn_endpoint)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def session_log(self) -> str:
        """The log after start-up: what the test's clients caused (not the readiness probes)."""
        return self.log()[self._ready_at:]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log()
        out = self.workdir / "turnserver.out"
        if out.exists():
            text += out.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    async def wait_for_log(self, pattern: str, timeout: float = 3.0) -> re.Match[str]:
        """The first match of the regular expression ``pattern`` in the log, waiting up to ``timeout``."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = compiled.search(self.log())
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"coturn never logged /{pattern}/:\n{self.log_tail()}")
            await asyncio.sleep(0.05)


# ---- fixtures and helpers for relay tests ------------------------------------------------------

@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    server = Coturn(tmp_path / "coturn").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def relay_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No host addresses at all: without them aioice cannot form host or server-reflexive candidates,
    whatever the policy says (ENVIRONMENT.md's loopback_only would give it 127.0.0.1 instead)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4=True, use_ipv6=True: [])


def relay_peer(ice_servers: list[dict[str, Any]]) -> RTCPeerConnection:
    """rtc_support.peer() with the relay transport policy (what a browser gets from iceTransportPolicy)."""
    servers = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
               for s in ice_servers]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY))


def candidate_types(sdp: str) -> list[str]:
    return re.findall(r"^a=candidate:.* typ (\w+)", sdp, flags=re.M)


def ice_transport(pc: RTCPeerConnection) -> Any:
    return pc.getTransceivers()[0].receiver.transport.transport


def nominated_pair(pc: RTCPeerConnection) -> Any:
    """The pair aioice is sending on. Private names of aioice 0.13 (no public API for it): fail loudly
    if they move."""
    connection = ice_transport(pc)._connection
    assert isinstance(connection, aioice.ice.Connection), "aiortc's RTCIceTransport._connection moved"
    nominated = connection._nominated
    assert set(nominated) == {1}, f"expected one nominated component, got {nominated!r}"
    return nominated[1]


async def wait_state(pc: RTCPeerConnection, states: set[str], timeout: float) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while pc.connectionState not in states:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"connectionState stayed {pc.connectionState!r}, expected {states}")
        await asyncio.sleep(0.02)
    return pc.connectionState
