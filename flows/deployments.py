"""The deployments of the pipeline: what runs on a schedule and what an event triggers.

The same set is declared in prefect.yaml for `prefect deploy --all` on a shared
Prefect server; here it is built from autopgo.yaml for `autopgo up`, which
serves it from one process.
"""

from __future__ import annotations

from datetime import timedelta

from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger

from profiling.config import Config
from profiling.events import DELETED, UPLOADED
from profiling.prefect_events import RESOURCE_PREFIX

from .clean import clean
from .delete import delete
from .merge import THROTTLE, merge, sweep
from .scrape import scrape


def app_trigger(event: str, name: str, within: timedelta = timedelta(0)) -> DeploymentEventTrigger:
    return DeploymentEventTrigger(
        name=name,
        expect={event},
        match={"prefect.resource.id": f"{RESOURCE_PREFIX}*"},
        for_each={"prefect.resource.id"},
        posture="Reactive",
        threshold=1,
        within=within,
        parameters={"app": "{{ event.payload.app }}"},
    )


def deployments(cfg: Config) -> list[RunnerDeployment]:
    out = [
        merge.to_deployment(
            name="on-upload",
            triggers=[app_trigger(UPLOADED, "autopgo merge on upload", THROTTLE)],
            description="Triggered by profile.uploaded, at most once per app and throttle window.",
        ),
        sweep.to_deployment(name="sweep", interval=cfg.sweep_every, description="Merges whatever is pending."),
        delete.to_deployment(
            name="on-delete",
            triggers=[app_trigger(DELETED, "autopgo delete on request")],
            description="Triggered by profile.deleted.",
        ),
    ]
    if cfg.clean is not None:
        out.append(clean.to_deployment(name="clean", interval=cfg.clean.every))
    for app in cfg.apps:
        if app.scrape is not None:
            out.append(
                scrape.to_deployment(
                    name=f"scrape-{app.name}",
                    interval=app.scrape.every,
                    parameters={"app": app.name},
                    description=f"Scrapes {app.name} every {app.scrape.every}.",
                )
            )
    return out
