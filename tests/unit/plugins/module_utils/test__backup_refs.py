"""The backup side reads a release store's references without importing the release store: what
Ansible ships with pg_backup and its kin stays free of _releases and the Docker/Compose code."""

import ast
import json
import os

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils import _backup_refs as refs
from ansible_collections.vpsops.deploy.plugins.module_utils import _releases as rel

PLUGINS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))), "plugins")
PREFIX = "ansible_collections.vpsops.deploy.plugins.module_utils."
BACKUP_MODULES = ["pg_backup", "pg_restore", "store_backup", "store_restore"]
RELEASE_STORE = {"_releases", "_compose", "_docker_api", "_runner"}


def collection_imports(path):
    """The collection's module_utils a file imports, wherever in the file (as Ansible's payload
    builder finds them: a function's import is shipped too)."""
    with open(path) as handle:
        tree = ast.parse(handle.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            names.add(node.module[len(PREFIX):])
        elif isinstance(node, ast.Import):
            names.update(a.name[len(PREFIX):] for a in node.names if a.name.startswith(PREFIX))
    return names


def payload(module):
    """Every module_util a module pulls in, transitively."""
    todo, seen = list(collection_imports(os.path.join(PLUGINS, "modules", module + ".py"))), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(collection_imports(os.path.join(PLUGINS, "module_utils", name + ".py")))
    return seen


@pytest.mark.parametrize("module", BACKUP_MODULES)
def test_backup_modules_ship_without_the_release_store(module):
    shipped = payload(module)
    assert "_backup" in shipped and "_backup_refs" in shipped
    assert not shipped & RELEASE_STORE


def test_the_release_store_hands_out_the_same_reader_and_errors():
    # callers catch rel.ReleaseError / rel.CorruptRelease around what the backup side raises
    assert rel.referenced_backups is refs.referenced_backups
    assert rel.CorruptRelease is refs.CorruptRelease and issubclass(refs.CorruptRelease, rel.ReleaseError)
    assert rel.MANIFEST == refs.MANIFEST


def test_referenced_backups_skips_hidden_directories_and_odd_manifests(tmp_path):
    releases = tmp_path / "releases"
    for name, manifest in [("r1", {"backups": [{"path": str(tmp_path / "a.dump")}, {"type": "none"}, "x"]}),
                           ("r2", ["not", "a", "manifest"]), ("r3", {"backups": None}),
                           (".r4.tmp", None)]:
        (releases / name).mkdir(parents=True)
        if manifest is not None:
            (releases / name / "manifest.json").write_text(json.dumps(manifest))
    assert refs.referenced_backups(str(tmp_path)) == {str(tmp_path / "a.dump")}
    assert refs.referenced_backups(str(tmp_path / "nowhere")) == set()
    (releases / "r5").mkdir()
    with pytest.raises(refs.CorruptRelease, match="release r5"):
        refs.referenced_backups(str(tmp_path))
