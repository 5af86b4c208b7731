"""A window, builds and workloads (profiling/pipeline/parts.py) on the filesystem store: what is served,
ageing out, deletes, switching the settings, and how workloads reach the store (targets,
discovery, the API, the CLI). Against the Go toolchain: test_parts_go.py; crashes: test_crashes.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from apiserver import RecordingSink, thread_server
from fakeapis import FakeConsul, FakeKubernetes, FakeNomad, consul_entry, nomad_registration, pod
from test_batches import counts, upload_profile

from profiling.config import parse_config
from profiling.discovery import (
    ConsulTargetSource,
    FileTargets,
    KubernetesTargetSource,
    NomadTargetSource,
    Target,
    parse_target_list,
)
from profiling.errors import ConfigError, ProfileError
from profiling.pipeline import (
    BUCKETS,
    Batch,
    CleanRule,
    PartsPolicy,
    batch_key,
    clean,
    decode_parts,
    delete_app,
    encode_parts,
    go_round,
    has_data,
    mark_deleted,
    merge_markdown,
    merge_pending,
    merged_key,
    needs_cleanup,
    new_staging_key,
    parts_key,
    read_merged,
    read_parts,
    refresh_due,
    scale,
    staging_prefix,
    workload_of,
)
from profiling.pprof import Location, Mapping, Sample, ValueType, encode, from_profile, to_profile
from profiling.storage import open_store

APP = "shop"
AUTOPGO = Path(sys.executable).with_name("autopgo")
HOUR = 3600 * 10**9
WINDOW = timedelta(hours=72)
WIDTH = 72 * HOUR // BUCKETS  # 6h
NOW = 300_000 * WIDTH + HOUR  # one hour into a bucket
WINDOWED = PartsPolicy.of(window=WINDOW)


@pytest.fixture
def store(tmp_path: Path):
    blobs = open_store(str(tmp_path / "blobs"))
    yield blobs
    blobs.close()


def stage(store, n: int, *, collected: int | None, uploaded: int = NOW - 1, workload: str = "", build: str = "",
          weight: int = 1, app: str = APP) -> str:
    """Upload ``n`` (``weight`` samples in its own function) with ``time_nanos`` ``collected`` (None: 0),
    of a binary with the ``build`` id (none: no mappings)."""
    p = upload_profile(n, weight)
    if build:
        p.mappings = [Mapping(1, 0x400000, 0x800000, 0, "/bin/service", build, has_functions=True)]
        p.locations = [Location(loc.id, 1, 0x400000 + loc.address, loc.lines) for loc in p.locations]
    p.time_nanos = collected or 0
    key = new_staging_key(app, uploaded, 0, workload)
    store.put(key, encode(p), if_none_match=True)
    return key


def merged_counts(store) -> dict[str, int]:
    current = read_merged(store, APP)
    return counts(to_profile(current.tables)) if current else {}


def merge_at(store, now: int, policy: PartsPolicy = WINDOWED, **kw):
    return merge_pending(store, APP, policy=policy, clock=lambda: now, **kw)


# --------------------------------------------------------------------------- no settings: as before


def test_without_the_settings_the_store_holds_what_it_always_did(store) -> None:
    for n in range(3):
        stage(store, n, collected=NOW - 1000 * HOUR)
    report = merge_pending(store, APP)

    assert sorted(info.key for info in store.list()) == [batch_key(APP), merged_key(APP)]
    assert set(json.loads(store.get(batch_key(APP)))) == {"id", "generation", "keys", "open", "opened", "since"}
    current = read_merged(store, APP)
    assert [c.split("=")[0] for c in current.tables.header.comments] == ["autopgo.batch", "autopgo.generation"]
    assert merged_counts(store) == {f"main.upload{n}": 1 for n in range(3)}  # no window: ages never matter
    assert report.expired == [] and report.derived is None


# --------------------------------------------------------------------------- window


def test_window_serves_the_uploads_collected_within_it_by_time_nanos_clamped_to_the_upload(store) -> None:
    stage(store, 1, collected=NOW - 1 * HOUR)
    stage(store, 2, collected=NOW - 70 * HOUR)
    old = stage(store, 3, collected=NOW - 90 * HOUR)  # older than the window: into nothing
    stage(store, 4, collected=None, uploaded=NOW - 2 * HOUR)  # no time_nanos: its upload time
    zero_old = stage(store, 5, collected=None, uploaded=NOW - 100 * HOUR)
    future_old = stage(store, 6, collected=NOW, uploaded=NOW - 100 * HOUR)  # clamped to its (old) upload
    report = merge_at(store, NOW)

    assert merged_counts(store) == {"main.upload1": 1, "main.upload2": 1, "main.upload4": 1}
    assert sorted(report.expired) == sorted([old, zero_old, future_old])
    assert len(report.merged) == 3
    assert list(store.list(staging_prefix(APP))) == []  # expired uploads are accepted and removed too
    labels = read_merged(store, APP).labels
    assert labels.window == (NOW - 70 * HOUR, NOW - 1 * HOUR) and labels.parts == 3


def test_the_window_edge_is_rounded_out_to_a_bucket_of_a_twelfth_of_it(store) -> None:
    stage(store, 1, collected=NOW - 72 * HOUR - HOUR // 2)  # its 6h bucket still overlaps the window
    stage(store, 2, collected=NOW - 78 * HOUR + HOUR // 2)  # its bucket ended 73h ago
    report = merge_at(store, NOW)
    assert merged_counts(store) == {"main.upload1": 1}
    assert len(report.expired) == 1


def test_data_age_out_without_uploads_at_the_sweep(store) -> None:
    stage(store, 1, collected=NOW - 1 * HOUR)
    stage(store, 2, collected=NOW - 70 * HOUR)  # bucket [NOW-73h, NOW-67h): counts until NOW+5h
    merge_at(store, NOW)
    assert refresh_due(store, APP, WINDOWED, NOW + 4 * HOUR) is False
    assert merge_at(store, NOW + 4 * HOUR).batches == 0  # nothing to do: nothing written
    assert merged_counts(store) == {"main.upload1": 1, "main.upload2": 1}

    assert refresh_due(store, APP, WINDOWED, NOW + 5 * HOUR) is True
    report = merge_at(store, NOW + 5 * HOUR)
    assert report.batches == 1 and report.merged == []
    assert merged_counts(store) == {"main.upload1": 1}
    assert [p.uploads for p in read_parts(store, APP).record.parts] == [1]  # the expired part is dropped
    assert refresh_due(store, APP, WINDOWED, NOW + 5 * HOUR) is False

    merge_at(store, NOW + 100 * HOUR)  # everything aged out: an empty profile, which builds take as none
    current = read_merged(store, APP)
    assert current is not None and current.tables.sample_values == [] and current.labels.parts == 0
    assert current.labels.window is None
    assert refresh_due(store, APP, WINDOWED, NOW + 1000 * HOUR) is False
    assert not has_data(store, APP)


def test_the_sweep_merges_the_apps_whose_data_aged_out(store) -> None:
    from flows.merge import ageing

    config = parse_config({"apps": [{"name": APP, "window": "72h"}, {"name": "plain"}, {"name": "idle", "window": "1h"}]})
    stage(store, 1, collected=NOW - 70 * HOUR)
    stage(store, 2, collected=NOW - HOUR, app="plain")
    merge_at(store, NOW)
    merge_pending(store, "plain")
    assert ageing(store, config, NOW + 4 * HOUR) == set()
    assert ageing(store, config, NOW + 5 * HOUR) == {APP}
    merge_pending(store, APP, policy=config.app(APP).parts, clock=lambda: NOW + 5 * HOUR)  # as the sweep does
    assert ageing(store, config, NOW + 5 * HOUR) == set() and merged_counts(store) == {}
    assert ageing(store, parse_config({"apps": [{"name": APP, "window": "24h"}]}), NOW + 5 * HOUR) == {APP}


def test_setting_a_window_takes_the_merged_profile_as_a_part_dated_when_written(store) -> None:
    for n in range(2):
        stage(store, n, collected=NOW - 1000 * HOUR)
    merge_pending(store, APP)
    written = read_merged(store, APP).info.last_modified
    now = int(written.timestamp()) * 10**9

    assert refresh_due(store, APP, WINDOWED, now) is True  # the settings changed
    merge_at(store, now)
    assert merged_counts(store) == {"main.upload0": 1, "main.upload1": 1}
    assert read_merged(store, APP).labels.parts == 1
    merge_at(store, now + 80 * HOUR)
    assert merged_counts(store) == {}

    # and back: without the settings, batches merge into the profile as before
    stage(store, 7, collected=NOW)
    merge_pending(store, APP)
    assert merged_counts(store) == {"main.upload7": 1}
    assert read_merged(store, APP).labels.parts is None


# --------------------------------------------------------------------------- builds


def test_builds_keep_the_newest_n_by_when_each_was_first_seen(store) -> None:
    policy = PartsPolicy.of(builds=1)
    stage(store, 1, collected=NOW - 50 * HOUR, build="old")
    merge_at(store, NOW, policy)
    assert merged_counts(store) == {"main.upload1": 1}
    assert read_merged(store, APP).labels.build == "old"

    stage(store, 2, collected=NOW - 2 * HOUR, build="new")  # the release replaces the old data at once
    stage(store, 3, collected=NOW - 1 * HOUR, build="old")  # a straggler of the old build: superseded
    report = merge_at(store, NOW, policy)
    assert merged_counts(store) == {"main.upload2": 1}
    assert len(report.superseded) == 1 and len(report.merged) == 1
    assert read_merged(store, APP).labels.build == "new"
    assert report.derived is not None and report.derived.builds == [("new", 2)]
    assert "## CPU by build" in merge_markdown(report) and "| `new` | 100% |" in merge_markdown(report)
    assert {p.build for p in read_parts(store, APP).record.parts} == {"new"}

    merge_at(store, NOW, PartsPolicy.of(builds=2))  # more builds kept from now on; dropped data stays dropped
    stage(store, 4, collected=NOW, build="old")
    merge_at(store, NOW, PartsPolicy.of(builds=2))
    assert merged_counts(store) == {"main.upload2": 1, "main.upload4": 1}


# --------------------------------------------------------------------------- workloads


def test_workload_weights_scale_each_workload_and_leave_the_unweighted_as_measured(store) -> None:
    policy = PartsPolicy.of(workloads={"api": 3, "batch": 1})
    stage(store, 1, collected=NOW, workload="api", weight=10)  # main.upload1: 10 samples
    stage(store, 2, collected=NOW, workload="batch", weight=10)
    stage(store, 3, collected=NOW, weight=8)  # no workload
    stage(store, 4, collected=NOW, workload="other", weight=6)  # a workload without a weight
    report = merge_at(store, NOW, policy)

    # api and batch measured 11 samples each (their leaf and main): 3:1 of their 22
    assert report.derived is not None and report.derived.ratios == {"api": 1.5, "batch": 0.5}
    assert merged_counts(store) == {"main.upload1": 15, "main.upload2": 5, "main.upload3": 8, "main.upload4": 6}
    assert "## Workloads scaled" in merge_markdown(report)


def test_a_weighted_workload_alone_is_not_scaled(store) -> None:
    stage(store, 1, collected=NOW, workload="api", weight=10)
    report = merge_at(store, NOW, PartsPolicy.of(workloads={"api": 3, "batch": 1}))
    assert report.derived.ratios == {"api": 1.0}
    assert merged_counts(store) == {"main.upload1": 10}


def test_scale_rounds_as_go_and_keeps_only_samples_left_non_zero() -> None:
    assert [go_round(x) for x in (0.5, 1.5, 2.5, -0.5, 0.49999999999999994, 2.4)] == [1, 2, 3, -1, 0, 2]
    p = upload_profile(1, weight=3)  # samples (3, 30ms) and (1, 10ms)
    scaled = to_profile(scale(from_profile(p), 0.2))
    assert scaled.samples == [Sample(p.samples[0].location_ids, (1, 6_000_000)), Sample(p.samples[1].location_ids, (0, 2_000_000))]
    assert to_profile(scale(from_profile(p), 1e-8)).samples == []  # every value rounds to 0
    assert scale(from_profile(p), 1.0) == from_profile(p)


# --------------------------------------------------------------------------- deletes, clean, rejects


def test_delete_removes_the_parts_and_later_uploads_start_afresh(store) -> None:
    stage(store, 1, collected=NOW - HOUR)
    merge_at(store, NOW)
    assert has_data(store, APP)
    mark_deleted(store, APP)
    assert needs_cleanup(store, APP) and not has_data(store, APP)

    stage_key = new_staging_key(APP, NOW - 1, 1)
    p = upload_profile(2)
    p.time_nanos = NOW - HOUR
    store.put(stage_key, encode(p))
    merge_at(store, NOW)  # the old generation's parts are not merged into
    assert merged_counts(store) == {"main.upload2": 1}
    assert read_parts(store, APP).record.generation == 1

    mark_deleted(store, APP)
    report = delete_app(store, APP, lock_timeout=0)
    assert report is not None and parts_key(APP) in report.removed and merged_key(APP) in report.removed
    assert not needs_cleanup(store, APP)
    assert [info.key for info in store.list()] == [f"{APP}/generation.json"]


def test_clean_removes_the_parts_with_the_profile(store) -> None:
    stage(store, 1, collected=NOW - HOUR)
    merge_at(store, NOW)
    removed = clean(store, CleanRule(larger_than=0))
    assert [info.key for info in removed] == [merged_key(APP)]
    assert read_parts(store, APP) is None and read_merged(store, APP) is None


def test_an_upload_that_cannot_be_merged_with_the_rest_is_rejected(store) -> None:
    stage(store, 1, collected=NOW - HOUR)
    heap = upload_profile(2)
    heap.sample_types = [ValueType("alloc_space", "bytes"), ValueType("inuse_space", "bytes")]
    heap.time_nanos = NOW - HOUR
    store.put(new_staging_key(APP, NOW), encode(heap))  # after the good one
    report = merge_at(store, NOW)
    assert len(report.rejected) == 1 and "incompatible sample types" in report.rejected[0][1]
    assert merged_counts(store) == {"main.upload1": 1}


def test_parts_record_round_trips_and_refuses_what_is_not_one(store) -> None:
    stage(store, 1, collected=NOW - HOUR, workload="api", build="b")
    merge_at(store, NOW, PartsPolicy.of(window=WINDOW, builds=1, workloads={"api": 1}))
    data = store.get(parts_key(APP))
    record = decode_parts(data)
    assert encode_parts(record) == data
    assert [(p.build, p.workload, p.uploads) for p in record.parts] == [("b", "api", 1)]
    for bad in (b"", b"autopgo-parts 1\n{}\n", data[:-1]):
        with pytest.raises(ProfileError, match="not a parts record"):
            decode_parts(bad)


def test_batch_record_of_an_app_with_parts_says_when_to_derive_again() -> None:
    batch = Batch("b", 0, (), open=False, expires=5, policy=WINDOWED.fingerprint())
    assert Batch.from_json(batch.to_json()) == batch
    assert not batch.refresh_due(WINDOWED, 4) and batch.refresh_due(WINDOWED, 5)
    assert batch.refresh_due(PartsPolicy.of(window=timedelta(hours=1)), 0)  # other settings
    assert not batch.refresh_due(PartsPolicy(), 10)  # no settings: never
    assert not Batch("b", 0, ("k",), expires=5, policy=WINDOWED.fingerprint()).refresh_due(WINDOWED, 10)  # open


# --------------------------------------------------------------------------- configuration


def test_configuration_keys() -> None:
    config = parse_config({"apps": [
        {"name": "a", "window": "72h", "builds": 2, "workloads": {"api": 3, "batch": 1.5}},
        {"name": "b"},
    ]})
    assert config.app("a").parts == PartsPolicy(WINDOW, 2, (("api", 3.0), ("batch", 1.5)))
    assert config.app("a").parts.width_ns == 6 * HOUR
    assert config.app("b").parts == PartsPolicy() and not config.app("b").parts.active
    with pytest.raises(ConfigError) as info:
        parse_config({"apps": [{"name": "a", "window": "72", "builds": 0, "workloads": {"a b": 1, "x": -1, "y": "2"}}]})
    assert set(info.value.problems) == {
        "app a: builds: expected a whole number of at least 1, not 0",
        "app a: workloads.a b: a workload name is 1 to 63 letters, digits, '_', '.' and '-', "
        "starting with a letter or digit",
        "app a: workloads.x: expected a positive number, not -1",
        "app a: workloads.y: expected a positive number, not '2'",
        "app a: window: 72 has no unit: write 72s, 1m or 1h30m",
    }
    with pytest.raises(ConfigError, match="workloads: expected a mapping"):
        parse_config({"apps": [{"name": "a", "workloads": []}]})


# --------------------------------------------------------------------------- workloads named by targets and uploads


def test_file_and_static_targets_name_a_workload(tmp_path: Path) -> None:
    data = [{"address": "10.0.0.1:6060", "workload": "api"}, {"address": "10.0.0.2:6060"}]
    assert parse_target_list(data, "targets") == [Target("10.0.0.1:6060", workload="api"), Target("10.0.0.2:6060")]
    with pytest.raises(ConfigError, match=r"targets\[0\]\.workload: expected 1 to 63"):
        parse_target_list([{"address": "10.0.0.1:6060", "workload": "a/b"}], "targets")
    path = tmp_path / "targets.yaml"
    path.write_text(json.dumps(data))
    saved = tmp_path / "state" / "saved.json"
    assert FileTargets(path, saved).targets()[0].workload == "api"
    path.write_text("[broken")
    assert FileTargets(path, saved).targets()[0].workload == "api"  # the last good list keeps it
    config = parse_config({"apps": [{"name": "a", "scrape": {"targets": {"static": data}}}]})
    assert config.app("a").scrape.targets.static[0].workload == "api"


def test_kubernetes_label_consul_and_nomad_tags_name_a_workload(tmp_path: Path) -> None:
    pods = [
        pod("api", "10.0.0.1", labels={"autopgo.scrape.workload": "api"}),
        pod("plain", "10.0.0.2"),
        pod("bad", "10.0.0.3", labels={"autopgo.scrape.workload": "no way"}),
    ]
    with FakeKubernetes(pods).running() as k8s:
        config = tmp_path / "kubeconfig"
        config.write_text(json.dumps({
            "current-context": "t", "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u"}}],
            "clusters": [{"name": "c", "cluster": {"server": k8s.url}}], "users": [{"name": "u", "user": {"token": "k8s-token"}}],
        }))
        found = KubernetesTargetSource("checkout", namespace="shop", kubeconfig=config).targets()
    assert [(t.address, t.workload) for t in found] == [("10.0.0.1:6060", "api"), ("10.0.0.2:6060", "")]

    tags = ["autopgo.scrape=true", "autopgo.scrape.app=checkout"]
    with FakeConsul([consul_entry("svc", 7000, [*tags, "autopgo.scrape.workload=batch"])]).running() as consul:
        found = ConsulTargetSource("checkout", consul.url, token="consul-token").targets()
    assert [t.workload for t in found] == ["batch"]
    with FakeNomad([nomad_registration("svc", "10.2.0.1", 7000, [*tags, "autopgo.scrape.workload=api"])]).running() as nomad:
        found = NomadTargetSource("checkout", nomad.url, token="nomad-token").targets()
    assert [t.workload for t in found] == ["api"]


def test_api_stages_an_upload_for_its_workload_and_sends_what_the_profile_holds(store) -> None:
    sink = RecordingSink()
    with thread_server(store, sink) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        p = upload_profile(1)
        p.time_nanos = time.time_ns() - HOUR
        response = client.post(f"/api/profile/{APP}", params={"workload": "api"}, content=encode(p))
        assert response.status_code == 201, response.text
        assert workload_of(response.json()["key"]) == "api"
        bad = client.post(f"/api/profile/{APP}", params={"workload": "a b"}, content=encode(p))
        assert bad.status_code == 400 and "invalid workload" in bad.json()["message"]

        merge_pending(store, APP)  # no settings: no headers
        plain = client.get(f"/api/profile/{APP}")
        assert plain.status_code == 200 and "autopgo-window-start" not in plain.headers

        collected = time.time_ns() - 2 * HOUR
        for n, ago in ((2, 2 * HOUR), (3, HOUR)):
            stage(store, n, collected=collected + 2 * HOUR - ago, uploaded=time.time_ns(), build="b2", app="win")
        merge_pending(store, "win", policy=WINDOWED)
        for params in ({}, {"trim": "pgo"}):
            got = client.get("/api/profile/win", params=params)
            assert got.status_code == 200
            start = datetime.fromisoformat(got.headers["autopgo-window-start"])
            end = datetime.fromisoformat(got.headers["autopgo-window-end"])
            assert start == datetime.fromtimestamp(collected // 10**6 / 1000, UTC)
            assert end - start == timedelta(hours=1) and end < datetime.now(UTC)
            assert got.headers["autopgo-build"] == "b2"
            again = client.get("/api/profile/win", params=params, headers={"If-None-Match": got.headers["etag"]})
            assert again.status_code == 304 and again.headers["autopgo-build"] == "b2"


def test_cli_upload_names_the_workload(store, tmp_path: Path) -> None:
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(encode(upload_profile(1)))
    with thread_server(store, RecordingSink()) as server:
        done = subprocess.run(
            [str(AUTOPGO), "upload", "--api-url", server.url, "--app", APP, "--workload", "batch",
             str(path)], capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert workload_of(done.stdout.strip()) == "batch"
    bad = subprocess.run([str(AUTOPGO), "upload", "--app", APP, "--workload", "x/y", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid workload" in bad.stderr


@pytest.mark.slow
def test_scrapes_upload_for_each_targets_workload(store, tmp_path: Path, service_binary: Path) -> None:
    import asyncio

    import harness
    from test_scrape_cli import write_config

    from profiling.discovery import new_client, scrape_async

    with harness.Service(service_binary).start() as first, harness.Service(service_binary).start() as second:
        # the scrape flow's core: the upload is told the target
        targets = [Target(first.address, workload="api"), Target(second.address)]
        seen: dict[str, str] = {}

        async def upload(data: bytes, target: Target) -> str:
            seen[target.address] = target.workload
            return "key"

        async def run() -> None:
            async with new_client() as client:
                await scrape_async(targets, 2, timedelta(seconds=1), upload, client=client, with_target=True)

        asyncio.run(run())
        assert seen == {first.address: "api", second.address: ""}

        # autopgo scrape, uploading to the API
        with thread_server(store, RecordingSink()) as server:
            config = write_config(tmp_path, [{"address": first.address, "workload": "batch"}, {"address": second.address}],
                                  api_url=server.url)
            done = subprocess.run([str(AUTOPGO), "scrape", "checkout", "-c", str(config)], capture_output=True,
                                  text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(workload_of(info.key) for info in store.list("checkout/staging/")) == ["", "batch"]
