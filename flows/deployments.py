"""The deployments of the pipeline: what runs on a schedule and what an event triggers.

Their number does not grow with the fleet: one scrape deployment per distinct
scrape interval (its runs start every tick and scrape the apps due in it), one
merge deployment triggered by uploads for every app, throttled as a whole, and
the delete, sweep and clean deployments. It is built from autopgo.yaml for
`autopgo up`, which serves it from one process, and for `autopgo deploy`, which
registers it on a shared Prefect server for workers (``for_workers``).
prefect.yaml declares the deployments without a schedule, for `prefect deploy
--all`; the tests hold them equal to these.
"""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from prefect import Flow
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.events.schemas.automations import Posture

from profiling.config import Config
from profiling.discovery import EPOCH, tick_for
from profiling.pipeline import DELETED, RESOURCE_PREFIX, UPLOADED

from .clean import clean
from .delete import delete
from .merge import THROTTLE, merge, sweep
from .scrape import apps_by_interval, interval_name, scrape, scrape_tick


def upload_trigger() -> DeploymentEventTrigger:
    """Fires on an upload of any app, then ignores uploads for the rest of ``THROTTLE``."""
    return DeploymentEventTrigger(
        name="autopgo merge on upload",
        expect={UPLOADED},
        match={"prefect.resource.id": f"{RESOURCE_PREFIX}*"},
        posture=Posture.Reactive,
        threshold=1,
        within=THROTTLE,
    )


def app_trigger(event: str, name: str, within: timedelta = timedelta(0)) -> DeploymentEventTrigger:
    """Fires once per event for the app the event names, passing it as the ``app`` parameter."""
    return DeploymentEventTrigger(
        name=name,
        expect={event},
        match={"prefect.resource.id": f"{RESOURCE_PREFIX}*"},
        for_each={"prefect.resource.id"},
        posture=Posture.Reactive,
        threshold=1,
        within=within,
        parameters={"app": "{{ event.payload.app }}"},
    )


def tick_schedule(every: timedelta) -> IntervalSchedule:
    """Every tick, on the same points of the clock as profiling.discovery.schedule counts them."""
    return IntervalSchedule(interval=tick_for(every), anchor_date=EPOCH)


def deployments(cfg: Config) -> list[RunnerDeployment]:
    """The pipeline's deployments for ``cfg``: merge on upload, sweep, delete on request, scrape now, clean (with
    bounds) and one scrape tick per scrape interval. RuntimeError if called inside an event loop."""
    out: list[RunnerDeployment | Coroutine[Any, Any, RunnerDeployment]] = [
        merge.to_deployment(
            name="on-upload",
            triggers=[upload_trigger()],
            description=f"Triggered by profile.uploaded, at most once per {THROTTLE.total_seconds():g} s for the "
            "whole pipeline; merges every app with pending uploads.",
        ),
        sweep.to_deployment(name="sweep", interval=cfg.sweep_every, description="Merges whatever is pending."),
        delete.to_deployment(
            name="on-delete",
            triggers=[app_trigger(DELETED, "autopgo delete on request")],
            description="Triggered by profile.deleted.",
        ),
        scrape.to_deployment(name="now", description="Scrapes the apps named in the parameters at once."),
    ]
    if cfg.clean is not None:
        out.append(clean.to_deployment(name="clean", interval=cfg.clean.every))
    for every, apps in sorted(apps_by_interval(cfg).items()):
        name = f"every-{interval_name(every)}"
        out.append(
            scrape_tick.to_deployment(
                name=name,
                schedules=[tick_schedule(every)],
                parameters={"every_seconds": every.total_seconds()},
                description=f"Scrapes the {len(apps)} apps scraped every {interval_name(every)}, each at its own "
                f"point of the interval; a run every {interval_name(tick_for(every))}.",
            )
        )
    built = [d for d in out if isinstance(d, RunnerDeployment)]
    if len(built) != len(out):  # to_deployment gives coroutines inside an event loop
        raise RuntimeError("build the deployments outside an event loop")
    return built


# Every flow a deployment of the pipeline runs: what `autopgo deploy` owns on a Prefect server.
FLOWS: tuple[Flow[..., Any], ...] = (merge, sweep, delete, scrape, scrape_tick, clean)


def flow_names() -> frozenset[str]:
    """The names of the pipeline's flows, as the Prefect server knows them."""
    return frozenset(f.name for f in FLOWS)


def for_workers(deployment: RunnerDeployment) -> RunnerDeployment:
    """The deployment with its flow found by module path (``flows.merge.merge``), not by file.

    A worker runs the flow from the installed package: a file path is relative to
    the folder ``deployments`` ran in, which does not exist on a worker machine.
    """
    by_name = {f.name: f for f in FLOWS}
    fn = by_name[deployment.flow_name].fn
    out = deployment.model_copy(update={"entrypoint": f"{fn.__module__}.{fn.__name__}"})
    out._entrypoint_type = EntrypointType.MODULE_PATH
    out._path = None
    return out
