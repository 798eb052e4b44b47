"""Make `ansible_collections.vpsops.deploy` importable from this checkout (bin/lab links it)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".lab", "collections")
if not os.path.isdir(os.path.join(COLLECTIONS, "ansible_collections", "vpsops", "deploy")):
    raise RuntimeError("run `bin/lab setup` first: it links this checkout as the vpsops.deploy collection")
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
