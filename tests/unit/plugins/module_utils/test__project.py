"""The project directory writer behind vpsops.deploy.project_files."""

import os
import stat

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils._project import ENV_HEADER, ProjectError, env_text, sync


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_every_file_owner_only_then_nothing_when_nothing_differs(tmp_path):
    project = tmp_path / "a" / "project"
    files = {"infra.yml": "services: {}\n", "sub/app.yml": "services:\n  app: {}\n"}
    written = sync(str(project), files, env={"TAG": "v1"})[0]
    assert written == ["infra.yml", "sub/app.yml", ".env"]
    assert (project / "sub" / "app.yml").read_text() == files["sub/app.yml"]
    assert (project / ".env").read_text() == ENV_HEADER + "TAG='v1'\n"
    for path in (project / "infra.yml", project / "sub" / "app.yml", project / ".env"):
        assert mode(path) == 0o600
    for directory in (tmp_path / "a", project, project / "sub"):
        assert mode(directory) == 0o700
    assert sync(str(project), files, env={"TAG": "v1"}) == ([], [])


def test_only_what_differs_is_written_and_the_env_is_left_alone_when_not_given(tmp_path):
    sync(str(tmp_path), {"a.yml": "a\n", "b.yml": "b\n"}, env={"TAG": "v1"})
    before = os.stat(tmp_path / "a.yml").st_ino
    written, diffs = sync(str(tmp_path), {"a.yml": "a\n", "b.yml": "b2\n"}, want_diff=True)
    assert written == ["b.yml"]
    assert os.stat(tmp_path / "a.yml").st_ino == before
    assert diffs == [dict(before_header=str(tmp_path / "b.yml"), after_header=str(tmp_path / "b.yml"),
                          before="b\n", after="b2\n")]
    assert (tmp_path / ".env").read_text() == ENV_HEADER + "TAG='v1'\n"


def test_check_mode_reports_and_changes_nothing(tmp_path):
    written = sync(str(tmp_path / "p"), {"a.yml": "a\n"}, env={"X": "1"}, check_mode=True)[0]
    assert written == ["a.yml", ".env"]
    assert not (tmp_path / "p").exists()


def test_a_wider_mode_is_narrowed_without_rewriting(tmp_path):
    sync(str(tmp_path), {"a.yml": "a\n"})
    os.chmod(tmp_path / "a.yml", 0o644)
    inode = os.stat(tmp_path / "a.yml").st_ino
    assert sync(str(tmp_path), {"a.yml": "a\n"}, check_mode=True)[0] == ["a.yml"]
    assert mode(tmp_path / "a.yml") == 0o644
    assert sync(str(tmp_path), {"a.yml": "a\n"})[0] == ["a.yml"]
    assert mode(tmp_path / "a.yml") == 0o600 and os.stat(tmp_path / "a.yml").st_ino == inode


def test_the_env_never_shows_in_a_diff(tmp_path):
    diffs = sync(str(tmp_path), {}, env={"DB_PASSWORD": "planted-secret"}, want_diff=True)[1]
    assert diffs == []


@pytest.mark.parametrize("name", ["../x.yml", "/etc/x.yml", "a/../../x.yml", "", ".env"])
def test_a_name_out_of_the_project_directory_is_refused_before_anything_is_written(tmp_path, name):
    with pytest.raises(ProjectError, match="files: "):
        sync(str(tmp_path / "p"), {"ok.yml": "x\n", name: "y\n"})
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("env, message", [
    ({"BAD-NAME": "x"}, "env: 'BAD-NAME' is not a valid variable name"),
    ({"CR": "a\rb"}, "env.CR: the value holds a carriage return or a NUL character"),
    ({"NUL": "a\0b"}, "env.NUL: the value holds a carriage return or a NUL character"),
])
def test_an_env_compose_cannot_read_literally_is_refused_naming_the_variable(tmp_path, env, message):
    with pytest.raises(ProjectError) as caught:
        sync(str(tmp_path / "p"), {"ok.yml": "x\n"}, env=env)
    assert str(caught.value).startswith(message)
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("value", [
    "-----BEGIN PRIVATE KEY-----\nMIIEv$QIBADAN\n-----END PRIVATE KEY-----\n",
    "it's $HOME and \"q\" and \\ and \\n",
    "plain ${NOT_A_VAR} # not a comment",
    "'", '"', "$", "\\", "  spaced  ",
])
def test_env_values_are_read_back_exactly(value):
    from ansible_collections.vpsops.deploy.plugins.module_utils._env import parse_env
    assert parse_env(env_text({"V": value, "AFTER": "x"})) == {"V": value, "AFTER": "x"}


def test_env_values_are_written_as_text():
    assert env_text({"N": 5, "B": True}) == ENV_HEADER + "N='5'\nB='True'\n"
