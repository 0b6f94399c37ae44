"""A private Janus (Debian package ``janus``) for a test, its API on 127.0.0.1.

:class:`JanusServer` writes its own configuration folder (nothing from ``/etc/janus`` is read): the
core config with its own paths, the HTTP transport bound to 127.0.0.1 on a free port, and the
VideoRoom plugin. Only those two plugins are loaded: the plugin and transport folders it points
Janus at hold symbolic links to just ``libjanus_videoroom.so`` and ``libjanus_http.so``, and the event
handler and logger folders are empty, so Janus starts in ~0.1 s and logs nothing about the rest.
Media uses a small RTP port range of its own and one host candidate on the host's own IPv4 address
(:func:`host_ipv4`: Janus cannot use loopback for ICE); no STUN/TURN, no IPv6, no mDNS, no ICE-TCP.
The server is started and stopped by PID; ``kill()`` simulates a crash.

A missing ``janus`` binary fails the test (it never skips): install the Debian package.
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from xietong.server.store.embedded import free_port

MISSING = "the janus binary is missing: install the Debian package janus (apt-get install -y janus)"
LIBRARY_GLOBS = ["/usr/lib/*/janus", "/usr/lib/janus", "/usr/local/lib/janus", "/opt/janus/lib/janus"]


def janus_binary() -> str:
    path = shutil.which("janus")
    if path is None:
        pytest.fail(MISSING, pytrace=False)
    return path


def _library_dir() -> Path:
    for pattern in LIBRARY_GLOBS:
        for folder in sorted(glob.glob(pattern)):
            if Path(folder, "plugins", "libjanus_videoroom.so").exists():
                return Path(folder)
    pytest.fail("janus is installed but its VideoRoom plugin was not found: reinstall the Debian package janus "
                "(apt-get install --reinstall -y janus)", pytrace=False)


def host_ipv4() -> str:
    """The host's first non-loopback IPv4 address (the one Janus and the test peers use for media).

    Janus never gathers ICE candidates on loopback interfaces, and libnice pins its sockets to their
    interface (IP_UNICAST_IF), so it cannot even answer a peer on 127.0.0.1. Both sides therefore use
    this address; packets to one's own address are delivered locally and never leave the host."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocgifaddr, iff_up, iff_loopback, iff_running = 0x8913, 0x8915, 0x1, 0x8, 0x40
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in sorted(socket.if_nameindex()):
            request = struct.pack("256s", name.encode()[:15])
            try:
                flags = struct.unpack("H", fcntl.ioctl(sock.fileno(), siocgifflags, request)[16:18])[0]
                address = socket.inet_ntoa(fcntl.ioctl(sock.fileno(), siocgifaddr, request)[20:24])
            except OSError:
                continue  # no IPv4 address on this interface
            if flags & iff_up and flags & iff_running and not flags & iff_loopback:
                return address
    pytest.fail("Janus needs a non-loopback IPv4 address for ICE (it never uses loopback interfaces); "
                "this host has none", pytrace=False)


def host_media_only(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    """Make aiortc peers gather a single host candidate on ``address`` (see :func:`host_ipv4`)."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4=True, use_ipv6=True: [address])


class JanusServer:
    """One Janus process with a private config folder under ``workdir``."""

    def __init__(self, workdir: Path, *, debug_level: int = 3, rtp_ports: int = 200,
                 session_timeout: int = 60, full_trickle: bool = False):
        self.binary = janus_binary()
        self.libdir = _library_dir()
        self.workdir = Path(workdir)
        self.port = free_port()
        first = random.randrange(20000, 32000 - rtp_ports)  # below Linux's ephemeral range
        self.rtp_range = (first, first + rtp_ports - 1)
        self.ice_address = host_ipv4()
        self.debug_level = debug_level
        self.session_timeout = session_timeout
        self.full_trickle = full_trickle
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/janus"

    @property
    def log_path(self) -> Path:
        return self.workdir / "janus.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def write_config(self) -> Path:
        cfg = self.workdir / "etc"
        cfg.mkdir(parents=True, exist_ok=True)
        folders = {}
        for kind, keep in (("plugins", ["libjanus_videoroom.so"]), ("transports", ["libjanus_http.so"]),
                           ("events", []), ("loggers", [])):
            folder = self.workdir / kind
            folder.mkdir(exist_ok=True)
            for name in keep:
                link = folder / name
                if not link.exists():
                    link.symlink_to(self.libdir / kind / name)
            folders[kind] = folder
        (cfg / "janus.jcfg").write_text(f"""
general: {{
    configs_folder = "{cfg}"
    plugins_folder = "{folders['plugins']}"
    transports_folder = "{folders['transports']}"
    events_folder = "{folders['events']}"
    loggers_folder = "{folders['loggers']}"
    log_to_stdout = false
    log_to_file = "{self.log_path}"
    debug_level = {self.debug_level}
    debug_timestamps = true
    debug_colors = false
    session_timeout = {self.session_timeout}
    reclaim_session_timeout = 0
    hide_dependencies = true
    server_name = "xietong-test-{self.port}"
    protected_folders = ["/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/sbin", "/sys", "/usr", "/var"]
}}
certificates: {{
}}
media: {{
    ipv6 = false
    rtp_port_range = "{self.rtp_range[0]}-{self.rtp_range[1]}"
}}
nat: {{
    nice_debug = false
    ice_enforce_list = "{self.ice_address}"
    ignore_mdns = true
    ice_tcp = false
    full_trickle = {"true" if self.full_trickle else "false"}
}}
plugins: {{
}}
transports: {{
}}
loggers: {{
}}
events: {{
    broadcast = false
}}
""")
        (cfg / "janus.transport.http.jcfg").write_text(f"""
general: {{
    json = "compact"
    base_path = "/janus"
    http = true
    port = {self.port}
    ip = "127.0.0.1"
    https = false
    acl = "127."
}}
admin: {{
    admin_http = false
    admin_https = false
}}
cors: {{
}}
""")
        (cfg / "janus.plugin.videoroom.jcfg").write_text("""
general: {
    events = false
    string_ids = false
}
""")
        return cfg

    def start(self, timeout: float = 10.0) -> None:
        cfg = self.write_config()
        with open(self.workdir / "janus.stderr", "ab") as stderr:
            self.proc = subprocess.Popen([self.binary, "-F", str(cfg), "-C", str(cfg / "janus.jcfg")],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"janus exited with {code} while starting:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/info", timeout=0.5) as resp:
                    if json.load(resp).get("janus") == "server_info":
                        return
            except (OSError, ValueError):
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"janus did not answer /janus/info within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by PID, SIGKILL if it has not exited within ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL by PID (a crash, or teardown of a stuck server)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@pytest.fixture
def janus_server(tmp_path: Path) -> Iterator[JanusServer]:
    """A running private Janus for one test; always stopped (and killed if needed) afterwards."""
    server = JanusServer(tmp_path / "janus")
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.kill()
