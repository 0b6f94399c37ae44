"""The embedded MongoDB: SecantusDB run as a child process (never imported: it is GPL-2.0 and beta).

:class:`EmbeddedMongo` picks a free loopback port, starts ``python -m secantus`` with its data in a
folder of ours, waits until it answers ``ping`` and stops it on exit (SIGTERM, then SIGKILL if it has
not stopped in time). If we die without cleaning up, the kernel kills the child (``PR_SET_PDEATHSIG``
with SIGKILL: we measured SecantusDB occasionally deadlocking in its SIGTERM handler when its clients
vanished first, and an orphan must never survive; WiredTiger recovers from its log on the next start).
A pid file lets the next start remove a leftover server that still holds the data folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedMongoError(RuntimeError):
    pass


class EmbeddedMongo:
    """A SecantusDB child process. ``storage_path=None`` means a throw-away in-memory instance."""

    def __init__(self, storage_path: Path | None, *, port: int | None = None, log_path: Path | None = None):
        self.storage_path = storage_path
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        # retryWrites=false: with retryable writes SecantusDB keeps and scans retry records on every
        # write, and single inserts slow tenfold after ~10k writes (ENVIRONMENT.md). Our own
        # idempotency (unique client_msg_id) does not need the driver's retries.
        return f"mongodb://127.0.0.1:{self.port}/?retryWrites=false&directConnection=true"

    @property
    def _pid_file(self) -> Path | None:
        return self.storage_path.parent / "db.pid" if self.storage_path is not None else None

    def start(self, timeout: float = 60.0) -> None:
        try:
            import secantus  # noqa: F401  (only to give a clear message; we run it as a process)
        except ImportError:
            raise EmbeddedMongoError(
                "the embedded database is not installed: pip install 'xietong[embedded]' "
                "(make run does this), or set XT_MONGO_URL to a MongoDB server") from None
        storage = ":memory:"
        if self.storage_path is not None:
            self.storage_path.mkdir(parents=True, exist_ok=True)
            self._stop_leftover()
            storage = str(self.storage_path)
        cmd = [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
               "--storage-path", storage, "--log-level", "WARNING"]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            # A session of its own: Ctrl-C in the terminal reaches us, and we stop the database
            # only after the server has finished its writes.
            self.process = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                            start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]
        if self._pid_file is not None:
            self._pid_file.write_text(f"{self.process.pid}\n")
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        from pymongo import MongoClient

        deadline = time.monotonic() + timeout
        client = MongoClient(self.url, serverSelectionTimeoutMS=250, connectTimeoutMS=250)
        try:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise EmbeddedMongoError(
                        f"the embedded database exited with code {self.process.returncode}"
                        + (f"; see {self.log_path}" if self.log_path else ""))
                try:
                    client.admin.command("ping")
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise EmbeddedMongoError(f"the embedded database did not answer within {timeout:.0f} s")
                    time.sleep(0.05)
        finally:
            client.close()

    def _stop_leftover(self) -> None:
        """Stop a SecantusDB left running on our data folder by a run that was killed."""
        pid_file = self._pid_file
        if pid_file is None or not pid_file.exists():
            return
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"secantus" in cmdline and str(self.storage_path).encode() in cmdline:
                log.warning("stopping a leftover embedded database (pid %s) from an earlier run", pid)
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.05)
                else:
                    os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the embedded database did not stop in %.0f s; killing it", timeout)
                proc.kill()
                proc.wait()
        if self._pid_file is not None:
            self._pid_file.unlink(missing_ok=True)

    def __enter__(self) -> "EmbeddedMongo":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
