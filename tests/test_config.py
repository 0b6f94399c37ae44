"""Settings come from XT_* variables; a bad value stops start-up with a message naming it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xietong.server.config import VARIABLES, ConfigError, Settings, variables_markdown


def test_defaults_are_the_embedded_single_machine_setup():
    settings = Settings.from_env({})
    assert settings.mongo_url is None and settings.redis_url is None
    assert settings.port == 8080 and settings.host == "127.0.0.1"
    assert settings.access_token_ttl <= 900
    assert str(settings.effective_keys_dir) == "var/keys"
    assert settings.effective_origins() == ("http://127.0.0.1:8080", "http://localhost:8080")


@pytest.mark.parametrize("name, value, expected", [
    ("XT_PORT", "eighty", "XT_PORT: expected an integer from 0 to 65535, got 'eighty'"),
    ("XT_PORT", "70000", "XT_PORT: expected an integer from 0 to 65535"),
    ("XT_MONGO_URL", "localhost:27017", "XT_MONGO_URL: expected a MongoDB URI"),
    ("XT_REDIS_URL", "127.0.0.1:6379", "XT_REDIS_URL: expected a Redis URL"),
    ("XT_ACCESS_TOKEN_TTL", "3600", "XT_ACCESS_TOKEN_TTL: expected an integer from 60 to 900"),
    ("XT_SEED_DEMO", "maybe", "XT_SEED_DEMO: expected one of true/false"),
    ("XT_ALLOWED_ORIGINS", "*", "XT_ALLOWED_ORIGINS: expected a comma-separated list of origins (the wildcard"),
    ("XT_ALLOWED_ORIGINS", "https://a.example/path", "XT_ALLOWED_ORIGINS: expected a comma-separated list"),
    ("XT_PUBLIC_URL", "im.example.gov.cn", "XT_PUBLIC_URL: expected an absolute http:// or https:// URL"),
    ("XT_LOG_LEVEL", "LOUD", "XT_LOG_LEVEL: expected one of DEBUG, INFO, WARNING, ERROR"),
])
def test_a_bad_value_names_the_variable_and_what_it_expects(name, value, expected):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    assert str(info.value).startswith(expected)


def test_a_misspelt_variable_is_refused_rather_than_ignored():
    with pytest.raises(ConfigError, match="XT_MONGO_ULR: unknown setting"):
        Settings.from_env({"XT_MONGO_ULR": "mongodb://db/"})


def test_values_are_parsed_into_types():
    settings = Settings.from_env({"XT_PORT": "9000", "XT_SEED_DEMO": "no", "XT_DATA_DIR": "/srv/xt",
                                  "XT_ALLOWED_ORIGINS": "https://im.gx.gov.cn, https://m.gx.gov.cn/"})
    assert settings.port == 9000 and settings.seed_demo is False
    assert str(settings.effective_keys_dir) == "/srv/xt/keys"
    assert settings.effective_origins() == ("https://im.gx.gov.cn", "https://m.gx.gov.cn")


def test_lockout_maximum_below_first_lockout_is_refused():
    with pytest.raises(ConfigError, match="XT_LOGIN_LOCKOUT_MAX_SECONDS"):
        Settings.from_env({"XT_LOGIN_LOCKOUT_SECONDS": "600", "XT_LOGIN_LOCKOUT_MAX_SECONDS": "60"})


def test_readme_documents_every_variable():
    readme = open("README.md", encoding="utf-8").read()
    assert variables_markdown() in readme, "regenerate the table with: xietong config --markdown"
    assert all(var.name in readme for var in VARIABLES)


def test_the_cli_stops_with_exit_code_2_and_the_message(tmp_path):
    result = subprocess.run([sys.executable, "-m", "xietong.server.cli", "config"], capture_output=True, text=True,
                            env={"XT_PORT": "x", "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "configuration error: XT_PORT: expected an integer" in result.stderr
