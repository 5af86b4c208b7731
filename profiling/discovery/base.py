"""What the discovery sources share: the opt-in labels, ``DiscoveryError`` and listing over HTTP.

The labels and tags an instance opts in with are tabled in the package's docstring
(``profiling.discovery``). Every failure to list (refused, timed out, HTTP
401/403/5xx, malformed JSON, an answer of the wrong shape) raises one
``DiscoveryError`` whose one-line message names the source and the URL. An
instance whose labels are wrong is skipped with one warning; it never hides the others.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from ..errors import AutopgoError
from ..names import WORKLOAD_RULE, is_valid_workload
from .targets import DEFAULT_PATH, Target

log = logging.getLogger(__name__)

SCRAPE = "autopgo.scrape"
APP = "autopgo.scrape.app"
PORT = "autopgo.scrape.port"
PATH = "autopgo.scrape.path"
SCHEME = "autopgo.scrape.scheme"
WORKLOAD = "autopgo.scrape.workload"
DEFAULT_TIMEOUT = 10.0


class DiscoveryError(AutopgoError):
    """Targets could not be listed; the one-line message names the source, the URL and why."""


def one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line, its whitespace collapsed, cut to ``limit`` characters (ending ``...``) if longer."""
    words = " ".join(str(text).split())
    return words if len(words) <= limit else words[: limit - 3] + "..."


def tag_map(tags: Iterable[Any] | None) -> dict[str, str]:
    """``["k=v", "flag"]`` as ``{"k": "v", "flag": ""}`` (non-strings ignored)."""
    out: dict[str, str] = {}
    for tag in tags or ():
        if isinstance(tag, str):
            key, _, value = tag.partition("=")
            out.setdefault(key.strip(), value.strip())
    return out


def wanted(meta: Mapping[str, str], app: str) -> bool:
    """Whether labels or tags opt this instance in for ``app``."""
    return meta.get(SCRAPE) == "true" and meta.get(APP) == app


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host put in brackets (``[::1]:6060``)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def make_target(host: Any, port: Any, meta: Mapping[str, str], what: str) -> Target | None:
    """The target for one instance, or None (with one warning) when its settings are wrong."""
    problem = None
    path, scheme = meta.get(PATH) or DEFAULT_PATH, meta.get(SCHEME) or "http"
    workload = meta.get(WORKLOAD) or ""
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port.strip())
    if not isinstance(host, str) or not host.strip():
        problem = "no address"
    elif isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        problem = f"port {port!r} is not a port number"
    elif not path.startswith("/"):
        problem = f"{PATH} {path!r} does not start with '/'"
    elif scheme not in ("http", "https"):
        problem = f"{SCHEME} {scheme!r} is not http or https"
    elif workload and not is_valid_workload(workload):
        problem = f"{WORKLOAD} {workload!r} is not a workload name ({WORKLOAD_RULE})"
    if problem:
        log.warning("skipping %s: %s", what, problem)
        return None
    return Target(host_port(host.strip(), port), path, scheme, workload)


class HttpSource:
    """What the HTTP-backed sources share: a client per listing, JSON reads, errors and check()."""

    kind = "discovery"

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self.last_error: str | None = None

    def targets(self) -> list[Target]:
        """The targets listed now, without duplicates; ``DiscoveryError`` (kept as ``last_error``) if they cannot be."""
        try:
            found = self._list()
        except DiscoveryError as exc:
            self.last_error = str(exc)
            raise
        self.last_error = None
        return sorted(set(found), key=lambda t: (t.address, t.path, t.scheme))

    def check(self) -> None:
        """Raise ``DiscoveryError`` when the targets cannot be listed now (for health reports)."""
        self.targets()

    def _list(self) -> list[Target]:
        raise NotImplementedError

    def _fail(self, url: object, why: str) -> DiscoveryError:
        return DiscoveryError(one_line(f"{self.kind}: {url}: {why}"))

    def _client(self, verify: ssl.SSLContext | bool = True) -> httpx.Client:
        return httpx.Client(verify=verify, timeout=self.timeout, follow_redirects=False, trust_env=False)

    def _get(
        self,
        client: httpx.Client,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> tuple[Any, httpx.Headers]:
        """GET ``url`` and return its JSON body and headers, or raise one ``DiscoveryError``."""
        shown = url
        try:
            request = client.build_request("GET", url, params=params, headers=headers, extensions=extensions)
            shown = str(request.url)
            response = client.send(request)
        except httpx.TimeoutException:
            raise self._fail(shown, f"no answer within {_seconds(self.timeout)}") from None
        except httpx.HTTPError as exc:
            raise self._fail(shown, _transport_problem(exc)) from None
        if response.status_code in (401, 403):
            hint = "check the token" if response.status_code == 401 else "the token lacks permission"
            raise self._fail(shown, f"HTTP {response.status_code} ({hint}){_detail(response)}")
        if response.status_code != 200:
            raise self._fail(shown, f"HTTP {response.status_code}{_detail(response)}")
        try:
            data = response.json()
        except ValueError as exc:
            raise self._fail(shown, f"malformed JSON in the answer: {exc}") from None
        return data, response.headers


def _seconds(timeout: float) -> str:
    return f"{timeout:g}s" if math.isfinite(timeout) else "the timeout"


def _detail(response: httpx.Response) -> str:
    text = one_line(response.text[:400], 200)
    return f": {text}" if text else ""


def _transport_problem(exc: httpx.HTTPError) -> str:
    text = one_line(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return f"TLS certificate not trusted: {text}"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {text}"
    return f"{type(exc).__name__}: {text}"


__all__ = ["DiscoveryError", "HttpSource", "make_target", "tag_map", "wanted", "host_port"]
