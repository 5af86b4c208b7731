"""Every public class and function, and every public method of a public class, says what it does and why.

A docstring of a line or two is enough; it is what a newcomer reads first. Read with ``ast``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("profiling", "api", "flows", "cli")


def public_definitions(package: str) -> Iterator[tuple[str, ast.AST]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.name.endswith("_pb2.py"):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                yield f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", node
                if isinstance(node, ast.ClassDef):
                    for member in node.body:
                        if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef) and not member.name.startswith("_"):
                            yield f"{path.relative_to(ROOT)}:{member.lineno} {node.name}.{member.name}", member


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_class_and_function_says_what_it_does(package: str) -> None:
    missing = [where for where, node in public_definitions(package) if not ast.get_docstring(node)]  # type: ignore[arg-type]
    assert not missing, f"{len(missing)} public definitions without a docstring:\n" + "\n".join(missing)
