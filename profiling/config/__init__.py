"""Configuration: ``autopgo.yaml`` (``file.py``) and where each setting comes from (``settings.py``).

It sits above the other subpackages: an app's settings name its prune rules
and parts policy (``pipeline``), its never-inline list (``pprof``), its blob
store (``storage``) and its targets (``discovery``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import surface

if TYPE_CHECKING:  # each name is imported from its module when first used (see profiling/lazy.py)
    from .file import (
        DEFAULT_API_URL,
        AppConfig,
        CleanConfig,
        Config,
        ScrapeConfig,
        find_config,
        load_config,
        parse_config,
        parse_duration,
    )
    from .settings import (
        API_URL,
        CONFIG,
        CONFIG_ENV,
        TOKEN_ENV,
        URL_ENV,
        Chosen,
        Setting,
        client_token,
        resolve,
        switch,
    )

__all__ = [
    "API_URL",
    "AppConfig",
    "CONFIG",
    "CONFIG_ENV",
    "Chosen",
    "CleanConfig",
    "Config",
    "DEFAULT_API_URL",
    "ScrapeConfig",
    "Setting",
    "TOKEN_ENV",
    "URL_ENV",
    "client_token",
    "find_config",
    "load_config",
    "parse_config",
    "parse_duration",
    "resolve",
    "switch",
]

__getattr__ = surface(__name__, __file__)
