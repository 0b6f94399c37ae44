"""Real multi-process deployments for tests: a private redis-server and several `xietong serve`
processes sharing the embedded MongoDB (the same code as production, only on loopback)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from xietong.server.store.embedded import free_port


class RedisServer:
    """A private redis-server on a free loopback port; can be restarted on the same port."""

    def __init__(self, workdir: Path):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is missing: apt-get install redis-server (make test does this as root)")
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class ServerProcess:
    """One `xietong serve` process (or `xietong signaling`, with ``command="signaling"``)."""

    def __init__(self, env: dict[str, str], name: str, command: str = "serve"):
        self.name = name
        self.output: list[str] = []
        self.pattern = r"running at (http://127\.0\.0\.1:\d+)" if command == "serve" else \
            r"running at (ws://127\.0\.0\.1:\d+/v1/signal)"
        self.proc = subprocess.Popen([sys.executable, "-m", "xietong.server.cli", command], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url = ""
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            match = re.search(self.pattern, line)
            if match:
                self.url = match.group(1)
                self._ready.set()
        self._ready.set()

    async def wait_ready(self, timeout: float = 60) -> str:
        await asyncio.to_thread(self._ready.wait, timeout)
        if not self.url:
            raise AssertionError(f"{self.name} did not start:\n" + "".join(self.output[-30:]))
        return self.url

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    async def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, timeout)

    @property
    def log(self) -> str:
        return "".join(self.output)


def server_env(mongo_url: str, db_name: str, redis_url: str, keys_dir: Path, data_dir: Path,
               **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XT_")}
    env.update({"XT_MONGO_URL": mongo_url, "XT_MONGO_DB": db_name, "XT_REDIS_URL": redis_url,
                "XT_KEYS_DIR": str(keys_dir), "XT_DATA_DIR": str(data_dir), "XT_PORT": "0", "XT_SEED_DEMO": "false",
                "XT_PRESENCE_TTL_SECONDS": "3", "XT_PRESENCE_DEBOUNCE_SECONDS": "0.2", "XT_LOG_LEVEL": "WARNING",
                **extra})
    return env
