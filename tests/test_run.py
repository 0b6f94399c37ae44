"""`xietong up` — what `make run` starts — as a real process tree: embedded database child,
demo seed on first start, data that survives a restart, and no process left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from xietong.server.seed import DEMO_PASSWORD

START_TIMEOUT = 90


class UpProcess:
    def __init__(self, data_dir: Path, extra_env: dict[str, str] | None = None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("XT_")}
        env.update({"XT_DATA_DIR": str(data_dir), "XT_PORT": "0", "XT_SIGNALING_PORT": "0", **(extra_env or {})})
        self.data_dir = data_dir
        self.proc = subprocess.Popen([sys.executable, "-m", "xietong.server.cli", "up"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []
        self.url = ""

    def wait_for_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = re.search(r"running at (http://127\.0\.0\.1:\d+)", line)
            if match:
                self.url = match.group(1)
                # keep reading in the background so the pipe never fills and no line is lost
                self.reader = threading.Thread(target=self._drain, daemon=True)
                self.reader.start()
                return self.url
        raise AssertionError("xietong up did not print its URL:\n" + "".join(self.output))

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def db_pid(self) -> int:
        return int((self.data_dir / "db.pid").read_text())

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        return code


def http_json(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def process_gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie child of ours counts as gone
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


def test_up_seeds_the_demo_serves_logins_and_stops_cleanly_on_ctrl_c(data_dir):
    up = UpProcess(data_dir)
    try:
        url = up.wait_for_url()
        db_pid = up.db_pid()
        assert http_json("GET", url + "/readyz") == (200, {"status": "ready"})
        status, tokens = http_json("POST", url + "/v1/auth/login", {"username": "zhangwei", "password": DEMO_PASSWORD})
        assert status == 200 and tokens["token_type"] == "Bearer"
        # The signaling service (calls and meetings) runs in the same process tree and says where.
        pattern = r"calls and meetings \(signaling\): ws://(127\.0\.0\.1:\d+)/v1/signal"
        deadline = time.monotonic() + 10
        while not (signaling := re.search(pattern, "".join(up.output))) and time.monotonic() < deadline:
            time.sleep(0.05)  # the banner's later lines arrive through the reader thread
        assert signaling, "".join(up.output)
        assert http_json("GET", f"http://{signaling.group(1)}/healthz")[0] == 200
    finally:
        code = up.stop(signal.SIGINT)
    text = "".join(up.output)
    assert code == 0, text
    assert f"demo accounts (password {DEMO_PASSWORD})" in text and "nanning.admin" in text
    assert process_gone(db_pid), "the embedded database outlived xietong up"
    assert (data_dir / "db").is_dir() and (data_dir / "keys").is_dir()


def test_data_survives_a_restart_and_the_demo_is_not_seeded_twice(data_dir):
    first = UpProcess(data_dir)
    url = first.wait_for_url()
    _, tokens = http_json("POST", url + "/v1/auth/login", {"username": "huangjian", "password": DEMO_PASSWORD})
    assert first.stop(signal.SIGTERM) == 0

    second = UpProcess(data_dir)
    try:
        url = second.wait_for_url()
        status, again = http_json("POST", url + "/v1/auth/login", {"username": "huangjian", "password": DEMO_PASSWORD})
        assert status == 200
        assert again["user_id"] == tokens["user_id"]  # same account, not a re-seeded copy
        # the refresh token issued before the restart is still valid: devices are stored
        status, _ = http_json("POST", url + "/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]})
        assert status == 200
    finally:
        assert second.stop() == 0
    assert "seeded the demo organisation" not in "".join(second.output)


def test_the_database_child_dies_with_a_killed_parent(data_dir):
    up = UpProcess(data_dir)
    up.wait_for_url()
    db_pid = up.db_pid()
    up.proc.kill()
    up.proc.wait(timeout=10)
    assert process_gone(db_pid), "the embedded database was orphaned by a SIGKILLed xietong up"
    # the next start is not blocked by a stale pid file or lock, and the data is intact
    again = UpProcess(data_dir)
    try:
        url = again.wait_for_url()
        status, _ = http_json("POST", url + "/v1/auth/login", {"username": "zhangwei", "password": DEMO_PASSWORD})
        assert status == 200
    finally:
        assert again.stop() == 0


def test_a_busy_port_stops_start_up_with_a_clear_message(data_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        up = UpProcess(data_dir, {"XT_PORT": str(port)})
        out, _ = up.proc.communicate(timeout=START_TIMEOUT)
    assert up.proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out and "XT_PORT" in out
    assert not (data_dir / "db.pid").exists(), "the database child was left running"


def test_a_bad_setting_stops_start_up_before_anything_runs(data_dir):
    up = UpProcess(data_dir, {"XT_ACCESS_TOKEN_TTL": "86400"})
    out, _ = up.proc.communicate(timeout=30)
    assert up.proc.returncode == 2
    assert "XT_ACCESS_TOKEN_TTL: expected an integer from 60 to 900" in out
    assert not data_dir.exists()
