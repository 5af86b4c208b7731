"""`autopgo worker`: a Prefect process worker for the pipeline's work pool, in this process.

The worker runs each flow run as a child process, with this process's
environment, to which ``environment`` adds what the flow runs read
(flows/settings.py): the configuration file, and the domain's log lines shown
with the run's in the Prefect UI.

It stops on SIGTERM or Ctrl-C, and takes its flow runs with it, as `autopgo up`
does: Prefect's own worker would wait for them to end (a merge run lingers over a
minute, a scrape run waits for its apps' times), while a stopping machine gives a
few seconds. So it takes no new run, sends SIGTERM to each run's process group
(Prefect starts each run in a group of its own; the run reports itself Crashed,
and what it left is picked up by later runs: the sweep merges pending uploads,
a batch record lets the next merge finish an interrupted one), waits up to
``STOP_TIMEOUT`` for them to exit, and kills what is left.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from prefect.workers.process import ProcessWorker, ProcessWorkerResult

from .settings import CONFIG_ENV

log = logging.getLogger(__name__)

STOP_TIMEOUT = 20.0  # for the flow runs to report their end and exit after SIGTERM
EXTRA_LOGGERS_ENV = "PREFECT_LOGGING_EXTRA_LOGGERS"


def environment(base: Mapping[str, str], config_path: Path) -> dict[str, str]:
    """``base`` with what the flow runs need: the configuration file (absolute, as the runs
    start in a folder of their own), and the ``profiling`` loggers shipped to Prefect."""
    env = dict(base)
    env[CONFIG_ENV] = str(config_path.resolve())
    loggers = [name for name in env.get(EXTRA_LOGGERS_ENV, "").split(",") if name]
    if "profiling" not in loggers:
        env[EXTRA_LOGGERS_ENV] = ",".join([*loggers, "profiling"])
    return env


with warnings.catch_warnings():
    # It takes the "process" type, so that it serves process pools; in this process only.
    warnings.simplefilter("ignore")

    class StoppableProcessWorker(ProcessWorker):
        """A process worker that knows its flow runs' processes, to end them when it stops."""

        type = "process"

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.stopping = False
            self.pids: set[int] = set()

        async def get_and_submit_flow_runs(self) -> list[Any]:
            if self.stopping:
                return []
            return await super().get_and_submit_flow_runs()

        async def run(
            self,
            flow_run: Any,
            configuration: Any,
            task_status: anyio.abc.TaskStatus[int] | None = None,
        ) -> ProcessWorkerResult:
            outer = task_status or anyio.TASK_STATUS_IGNORED
            pids = self.pids
            started: list[int] = []

            class Recording:
                def started(self, value: int) -> None:
                    started.append(value)
                    pids.add(value)
                    outer.started(value)

            try:
                return await super().run(flow_run, configuration, task_status=Recording())  # type: ignore[arg-type]
            finally:
                pids.difference_update(started)

        async def end_runs(self, timeout: float) -> None:
            """SIGTERM every running flow run's process group, wait up to ``timeout`` s, then SIGKILL them."""
            self.stopping = True
            signalled: set[int] = set()
            deadline = time.monotonic() + timeout
            # A run being submitted gets its process in a moment: wait for it too.
            while self.pids or self._submitting_flow_run_ids:
                for pid in self.pids - signalled:
                    log.info("stopping flow run process %d", pid)
                    _signal_group(pid, signal.SIGTERM)
                    signalled.add(pid)
                if time.monotonic() > deadline:
                    for pid in self.pids:
                        log.warning("flow run process %d did not stop within %.0fs; killing it", pid, timeout)
                        _signal_group(pid, signal.SIGKILL)
                    return
                await anyio.sleep(0.1)


def run(pool: str, stop_timeout: float = STOP_TIMEOUT) -> int:
    """Serve ``pool`` until SIGTERM or SIGINT; 0 once the worker and its runs are gone."""
    return anyio.run(_serve, pool, stop_timeout)


async def _serve(pool: str, stop_timeout: float) -> int:
    name = f"autopgo {socket.gethostname()} {uuid.uuid4().hex[:8]}"  # unique in the pool, and says where
    worker = StoppableProcessWorker(name=name, work_pool_name=pool, create_pool_if_not_found=False)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as group:

            async def work() -> None:
                await worker.start()
                group.cancel_scope.cancel()  # the worker stopped by itself

            group.start_soon(work)
            async for received in signals:
                log.info("received %s: stopping the worker and its flow runs", signal.Signals(received).name)
                await worker.end_runs(stop_timeout)
                group.cancel_scope.cancel()
                break
    return 0


def _signal_group(pid: int, sig: int) -> None:
    """Signal the group ``pid`` leads (a run and whatever it started), or ``pid`` alone if it leads none."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass
