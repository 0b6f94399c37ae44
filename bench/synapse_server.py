"""Matrix Synapse on this machine, for the side-by-side scenario (``python -m bench --only synapse``).

Synapse lives in its own virtual environment, ``bench/.synapse-venv`` (made here when missing, from
the package registry), so its dependencies never mix with Xietong's ``.venv``. It runs as one
``synapse.app.homeserver`` process on a free loopback port, its data in the harness's temporary
folder, on SQLite or on a fresh database in the local PostgreSQL. The configuration is Synapse's
defaults except what ``CHANGED_SETTINGS`` lists: a closed machine (no federation, no key servers, no
stats reporting, no URL previews) and anti-spam rate limits raised so the figures show throughput.

Users come from the shared-secret registration admin API (nonce + HMAC; the answer carries an access
token); rooms from ``/createRoom`` and ``/join`` — the client-server API, as a client would.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp

from xietong.server.store.embedded import free_port

VENV = Path(__file__).resolve().parent / ".synapse-venv"
PYTHON = VENV / "bin" / "python"
PACKAGES = ["matrix-synapse", "psycopg2-binary"]  # psycopg2 for the PostgreSQL run
SERVER_NAME = "bench.local"
# The local PostgreSQL (trust authentication); the run creates and drops its own database in it.
POSTGRES = {"host": os.environ.get("BENCH_PG_HOST", "127.0.0.1"), "port": int(os.environ.get("BENCH_PG_PORT", "5432")),
            "user": os.environ.get("BENCH_PG_USER", "postgres"),
            "maintenance_db": os.environ.get("BENCH_PG_DB", "test")}

RAISED = {"per_second": 100_000, "burst_count": 100_000}
# Synapse's anti-spam limits that would otherwise cap or refuse the workload, with their defaults.
RAISED_LIMITS = {
    "rc_message": ("0.2/s, burst 10 per user", "sending: each sender sends more often than that, in both workloads"),
    "rc_joins.local": ("0.1/s, burst 10 per user", "setup: joining the rooms"),
    "rc_joins_per_room": ("1/s, burst 10 per room", "setup: 19 joins into the group room"),
    "rc_invites.per_room / per_user / per_issuer": ("0.3/s burst 10, 0.003/s burst 5, 0.3/s burst 10",
                                                    "setup: invitations to the rooms"),
    "rc_room_creation": ("0.016/s, burst 10 per user", "setup: creating the rooms"),
}
CHANGED_SETTINGS = {
    "federation": "no federation listener and federation_domain_whitelist: [] (no other server is reachable)",
    "trusted_key_servers": "[] (no key fetching)",
    "report_stats": "false",
    "url_preview_enabled": "false (Synapse's default)",
    "log level": "WARNING, as the Xietong servers in the benchmark (XT_LOG_LEVEL=WARNING); Synapse's sample logs INFO",
    "bcrypt_rounds": "4 instead of 12: only the registration of the benchmark users hashes a password (setup)",
    "database pool (PostgreSQL)": "cp_min 5, cp_max 10 as in Synapse's sample configuration",
}
UNCHANGED_NOTE = ("Everything else is Synapse's default: presence on, push rules evaluated, room statistics "
                  "and the user directory kept, caches at their default size, one process (no workers).")


def ensure_installed(log) -> str:
    """Create bench/.synapse-venv with Synapse when missing; returns Synapse's version."""
    probe = [str(PYTHON), "-c", "import synapse, psycopg2, importlib.metadata as m; print(m.version('matrix-synapse'))"]
    if PYTHON.exists():
        done = subprocess.run(probe, capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout.strip()
    log(f"installing Synapse into {VENV} (first time only; not part of the benchmark's time)")
    began = time.time()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)  # from the base interpreter
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", *PACKAGES], check=True)
    log(f"  installed in {time.time() - began:.0f} s")
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


def _config(workdir: Path, port: int, database: dict, secret: str) -> dict:
    log_config = workdir / "log.yaml"
    log_config.write_text(json.dumps({  # YAML is a superset of JSON
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "formatter": "plain",
                              "filename": str(workdir / "homeserver.log")}},
        "root": {"level": "WARNING", "handlers": ["file"]}}))
    return {
        "server_name": SERVER_NAME, "public_baseurl": f"http://127.0.0.1:{port}/",
        "pid_file": str(workdir / "homeserver.pid"), "log_config": str(log_config),
        "media_store_path": str(workdir / "media"), "signing_key_path": str(workdir / "signing.key"),
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                       "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}],
        "database": database, "registration_shared_secret": secret, "report_stats": False,
        "federation_domain_whitelist": [], "trusted_key_servers": [], "suppress_key_server_warning": True,
        "url_preview_enabled": False, "enable_metrics": False, "bcrypt_rounds": 4,
        "rc_message": RAISED, "rc_joins": {"local": RAISED},
        "rc_joins_per_room": RAISED, "rc_room_creation": RAISED,
        "rc_invites": {"per_room": RAISED, "per_user": RAISED, "per_issuer": RAISED},
    }


# ---- PostgreSQL: a fresh database per run, and the CPU of the whole cluster ------------------------------

def _pg(script: str) -> str:
    """Run a few lines of psycopg2 in Synapse's environment (ours has no PostgreSQL driver)."""
    prelude = (f"import psycopg2\nconn = psycopg2.connect(host={POSTGRES['host']!r}, port={POSTGRES['port']}, "
               f"user={POSTGRES['user']!r}, dbname={POSTGRES['maintenance_db']!r}, connect_timeout=5)\n"
               "conn.autocommit = True\ncur = conn.cursor()\n")
    done = subprocess.run([str(PYTHON), "-c", prelude + script], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "psycopg2 failed")
    return done.stdout.strip()


def postgres_create(name: str) -> tuple[str, int | None]:
    """Create database ``name`` (C collation, as Synapse requires); returns (server version, postmaster pid)."""
    out = _pg(f"cur.execute(\"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' "
              f"LC_CTYPE 'C'\")\ncur.execute('SELECT current_setting(%s), pg_backend_pid()', ('server_version',))\n"
              "version, backend = cur.fetchone()\n"
              "try:\n    parent = open(f'/proc/{backend}/stat').read().rsplit(')', 1)[1].split()[1]\n"
              "except OSError:\n    parent = ''\n"  # PostgreSQL elsewhere: its CPU is not measurable from here
              "print(version, parent, sep='|')")
    version, parent = out.split("|")
    postmaster = int(parent) if parent else None
    return version.split()[0], postmaster


def postgres_drop(name: str) -> None:
    _pg(f"cur.execute('DROP DATABASE IF EXISTS {name} WITH (FORCE)')")


def cluster_cpu_seconds(postmaster: int) -> float:
    """CPU seconds of the PostgreSQL cluster: the postmaster (with its reaped children) and every live child."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields[11:15])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            f = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(f[1]) == postmaster:
            total += int(f[11]) + int(f[12])
    return total / ticks


# ---- the homeserver process ----------------------------------------------------------------------------

@dataclass(frozen=True)
class MatrixUser:
    user_id: str
    token: str


class SynapseServer:
    def __init__(self, workdir: Path, database: dict):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.secret = secrets.token_hex(32)
        self.config_path = workdir / "homeserver.yaml"
        self.config_path.write_text(json.dumps(_config(workdir, self.port, database, self.secret), indent=1))
        self.proc: subprocess.Popen[bytes] | None = None
        self.http: aiohttp.ClientSession | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 180) -> None:
        base = [str(PYTHON), "-m", "synapse.app.homeserver", "-c", str(self.config_path)]
        subprocess.run(base + ["--generate-keys"], cwd=self.workdir, check=True, capture_output=True)
        out = open(self.workdir / "stdout.log", "wb")
        self.proc = subprocess.Popen(base, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT)
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Synapse exited: {self.log_tail()}")
            try:
                async with self.http.get(f"{self.url}/_matrix/client/versions") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"Synapse did not answer within {timeout} s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        text = ""
        for name in ("stdout.log", "homeserver.log"):
            path = self.workdir / name
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    async def stop(self, *, remove_data: bool = True) -> None:
        if self.http is not None:
            await self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if remove_data:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- setup through the APIs (not measured) -----------------------------------------------------

    async def _call(self, method: str, path: str, token: str | None = None, body: dict | None = None) -> dict:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for attempt in range(5):
            async with self.http.request(method, self.url + path, json=body, headers=headers) as r:
                data = await r.json(content_type=None)
                if r.status == 200:
                    return data
                if r.status != 429:
                    raise RuntimeError(f"{method} {path}: {r.status} {data}")
                await asyncio.sleep(data.get("retry_after_ms", 500) / 1000)  # should not happen (limits raised)
        raise RuntimeError(f"{method} {path}: still rate limited")

    async def register(self, count: int, prefix: str, concurrency: int = 16) -> list[MatrixUser]:
        gate = asyncio.Semaphore(concurrency)

        async def one(n: int) -> MatrixUser:
            async with gate:
                username, password = f"{prefix}{n}", secrets.token_hex(8)
                nonce = (await self._call("GET", "/_synapse/admin/v1/register"))["nonce"]
                mac = hmac.new(self.secret.encode(), digestmod=hashlib.sha1)
                mac.update(b"\x00".join([nonce.encode(), username.encode(), password.encode(), b"notadmin"]))
                done = await self._call("POST", "/_synapse/admin/v1/register", body={
                    "nonce": nonce, "username": username, "password": password, "admin": False,
                    "mac": mac.hexdigest()})
                return MatrixUser(done["user_id"], done["access_token"])

        return list(await asyncio.gather(*(one(n) for n in range(count))))

    async def room(self, owner: MatrixUser, members: list[MatrixUser], name: str, direct: bool) -> str:
        """A private room: ``owner`` creates it inviting ``members``, who join."""
        room_id = (await self._call("POST", "/_matrix/client/v3/createRoom", owner.token, {
            "preset": "private_chat", "is_direct": direct, "name": name,
            "invite": [m.user_id for m in members]}))["room_id"]
        for m in members:
            await self._call("POST", f"/_matrix/client/v3/join/{quote(room_id, safe='')}", m.token, {})
        return room_id

    async def direct_rooms(self, senders: list[MatrixUser], recipients: list[MatrixUser],
                           concurrency: int = 16) -> list[str]:
        gate = asyncio.Semaphore(concurrency)

        async def one(a: MatrixUser, b: MatrixUser) -> str:
            async with gate:
                return await self.room(a, [b], "bench direct", direct=True)

        return list(await asyncio.gather(*(one(a, b) for a, b in zip(senders, recipients))))
