"""The pipeline on a shared Prefect server: `autopgo deploy`, and the checks `autopgo worker` makes first.

``deploy`` registers ``deployments(cfg)`` for a process work pool, with their
flows found by module path in the installed package (no image, no code
storage), and removes the pipeline's deployments the configuration no longer
has, so that the server holds exactly the configuration's schedules.

A deployment belongs to the pipeline when its flow is one of the pipeline's
flows and it carries the ``autopgo`` tag, which ``deploy`` (and prefect.yaml)
give it: one pipeline per Prefect server (deployment names are the server's).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterTags,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType, WorkPool
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.deployments.runner import DeploymentApplyError, RunnerDeployment
from prefect.exceptions import ObjectNotFound, PrefectException
from prefect.settings import PREFECT_API_URL

from profiling.config import Config
from profiling.errors import AutopgoError

from .deployments import deployments, flow_names, for_workers

OWNER_TAG = "autopgo"
POOL_TYPE = "process"
TIDY_PAUSES = (0.0, 2.0)  # a second look catches an insert the scheduler service had in flight


class PrefectSetupError(AutopgoError, ValueError):
    """The Prefect server or work pool cannot be used as asked; the message is one line for the user."""


@dataclass(frozen=True)
class Change:
    """What ``deploy`` did to a deployment (or the work pool): ``created``, ``updated`` or ``removed``."""

    action: str
    what: str  # a deployment as Prefect names it, flow/deployment; or "work pool NAME"


def api_url() -> str:
    """The Prefect API the commands talk to (PREFECT_API_URL, or the Prefect profile's).

    Refuses to go on without one: Prefect's client would otherwise start a
    temporary server of its own, and register the pipeline there.
    """
    url = PREFECT_API_URL.value()
    if not url:
        raise PrefectSetupError("PREFECT_API_URL is not set: point it at the Prefect server's API, e.g. http://prefect:4200/api")
    return url


@contextmanager
def connect() -> Iterator[SyncPrefectClient]:
    """A client of the server at ``api_url()``, once it answers its health check."""
    url = api_url()
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
        if problem is not None:
            raise PrefectSetupError(f"cannot reach the Prefect server at {url}: {_one_line(problem)}")
        yield client


def work_pool(client: SyncPrefectClient, name: str, create: bool = False) -> tuple[WorkPool, bool]:
    """The process work pool ``name`` and whether it was created now (only with ``create``)."""
    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        if not create:
            raise PrefectSetupError(
                f"no work pool {name!r} on {api_url()}: create it with autopgo deploy --create-pool "
                f"or prefect work-pool create {name} --type process"
            ) from None
        from prefect.workers.process import ProcessWorker

        template = ProcessWorker.get_default_base_job_template()
        return client.create_work_pool(WorkPoolCreate(name=name, type=POOL_TYPE, base_job_template=template)), True
    if pool.type != POOL_TYPE:
        raise PrefectSetupError(f"work pool {name!r} is of type {pool.type!r}: autopgo runs on a {POOL_TYPE!r} pool")
    return pool, False


def deploy(cfg: Config, pool: str, create_pool: bool = False) -> list[Change]:
    """Register the configuration's deployments for ``pool`` and remove the pipeline's others.

    Each deployment is created or updated with the configuration's schedules and
    triggers (an update replaces its schedules and its automations); a
    deployment of the pipeline that the configuration no longer has (a scrape
    interval no app uses, the clean without ``clean``) is deleted, and with it
    its scheduled runs. Deleted rather than paused: nothing is left that could
    be resumed by mistake or pile up, and a deploy that needs it again creates it.
    """
    wanted = [_owned(for_workers(d)) for d in deployments(cfg)]
    changes: list[Change] = []
    with connect() as client:
        with _failing_as(f"cannot read work pool {pool!r}"):
            _, created = work_pool(client, pool, create_pool)
        if created:
            changes.append(Change("created", f"work pool {pool}"))
        for deployment in wanted:
            with _failing_as(f"cannot register {deployment.full_name}"):
                exists = _exists(client, deployment.full_name)
                deployment.apply(work_pool_name=pool)
            changes.append(Change("updated" if exists else "created", deployment.full_name))
        keep = {d.full_name for d in wanted}
        with _failing_as("cannot list the pipeline's deployments"):
            found = _pipeline_deployments(client)
        removed: set[UUID] = set()
        for name, found_deployment in sorted(found.items()):
            if name not in keep:
                removed.add(found_deployment.id)
                with _failing_as(f"cannot remove {name}"):
                    client.delete_deployment(found_deployment.id)
                changes.append(Change("removed", name))
        for pause in TIDY_PAUSES:
            time.sleep(pause)
            with _failing_as("cannot tidy the pipeline's scheduled runs"):
                _drop_stale_runs(client, removed)
    return changes


def _owned(deployment: RunnerDeployment) -> RunnerDeployment:
    if OWNER_TAG not in deployment.tags:
        deployment.tags = [*deployment.tags, OWNER_TAG]
    return deployment


def _drop_stale_runs(client: SyncPrefectClient, removed: set[UUID]) -> None:
    """Delete the pipeline's scheduled runs that its deployments' schedules, as they are now, would not make.

    Prefect deletes a deployment's scheduled runs when its schedules change or it
    is deleted, but its scheduler service may be inserting runs read from the old
    schedules at that very moment; those would fire on the old interval, or for a
    removed deployment, until they ran out.
    """
    schedules = {d.id: [s.schedule for s in d.schedules] for d in _pipeline_deployments(client).values()}
    scheduled = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=sorted(flow_names()))),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
    )
    for run in scheduled:
        if not run.auto_scheduled or run.deployment_id is None or run.expected_start_time is None:
            continue
        if run.deployment_id in removed or (
            run.deployment_id in schedules and not _made_by(schedules[run.deployment_id], run.expected_start_time)
        ):
            client.delete_flow_run(run.id)


def _made_by(schedules: list[Any], when: datetime) -> bool:
    intervals = [s for s in schedules if isinstance(s, IntervalSchedule)]
    if len(intervals) != len(schedules):
        return True  # only interval schedules can be checked this way
    return any(on_schedule(when, s) for s in intervals)


def on_schedule(when: datetime, schedule: IntervalSchedule) -> bool:
    """Whether ``when`` is one of the schedule's points: its anchor plus a whole number of intervals."""
    anchor = schedule.anchor_date
    if anchor.tzinfo is None:
        anchor = anchor.replace(tzinfo=UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # In whole microseconds: Prefect may hand out pendulum's types, whose arithmetic differs.
    offset = round((when.timestamp() - anchor.timestamp()) * 1_000_000)
    return offset % round(schedule.interval.total_seconds() * 1_000_000) == 0


def _exists(client: SyncPrefectClient, full_name: str) -> bool:
    try:
        client.read_deployment_by_name(full_name)
    except ObjectNotFound:
        return False
    return True


def _pipeline_deployments(client: SyncPrefectClient) -> dict[str, DeploymentResponse]:
    """Each deployment on the server that belongs to the pipeline, by flow/deployment name."""
    of_pipeline = FlowFilter(name=FlowFilterName(any_=sorted(flow_names())))
    flows = {f.id: f.name for f in client.read_flows(flow_filter=of_pipeline)}
    found = client.read_deployments(
        flow_filter=of_pipeline, deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[OWNER_TAG]))
    )
    return {f"{flows[d.flow_id]}/{d.name}": d for d in found if d.flow_id in flows}


@contextmanager
def _failing_as(what: str) -> Iterator[None]:
    """Prefect's and the transport's errors as one line saying ``what`` failed."""
    try:
        yield
    except (DeploymentApplyError, PrefectException, httpx.HTTPError) as exc:
        raise PrefectSetupError(f"{what}: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
