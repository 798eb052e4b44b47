"""The audit action's pure parts: masking, the entry and its line, the log's path, modes and appends."""

import json
import multiprocessing
import os
import stat

import pytest

from ansible_collections.vpsops.deploy.plugins.action import audit

M = audit.MASK


@pytest.mark.parametrize("key", [
    "password", "PASSWORD", "db_password", "login_password", "passwords", "passwd", "pass", "db_pass", "pwd",
    "passphrase", "secret", "client_secret", "token", "api_token", "access-token", "api_key", "apikey",
    "private_key", "credentials", "Authorization", "cookie", "session_id", "webhook", "webhook_url",
    "notify_url", "vpsops_notify_url", "dsn",
])
def test_secret_looking_keys_are_masked(key):
    assert audit.mask({key: "hunter2"}) == {key: M}


@pytest.mark.parametrize("key", ["passed", "checks_passed", "bypassed", "compass", "auth", "services", "url",
                                 "release", "image", "host"])
def test_ordinary_keys_are_kept(key):
    assert audit.mask({key: "value"}) == {key: "value"}


@pytest.mark.parametrize("text, masked", [
    ("https://user:pw@example.org/path", "https://%s@example.org/path" % M),
    ("https://example.org/hook?token=abc&x=1", "https://example.org/hook?%s" % M),
    ("nats://tok@127.0.0.1:4222", "nats://%s@127.0.0.1:4222" % M),
    ("postgresql://ar:s3cret@db:5432/ar_db?sslmode=require", "postgresql://%s@db:5432/ar_db?%s" % (M, M)),
    ("GET https://u:p@h/x failed; see http://h2/?a=b#frag", "GET https://%s@h/x failed; see http://h2/?%s#frag" % (M, M)),
    ("http://127.0.0.1:8080/api/health", "http://127.0.0.1:8080/api/health"),
    ("no url here: user@host", "no url here: user@host"),
])
def test_urls_lose_their_userinfo_and_query_anywhere_in_a_string(text, masked):
    assert audit.mask_text(text) == masked
    assert audit.mask({"message": text}) == {"message": masked}


def test_masking_reaches_every_depth_and_leaves_the_input_alone():
    data = {"phases": [{"name": "infra", "checks": [{"login_password": "pw1", "url": "http://a:b@h/"}]}],
            "summary": {"recreate": 1}, "empty_token": "", "none_secret": None, "n": 3, "ok": True,
            "tags": ("x", "https://h/?k=v"), "raw": b"bytes"}
    masked = audit.mask(data)
    assert masked == {"phases": [{"name": "infra", "checks": [{"login_password": M, "url": "http://%s@h/" % M}]}],
                      "summary": {"recreate": 1}, "empty_token": "", "none_secret": None, "n": 3, "ok": True,
                      "tags": ["x", "https://h/?%s" % M], "raw": "bytes"}
    assert data["phases"][0]["checks"][0]["login_password"] == "pw1"
    assert "pw1" not in json.dumps(masked)


def test_a_secret_key_masks_a_whole_container():
    assert audit.mask({"credentials": {"user": "u", "password": "p"}}) == {"credentials": M}


def test_entry_has_every_field_and_masks_data_and_status():
    entry = audit.build_entry("phase_done", stack="platform", release="r1", phase="modules",
                              status="failed calling https://u:p@h/x", data={"token": "t"}, host="vps1",
                              controller="ops", user="me", pid=42, job_id=17, check_mode=True)
    assert sorted(entry) == ["awx_job_id", "check_mode", "controller", "data", "event", "host", "phase", "pid",
                             "release", "stack", "status", "time", "user"]
    assert entry["data"] == {"token": M}
    assert entry["status"] == "failed calling https://%s@h/x" % M
    assert entry["awx_job_id"] == "17" and entry["check_mode"] is True
    assert entry["time"].endswith("Z") and entry["time"][10] == "T"
    assert audit.build_entry("x")["awx_job_id"] is None


def test_a_line_is_one_line_of_json():
    entry = audit.build_entry("x", data={"text": "two\nlines", "odd": object()})
    line = audit.entry_line(entry)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line.decode())["data"]["text"] == "two\nlines"


def test_the_log_path_is_the_option_else_the_environment_else_the_default():
    home = os.path.expanduser("~")
    assert audit.log_path("/tmp/a.jsonl", {"VPSOPS_AUDIT_LOG": "/tmp/b"}) == "/tmp/a.jsonl"
    assert audit.log_path(None, {"VPSOPS_AUDIT_LOG": "/tmp/b"}) == "/tmp/b"
    assert audit.log_path(None, {"VPSOPS_AUDIT_LOG": "~/x.jsonl"}) == os.path.join(home, "x.jsonl")
    assert audit.log_path(None, {}) == os.path.join(home, ".vpsops", "audit.jsonl")


def test_job_id_and_user_come_from_awx_variables_first():
    assert audit.job_id_of({"awx_job_id": 5}, {"JOB_ID": "9"}) == 5
    assert audit.job_id_of({"tower_job_id": 6}, {}) == 6
    assert audit.job_id_of({}, {"JOB_ID": "9"}) == "9"
    assert audit.job_id_of({}, {}) is None
    assert audit.user_of({"awx_user_name": "alice"}) == "alice"
    assert audit.user_of({})


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_log_is_0600_in_a_new_0700_directory(tmp_path):
    path = tmp_path / "deep" / "audit" / "log.jsonl"
    audit.append_line(str(path), b'{"a":1}\n')
    audit.append_line(str(path), b'{"a":2}\n')
    assert path.read_bytes() == b'{"a":1}\n{"a":2}\n'
    assert mode(path) == 0o600 and mode(path.parent) == 0o700


def test_existing_modes_are_never_changed(tmp_path):
    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, 0o750)
    path = directory / "log.jsonl"
    path.write_text("")
    os.chmod(path, 0o640)
    audit.append_line(str(path), b"{}\n")
    assert mode(path) == 0o640 and mode(directory) == 0o750
    narrow = tmp_path / "narrow.jsonl"
    narrow.write_text("")
    os.chmod(narrow, 0o400 | 0o200)
    audit.append_line(str(narrow), b"{}\n")
    assert mode(narrow) == 0o600


def test_an_unwritable_path_raises_oserror(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        audit.append_line(str(blocker / "log.jsonl"), b"{}\n")


def _writer(path, worker, count):
    for index in range(count):
        entry = audit.build_entry("load", data={"worker": worker, "index": index, "pad": "x" * 9000})
        audit.append_line(path, audit.entry_line(entry))


def test_concurrent_writers_never_interleave_lines_longer_than_pipe_buf(tmp_path):
    path = str(tmp_path / "log.jsonl")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, w, 15)) for w in range(6)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    with open(path, "rb") as handle:
        lines = handle.read().split(b"\n")
    assert lines[-1] == b""
    seen = sorted((e["data"]["worker"], e["data"]["index"]) for e in (json.loads(x) for x in lines[:-1]))
    assert seen == sorted((w, i) for w in range(6) for i in range(15))


def test_the_playbook_pid_is_the_parent_of_a_worker(tmp_path):
    assert audit.playbook_pid() == os.getpid()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=lambda: queue.put(audit.playbook_pid()))
    proc.start()
    got = queue.get(timeout=30)
    proc.join(30)
    assert got == os.getpid()
