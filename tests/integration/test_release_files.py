"""Config and secret files travel with the release: a bind-mounted page, an `env_file` and a
`secrets:` file with a multi-line key, as a stack's compose files reference them from its source on
the controller. Deployed by deploy.yml: they reach the project directory (the secret and the env
file owner-only, the page with its own mode), the containers read them, a changed page recreates
exactly the service that mounts it, rollback.yml puts the old page back before `up`, and no line of
the key is printed. A service built on the host from a build context in the source: built when the
release is recorded, its image pinned; a changed source rebuilds and recreates it, the rollback
runs the old image again without building.

Its own tiny stack: project vpsops-itfiles, one busybox image (`FROM scratch`) built here, ports
12495-12496.
"""

import json
import os
import shutil
import time
import urllib.request

import pytest

from conftest import ansible_env, compose_down, remove_pin_tags, run
from test_deploy_playbook import ANSIBLE, INVENTORY, PLAYBOOK, ROLLBACK_PLAYBOOK

PROJECT = "vpsops-itfiles"
PORTS = {"web": 12495, "other": 12496, "built": 12497}
STATE = "/var/lib/vpsops/%s" % PROJECT
PROJECT_DIR = os.path.join(STATE, "project")
IMAGE = "vpsops-itfiles/box:v1"
KEY = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSj-" + "%d" % time.time()
       + "\nQ2xlYXJseSBub3QgYSByZWFsIGtleQ==\n-----END PRIVATE KEY-----\n")

COMPOSE = """services:
  web:
    image: %(image)s
    init: true
    volumes: ["./site/index.html:/www/index.html:ro"]
    ports: ["127.0.0.1:%(web)d:8080"]
  other:
    image: %(image)s
    init: true
    volumes: ["pages:/www"]
    ports: ["127.0.0.1:%(other)d:8080"]
    command: ["/bin/busybox", "sh", "-c", "echo other > /www/index.html; exec /bin/busybox httpd -f -p 8080 -h /www"]
  built:
    build: ./built
    init: true
    ports: ["127.0.0.1:%(built)d:8080"]
  keyed:
    image: %(image)s
    init: true
    env_file: [./app.env]
    secrets: [jwt]
    volumes: ["keyed:/www"]
    command: ["/bin/busybox", "sh", "-c", "echo keyed > /www/index.html; exec /bin/busybox httpd -f -p 8080 -h /www"]
secrets:
  jwt:
    file: ./secrets/jwt.pem
volumes:
  pages: {}
  keyed: {}
""" % dict(image=IMAGE, web=PORTS["web"], other=PORTS["other"], built=PORTS["built"])

BUILT_DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY version.txt /www/index.html
HEALTHCHECK --interval=2s --timeout=10s --retries=5 --start-period=60s CMD ["/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/index.html"]
CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"""

DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
HEALTHCHECK --interval=2s --timeout=10s --retries=5 --start-period=60s CMD ["/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/index.html"]
CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"""


def write(tmp, rel, text, mode):
    path = os.path.join(tmp, "source", rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)


def stack_vars(tmp):
    stack = {
        "name": PROJECT, "source": os.path.join(tmp, "source"), "env": {"RELEASE_TAG": "v1"},
        "phases": [{"name": "app", "compose_files": ["compose.yml"],
                    "checks": [{"name": "web", "type": "http", "url": "http://127.0.0.1:%d/index.html" % PORTS["web"]},
                               {"name": "other", "type": "http",
                                "url": "http://127.0.0.1:%d/index.html" % PORTS["other"]}]}]}
    return {"vpsops_stack": stack, "deploy_phase_timeout": 40}


def playbook(tmp, name, values, path=PLAYBOOK, *options):
    vars_file = os.path.join(tmp, "%s-vars.json" % name)
    with open(vars_file, "w") as handle:
        json.dump(values, handle)
    proc = run([os.path.join(ANSIBLE, "ansible-playbook"), "-i", INVENTORY, path, "-e", "@%s" % vars_file, "-v"]
               + list(options), check=False, env=ansible_env())
    return {"rc": proc.returncode, "out": proc.stdout + proc.stderr, "ids": container_ids(), "page": page(),
            "built": page("built"), "built_image": container_images().get("built"),
            "project_page": read(os.path.join(PROJECT_DIR, "site", "index.html"))}


def container_ids():
    ids = run(["docker", "ps", "-aq", "--no-trunc", "--filter",
               "label=com.docker.compose.project=%s" % PROJECT]).stdout.split()
    return dict((item["Config"]["Labels"]["com.docker.compose.service"], item["Id"])
                for item in (json.loads(run(["docker", "inspect"] + ids).stdout) if ids else []))


def container_images():
    ids = run(["docker", "ps", "-aq", "--no-trunc", "--filter",
               "label=com.docker.compose.project=%s" % PROJECT]).stdout.split()
    return dict((item["Config"]["Labels"]["com.docker.compose.service"], item["Image"])
                for item in (json.loads(run(["docker", "inspect"] + ids).stdout) if ids else []))


def page(service="web"):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/index.html" % PORTS[service], timeout=5) as answer:
            return answer.read().decode()
    except OSError as exc:
        return "(no answer: %s)" % exc


def read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def mode(path):
    return oct(os.stat(path).st_mode & 0o777)


def in_container(service, *argv):
    return run(["docker", "exec", "%s-%s-1" % (PROJECT, service)] + list(argv), check=False).stdout


