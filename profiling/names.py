"""The rules for app and workload names, which every part of autopgo checks the same way."""

from __future__ import annotations

import re
from typing import TypeGuard

MAX_APP_NAME = 63
_APP_NAME = re.compile(r"[a-z0-9-]{1,%d}" % MAX_APP_NAME)


def is_valid_app_name(app: object) -> TypeGuard[str]:
    """1 to 63 characters, each a lower-case letter, a digit or '-'."""
    return isinstance(app, str) and _APP_NAME.fullmatch(app) is not None


def check_app_name(app: str) -> str:
    """Return ``app`` if valid, else raise ValueError saying why."""
    if not is_valid_app_name(app):
        raise ValueError(
            f"invalid app name {app!r}: use 1 to {MAX_APP_NAME} characters of a-z, 0-9 and '-'"
        )
    return app


MAX_WORKLOAD_NAME = 63
WORKLOAD_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,%d}" % (MAX_WORKLOAD_NAME - 1)
_WORKLOAD_NAME = re.compile(WORKLOAD_PATTERN)
WORKLOAD_RULE = f"1 to {MAX_WORKLOAD_NAME} letters, digits, '_', '.' and '-', starting with a letter or digit"


def is_valid_workload(name: object) -> TypeGuard[str]:
    """1 to 63 characters of letters, digits, '_', '.' and '-', starting with a letter or digit."""
    return isinstance(name, str) and _WORKLOAD_NAME.fullmatch(name) is not None


def check_workload(name: str) -> str:
    """Return ``name`` if it is a valid workload name, else raise ValueError saying why."""
    if not is_valid_workload(name):
        raise ValueError(f"invalid workload {name[:100]!r}: use {WORKLOAD_RULE}")
    return name
