"""Make `ansible_collections.vpsops.deploy` importable from this checkout (bin/lab links it)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".lab", "collections")
if not os.path.isdir(os.path.join(COLLECTIONS, "ansible_collections", "vpsops", "deploy")):
    raise RuntimeError("run `bin/lab setup` first: it links this checkout as the vpsops.deploy collection")
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)


def pytest_configure(config):
    config.addinivalue_line("markers", "alone: a drill that disturbs the whole lab (restarts the Docker daemon); "
                                       "run after the parallel suite, by itself (`-m alone`, the gate `alone`)")
