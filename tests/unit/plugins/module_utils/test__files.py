"""The ground floor's files: atomic writes, owner-only directories, checksums."""

import hashlib
import json
import os
import stat

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _files as files


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "m.json"
    files.write_json_atomic(str(path), {"a": 1})

    def boom(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        files.write_json_atomic(str(path), {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["m.json"]


def test_missing_parents_are_made_owner_only_and_existing_directories_keep_their_mode(tmp_path):
    old = os.umask(0o022)
    try:
        kept = tmp_path / "kept"
        kept.mkdir(mode=0o750)
        os.chmod(str(kept), 0o750)
        target = kept / "a" / "b" / "c"
        files.makedirs_owner_only(str(target))
        files.makedirs_owner_only(str(target))  # a second call is harmless
    finally:
        os.umask(old)
    for path in (kept / "a", kept / "a" / "b", target):
        assert os.stat(str(path)).st_mode & 0o777 == 0o700, path
    assert os.stat(str(kept)).st_mode & 0o777 == 0o750


def test_a_json_file_is_replaced_whole_with_mode_0600(tmp_path):
    path = str(tmp_path / "b.dump.json")
    files.write_json_atomic(path, {"a": 1})
    files.write_json_atomic(path, {"a": 2})
    assert json.loads(open(path).read()) == {"a": 2}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(str(tmp_path)) == ["b.dump.json"]


@pytest.mark.parametrize("size", [0, 1, files.CHUNK, files.CHUNK + 1, 3 * files.CHUNK - 7])
def test_sha256_file_is_the_digest_and_size_of_the_whole_file(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert files.sha256_file(str(path)) == (hashlib.sha256(data).hexdigest(), size)


def test_read_text_replaces_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "t"
    path.write_bytes(b"A=caf\xc3\xa9\nB=\xff\n")
    assert files.read_text(str(path)) == "A=caf\u00e9\nB=\ufffd\n"
