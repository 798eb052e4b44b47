"""The shared code (plugins/module_utils) reads bottom-up in floors, an import only ever pointing
down or along its own floor, and no module imports itself back through others (DESIGN.md, "Modules
... and their shared code"). Imports inside functions count: they are cycles all the same.

Run as a script to print the import graph's cycles and the imports that point up:
    .venv/bin/python tests/unit/test_module_utils_floors.py
"""

import ast
import os
import sys

PACKAGE = "ansible_collections.vpsops.deploy.plugins.module_utils"
MODULE_UTILS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "plugins", "module_utils")

# Lowest first. A module may import from its own floor and the floors below it.
FLOORS = [
    ("ground", ["_runner", "_http", "_secrets", "_files", "_backup_refs", "_env", "_stack"]),
    ("clients", ["_compose", "_docker_api", "_externals", "_pgcli", "_postgres", "_nats", "_dlq"]),
    ("probes", ["_probes", "_slo"]),
    ("store/backup", ["_releases", "_rollback", "_backup", "_project", "_preflight", "_plan", "_phase", "_phase_backups", "_stores", "_rollout", "_hooks"]),
    # _stack: the stack variable checked on the controller, beside _outcome's decisions across hosts.
    ("engine", ["_deploy", "_outcome", "_stack"]),
]
LEVEL = dict((module, level) for level, (_floor, modules) in enumerate(FLOORS) for module in modules)


def imported_modules(source):
    """The module_utils a source imports, anywhere in it (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or not node.module:
            continue
        if node.module == PACKAGE:
            found.update(alias.name for alias in node.names)
        elif node.module.startswith(PACKAGE + "."):
            found.add(node.module[len(PACKAGE) + 1:].split(".")[0])
    return found


def import_graph(directory=MODULE_UTILS):
    """{module: set of the module_utils it imports} for every module of the directory."""
    graph = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".py") and name != "__init__.py":
            with open(os.path.join(directory, name)) as handle:
                graph[name[:-3]] = imported_modules(handle.read())
    return graph


def cycles(graph):
    """Every elementary cycle found by a depth-first walk, each as [a, b, ..., a], once per set of members."""
    found, seen = [], set()

    def walk(node, path, on_path):
        for target in sorted(graph.get(node, ())):
            if target in on_path:
                cycle = path[path.index(target):] + [target]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append(cycle)
            elif target in graph:
                walk(target, path + [target], on_path | {target})

    for start in sorted(graph):
        walk(start, [start], {start})
    return found


def upward_imports(graph):
    """[(importer, its floor, imported, its floor)] for every import that points to a higher floor."""
    return [(module, FLOORS[LEVEL[module]][0], target, FLOORS[LEVEL[target]][0])
            for module in sorted(graph) for target in sorted(graph[module])
            if module in LEVEL and target in LEVEL and LEVEL[target] > LEVEL[module]]


def test_the_graph_sees_imports_inside_functions():
    source = ("from %s import _a\nfrom %s._b import x\n"
              "def f():\n    from %s import _c, _d\n    from %s._e import y\n") % ((PACKAGE,) * 4)
    assert imported_modules(source) == {"_a", "_b", "_c", "_d", "_e"}


def test_a_cycle_is_found():
    assert cycles({"_a": {"_b"}, "_b": {"_c"}, "_c": {"_a"}, "_d": {"_a"}}) == [["_a", "_b", "_c", "_a"]]


def test_every_module_has_a_floor():
    assert sorted(set(import_graph()) - set(LEVEL)) == []
    assert sorted(set(LEVEL) - set(import_graph())) == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_imports_only_point_down():
    assert upward_imports(import_graph()) == []


if __name__ == "__main__":
    GRAPH = import_graph()
    for CYCLE in cycles(GRAPH):
        print("cycle: " + " -> ".join(CYCLE))
    for ROW in upward_imports(GRAPH):
        print("up: %s (%s) imports %s (%s)" % ROW)
    for MODULE in sorted(set(GRAPH) - set(LEVEL)):
        print("no floor: %s" % MODULE)
    sys.exit(1 if cycles(GRAPH) or upward_imports(GRAPH) else 0)
