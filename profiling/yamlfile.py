"""Reading the project's YAML (or JSON) files, and reporting every mistake in one with its line.

``load_yaml`` returns plain data whose mappings and lists also know the line
of each entry (``YamlMapping``, ``YamlList``). A reader walks that data as
``Setting``s: each value with the name it is reported under and its line.
A check that finds a mistake reports it to the ``Problems`` of the file and
goes on, so that one ``ConfigError`` lists them all, each as
``FILE:LINE: SETTING: what is wrong``. Plain dicts and lists (data that did
not come from a file) work the same, without lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

ROOT = "the file"  # the name of a file's top level, whose settings are named by their keys alone


class YamlMapping(dict[Any, Any]):
    """A mapping read from a file: ``line`` where it starts, ``lines`` the line of each key (from 1)."""

    __slots__ = ("line", "lines")

    def __init__(self, line: int | None = None) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[Any, int] = {}


class YamlList(list[Any]):
    """A list read from a file: ``line`` where it starts, ``lines`` the line of each item (from 1)."""

    __slots__ = ("line", "lines")

    def __init__(self, line: int | None = None) -> None:
        super().__init__()
        self.line = line
        self.lines: list[int] = []


def load_yaml(path: str | Path) -> Any:
    """The parsed contents of ``path`` (None for an empty file); ConfigError naming the file.

    A syntax error keeps pyyaml's position and problem, ``FILE:LINE:COLUMN: not valid YAML: ...``,
    and its context: the lines pyyaml points at, as ``ConfigError.context`` (see ``syntax_context``).
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cannot read: not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=_loader())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        context = syntax_context(text, exc.problem_mark, exc.context_mark, exc.context if exc.problem else None)
        raise ConfigError(f"{where}: not valid YAML: {exc.problem or exc.context}", context=context) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, at an offset rather than a mark
        before = _YAML_LINE_BREAK.split(text[: exc.position])
        mark = yaml.Mark(str(path), exc.position, len(before) - 1, len(before[-1]), None, None)
        problem = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise ConfigError(
            f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {problem}", context=syntax_context(text, mark)
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None


SNIPPET_WIDTH = 100  # characters of a long line shown around the column pointed at
_YAML_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")  # the breaks pyyaml counts lines by


def syntax_context(text: str, problem: Any, context: Any = None, doing: str | None = None) -> list[str]:
    """The lines of ``text`` that pyyaml's marks point at, each followed by a caret under the column.

    ``problem`` and ``context`` are pyyaml marks (either may be None); ``doing`` is what pyyaml was
    reading (``while parsing a flow sequence``), written after the caret of ``context``, or of
    ``problem`` when the context has no place of its own. In the file's order, a line shown once::

          2 | apps: [
            |       ^ while parsing a flow sequence
          5 | clean: {older_than: 1h}
            | ^
    """
    carets: dict[tuple[int, int], str] = {}
    if problem is not None:
        carets[(problem.line, problem.column)] = ""
    if context is not None and doing:
        carets[(context.line, context.column)] = doing
    elif doing and carets:
        carets[next(iter(carets))] = doing
    if not carets:
        return []
    lines = _YAML_LINE_BREAK.split(text)
    width = len(str(max(line for line, _ in carets) + 1))
    out: list[str] = []
    shown: tuple[int, int] | None = None  # the line last shown, and where its part shown starts
    for (line, column), label in sorted(carets.items()):
        source = lines[line] if line < len(lines) else ""
        start = max(0, min(column - SNIPPET_WIDTH // 2, len(source) - SNIPPET_WIDTH))
        end = start + SNIPPET_WIDTH
        cut_left, cut_right = ("..." if start > 0 else ""), ("..." if end < len(source) else "")
        if (line, start) != shown:
            out.append(f"  {line + 1:>{width}} | {cut_left}{source[start:end]}{cut_right}")
            shown = (line, start)
        # the text before the column, blanked but for its tabs, so that the caret lines up under a tab too
        lead = " " * len(cut_left) + "".join("\t" if char == "\t" else " " for char in source[start:column])
        out.append(f"  {'':>{width}} | {lead}^{' ' + label if label else ''}")
    return out


_LOADER: type | None = None


def _loader() -> type:
    """pyyaml's SafeLoader, building YamlMapping and YamlList (made once, as yaml is imported late)."""
    global _LOADER
    if _LOADER is None:
        import yaml

        class LineLoader(yaml.SafeLoader):
            pass

        LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
        LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_list)
        _LOADER = LineLoader
    return _LOADER


def _construct_mapping(loader: Any, node: Any) -> Iterable[YamlMapping]:
    data = YamlMapping(node.start_mark.line + 1)
    yield data  # first, so that aliases to it resolve, as SafeLoader does
    data.update(loader.construct_mapping(node))  # also merges "<<" keys into node.value
    for key_node, _ in node.value:  # later keys win, as in the dict
        data.lines[loader.construct_object(key_node, deep=True)] = key_node.start_mark.line + 1


def _construct_list(loader: Any, node: Any) -> Iterable[YamlList]:
    data = YamlList(node.start_mark.line + 1)
    yield data
    data.extend(loader.construct_sequence(node))
    data.lines = [item.start_mark.line + 1 for item in node.value]


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake: the setting as the user knows it, what is wrong, and its line if known."""

    setting: str
    message: str
    line: int | None = None

    def text(self, file: str | None) -> str:
        """``FILE:LINE: SETTING: message``, leaving out what is not known."""
        place = f"{file}:{self.line}: " if file and self.line else f"{file}: " if file else ""
        return f"{place}{self.setting}: {self.message}" if self.setting else f"{place}{self.message}"


class Problems:
    """Every mistake found in one file (or in data given directly), to be raised as one ConfigError."""

    def __init__(self, file: str | Path | None = None) -> None:
        self.file = None if file is None else str(file)
        self.found: list[Problem] = []

    def add(self, setting: str, message: str, line: int | None = None) -> None:
        """Note a mistake in ``setting`` (at ``line``, if known); ``check`` raises them all."""
        self.found.append(Problem(setting, message, line))

    def check(self) -> None:
        """Raise a ConfigError listing every mistake, in the order of their lines; nothing if none."""
        if self.found:
            ordered = sorted(self.found, key=lambda p: p.line or 0)
            raise ConfigError(*(problem.text(self.file) for problem in ordered), file=self.file)


_ABSENT: Any = object()


@dataclass(frozen=True, slots=True)
class Setting:
    """A value read from a file, with the name a mistake in it is reported under and its line."""

    value: Any
    name: str
    problems: Problems
    line: int | None = None

    @classmethod
    def root(cls, data: Any, problems: Problems, name: str = ROOT) -> Setting:
        """The whole of a file's data, named ``name`` (``ROOT``, or "" to name nothing)."""
        return cls(data, name, problems, getattr(data, "line", None))

    def fail(self, message: str, line: int | None = None) -> None:
        """Report a mistake in this setting (at ``line`` instead of its own, if given)."""
        self.problems.add(self.name, message, line or self.line)

    def has(self, key: str) -> bool:
        """Whether this is a mapping that gives ``key``."""
        return isinstance(self.value, Mapping) and key in self.value

    def get(self, key: str, default: Any = None, name: str | None = None) -> Setting:
        """The value under ``key`` of this mapping, else ``default``; named ``name`` or after its
        key. An absent key is placed at this mapping's line, where it is missing."""
        present = self.has(key)
        value = self.value[key] if present else default
        lines = getattr(self.value, "lines", {})
        line = lines.get(key, self.line) if present else self.line
        return Setting(value, name or self.child_name(key), self.problems, line)

    def child_name(self, key: str) -> str:
        """The name a mistake under ``key`` is reported under: the key alone at the top, else ``NAME.key``."""
        return key if self.name in ("", ROOT) else f"{self.name}.{key}"

    def with_value(self, value: Any) -> Setting:
        """This setting, same name and line, holding ``value`` instead."""
        return replace(self, value=value)

    def items(self, name: Callable[[int], str] | None = None) -> list[Setting]:
        """The items of this list, named ``name(index)`` or ``NAME[index]``, each at its line."""
        lines = getattr(self.value, "lines", [])
        return [
            Setting(item, name(i) if name else f"{self.name}[{i}]", self.problems, lines[i] if i < len(lines) else self.line)
            for i, item in enumerate(self.value)
        ]

    def mapping(self, keys: Collection[str], message: str = "expected a mapping", noun: str = "setting") -> bool:
        """Whether this is a mapping; reports it if not, and each key not in ``keys`` at its line."""
        if not isinstance(self.value, Mapping):
            self.fail(message)
            return False
        lines = getattr(self.value, "lines", {})
        for key in self.value:
            if key not in keys:
                expected = ", ".join(sorted(keys))
                self.fail(f"unknown {noun} {str(key)!r} (expected one of {expected})", lines.get(key))
        return True
