"""The layout the README's Design section draws: subpackages with declared surfaces, and no cycles.

Read from the source with ``ast``, so a wrong import fails here before it confuses anyone:

* nothing imports another module's private (``_name``) name;
* outside a subpackage of ``profiling``, code imports from the subpackage itself, and only the
  names its ``__all__`` declares (tests may still ``import`` a submodule to patch its globals);
* the modules form no import cycle, and neither do the packages;
* ``profiling`` imports neither the edges (``api``, ``flows``, ``cli``) nor Prefect;
* a subpackage's names are imported when first used, so the CLI starts without the whole domain.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from profiling.lazy import declared_homes

ROOT = Path(__file__).resolve().parent.parent
OURS = ("profiling", "api", "flows", "cli")
SUBPACKAGES = ("pprof", "storage", "pipeline", "discovery", "config")


@dataclass(frozen=True)
class Import:
    """One imported name (``name`` None for ``import module``) as the importing file wrote it."""

    where: str  # path:line
    importer: str  # dotted module doing the import
    module: str  # absolute dotted module imported from
    name: str | None
    plain: bool  # an ``import x.y`` statement


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def sources(*folders: str) -> list[Path]:
    return sorted(
        p for folder in folders for p in (ROOT / folder).rglob("*.py") if not p.name.endswith("_pb2.py")
    )


@cache
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def imports(path: Path) -> Iterator[Import]:
    importer = module_name(path) if path.is_relative_to(ROOT / "profiling") or path.parts[-2] in OURS else path.stem
    for node in ast.walk(tree(path)):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(where, importer, alias.name, None, True)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = importer.split(".") if is_package(path) else importer.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                yield Import(where, importer, module, alias.name, False)


def ours(module: str) -> bool:
    return module.split(".")[0] in OURS


def file_of(module: str) -> Path | None:
    for candidate in (ROOT / (module.replace(".", "/") + ".py"), ROOT / module.replace(".", "/") / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def declared(module: str) -> list[str] | None:
    """The module's ``__all__``, or None if it declares none."""
    path = file_of(module)
    assert path is not None, module
    for node in tree(path).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return None


