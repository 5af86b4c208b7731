"""Targets from Nomad's service registrations tagged ``autopgo.scrape=true`` and ``autopgo.scrape.app=<app>``.

Lists ``GET /v1/services`` (per namespace, the services and their tags), then
for each matching service ``GET /v1/service/<name>``; a registration's
``Address`` and ``Port`` make the target. Both lists are followed page by page
(``X-Nomad-NextToken`` / ``next_token``). Settings not in ``autopgo.yaml`` come
from the environment as the Nomad CLI reads it: ``NOMAD_ADDR``,
``NOMAD_TOKEN``, ``NOMAD_NAMESPACE``, ``NOMAD_REGION``, ``NOMAD_CACERT``,
``NOMAD_CAPATH``, ``NOMAD_CLIENT_CERT``, ``NOMAD_CLIENT_KEY``,
``NOMAD_SKIP_VERIFY`` and ``NOMAD_TLS_SERVER_NAME``. Namespace ``*`` lists all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from .base import DEFAULT_TIMEOUT, HttpSource, make_target, tag_map, wanted
from .consul import base_url
from .targets import Target
from .tls import TLSSettings, client_tls, env_bool

if TYPE_CHECKING:
    from .options import NomadTargets

DEFAULT_ADDR = "http://127.0.0.1:4646"
PAGE_SIZE = 500
MAX_PAGES = 10_000


class NomadTargetSource(HttpSource):
    """The app's instances as Nomad lists them: service registrations tagged for the app."""

    kind = "nomad"

    def __init__(
        self,
        app: str,
        address: str = DEFAULT_ADDR,
        *,
        token: str | None = None,
        namespace: str | None = None,
        region: str | None = None,
        tls: TLSSettings = TLSSettings(),
        timeout: float = DEFAULT_TIMEOUT,
        page_size: int = PAGE_SIZE,
    ) -> None:
        super().__init__(timeout)
        self.app, self.token, self.namespace, self.region, self.tls = app, token, namespace, region, tls
        self.base = base_url(address, False, "nomad")
        self.page_size = page_size

    @classmethod
    def from_config(cls, app: str, cfg: NomadTargets, env: Mapping[str, str] = os.environ) -> NomadTargetSource:
        """The source ``cfg`` describes, its unset settings taken from ``NOMAD_*`` in ``env``; ``DiscoveryError``
        if the address is unusable."""

        def pick(value: Any, name: str) -> Any:
            return value if value is not None else (env.get(name) or None)

        tls = client_tls(cfg.tls, env, "NOMAD", verify=not env_bool(env.get("NOMAD_SKIP_VERIFY"), False))
        return cls(
            app,
            pick(cfg.address, "NOMAD_ADDR") or DEFAULT_ADDR,
            token=pick(cfg.token, "NOMAD_TOKEN"),
            namespace=pick(cfg.namespace, "NOMAD_NAMESPACE"),
            region=pick(cfg.region, "NOMAD_REGION"),
            tls=tls,
            timeout=cfg.timeout,
        )

    def _list(self) -> list[Target]:
        headers = {"X-Nomad-Token": self.token} if self.token else {}
        params = {k: v for k, v in (("namespace", self.namespace), ("region", self.region)) if v}
        verify = self.tls.context("nomad") if self.base.startswith("https://") else True
        found: list[Target] = []
        with self._client(verify) as client:
            url = f"{self.base}/v1/services"
            matches: set[tuple[str, str]] = set()
            for stub in self._pages(client, url, params, headers, "a list of namespaces with their services"):
                services = stub.get("Services")
                if not isinstance(services, list):
                    raise self._fail(url, "expected Services in each namespace entry")
                for service in services:
                    if not isinstance(service, dict) or not isinstance(service.get("ServiceName"), str):
                        raise self._fail(url, "expected ServiceName in each service entry")
                    if wanted(tag_map(service.get("Tags")), self.app):
                        matches.add((str(stub.get("Namespace") or self.namespace or "default"), service["ServiceName"]))
            for namespace, name in sorted(matches):
                url = f"{self.base}/v1/service/{quote(name, safe='')}"
                query = {**params, "namespace": namespace}
                for reg in self._pages(client, url, query, headers, "a list of service registrations"):
                    tags = tag_map(reg.get("Tags"))
                    if not wanted(tags, self.app):
                        continue
                    what = f"nomad service {name} registration {reg.get('ID') or reg.get('AllocID') or '?'}"
                    target = make_target(reg.get("Address"), reg.get("Port"), tags, what)
                    if target is not None:
                        found.append(target)
        return found

    def _pages(
        self, client: httpx.Client, url: str, params: dict[str, str], headers: dict[str, str], shape: str
    ) -> Iterator[dict[str, Any]]:
        """The entries of a list endpoint, page by page until no ``X-Nomad-NextToken`` is left."""
        token = ""
        for _ in range(MAX_PAGES):
            query = {**params, "per_page": str(self.page_size)}
            if token:
                query["next_token"] = token
            data, response_headers = self._get(client, url, params=query, headers=headers, extensions=self.tls.extensions)
            if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
                raise self._fail(url, f"expected {shape}")
            yield from data
            following = response_headers.get("X-Nomad-NextToken", "")
            if not following:
                return
            if following == token:
                raise self._fail(url, f"paging does not advance (next token {following!r} repeated)")
            token = following
        raise self._fail(url, f"more than {MAX_PAGES} pages")
