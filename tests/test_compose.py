"""docker-compose.yml is well-formed and wires the services the deployment needs (no container engine
runs on CI machines, so its structure is checked here and its parts by the process-level tests)."""

from __future__ import annotations

from pathlib import Path

import yaml

from xietong.server.config import VARIABLES

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_mongo_runs_as_an_initialised_replica_set_with_a_health_check():
    mongo = compose()["services"]["mongo"]
    assert "--replSet" in mongo["command"]
    assert "rs.initiate" in " ".join(mongo["healthcheck"]["test"])


def test_the_server_waits_for_a_healthy_database_and_is_configured_only_by_known_variables():
    server = compose()["services"]["server"]
    assert server["depends_on"]["mongo"]["condition"] == "service_healthy"
    env = server["environment"]
    assert "replicaSet=rs0" in env["XT_MONGO_URL"]
    assert env["XT_SEED_DEMO"] == "false"
    known = {v.name for v in VARIABLES}
    assert set(env) <= known, f"unknown settings: {set(env) - known}"
    assert "/readyz" in " ".join(server["healthcheck"]["test"])


def test_the_image_runs_the_server_process():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["xietong", "serve"]' in dockerfile
    assert "USER xietong" in dockerfile  # never as root
