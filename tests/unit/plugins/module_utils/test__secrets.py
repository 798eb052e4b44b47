"""Secrets in URLs and command lines: found, redacted, and sealed out of release manifests."""

import json

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _releases as rel
from ansible_collections.vpsops.deploy.plugins.module_utils._deploy import stack_secrets
from ansible_collections.vpsops.deploy.plugins.module_utils._probes import build_probes
from ansible_collections.vpsops.deploy.plugins.module_utils._secrets import (
    argv_secrets,
    redact_argv,
    redact_text,
    redact_url,
    url_secrets,
)


@pytest.mark.parametrize("url, secrets, shown", [
    ("http://127.0.0.1:8080/health?token=tok-123&verbose=1", {"tok-123"},
     "http://127.0.0.1:8080/health?token=***&verbose=1"),
    ("https://hooks.example.com/x?sig=abcdef&api_key=k-999", {"abcdef", "k-999"},
     "https://hooks.example.com/x?sig=***&api_key=***"),
    ("http://user:pw-42@db:8222/jsz", {"pw-42"}, "http://***@db:8222/jsz"),
    ("http://127.0.0.1/health?page=2", set(), "http://127.0.0.1/health?page=2"),
])
def test_url_secrets_are_the_credentials_and_secret_query_values(url, secrets, shown):
    assert url_secrets(url) == secrets
    assert redact_url(url) == shown
    for secret in secrets:
        assert secret not in redact_url(url)


@pytest.mark.parametrize("argv, secret", [
    (["redis-cli", "-a", "r3dis-pw", "ping"], "r3dis-pw"),
    (["mycli", "--password=pw-inline", "status"], "pw-inline"),
    (["mycli", "--db-password", "pw-next"], "pw-next"),
    (["curl", "-u", "admin:cu-pw", "http://x/"], "cu-pw"),
    (["curl", "-H", "Authorization: Bearer bear-tok", "http://x/"], "bear-tok"),
    (["env", "API_TOKEN=envtok-1", "check"], "envtok-1"),
    (["sh", "-c", "redis-cli -a shell-pw ping"], "shell-pw"),
    (["curl", "http://127.0.0.1/h?token=url-tok"], "url-tok"),
])
def test_argv_secrets_are_found_and_masked_in_names(argv, secret):
    assert secret in argv_secrets(argv)
    shown = redact_argv(argv)
    assert secret not in shown
    assert "***" in shown
    assert argv[0] in shown


def test_plain_command_lines_keep_their_words():
    assert argv_secrets(["pg_isready", "-h", "127.0.0.1", "-p", "5432"]) == set()
    assert redact_argv(["pg_isready", "-h", "127.0.0.1", "-p", "5432"]) == "pg_isready -h 127.0.0.1 -p 5432"


def test_redact_text_masks_the_longest_secret_first():
    assert redact_text("pw=abcdef and abc", {"abc", "abcdef"}) == "pw=*** and ***"
    assert redact_text("on 1", {"1", "on"}) == "on 1"  # too short to mask


def test_a_command_check_is_named_without_its_password():
    probes = build_probes([{"type": "command", "argv": ["redis-cli", "-a", "r3dis-pw", "ping"]},
                           {"type": "http", "url": "http://127.0.0.1:1/h?token=tok-77"}])
    names = [p.name for p in probes]
    assert not any("r3dis-pw" in n or "tok-77" in n for n in names), names
    assert names[0].startswith("command redis-cli -a ***")


def test_stack_secrets_cover_urls_argv_and_migration_commands():
    stack = {"env": {}, "phases": [{"name": "app", "checks": [
        {"type": "command", "argv": ["redis-cli", "-a", "r3dis-pw", "ping"]},
        {"type": "http", "url": "http://127.0.0.1/h?access_token=tok-88"}],
        "migration": {"service": "migrate", "command": ["migrate", "--password", "mig-pw"]}}]}
    assert {"r3dis-pw", "tok-88", "mig-pw"} <= stack_secrets(stack)


