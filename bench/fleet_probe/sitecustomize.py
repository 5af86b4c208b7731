"""Import probe of bench/fleet.py: records where each process gets autopgo's packages from.

bench/fleet.py puts this folder first on PYTHONPATH of the ``autopgo up`` it
runs, so every Python process of the pipeline (the API, the process serving
the flows, each flow run) imports it at start-up. It appends one line per
top-level package of the project (profiling, api, flows, cli) that the process
imports, ``<pid> <package> <file>``, to the file named by
AUTOPGO_BENCH_IMPORT_LOG, so the bench can check that the pipeline runs the
checkout under test and not the code installed in the venv. It changes nothing
else: the spec returned is the one the other finders give.
"""

from __future__ import annotations

import os
import sys
from importlib.abc import MetaPathFinder

_WATCHED = frozenset({"profiling", "api", "flows", "cli"})
_LOG = os.environ.get("AUTOPGO_BENCH_IMPORT_LOG")


class _Probe(MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name not in _WATCHED:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                origin = spec.origin or ",".join(spec.submodule_search_locations or [])
                with open(_LOG, "a") as log:  # type: ignore[arg-type]
                    log.write(f"{os.getpid()} {name} {origin}\n")
                return spec
        return None


if _LOG:
    sys.meta_path.insert(0, _Probe())
