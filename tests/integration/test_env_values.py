"""Env values that are not one plain line reach the containers exactly: the `.env` the collection
writes (`_project.env_text`), read by the real `docker compose`, gives each container byte for byte
the value the stack holds (a PEM key, quotes of both kinds, `$`, backslashes, `#`). Compose project
vpsops-itenv, no port."""

import os

import pytest

from conftest import run
from ansible_collections.vpsops.deploy.plugins.module_utils._project import env_text

VALUES = {
    "PEM": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nab$cd+/ef==\n-----END PRIVATE KEY-----",
    "QUOTES": "it's \"quoted\" and 'single'",
    "DOLLARS": "$HOME ${NOT_SET} $$ \\$ end",
    "BACKSLASHES": "a\\b\\\\c\\n not a newline",
    "HASH": "value # not a comment",
    "MIXED": "line one\nit's $x\n\"two\"",
}


@pytest.fixture(scope="module")
def printed(lab, tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("env-values"))
    with open(os.path.join(tmp, ".env"), "w") as handle:
        handle.write(env_text(VALUES))
    environment = "".join("      %s: ${%s}\n" % (name, name) for name in VALUES)
    with open(os.path.join(tmp, "compose.yml"), "w") as handle:
        handle.write("services:\n  show:\n    image: vpsops-demo/lb:v1\n    environment:\n" + environment)
    # Each value NUL-terminated, in the order of VALUES.
    script = "for n in %s; do eval \"printf '%%s\\\\0' \\\"\\$$n\\\"\"; done" % " ".join(VALUES)
    proc = run(["docker", "compose", "-p", "vpsops-itenv", "--project-directory", tmp, "-f",
                os.path.join(tmp, "compose.yml"), "run", "--rm", "--no-deps", "-T", "show", "sh", "-c", script],
               check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("\0")[:len(VALUES)]


@pytest.mark.parametrize("name", sorted(VALUES))
def test_the_container_gets_the_value_exactly(printed, name):
    assert printed[list(VALUES).index(name)] == VALUES[name]