@pytest.fixture(scope="module")
def runs(lab, tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("release-files"))
    ctx = os.path.join(tmp, "ctx")
    os.makedirs(ctx)
    shutil.copy2(shutil.which("busybox"), os.path.join(ctx, "busybox"))
    with open(os.path.join(ctx, "Dockerfile"), "w") as handle:
        handle.write(DOCKERFILE)
    run(["docker", "build", "-q", "-t", IMAGE, ctx])
    write(tmp, "compose.yml", COMPOSE, 0o644)
    write(tmp, "site/index.html", "site v1\n", 0o644)
    write(tmp, "app.env", "GREETING=hello from the env file\nAPI_TOKEN=tok-in-env-file-5521\n", 0o600)
    write(tmp, "secrets/jwt.pem", KEY, 0o600)
    write(tmp, "built/Dockerfile", BUILT_DOCKERFILE, 0o644)
    write(tmp, "built/version.txt", "built v1\n", 0o644)
    shutil.copy2(shutil.which("busybox"), os.path.join(tmp, "source", "built", "busybox"))
    compose = ["docker", "compose", "-p", PROJECT, "--project-directory", os.path.join(tmp, "source"),
               "-f", os.path.join(tmp, "source", "compose.yml")]

    def clean():
        compose_down(compose)
        run(["rm", "-rf", STATE])
        remove_pin_tags(PROJECT)

    clean()
    done = {}
    try:
        done["v1"] = playbook(tmp, "v1", stack_vars(tmp))
        done["v1"]["modes"] = dict((rel, mode(os.path.join(PROJECT_DIR, rel)))
                                   for rel in ("site/index.html", "app.env", "secrets/jwt.pem"))
        done["v1"]["secret"] = in_container("keyed", "/bin/busybox", "cat", "/run/secrets/jwt")
        done["v1"]["greeting"] = in_container("keyed", "/bin/busybox", "sh", "-c", "echo \"$GREETING\"")
        write(tmp, "site/index.html", "site v2\n", 0o644)
        write(tmp, "built/version.txt", "built v2\n", 0o644)
        images = run(["docker", "images", "-q", "--no-trunc"]).stdout.split()
        done["check"] = playbook(tmp, "check", stack_vars(tmp), PLAYBOOK, "--check")
        done["check"]["new_images"] = sorted(set(run(["docker", "images", "-q", "--no-trunc"]).stdout.split()) - set(images))
        done["v2"] = playbook(tmp, "v2", stack_vars(tmp))
        done["back"] = playbook(tmp, "back", {"vpsops_stack": {"name": PROJECT}}, path=ROLLBACK_PLAYBOOK)
        yield done
    finally:
        clean()
        run(["docker", "image", "rm", IMAGE, "%s-built" % PROJECT], check=False)


def test_the_referenced_files_reach_the_project_directory_and_the_containers(runs):
    v1 = runs["v1"]
    assert v1["rc"] == 0, v1["out"][-4000:]
    assert v1["page"] == "site v1\n"
    assert v1["project_page"] == "site v1\n"
    assert v1["modes"] == {"site/index.html": "0o644", "app.env": "0o600", "secrets/jwt.pem": "0o600"}, v1["modes"]
    assert v1["secret"] == KEY
    assert v1["greeting"].strip() == "hello from the env file"


def test_a_changed_file_recreates_exactly_the_service_that_uses_it(runs):
    v1, v2 = runs["v1"], runs["v2"]
    assert v2["rc"] == 0, v2["out"][-4000:]
    assert v2["page"] == "site v2\n" and v2["project_page"] == "site v2\n"
    assert v2["ids"]["web"] != v1["ids"]["web"]
    assert (v2["ids"]["other"], v2["ids"]["keyed"]) == (v1["ids"]["other"], v1["ids"]["keyed"])


def test_a_service_built_on_the_host_is_rebuilt_from_the_release_and_never_by_a_rollback(runs):
    v1, v2, back = runs["v1"], runs["v2"], runs["back"]
    assert v1["built"] == "built v1\n" and v2["built"] == "built v2\n", (v1["built"], v2["built"])
    assert v2["built_image"] != v1["built_image"] and v2["ids"]["built"] != v1["ids"]["built"]
    # The rollback runs v1's pinned image: the same image ID, not a new build of the old source.
    assert back["built"] == "built v1\n" and back["built_image"] == v1["built_image"]


def test_check_mode_plans_the_build_and_builds_nothing(runs):
    check, v1 = runs["check"], runs["v1"]
    assert check["rc"] == 0, check["out"][-4000:]
    assert "built: would build its image on the host (--check builds nothing)" in check["out"], check["out"][-4000:]
    assert check["new_images"] == [] and check["built_image"] == v1["built_image"]
    assert check["ids"] == v1["ids"] and check["page"] == "site v1\n"


def test_a_rollback_puts_the_old_file_back_before_up(runs):
    back = runs["back"]
    assert back["rc"] == 0, back["out"][-4000:]
    assert back["page"] == "site v1\n" and back["project_page"] == "site v1\n"
    assert back["ids"]["web"] != runs["v2"]["ids"]["web"]


def test_no_line_of_the_key_nor_the_env_file_secret_is_printed(runs):
    lines = [line for line in KEY.splitlines() if len(line) >= 8] + ["tok-in-env-file-5521"]
    for name in ("v1", "v2", "back"):
        for line in lines:
            assert line not in runs[name]["out"], (name, line)
