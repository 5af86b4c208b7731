"""Where a setting's value comes from: its flag, else its environment variable, else autopgo.yaml, else its default.

One order for every command and process, so that the API server and its
clients (the CLI, the scrape flow) agree: ``autopgo server`` with a token in
``AUTOPGO_API_TOKEN`` and another in ``api.token`` requires the first, and the
scrape flow and ``autopgo download`` send the first. ``resolve`` also says where
the value came from, for the server's start-up log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the commands import this module at start: the file's parser only when they read one
    from .file import Config

URL_ENV = "AUTOPGO_API_URL"
TOKEN_ENV = "AUTOPGO_API_TOKEN"
CONFIG_ENV = "AUTOPGO_CONFIG"


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its flag, its environment variable and its key in autopgo.yaml, each if it has one."""

    name: str  # the argparse destination, which holds the flag's value (None: not given)
    flag: str | None
    env: str | None
    default: Any
    key: str | None = None  # dotted key in autopgo.yaml
    read: Callable[[Config], Any] | None = None  # its value from a Config whose file gives ``key``
    parse: Callable[[str], Any] = str  # reads the environment variable's text; ValueError if it is bad
    secret: bool = False  # shown as set or none, never by value

    def shown(self, value: Any) -> Any:
        """``value`` as a log line may show it: a secret only as set or none."""
        if self.secret:
            return "set" if value else "none"
        return "none" if value is None else value


@dataclass(frozen=True, slots=True)
class Chosen:
    """A setting's value, where it came from, and the name an error about it should give."""

    value: Any
    origin: str  # "flag --port", "env AUTOPGO_PORT", "config autopgo.yaml (api.url)" or "default"
    name: str  # what an error about the value names: "--port", "AUTOPGO_PORT", "autopgo.yaml: api.url"


def resolve(
    setting: Setting,
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    config: Config | None = None,
    config_path: object = None,
) -> Chosen:
    """``setting``'s value and where it came from: the flag, else the variable, else the file, else the default.

    A flag counts when its value is not None, a variable when it is not blank, the
    file when it gives the key. ValueError names the variable whose text is bad.
    """
    if setting.flag and flags.get(setting.name) is not None:
        return Chosen(flags[setting.name], f"flag {setting.flag}", setting.flag)
    if setting.env and env.get(setting.env, "").strip():
        try:
            return Chosen(setting.parse(env[setting.env].strip()), f"env {setting.env}", setting.env)
        except ValueError as exc:
            raise ValueError(f"{setting.env}: {exc}") from None
    if config is not None and setting.key in config.given and setting.read is not None:
        value = setting.read(config)
        if value is not None:
            file = config_path or "autopgo.yaml"
            return Chosen(value, f"config {file} ({setting.key})", f"{file}: {setting.key}")
    return Chosen(setting.default, "default", setting.flag or setting.env or setting.name)


def switch(text: str) -> bool:
    """An on/off environment variable: 1, true, yes or on; 0, false, no or off (any case)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1 or 0 (true/false, yes/no, on/off), not {text!r}")


# The file the others may come from, so resolved first (without a file).
CONFIG = Setting("config", "--config", CONFIG_ENV, None)

# What a client of the API needs, the same for the CLI and the scrape flow. The URL's default is
# the caller's: http://localhost:8080 for the remote commands, api.url's own for scrape.
API_URL = Setting("api_url", "--api-url", URL_ENV, None, key="api.url", read=attrgetter("api_url"))
API_TOKEN = Setting(
    "token", "--token", TOKEN_ENV, None, key="api.token", read=attrgetter("api_token"), secret=True
)


def client_token(env: Mapping[str, str], config: Config | None, flags: Mapping[str, Any] | None = None) -> str | None:
    """The bearer token a client sends: ``--token``, else ``AUTOPGO_API_TOKEN``, else ``api.token``; None for none."""
    return resolve(API_TOKEN, flags or {}, env, config).value or None
