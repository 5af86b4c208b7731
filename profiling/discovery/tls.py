"""TLS settings shared by the discovery sources, turned into one ``ssl.SSLContext``.

Certificates and keys come as files, or (from a kubeconfig) as inline PEM
data. Inline client certificates are written to a private temporary folder
only for as long as ``ssl`` needs to read them, then removed.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import DiscoveryError
from .options import ClientTLS


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """What a discovery client trusts and presents over TLS: CAs, a client certificate, verification, server name."""

    ca_file: Path | None = None
    ca_path: Path | None = None  # a folder of CA certificates (as CONSUL_CAPATH / NOMAD_CAPATH)
    ca_data: bytes | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    verify: bool = True
    server_name: str | None = None  # the name the server's certificate must carry (SNI)

    @property
    def extensions(self) -> dict[str, str] | None:
        """httpx request extensions that make TLS check ``server_name`` instead of the URL's host."""
        return {"sni_hostname": self.server_name} if self.server_name else None

    def context(self, source: str) -> ssl.SSLContext:
        """An SSL context for these settings; a file that cannot be used is a ``DiscoveryError``."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if not (self.ca_file or self.ca_path or self.ca_data):
            ctx.load_default_certs()  # a given CA is the only one trusted, as with the CLIs
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            if self.ca_file or self.ca_path:
                what = f"CA certificate {self.ca_file or self.ca_path}"
                ctx.load_verify_locations(
                    cafile=str(self.ca_file) if self.ca_file else None,
                    capath=str(self.ca_path) if self.ca_path else None,
                )
            if self.ca_data:
                what = "inline CA certificate"
                ctx.load_verify_locations(cadata=self.ca_data.decode("ascii", errors="replace"))
            if self.cert_file or self.cert_data:
                what = f"client certificate {self.cert_file or '(inline)'} and key {self.key_file or '(inline)'}"
                self._load_client(ctx)
        except (OSError, ssl.SSLError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise DiscoveryError(" ".join(f"{source}: cannot use {what}: {reason}".split())) from None
        return ctx

    def _load_client(self, ctx: ssl.SSLContext) -> None:
        if self.cert_file and not self.cert_data and (self.key_file or not self.key_data):
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
            return
        with tempfile.TemporaryDirectory(prefix="autopgo-tls-") as folder:
            cert = self.cert_file or _private(Path(folder) / "client.crt", self.cert_data or b"")
            key = self.key_file or (_private(Path(folder) / "client.key", self.key_data) if self.key_data else None)
            ctx.load_cert_chain(str(cert), str(key) if key else None)


def _private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return path


def env_bool(value: str | None, default: bool) -> bool:
    """A CLI-style boolean environment value (``1``/``true``/``yes``; ``0``/``false``/``no``)."""
    if value is None or not value.strip():
        return default
    return value.strip().lower() in ("1", "t", "true", "yes", "y", "on")


def client_tls(cfg: ClientTLS, env: Mapping[str, str], prefix: str, verify: bool) -> TLSSettings:
    """``cfg`` completed from the environment as the Consul and Nomad CLIs read it:
    ``{prefix}_CACERT``, ``_CAPATH``, ``_CLIENT_CERT``, ``_CLIENT_KEY`` and
    ``_TLS_SERVER_NAME``; ``verify`` is what the environment says when ``cfg`` does not."""

    def pick(value: Any, name: str) -> Any:
        return value if value is not None else (env.get(f"{prefix}_{name}") or None)

    return TLSSettings(
        ca_file=_as_path(pick(cfg.ca_file, "CACERT")),
        ca_path=_as_path(env.get(f"{prefix}_CAPATH")),
        cert_file=_as_path(pick(cfg.cert_file, "CLIENT_CERT")),
        key_file=_as_path(pick(cfg.key_file, "CLIENT_KEY")),
        verify=not cfg.skip_verify if cfg.skip_verify is not None else verify,
        server_name=pick(cfg.server_name, "TLS_SERVER_NAME"),
    )


def _as_path(value: str | Path | None) -> Path | None:
    return Path(value) if value else None
