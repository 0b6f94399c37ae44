"""docker-compose.yml is well-formed and wires the deployment (no container engine runs on CI
machines, so its structure is checked here and its parts by the process-level tests)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from xietong.server.config import VARIABLES

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("server-1", "server-2")


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_mongo_runs_as_an_initialised_replica_set_with_a_health_check():
    mongo = compose()["services"]["mongo"]
    assert "--replSet" in mongo["command"]
    assert "rs.initiate" in " ".join(mongo["healthcheck"]["test"])


def test_redis_keeps_nothing_on_disk_and_reports_health():
    redis = compose()["services"]["redis"]
    assert redis["image"].startswith("redis:")
    assert "--appendonly" in redis["command"] and "ping" in " ".join(redis["healthcheck"]["test"])


def test_two_server_replicas_share_database_redis_and_signing_keys():
    services = compose()["services"]
    known = {v.name for v in VARIABLES}
    for name in SERVERS:
        server = services[name]
        assert server["depends_on"]["mongo"]["condition"] == "service_healthy"
        assert server["depends_on"]["redis"]["condition"] == "service_healthy"
        env = server["environment"]
        assert set(env) <= known, f"unknown settings: {set(env) - known}"
        assert "replicaSet=rs0" in env["XT_MONGO_URL"] and "redis://redis:6379" in env["XT_REDIS_URL"]
        assert env["XT_SEED_DEMO"] == "false" and env["XT_KEYS_DIR"] == "/keys"
        assert "signing-keys:/keys" in server["volumes"]
        assert "/readyz" in " ".join(server["healthcheck"]["test"])
    assert services["server-1"]["environment"] == services["server-2"]["environment"]


def test_the_proxy_upgrades_websockets_to_both_replicas_and_is_the_trusted_proxy():
    services = compose()["services"]
    proxy = services["proxy"]
    assert set(proxy["depends_on"]) == set(SERVERS)
    conf = (ROOT / "deploy/nginx.conf").read_text()
    assert re.search(r"proxy_set_header Upgrade \$http_upgrade", conf)
    assert all(f"server {name}:8080" in conf for name in SERVERS)
    address = proxy["networks"]["xietong"]["ipv4_address"]
    assert services["server-1"]["environment"]["XT_TRUSTED_PROXIES"] == address


def test_later_parts_are_declared_but_not_started_by_default():
    services = compose()["services"]
    assert services["bots"]["profiles"] == ["later"]
    assert services["coturn"]["profiles"] == ["turn"]  # needs a public address and a certificate
    assert "--use-auth-secret" in services["coturn"]["command"]


def test_two_signaling_replicas_share_redis_verify_with_the_published_keys_and_drive_janus():
    services = compose()["services"]
    known = {v.name for v in VARIABLES}
    one, two = services["signaling-1"], services["signaling-2"]
    assert one == two and "profiles" not in one
    assert one["command"] == ["xietong", "signaling"]
    env = one["environment"]
    assert set(env) <= known, f"unknown settings: {set(env) - known}"
    assert "redis://redis:6379" in env["XT_REDIS_URL"] and "replicaSet=rs0" in env["XT_MONGO_URL"]
    assert env["XT_JWKS_URL"].endswith("/.well-known/jwks.json") and "janus:8088" in env["XT_JANUS_URLS"]
    assert "signing-keys:/keys:ro" in one["volumes"]
    assert "/healthz" in " ".join(one["healthcheck"]["test"])
    conf = (ROOT / "deploy/nginx.conf").read_text()
    assert "server signaling-1:8081" in conf and "server signaling-2:8081" in conf and "/v1/(signal" in conf
    janus = services["janus"]
    assert janus["build"] == "deploy/janus"
    janus_conf = (ROOT / "deploy/janus/janus.transport.http.jcfg").read_text()
    assert "port = 8088" in janus_conf and 'base_path = "/janus"' in janus_conf


def test_the_image_runs_the_server_process():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["xietong", "serve"]' in dockerfile
    assert "USER xietong" in dockerfile  # never as root
