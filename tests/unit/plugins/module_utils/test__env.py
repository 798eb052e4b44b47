"""The one parser of compose env files."""

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _env as env


@pytest.mark.parametrize("text, expected", [
    ("A=1\nB='two words'\nC=\"x\\ny\"\n", {"A": "1", "B": "two words", "C": "x\ny"}),
    ("# comment\n\nexport D=4 # trailing comment\nE=five#not-a-comment\n", {"D": "4", "E": "five#not-a-comment"}),
    ("F: yaml style\nG=\nH\n", {"F": "yaml style", "G": ""}),
    ("I='multi\nline'\nJ=after\n", {"I": "multi\nline", "J": "after"}),
    ("K=\"say \\\"hi\\\"\"\nL='it''s'\n", {"K": 'say "hi"', "L": "it"}),
    # As deploy_phase writes .env: KEY='value'.
    ("# Written by vpsops.deploy; secrets: keep this file owner-only.\nAR_DB_PASSWORD='p@ss=word#1'\n",
     {"AR_DB_PASSWORD": "p@ss=word#1"}),
])
def test_parse_env(text, expected):
    assert env.parse_env(text) == expected


def test_read_env_file_reads_a_file_as_parse_env_does(tmp_path):
    text = "# header\nexport A=1 # note\nB='p@ss=word#1'\nC=\"x\\ny\"\nD: yaml\n"
    path = tmp_path / ".env"
    path.write_text(text)
    assert env.read_env_file(str(path)) == env.parse_env(text) == {"A": "1", "B": "p@ss=word#1", "C": "x\ny", "D": "yaml"}


@pytest.mark.parametrize("missing", [None, "", "no-such.env"])
def test_read_env_file_without_a_file_is_empty(tmp_path, missing):
    assert env.read_env_file(missing and str(tmp_path / missing)) == {}
