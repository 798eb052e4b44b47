"""execution-environment.yml: ansible-builder validates it and writes its build context.

No image can be built here (no registry, no quay.io), so the test stops at `ansible-builder
create`. It copies the definition with the files it names into a temporary directory, builds the
collection tarball there as the file's comment says, and checks the context: the base image, the
pinned ansible-core and ansible-runner, the galaxy, Python and bindep requirements, and the step
that installs this collection (run here too, with the same arguments, into a temporary path).
"""

import os
import re
import shutil

import pytest
import yaml

from conftest import ROOT, run

VENV_BIN = os.path.join(ROOT, ".venv", "bin")
BUILDER = os.path.join(VENV_BIN, "ansible-builder")
EE_FILE = os.path.join(ROOT, "execution-environment.yml")

pytestmark = pytest.mark.skipif(
    not os.path.exists(BUILDER),
    reason="ansible-builder is not installed in .venv (it is in requirements-dev.txt: run `bin/lab setup`)")


def load(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def requirement_range(path, name):
    with open(path) as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if re.match(r"^%s\b" % re.escape(name), line):
                return line
    return None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A copy of the definition and of every file it names, plus the collection tarball."""
    work = tmp_path_factory.mktemp("ee")
    definition = load(EE_FILE)
    deps = definition["dependencies"]
    for key in ("galaxy", "python", "system"):
        assert isinstance(deps[key], str), "dependencies.%s should name a file" % key
        target = work / deps[key]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(ROOT, deps[key]), target)
    shutil.copy(EE_FILE, work / "execution-environment.yml")
    for entry in definition.get("additional_build_files", []):
        out = work / os.path.dirname(entry["src"])
        out.mkdir(parents=True, exist_ok=True)
    run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "build", "--force", "--output-path",
         str(work / "build"), ROOT])
    return work


def create(work, name="execution-environment.yml", context="context"):
    return run([BUILDER, "create", "-f", str(work / name), "-c", str(work / context),
                "--output-filename", "Containerfile", "-v", "3"], check=False, cwd=str(work))


def test_the_definition_uses_schema_3_with_pinned_ranges():
    definition = load(EE_FILE)
    assert definition["version"] == 3
    assert definition["images"]["base_image"]["name"]
    deps = definition["dependencies"]
    assert deps["galaxy"] == "requirements.yml" and deps["system"] == "bindep.txt"
    core = deps["ansible_core"]["package_pip"]
    runner = deps["ansible_runner"]["package_pip"]
    assert re.match(r"^ansible-core>=[\d.]+,<[\d.]+$", core), core
    assert re.match(r"^ansible-runner>=[\d.]+,<[\d.]+$", runner), runner
    # One range for ansible-core everywhere: the EE installs what requirements.txt allows.
    assert core == requirement_range(os.path.join(ROOT, "requirements.txt"), "ansible-core")
    # The collections the EE installs are the ones galaxy.yml depends on.
    galaxy = load(os.path.join(ROOT, "galaxy.yml"))
    wanted = {item["name"] for item in load(os.path.join(ROOT, deps["galaxy"]))["collections"]}
    assert wanted == set(galaxy["dependencies"])


def test_ansible_builder_creates_the_build_context(workdir):
    proc = create(workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No matches" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    context = workdir / "context"
    containerfile = (context / "Containerfile").read_text()
    definition = load(EE_FILE)
    assert 'ARG EE_BASE_IMAGE="%s"' % definition["images"]["base_image"]["name"] in containerfile
    install_refs = re.search(r'ARG ANSIBLE_INSTALL_REFS="([^"]*)"', containerfile).group(1).split()
    assert install_refs == [definition["dependencies"]["ansible_core"]["package_pip"],
                            definition["dependencies"]["ansible_runner"]["package_pip"]]
    assert "openssh-clients" in containerfile
    assert "-r requirements.yml" in containerfile
    built = context / "_build"
    assert (built / "requirements.yml").read_text() == open(os.path.join(ROOT, "requirements.yml")).read()
    assert (built / "bindep.txt").read_text() == open(os.path.join(ROOT, "bindep.txt")).read()
    assert "psycopg2-binary" in (built / "requirements.txt").read_text()
    tarballs = sorted(p.name for p in (built / "collection").iterdir())
    assert tarballs == ["vpsops-deploy-%s.tar.gz" % load(os.path.join(ROOT, "galaxy.yml"))["version"]]
    # The collection is installed in the galaxy stage, before builder introspects the collections.
    galaxy_stage = containerfile.split("FROM base AS galaxy", 1)[1].split("FROM base AS builder", 1)[0]
    assert "/build/collection/vpsops-deploy-*.tar.gz" in galaxy_stage


def test_the_collection_install_step_works_offline(workdir, tmp_path):
    """The galaxy-stage step, with its own arguments, on the tarball the context holds."""
    step = [line for line in load(EE_FILE)["additional_build_steps"]["append_galaxy"] if "vpsops-deploy" in line]
    assert len(step) == 1
    argv = step[0].split()
    assert argv[:4] == ["RUN", "ansible-galaxy", "collection", "install"]
    target = tmp_path / "collections"
    args = []
    for arg in argv[1:]:
        if arg == "/usr/share/ansible/collections":
            arg = str(target)
        elif arg.startswith("/build/collection/"):
            found = sorted((workdir / "build").glob(os.path.basename(arg)))
            assert len(found) == 1, found
            arg = str(found[0])
        args.append(arg)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(target))
    env.pop("ANSIBLE_CONFIG", None)
    proc = run([os.path.join(VENV_BIN, args[0])] + args[1:], check=False, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = target / "ansible_collections" / "vpsops" / "deploy"
    assert (installed / "roles" / "host" / "tasks" / "main.yml").exists()
    assert (installed / "meta" / "execution-environment.yml").exists()


@pytest.mark.parametrize("breakage", [
    {"dependencies": {"ansible_core": {"pip": "ansible-core"}}},
    {"images": {"base_image": "quay.io/centos/centos:stream10", "builder_image": "x"}},
    {"additional_build_steps": {"after_everything": ["RUN true"]}},
], ids=["ansible_core_key", "images_key", "build_step_key"])
def test_ansible_builder_rejects_a_broken_definition(workdir, breakage):
    """The validation the test above relies on is real: a wrong key fails `create`."""
    definition = load(EE_FILE)
    for key, value in breakage.items():
        if isinstance(definition.get(key), dict):
            definition[key] = dict(definition[key], **value)
        else:
            definition[key] = value
    name = "broken-%s.yml" % "-".join(sorted(breakage))
    (workdir / name).write_text(yaml.safe_dump(definition))
    proc = create(workdir, name=name, context="context-broken")
    assert proc.returncode != 0, proc.stdout
    assert "Additional properties are not allowed" in proc.stdout + proc.stderr or \
        "is not valid" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