def subpackage(module: str) -> str | None:
    """``profiling.pprof`` for anything in it; None outside the subpackages."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "profiling" and len(parts) > 1 and parts[1] in SUBPACKAGES else None


def resolved(imp: Import) -> str:
    """The module an import reaches: ``from package import submodule`` reaches the submodule."""
    if imp.name and file_of(f"{imp.module}.{imp.name}") is not None:
        return f"{imp.module}.{imp.name}"
    return imp.module


ALL_FILES = sources(*OURS, "tests", "bench")


def test_no_module_imports_another_modules_private_name() -> None:
    found = [
        f"{imp.where}: {imp.name or imp.module} from {imp.module}"
        for path in ALL_FILES
        for imp in imports(path)
        if ours(imp.module)
        and imp.module != imp.importer
        and any(part.startswith("_") and not part.startswith("__") for part in [*imp.module.split("."), imp.name or ""])
    ]
    assert not found, "private names imported from other modules:\n" + "\n".join(found)


def test_no_module_reads_another_modules_private_global() -> None:
    """``module._name`` on a module imported whole is a private import by another route."""
    found = []
    for path in ALL_FILES:
        modules = {}
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Import):
                modules.update({a.asname: a.name for a in node.names if a.asname and ours(a.name)})
            elif isinstance(node, ast.ImportFrom) and node.module and ours(node.module):
                for alias in node.names:
                    if file_of(f"{node.module}.{alias.name}") is not None:
                        modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        for node in ast.walk(tree(path)):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {modules[node.value.id]}.{node.attr}")
    assert not found, "private globals of other modules read:\n" + "\n".join(found)


def test_every_subpackage_declares_its_surface_and_it_exists() -> None:
    for name in SUBPACKAGES:
        module = f"profiling.{name}"
        names = declared(module)
        assert names, f"{module} declares no __all__"
        assert len(names) == len(set(names)), f"{module}.__all__ repeats a name"
        package = __import__(module, fromlist=["*"])
        missing = [n for n in names if not hasattr(package, n)]
        assert not missing, f"{module}.__all__ names what it does not define: {missing}"


def test_no_declared_name_is_also_a_module_of_its_subpackage() -> None:
    """Once a submodule is imported, its package's attribute of that name is the module: a function of
    the same name would then be shadowed for ``from package import name``."""
    for name in SUBPACKAGES:
        modules = {p.stem for p in (ROOT / "profiling" / name).iterdir() if p.suffix == ".py" or p.is_dir()}
        clashes = modules & set(declared(f"profiling.{name}") or [])
        assert not clashes, f"profiling.{name} declares names that are also its modules: {sorted(clashes)}"


def test_every_declared_name_has_one_home_and_nothing_else_is_imported_at_once() -> None:
    """The ``if TYPE_CHECKING:`` imports of a subpackage name each declared name's module, for
    ``profiling.lazy``; the package runs no other import of its own when it is imported."""
    for name in SUBPACKAGES:
        path = ROOT / "profiling" / name / "__init__.py"
        homes = set(declared_homes(path))
        eager = [
            node.module
            for node in tree(path).body
            if isinstance(node, ast.ImportFrom) and node.module not in ("__future__", "typing", "lazy")
        ]
        assert homes == set(declared(f"profiling.{name}") or []), f"profiling.{name}: __all__ and its imports differ"
        assert not eager, f"profiling.{name} imports {eager} when imported"


def test_the_cli_starts_without_the_domain_it_does_not_use() -> None:
    """``autopgo --help`` and the remote commands load neither the pprof engine, the pipeline, httpx nor boto3."""
    code = (
        "import sys, cli.main; heavy = ('httpx', 'boto3', 'google.protobuf', 'profiling.pprof', 'profiling.pipeline');"
        "print(' '.join(m for m in heavy if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == []


def test_outside_a_subpackage_only_its_declared_names_are_used() -> None:
    found = []
    for path in ALL_FILES:
        for imp in imports(path):
            target = resolved(imp)
            home = subpackage(target)
            if home is None or subpackage(imp.importer) == home:
                continue
            if imp.plain and path.is_relative_to(ROOT / "tests"):
                continue  # a test patching a module's global needs the module itself
            if target == home:
                if imp.name not in (declared(home) or []):
                    found.append(f"{imp.where}: {imp.name} is not in {home}.__all__")
                continue
            if imp.module == home:
                found.append(f"{imp.where}: {target} is a module of {home}, not part of its surface")
                continue
            package_file = file_of(imp.module)
            if package_file is not None and is_package(package_file) and imp.name in (declared(imp.module) or []):
                continue  # a nested package with its own surface (the generated pprof.proto bindings)
            found.append(f"{imp.where}: imports {imp.name or target} from {imp.module}, inside {home}")
    assert not found, "imports past a subpackage's surface:\n" + "\n".join(found)


def module_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sources("profiling"):
        module = module_name(path)
        edges = graph.setdefault(module, set())
        for imp in imports(path):
            target = resolved(imp)
            if ours(target) and target != module:
                edges.add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_between_modules() -> None:
    graph = module_graph()
    # a package's __init__ importing its own modules is how it declares its surface, not a cycle
    # unless one of them imports the package back, which the graph still shows
    assert not cycles(graph), f"import cycles: {cycles(graph)}"


def unit(module: str) -> str:
    """What the package map draws as one box: a subpackage, or a top-level module of profiling."""
    return subpackage(module) or ".".join(module.split(".")[:2])


def test_no_import_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for module, targets in module_graph().items():
        graph.setdefault(unit(module), set()).update(unit(t) for t in targets if unit(t) != unit(module))
    assert not cycles(graph), f"package cycles: {cycles(graph)}"


def test_the_domain_imports_neither_the_edges_nor_prefect() -> None:
    found = [
        f"{imp.where}: {imp.module}"
        for path in sources("profiling")
        for imp in imports(path)
        if imp.module.split(".")[0] in ("api", "flows", "cli", "prefect", "prefect_redis")
    ]
    assert not found, "profiling must stay free of the HTTP server, the flows and Prefect:\n" + "\n".join(found)
