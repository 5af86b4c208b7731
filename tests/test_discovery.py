"""Target discovery from Kubernetes, Consul and Nomad, against local fakes of their HTTP APIs."""

from __future__ import annotations

import base64
import logging
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakeapis import (
    Certs,
    FakeAPI,
    FakeConsul,
    FakeKubernetes,
    FakeNomad,
    consul_entry,
    kubeconfig,
    make_certs,
    nomad_registration,
    pod,
    server_context,
)
from processes import wait_for

from profiling.config import ScrapeConfig, load_config
from profiling.discovery import (
    DEFAULT_PATH,
    ClientTLS,
    ConsulTargets,
    ConsulTargetSource,
    DiscoveryError,
    FileTargets,
    HttpSource,
    KubernetesTargets,
    KubernetesTargetSource,
    NomadTargets,
    NomadTargetSource,
    SourceCache,
    StaticTargets,
    Target,
    TargetsConfig,
    TLSSettings,
)
from profiling.errors import ConfigError

APP = "checkout"
SCRAPE_TAGS = ["autopgo.scrape=true", f"autopgo.scrape.app={APP}"]


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def tls_server(certs: Certs, *, named: bool = False, client_ca: bool = False) -> Any:
    cert, key = (certs.named_cert, certs.named_key) if named else (certs.server_cert, certs.server_key)
    return server_context(cert, key, certs.ca if client_ca else None)


def assert_one_error(info: pytest.ExceptionInfo[DiscoveryError], *parts: str) -> str:
    message = str(info.value)
    assert type(info.value) is DiscoveryError
    assert "\n" not in message and message == message.strip(), message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


# -- Kubernetes ---------------------------------------------------------------------

PODS = [
    pod("ready-1", "10.0.0.1"),
    pod("ready-2", "10.0.0.2", annotations={"autopgo.scrape.path": "/pprof/cpu", "autopgo.scrape.scheme": "https"}),
    pod("ready-v6", "fd00::7", annotations={"autopgo.scrape.port": "7070"}),
    pod("other-ns", "10.0.9.9", namespace="elsewhere"),
    pod("not-ready", "10.0.0.3", ready=False),
    pod("pending", "10.0.0.4", phase="Pending"),
    pod("no-ip", None),
    pod("terminating", "10.0.0.5", deleting=True),
    pod("no-port", "10.0.0.6", annotations={"autopgo.scrape.port": ""}),
    pod("bad-port", "10.0.0.7", annotations={"autopgo.scrape.port": "http"}),
    pod("bad-path", "10.0.0.8", annotations={"autopgo.scrape.path": "pprof"}),
    pod("other-app", "10.0.0.9", app="search"),
    pod("opted-out", "10.0.0.10", labels={"autopgo.scrape": "false"}),
]
SHOP_TARGETS = [
    Target("10.0.0.1:6060", DEFAULT_PATH, "http"),
    Target("10.0.0.2:6060", "/pprof/cpu", "https"),
    Target("[fd00::7]:7070", DEFAULT_PATH, "http"),
]


@pytest.fixture
def k8s(certs: Certs) -> Iterator[FakeKubernetes]:
    with FakeKubernetes(list(PODS), tls=tls_server(certs, client_ca=True)).running() as api:
        yield api  # type: ignore[misc]


