"""Package surfaces that import each name when it is first used.

A subpackage's ``__init__`` declares its names with ordinary imports under
``if TYPE_CHECKING:`` (what readers and type checkers see), lists them in
``__all__``, and ends with ``__getattr__ = surface(__name__, __file__)``. At run
time a name is imported from its module on first use, so ``from profiling.config
import Config`` does not bring the whole pipeline, discovery and httpx with it:
a command such as ``autopgo download`` or a flow run pays only for what it uses.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["declared_homes", "surface"]


def surface(package: str, init_file: str) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: a declared name is imported from its module on first use."""
    homes = declared_homes(Path(init_file))

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home, package), name)
        vars(sys.modules[package])[name] = value  # later uses find it without coming here
        return value

    return __getattr__


def declared_homes(init_file: Path) -> dict[str, str]:
    """Each name the ``if TYPE_CHECKING:`` imports of ``init_file`` declare, with its (relative) module."""
    homes: dict[str, str] = {}
    for node in ast.parse(init_file.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom):
                    module = "." * statement.level + (statement.module or "")
                    homes.update({alias.asname or alias.name: module for alias in statement.names})
    return homes
