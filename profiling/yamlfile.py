"""Reading the project's YAML (or JSON) files with one clear error per failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError


def load_yaml(path: str | Path) -> Any:
    """The parsed contents of ``path`` (None for an empty file); ConfigError naming the file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cannot read: not UTF-8 text") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML or JSON: {' '.join(str(exc).split())}") from None
