"""Application names and the blob key layout built from them."""

from __future__ import annotations

import re

MAX_APP_NAME = 63
_APP_NAME = re.compile(r"[a-z0-9-]{1,%d}" % MAX_APP_NAME)


def is_valid_app_name(app: str) -> bool:
    """1 to 63 characters, each a lower-case letter, a digit or '-'."""
    return isinstance(app, str) and _APP_NAME.fullmatch(app) is not None


def check_app_name(app: str) -> str:
    """Return ``app`` if valid, else raise ValueError saying why."""
    if not is_valid_app_name(app):
        raise ValueError(
            f"invalid app name {app!r}: use 1 to {MAX_APP_NAME} characters of a-z, 0-9 and '-'"
        )
    return app