def test_a_manifest_keeps_url_and_argv_secrets_as_env_references_and_gets_them_back():
    env = {"REDIS_PASSWORD": "r3dis-pw", "HEALTH_TOKEN": "tok-99", "PORT": "8080"}
    checks = [{"name": "redis", "type": "command", "argv": ["redis-cli", "-a", "r3dis-pw", "ping"]},
              {"name": "api", "type": "http", "url": "http://127.0.0.1:8080/h?token=tok-99"},
              {"name": "plain", "type": "http", "url": "http://127.0.0.1:8080/h"}]
    sealed = rel.seal_checks(checks, env)
    text = json.dumps(sealed)
    assert "r3dis-pw" not in text and "tok-99" not in text
    assert [c["name"] for c in sealed] == ["redis", "api", "plain"]
    assert sealed[2]["url"] == "http://127.0.0.1:8080/h"  # 8080 is not a secret: PORT's name says so
    assert sealed[0]["argv"][2] == {"from_env_parts": [{"from_env": "REDIS_PASSWORD"}]}
    assert rel.unseal_checks(sealed, env) == checks


def test_a_check_with_a_secret_the_env_file_does_not_hold_is_not_recorded():
    checks = [{"name": "redis", "type": "command", "argv": ["redis-cli", "-a", "unknown-pw", "ping"]},
              {"name": "api", "type": "http", "url": "http://127.0.0.1/h?token=unknown-tok"},
              {"name": "ok", "type": "tcp", "port": 1}]
    sealed = rel.seal_checks(checks, {"OTHER": "x"})
    assert [c["name"] for c in sealed] == ["ok"]
    assert "unknown" not in json.dumps(sealed)


def test_a_secret_env_value_inside_any_argument_is_sealed():
    env = {"DB_PASSWORD": "inner-pw-1"}
    checks = [{"name": "db", "type": "command", "argv": ["sh", "-c", "PGPASSWORD=inner-pw-1 psql -c 'select 1'"]}]
    sealed = rel.seal_checks(checks, env)
    assert "inner-pw-1" not in json.dumps(sealed)
    assert rel.unseal_checks(sealed, env) == checks


def test_names_of_ports_users_and_files_are_not_secret_names():
    from ansible_collections.vpsops.deploy.plugins.module_utils._secrets import is_secret_name
    assert [n for n in ("AUTH_PORT", "DB_PASSWORD_FILE", "TOKEN_TTL", "AUTH_HOST", "API_USER") if is_secret_name(n)] == []
    assert all(is_secret_name(n) for n in ("AUTH_TOKEN", "DB_PASSWORD", "API_KEY", "password", "SECRET", "token"))


def test_env_urls_with_credentials_are_secrets_and_ports_are_not():
    stack = {"env": {"AUTH_PORT": "18080", "DATABASE_URL": "postgres://app:url-pw-1@db:5432/app"}, "phases": []}
    found = stack_secrets(stack)
    assert "url-pw-1" in found and "18080" not in found


def test_every_line_of_a_multi_line_secret_is_a_secret():
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END PRIVATE KEY-----"
    found = stack_secrets({"env": {"JWT_PRIVATE_KEY": key}, "phases": []})
    assert {key, "MIIEvQIBADANBgkqhkiG9w0B", "-----BEGIN PRIVATE KEY-----"} <= found


def test_database_names_and_ids_are_not_secret_but_webhook_urls_are():
    from ansible_collections.vpsops.deploy.plugins.module_utils._secrets import is_secret_name
    assert not any(is_secret_name(n) for n in ("AUTH_DB", "auth_database", "AUTH_SCHEMA", "OAUTH_CLIENT_ID"))
    assert is_secret_name("SLACK_HOOK_URL") and is_secret_name("AUTH_SECRET")
