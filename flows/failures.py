"""Failing a flow run, or one app's task run, with one line that says why, not a traceback.

A flow that meets an expected failure (apps whose targets cannot be listed or
all failed, say) returns ``fail(message)``: the run logs that one ERROR line and
ends Failed with it as the state's message. Raising instead would log the
exception with its traceback twice per run: once where the flow engine
catches it, once more where ``python -m prefect.engine`` (how served and
worker runs start) sees the run fail.

Returning a Failed state is not quite enough in Prefect 3 either:

- the engine then raises ``FailedRun`` for it, and ``python -m prefect.engine``
  logs that with a traceback too;
- a task that returns a Failed state is logged with ``exc_info=True`` and no
  exception in flight, which prints ``NoneType: None`` under its line.

Neither says anything the run has not said, so both are dropped (only records
carrying a ``FailedRun`` or no exception at all, only from the flow and task
run loggers); any other exception, a bug, keeps its traceback.
"""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.exceptions import FailedRun
from prefect.states import Failed, State

_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def fail(message: str) -> State:
    """Log ``message`` as the run's one ERROR line and return the Failed state to end it with."""
    get_run_logger().error("%s", message)
    return Failed(message=message)


class _ReportedFailure(logging.Filter):
    """Drops the traceback of a failure a run returned, and so reported: a ``FailedRun``, or none at all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], FailedRun):
            return False
        if record.exc_info and record.exc_info[0] is None:
            record.exc_info = None
        return True


_REPORTED = _ReportedFailure()


def quiet_reported_failures() -> None:
    """Install the filter on the run loggers (once per process; calling again changes nothing)."""
    for name in _RUN_LOGGERS:
        logging.getLogger(name).addFilter(_REPORTED)