def test_kubernetes_kubeconfig_token_lists_running_ready_pods_page_by_page(
    k8s: FakeKubernetes, certs: Certs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = kubeconfig(tmp_path / "kubeconfig", k8s.url, token="k8s-token", cluster={"certificate-authority": str(certs.ca)})
    source = KubernetesTargetSource(APP, namespace="shop", kubeconfig=config, page_size=3)
    with caplog.at_level(logging.WARNING):
        assert source.targets() == SHOP_TARGETS
    paths = {seen.path for seen in k8s.seen}
    assert paths == {"/api/v1/namespaces/shop/pods"}
    assert len(k8s.seen) == 4  # 12 shop pods for the app, 3 a page
    assert [seen.query.get("continue") for seen in k8s.seen] == [None, "page-3", "page-6", "page-9"]
    assert {seen.query["labelSelector"] for seen in k8s.seen} == {f"autopgo.scrape=true,autopgo.scrape.app={APP}"}
    assert {seen.query["limit"] for seen in k8s.seen} == {"3"}
    warned = " ".join(r.getMessage() for r in caplog.records)
    for name in ("shop/no-port", "shop/bad-port", "shop/bad-path"):
        assert name in warned
    assert "not-ready" not in warned and "pending" not in warned  # not ready is normal, not a warning


def test_kubernetes_all_namespaces_without_namespace(k8s: FakeKubernetes, certs: Certs, tmp_path: Path) -> None:
    config = kubeconfig(tmp_path / "kubeconfig", k8s.url, token="k8s-token", cluster={"certificate-authority": str(certs.ca)})
    targets = KubernetesTargetSource(APP, kubeconfig=config).targets()
    assert targets == sorted([*SHOP_TARGETS, Target("10.0.9.9:6060")], key=lambda t: t.address)
    assert {seen.path for seen in k8s.seen} == {"/api/v1/pods"}


def test_kubernetes_in_cluster_service_account(k8s: FakeKubernetes, certs: Certs, tmp_path: Path) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("k8s-token\n")
    (account / "ca.crt").write_bytes(certs.ca.read_bytes())
    (account / "namespace").write_text("shop")
    host, port = k8s.address.rsplit(":", 1)
    env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    source = KubernetesTargetSource(APP, namespace="shop", service_account_dir=account, env=env)
    assert source.targets() == SHOP_TARGETS
    assert k8s.seen[0].headers["authorization"] == "Bearer k8s-token"
    (account / "token").write_text("rotated")  # re-read at every listing
    with pytest.raises(DiscoveryError) as info:
        source.targets()
    assert_one_error(info, "kubernetes", "HTTP 401", "/api/v1/namespaces/shop/pods")


def test_kubernetes_in_cluster_needs_the_environment(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError) as info:
        KubernetesTargetSource(APP, service_account_dir=tmp_path, env={}).targets()
    assert_one_error(info, "kubernetes", "KUBERNETES_SERVICE_HOST")
    with pytest.raises(DiscoveryError) as info:
        KubernetesTargetSource(APP, service_account_dir=tmp_path, env={"KUBERNETES_SERVICE_HOST": "127.0.0.1"}).targets()
    assert_one_error(info, "kubernetes", "token", str(tmp_path / "token"))


def test_kubernetes_kubeconfig_inline_client_certificate(
    k8s: FakeKubernetes, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    k8s.accept_client_cert = True
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    config = kubeconfig(
        tmp_path / "kubeconfig",
        k8s.url,
        cluster={"certificate-authority-data": b64(certs.ca)},
        **{"client-certificate-data": b64(certs.client_cert), "client-key-data": b64(certs.client_key)},
    )
    assert KubernetesTargetSource(APP, namespace="shop", kubeconfig=config).targets() == SHOP_TARGETS
    assert k8s.seen and all(seen.client_cert and "authorization" not in seen.headers for seen in k8s.seen)
    assert list(scratch.iterdir()) == []  # the inline key was written only while ssl read it


def test_kubernetes_kubeconfig_client_certificate_files(k8s: FakeKubernetes, certs: Certs, tmp_path: Path) -> None:
    k8s.accept_client_cert = True
    config = kubeconfig(
        tmp_path / "kubeconfig",
        k8s.url,
        cluster={"certificate-authority": str(certs.ca)},
        **{"client-certificate": str(certs.client_cert), "client-key": str(certs.client_key)},
    )
    assert KubernetesTargetSource(APP, namespace="shop", kubeconfig=config).targets() == SHOP_TARGETS


def test_kubernetes_untrusted_ca_fails_clearly(k8s: FakeKubernetes, certs: Certs, tmp_path: Path) -> None:
    config = kubeconfig(tmp_path / "kc", k8s.url, token="k8s-token", cluster={"certificate-authority": str(certs.other_ca)})
    with pytest.raises(DiscoveryError) as info:
        KubernetesTargetSource(APP, kubeconfig=config).targets()
    assert_one_error(info, "kubernetes", k8s.url, "TLS certificate not trusted")


@pytest.mark.parametrize(
    ("problem", "user", "expected"),
    [
        ("missing", None, "cannot read"),
        ("not-yaml", None, "not valid YAML"),
        ("no-context", {"current-context": ""}, "no current-context"),
        ("exec", {"exec": {"command": "aws"}}, "exec credentials are not supported"),
        ("bad-data", {"client-certificate-data": "***", "client-key-data": "***"}, "not base64"),
    ],
)
def test_kubernetes_kubeconfig_problems(tmp_path: Path, problem: str, user: dict[str, Any] | None, expected: str) -> None:
    path = tmp_path / "kubeconfig"
    if problem == "not-yaml":
        path.write_text("clusters: [\n")
    elif problem == "no-context":
        kubeconfig(path, "https://127.0.0.1:1", token="t")
        data = yaml.safe_load(path.read_text())
        data.update(user or {})
        path.write_text(yaml.safe_dump(data))
    elif user is not None:
        kubeconfig(path, "https://127.0.0.1:1", **user)
    with pytest.raises(DiscoveryError) as info:
        KubernetesTargetSource(APP, kubeconfig=path).targets()
    assert_one_error(info, "kubernetes", str(path), expected)


# -- Consul -------------------------------------------------------------------------

CONSUL_ENTRIES = [
    consul_entry("checkout", 6060, SCRAPE_TAGS, node_address="10.1.0.1"),  # no ServiceAddress: the node's
    consul_entry("checkout", 6060, SCRAPE_TAGS, address="10.2.0.2"),
    consul_entry("checkout-admin", 9443, [*SCRAPE_TAGS, "autopgo.scrape.path=/admin/pprof", "autopgo.scrape.scheme=https"], address="fd00::9"),
    consul_entry("checkout", 8080, ["http"], address="10.2.0.3"),  # not opted in
    consul_entry("search", 6060, ["autopgo.scrape=true", "autopgo.scrape.app=search"], address="10.3.0.1"),
    consul_entry("checkout", 0, SCRAPE_TAGS, address="10.2.0.4"),  # no port: skipped with a warning
]
CONSUL_TARGETS = [
    Target("10.1.0.1:6060"),
    Target("10.2.0.2:6060"),
    Target("[fd00::9]:9443", "/admin/pprof", "https"),
]


@pytest.fixture
def consul(certs: Certs) -> Iterator[FakeConsul]:
    with FakeConsul(list(CONSUL_ENTRIES), tls=tls_server(certs)).running() as api:
        yield api  # type: ignore[misc]


def test_consul_lists_tagged_services_over_tls(consul: FakeConsul, certs: Certs) -> None:
    source = ConsulTargetSource(APP, consul.url, token="consul-token", datacenter="dc1", tls=TLSSettings(ca_file=certs.ca))
    assert source.targets() == CONSUL_TARGETS
    assert [seen.path for seen in consul.seen] == [
        "/v1/catalog/services",
        "/v1/catalog/service/checkout",
        "/v1/catalog/service/checkout-admin",
    ]
    assert all(seen.headers["x-consul-token"] == "consul-token" for seen in consul.seen)
    assert all(seen.query.get("dc") == "dc1" for seen in consul.seen)
    assert [seen.query.get("tag") for seen in consul.seen[1:]] == ["autopgo.scrape=true"] * 2
    assert set(source.last_index.values()) == {1234}  # X-Consul-Index, kept for blocking queries


def test_consul_settings_from_the_environment(consul: FakeConsul, certs: Certs) -> None:
    env = {
        "CONSUL_HTTP_ADDR": consul.address,
        "CONSUL_HTTP_SSL": "true",
        "CONSUL_HTTP_TOKEN": "consul-token",
        "CONSUL_CACERT": str(certs.ca),
    }
    source = ConsulTargetSource.from_config(APP, ConsulTargets(), env)
    assert source.base == consul.url
    assert source.targets() == CONSUL_TARGETS
    # the file's settings win over the environment
    with pytest.raises(DiscoveryError) as info:
        ConsulTargetSource.from_config(APP, ConsulTargets(token="wrong"), env).targets()
    assert_one_error(info, "consul", "HTTP 403", "ACL not found")


def test_consul_token_file_and_skip_verify(consul: FakeConsul, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("consul-token\n")
    env = {"CONSUL_HTTP_ADDR": consul.url, "CONSUL_HTTP_TOKEN_FILE": str(token), "CONSUL_HTTP_SSL_VERIFY": "false"}
    assert ConsulTargetSource.from_config(APP, ConsulTargets(), env).targets() == CONSUL_TARGETS


def test_consul_tls_server_name(certs: Certs) -> None:
    with FakeConsul(list(CONSUL_ENTRIES), tls=tls_server(certs, named=True)).running() as api:
        plain = ConsulTargetSource(APP, api.url, token="consul-token", tls=TLSSettings(ca_file=certs.ca))
        with pytest.raises(DiscoveryError) as info:
            plain.targets()
        assert_one_error(info, "consul", api.url, "TLS certificate not trusted")
        env = {"CONSUL_HTTP_ADDR": api.url, "CONSUL_HTTP_TOKEN": "consul-token", "CONSUL_CACERT": str(certs.ca),
               "CONSUL_TLS_SERVER_NAME": "discovery.service.test"}  # fmt: skip
        assert ConsulTargetSource.from_config(APP, ConsulTargets(), env).targets() == CONSUL_TARGETS


def test_consul_untrusted_ca_fails_clearly(consul: FakeConsul, certs: Certs) -> None:
    source = ConsulTargetSource(APP, consul.url, token="consul-token", tls=TLSSettings(ca_file=certs.other_ca))
    with pytest.raises(DiscoveryError) as info:
        source.targets()
    assert_one_error(info, "consul", "/v1/catalog/services", "TLS certificate not trusted")


def test_consul_plain_http_and_default_scheme() -> None:
    with FakeConsul(list(CONSUL_ENTRIES)).running() as api:
        source = ConsulTargetSource.from_config(APP, ConsulTargets(address=api.address, token="consul-token"), {})
        assert source.base == api.url
        assert source.targets() == CONSUL_TARGETS


# -- Nomad --------------------------------------------------------------------------

NOMAD_REGS = [
    nomad_registration("checkout", "10.4.0.1", 6060, SCRAPE_TAGS),
    nomad_registration("checkout", "10.4.0.2", 6061, SCRAPE_TAGS),
    nomad_registration("checkout", "10.4.0.3", 6062, SCRAPE_TAGS),
    nomad_registration("checkout", "10.4.0.4", 8080, ["http"]),
    nomad_registration("checkout-tls", "fd00::4", 9443, [*SCRAPE_TAGS, "autopgo.scrape.scheme=https", "autopgo.scrape.path=/p"]),
    nomad_registration("checkout", "10.5.0.1", 6060, SCRAPE_TAGS, namespace="shop"),
    nomad_registration("search", "10.4.0.9", 6060, ["autopgo.scrape=true", "autopgo.scrape.app=search"]),
    nomad_registration("web", "10.4.0.8", 6060, []),
]
NOMAD_DEFAULT = [
    Target("10.4.0.1:6060"),
    Target("10.4.0.2:6061"),
    Target("10.4.0.3:6062"),
    Target("[fd00::4]:9443", "/p", "https"),
]


@pytest.fixture
def nomad(certs: Certs) -> Iterator[FakeNomad]:
    with FakeNomad(list(NOMAD_REGS), tls=tls_server(certs)).running() as api:
        yield api  # type: ignore[misc]


def test_nomad_lists_tagged_registrations_page_by_page(nomad: FakeNomad, certs: Certs) -> None:
    source = NomadTargetSource(APP, nomad.url, token="nomad-token", region="eu", tls=TLSSettings(ca_file=certs.ca), page_size=2)
    assert source.targets() == NOMAD_DEFAULT
    assert all(seen.headers["x-nomad-token"] == "nomad-token" for seen in nomad.seen)
    assert all(seen.query["region"] == "eu" and seen.query["per_page"] == "2" for seen in nomad.seen)
    listing = [seen for seen in nomad.seen if seen.path == "/v1/service/checkout"]
    assert [seen.query.get("next_token") for seen in listing] == [None, "page-2"]
    assert {seen.path for seen in nomad.seen} == {"/v1/services", "/v1/service/checkout", "/v1/service/checkout-tls"}


def test_nomad_all_namespaces(nomad: FakeNomad, certs: Certs) -> None:
    source = NomadTargetSource(APP, nomad.url, token="nomad-token", namespace="*", tls=TLSSettings(ca_file=certs.ca), page_size=1)
    assert source.targets() == sorted([*NOMAD_DEFAULT, Target("10.5.0.1:6060")], key=lambda t: t.address)
    services = [seen for seen in nomad.seen if seen.path == "/v1/services"]
    assert [seen.query.get("next_token") for seen in services] == [None, "page-1"]  # two namespaces, one a page
    assert {seen.query["namespace"] for seen in nomad.seen if seen.path != "/v1/services"} == {"default", "shop"}


def test_nomad_settings_from_the_environment(nomad: FakeNomad, certs: Certs) -> None:
    env = {"NOMAD_ADDR": nomad.url, "NOMAD_TOKEN": "nomad-token", "NOMAD_NAMESPACE": "shop", "NOMAD_REGION": "eu",
           "NOMAD_CACERT": str(certs.ca), "NOMAD_CLIENT_CERT": str(certs.client_cert), "NOMAD_CLIENT_KEY": str(certs.client_key)}  # fmt: skip
    assert NomadTargetSource.from_config(APP, NomadTargets(), env).targets() == [Target("10.5.0.1:6060")]
    assert {(seen.query["namespace"], seen.query["region"]) for seen in nomad.seen} == {("shop", "eu")}
    # the file's settings win
    source = NomadTargetSource.from_config(APP, NomadTargets(namespace="default"), env)
    assert source.targets() == NOMAD_DEFAULT


def test_nomad_skip_verify_and_server_name(certs: Certs) -> None:
    with FakeNomad(list(NOMAD_REGS), tls=tls_server(certs, named=True)).running() as api:
        env = {"NOMAD_ADDR": api.url, "NOMAD_TOKEN": "nomad-token"}
        with pytest.raises(DiscoveryError) as info:
            NomadTargetSource.from_config(APP, NomadTargets(), env).targets()
        assert_one_error(info, "nomad", "TLS certificate not trusted")
        assert NomadTargetSource.from_config(APP, NomadTargets(), {**env, "NOMAD_SKIP_VERIFY": "1"}).targets() == NOMAD_DEFAULT
        named = {**env, "NOMAD_CACERT": str(certs.ca), "NOMAD_TLS_SERVER_NAME": "discovery.service.test"}
        assert NomadTargetSource.from_config(APP, NomadTargets(), named).targets() == NOMAD_DEFAULT


def test_nomad_untrusted_ca_fails_clearly(nomad: FakeNomad, certs: Certs) -> None:
    source = NomadTargetSource(APP, nomad.url, token="nomad-token", tls=TLSSettings(ca_file=certs.other_ca))
    with pytest.raises(DiscoveryError) as info:
        source.targets()
    assert_one_error(info, "nomad", "/v1/services", "TLS certificate not trusted")


# -- error paths, every source ------------------------------------------------------


def _source(kind: str, api: FakeAPI, certs: Certs, tmp_path: Path, timeout: float) -> HttpSource:
    tls = TLSSettings(ca_file=certs.ca)
    if kind == "kubernetes":
        config = kubeconfig(tmp_path / "kc", api.url, token="k8s-token", cluster={"certificate-authority": str(certs.ca)})
        return KubernetesTargetSource(APP, namespace="shop", kubeconfig=config, timeout=timeout)
    if kind == "consul":
        return ConsulTargetSource(APP, api.url, token="consul-token", tls=tls, timeout=timeout)
    return NomadTargetSource(APP, api.url, token="nomad-token", tls=tls, timeout=timeout)


FAKES = {
    "kubernetes": lambda tls: FakeKubernetes(list(PODS), tls=tls),
    "consul": lambda tls: FakeConsul(list(CONSUL_ENTRIES), tls=tls),
    "nomad": lambda tls: FakeNomad(list(NOMAD_REGS), tls=tls),
}
FIRST_PATH = {"kubernetes": "/api/v1/namespaces/shop/pods", "consul": "/v1/catalog/services", "nomad": "/v1/services"}


@pytest.mark.parametrize("kind", sorted(FAKES))
@pytest.mark.parametrize(
    ("fail", "expected"),
    [
        ("401", "HTTP 401 (check the token)"),
        ("500", "HTTP 500: internal error: the leader is gone"),
        ("slow", "no answer within 0.3s"),
        ("malformed", "malformed JSON"),
    ],
)
def test_error_paths(kind: str, fail: str, expected: str, certs: Certs, tmp_path: Path) -> None:
    with FAKES[kind](tls_server(certs)).running() as api:
        api.fail = fail
        api.slow_seconds = 3.0
        source = _source(kind, api, certs, tmp_path, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(DiscoveryError) as info:
            source.targets()
        assert time.monotonic() - started < 2.5
        message = assert_one_error(info, f"{kind}: {api.url}{FIRST_PATH[kind]}", expected)
        assert source.last_error == message
        with pytest.raises(DiscoveryError):
            source.check()  # what a health report calls
        api.fail = None
        source.check()
        assert source.last_error is None


@pytest.mark.parametrize("kind", sorted(FAKES))
def test_wrong_token_and_wrong_shape(kind: str, certs: Certs, tmp_path: Path) -> None:
    with FAKES[kind](tls_server(certs)).running() as api:
        api.token = "another-token"
        with pytest.raises(DiscoveryError) as info:
            _source(kind, api, certs, tmp_path, timeout=5).targets()
        assert_one_error(info, kind, "HTTP 40")
        api.token = {"kubernetes": "k8s-token", "consul": "consul-token", "nomad": "nomad-token"}[kind]
        original = api.route
        api.route = lambda seen: (200, {"unexpected": "shape"} if kind != "consul" else ["a", "list"], {})  # type: ignore[method-assign]
        with pytest.raises(DiscoveryError) as info:
            _source(kind, api, certs, tmp_path, timeout=5).targets()
        assert_one_error(info, kind, "expected")
        api.route = original  # type: ignore[method-assign]


@pytest.mark.parametrize("kind", sorted(FAKES))
def test_nothing_listening(kind: str, certs: Certs, tmp_path: Path) -> None:
    with FAKES[kind](None).running() as api:
        url = api.url
    api_url = url.replace("http://", "https://")

    class Gone:
        url = api_url

    with pytest.raises(DiscoveryError) as info:
        _source(kind, Gone, certs, tmp_path, timeout=2).targets()  # type: ignore[arg-type]
    assert_one_error(info, kind, api_url, "cannot connect")


def test_non_http_address_is_refused() -> None:
    with pytest.raises(DiscoveryError, match="consul: address 'unix:///tmp/consul.sock'"):
        ConsulTargetSource(APP, "unix:///tmp/consul.sock")


# -- configuration: one source per app ----------------------------------------------


def write(folder: Path, targets: str) -> Path:
    path = folder / "autopgo.yaml"
    text = "apps:\n  - name: checkout\n    scrape:\n      targets:\n" + textwrap.indent(textwrap.dedent(targets), "        ")
    path.write_text(text)
    return path


def test_config_modes(tmp_path: Path) -> None:
    (tmp_path / "kube").mkdir()

    def targets_of(text: str) -> TargetsConfig:
        scrape = load_config(write(tmp_path, text)).app(APP).scrape
        assert scrape is not None
        return scrape.targets

    assert targets_of("kubernetes: {namespace: shop, kubeconfig: kube/config}\n") == TargetsConfig(
        kubernetes=KubernetesTargets(namespace="shop", kubeconfig=(tmp_path / "kube/config").resolve(), in_cluster=False)
    )
    assert targets_of("kubernetes: {in_cluster: true, timeout: 3s}\n") == TargetsConfig(
        kubernetes=KubernetesTargets(in_cluster=True, timeout=3.0)
    )
    assert targets_of("kubernetes:\n") == TargetsConfig(kubernetes=KubernetesTargets())
    assert targets_of(
        "consul: {address: 'https://consul:8501', token: t, datacenter: dc2, ca_file: ca.pem,"
        " cert_file: c.pem, key_file: k.pem, tls_skip_verify: false, tls_server_name: consul.service}\n"
    ) == TargetsConfig(
        consul=ConsulTargets(
            address="https://consul:8501", token="t", datacenter="dc2",
            tls=ClientTLS(
                ca_file=tmp_path / "ca.pem", cert_file=tmp_path / "c.pem", key_file=tmp_path / "k.pem",
                skip_verify=False, server_name="consul.service",
            ),
        )  # fmt: skip
    )
    assert targets_of("consul: {}\n") == TargetsConfig(consul=ConsulTargets())
    assert targets_of("nomad: {address: 'http://nomad:4646', namespace: '*', region: eu, timeout: 2s}\n") == TargetsConfig(
        nomad=NomadTargets(address="http://nomad:4646", namespace="*", region="eu", timeout=2.0)
    )


BAD_TARGETS = [
    ("two-modes", "consul: {}\nnomad: {}\n", "exactly one of file, static, kubernetes, consul, nomad"),
    ("unknown-mode", "eureka: {}\n", "eureka"),
    ("k8s-not-mapping", "kubernetes: shop\n", "targets.kubernetes: expected a mapping"),
    ("k8s-unknown", "kubernetes: {namespaces: [a]}\n", "namespaces"),
    ("k8s-namespace", "kubernetes: {namespace: Shop_1}\n", "targets.kubernetes.namespace"),
    ("k8s-in-cluster-str", "kubernetes: {in_cluster: 'yes'}\n", "targets.kubernetes.in_cluster"),
    ("k8s-both", "kubernetes: {in_cluster: true, kubeconfig: kc}\n", "not both"),
    ("k8s-neither", "kubernetes: {in_cluster: false}\n", "targets.kubernetes.kubeconfig"),
    ("k8s-timeout", "kubernetes: {timeout: soon}\n", "targets.kubernetes.timeout"),
    ("consul-unknown", "consul: {addr: x}\n", "addr"),
    ("consul-token-number", "consul: {token: 5}\n", "targets.consul.token"),
    ("consul-address-empty", "consul: {address: ''}\n", "targets.consul.address"),
    ("consul-address-unix", "consul: {address: 'unix:///c.sock'}\n", "targets.consul.address"),
    ("consul-skip-verify", "consul: {tls_skip_verify: 'no'}\n", "targets.consul.tls_skip_verify"),
    ("consul-key-alone", "consul: {key_file: k.pem}\n", "targets.consul.cert_file"),
    ("nomad-unknown", "nomad: {datacenter: dc1}\n", "datacenter"),
    ("nomad-region-list", "nomad: {region: [a]}\n", "targets.nomad.region"),
    ("nomad-timeout", "nomad: {timeout: -1s}\n", "targets.nomad.timeout"),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in BAD_TARGETS], ids=[i for i, _, _ in BAD_TARGETS])
def test_config_mistakes_are_one_config_error(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert type(info.value) is ConfigError and "\n" not in message
    assert str(path) in message and "app checkout: scrape.targets" in message and expected in message, message


# -- one source per app and settings, as the scrape flow keeps them -----------------------------


def test_one_source_per_app_and_settings(tmp_path: Path) -> None:
    cache = SourceCache()

    def scrape_cfg(targets: TargetsConfig) -> ScrapeConfig:
        from datetime import timedelta

        return ScrapeConfig(timedelta(minutes=5), timedelta(seconds=30), 3, targets)

    k8s = scrape_cfg(TargetsConfig(kubernetes=KubernetesTargets(namespace="shop")))
    consul = scrape_cfg(TargetsConfig(consul=ConsulTargets(address="127.0.0.1:8500")))
    nomad = scrape_cfg(TargetsConfig(nomad=NomadTargets(address="http://127.0.0.1:4646")))
    assert isinstance(cache.source("a", k8s), KubernetesTargetSource)
    assert isinstance(cache.source("a", consul), ConsulTargetSource)
    assert isinstance(cache.source("a", nomad), NomadTargetSource)
    assert cache.source("a", consul) is cache.source("a", consul)
    assert cache.source("b", consul) is not cache.source("a", consul)
    assert isinstance(cache.source("a", scrape_cfg(TargetsConfig(file=tmp_path / "t.yaml"))), FileTargets)
    assert isinstance(cache.source("a", scrape_cfg(TargetsConfig(static=(Target("h:1"),)))), StaticTargets)


def test_api_health_reports_each_apps_target_source(tmp_path: Path) -> None:
    """Every scraped app's source shows in /api/health, of whatever kind, with its problem if it has
    one; a source that cannot list its targets does not make the API unhealthy."""
    import httpx

    from api.config import ServerConfig
    from api.server import create_server

    (tmp_path / "good.yaml").write_text("[{address: '127.0.0.1:1'}]\n")
    (tmp_path / "bad.yaml").write_text("[{address: 'no port'}]\n")
    (tmp_path / "torn.yaml").write_text("[{address: '127.0.0.1:1'\n")
    config = tmp_path / "autopgo.yaml"
    config.write_text(
        "apps:\n"
        "  - name: shop\n"
        "    scrape: {targets: {consul: {address: '127.0.0.1:9', timeout: 500ms}}}\n"
        "  - name: fixed\n"
        "    scrape: {targets: {static: [{address: '127.0.0.1:1'}]}}\n"
        "  - name: listed\n"
        "    scrape: {targets: {file: good.yaml}}\n"
        "  - name: missing\n"
        "    scrape: {targets: {file: nothing-here.yaml}}\n"
        "  - name: wrong\n"
        "    scrape: {targets: {file: bad.yaml}}\n"
        "  - name: torn\n"
        "    scrape: {targets: {file: torn.yaml}}\n"
        "  - name: uploads-only\n"
    )
    blobs = f"file://{tmp_path / 'blobs'}"
    server = create_server(ServerConfig(port=0, blob_store=blobs, pipeline_config=str(config), targets_every=0.2))
    thread = __import__("threading").Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        body = httpx.get(f"{server.url}/api/health", timeout=10).json()
        (tmp_path / "bad.yaml").write_text("[{address: '127.0.0.1:2'}]\n")  # fixed: ok at the next listing

        def wrong_listed() -> dict[str, Any] | None:
            entries = httpx.get(f"{server.url}/api/health", timeout=10).json()["targets"]
            return next((t for t in entries if t["app"] == "wrong" and t["status"] == "ok"), None)

        fixed = wait_for("the fixed target file listed", wrong_listed, 10, every=0.1)
    finally:
        server.shutdown()
        server.server_close()
        server.api.close()
    assert body["status"] == "ok"
    first_checked = {t["app"]: t["checkedAt"] for t in body["targets"]}
    targets = {t.pop("app"): t for t in body["targets"]}
    for t in targets.values():  # when each was listed, and last listed its targets
        assert "checkedAt" in t and ("lastOk" in t) == (t["status"] == "ok"), t
        t.pop("checkedAt"), t.pop("lastOk", None)
    assert list(targets) == ["fixed", "listed", "missing", "shop", "torn", "wrong"]  # by name; no source, no entry
    assert targets["fixed"] == {"source": "static", "status": "ok"}
    assert targets["listed"] == {"source": "file", "status": "ok"}
    assert targets["missing"] == {
        "source": "file",
        "status": "down",
        "message": f"cannot read {tmp_path / 'nothing-here.yaml'}: No such file or directory",
    }
    assert targets["wrong"] == {
        "source": "file",
        "status": "down",
        "message": f"{tmp_path / 'bad.yaml'}:1: [0].address: expected host:port, not 'no port'",
    }
    assert targets["torn"]["source"] == "file" and targets["torn"]["status"] == "down"
    assert targets["torn"]["message"].startswith(f"{tmp_path / 'torn.yaml'}:2:1: not valid YAML: ")
    assert targets["shop"]["source"] == "consul" and targets["shop"]["status"] == "down"
    assert "127.0.0.1:9" in targets["shop"]["message"]
    assert all("\n" not in t.get("message", "") for t in targets.values())
    assert fixed["lastOk"] == fixed["checkedAt"] > first_checked["wrong"]


def test_api_health_answers_at_once_while_a_target_source_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source that stops answering leaves /api/health fast: it reports the source stale, with the
    time it last listed its targets; one that never answered is unknown. Neither probe asks a source."""
    import threading

    import httpx

    from api.config import ServerConfig
    from api.server import create_server

    for name in ("CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL", "CONSUL_CACERT"):
        monkeypatch.delenv(name, raising=False)
    answering, silent = FakeConsul(CONSUL_ENTRIES), FakeConsul(CONSUL_ENTRIES)
    silent.fail, silent.slow_seconds = "slow", 60.0
    with answering.running(), silent.running():
        config = tmp_path / "autopgo.yaml"
        config.write_text(
            "apps:\n"
            f"  - name: {APP}\n"
            f"    scrape: {{targets: {{consul: {{address: '{answering.url}', token: consul-token, timeout: 60s}}}}}}\n"
            "  - name: silent\n"
            f"    scrape: {{targets: {{consul: {{address: '{silent.url}', token: consul-token, timeout: 60s}}}}}}\n"
            "  - name: fixed\n"
            "    scrape: {targets: {static: [{address: '127.0.0.1:1'}]}}\n"
        )
        blobs = f"file://{tmp_path / 'blobs'}"
        server = create_server(ServerConfig(port=0, blob_store=blobs, pipeline_config=str(config), targets_every=0.2))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        took: list[float] = []

        def probe(path: str) -> dict[str, Any]:
            started = time.monotonic()
            response = httpx.get(f"{server.url}{path}", timeout=30)
            took.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
            return response.json()

        def targets() -> dict[str, dict[str, Any]]:
            return {t.pop("app"): t for t in probe("/api/health")["targets"]}

        try:
            first = wait_for("a first listing", lambda: (t := targets())[APP]["status"] == "ok" and t, 10, every=0.05)
            before = len(answering.seen)
            answering.fail, answering.slow_seconds = "slow", 60.0  # from now on, every request hangs
            stale = wait_for("the hanging source reported stale", lambda: (t := targets())[APP]["status"] == "stale" and t, 10, every=0.1)
            # The request that hangs has arrived; no listing is started while one hangs.
            wait_for("the hanging requests", lambda: len(answering.seen) > before and silent.seen, 10, every=0.05)
            asked = (len(answering.seen), len(silent.seen))
            later = [targets() for _ in range(5)]
            for _ in range(5):
                assert probe("/api/ready") == {"status": "ready"}
            assert (len(answering.seen), len(silent.seen)) == asked  # the probes asked no source
        finally:
            server.shutdown()
            server.server_close()
            server.api.close()
    assert max(took) < 1.0, took
    assert stale[APP]["lastOk"] == first[APP]["lastOk"] == first[APP]["checkedAt"]
    assert stale[APP]["source"] == "consul" and stale[APP]["message"].startswith("no listing finished for ")
    assert stale[APP]["message"].endswith("; the last listed its targets")
    assert stale["silent"] == {"source": "consul", "status": "unknown", "message": "not listed yet"}
    assert stale["fixed"]["status"] == "ok" and stale["fixed"]["checkedAt"] > first["fixed"]["checkedAt"]
    assert all(t[APP]["status"] == "stale" and t["silent"]["status"] == "unknown" for t in later)


def test_api_logs_a_source_that_cannot_list_once_per_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A source listed every 0.1 s that keeps failing is one warning (app, source, URL, why; no
    traceback), another only when the reason changes, and one line when it lists again."""
    import threading

    from api.config import ServerConfig
    from api.server import create_server

    with FakeKubernetes(list(PODS)).running() as k8s:
        k8s.fail = "500"
        kc = kubeconfig(tmp_path / "kc", k8s.url, token="k8s-token")
        config = tmp_path / "autopgo.yaml"
        config.write_text(
            "apps:\n"
            f"  - name: {APP}\n"
            f"    scrape: {{targets: {{kubernetes: {{kubeconfig: {kc}}}}}}}\n"
            "  - name: missing\n"
            "    scrape: {targets: {file: nothing-here.yaml}}\n"
            "  - name: fixed\n"
            "    scrape: {targets: {static: [{address: '127.0.0.1:1'}]}}\n"
        )
        blobs = f"file://{tmp_path / 'blobs'}"
        with caplog.at_level(logging.INFO, logger="autopgo.api"):
            settings = ServerConfig(port=0, blob_store=blobs, pipeline_config=str(config), targets_every=0.1)
            server = create_server(settings)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            try:

                def listings(count: int) -> None:
                    asked = len(k8s.seen)
                    wait_for(f"{count} more listings", lambda: len(k8s.seen) >= asked + count, 10, every=0.05)

                listings(5)
                k8s.fail = "401"  # another reason
                listings(5)
                k8s.fail = None
                listings(5)
            finally:
                server.shutdown()
                server.server_close()
                server.api.close()
    logged = [r for r in caplog.records if r.name == "autopgo.api" and "target source" in r.getMessage()]
    lines = [(r.levelname, r.getMessage()) for r in logged]
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
    url = f"{k8s.url}/api/v1/pods?"
    mine = [line for line in lines if f" of {APP} " in line[1]]
    assert len(mine) == 3, lines
    assert mine[0][0] == "WARNING" and mine[0][1].startswith(f"target source kubernetes of {APP} cannot list its targets: ")
    assert url in mine[0][1] and "HTTP 500: internal error: the leader is gone" in mine[0][1], mine
    assert mine[1][0] == "WARNING" and url in mine[1][1] and "HTTP 401" in mine[1][1], mine
    assert mine[2] == ("INFO", f"target source kubernetes of {APP} lists its targets again")
    missing = f"cannot read {tmp_path / 'nothing-here.yaml'}: No such file or directory"
    assert [line for line in lines if " of missing " in line[1]] == [
        ("WARNING", f"target source file of missing cannot list its targets: {missing}")
    ]
    assert not [line for line in lines if " of fixed " in line[1]]
