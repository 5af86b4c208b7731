"""Failing a flow run with one line that says why, not a traceback.

A flow that meets an expected failure (a target source that cannot list its
targets, say) returns ``fail(message)``: the run logs that one ERROR line and
ends Failed with it as the state's message. Raising instead would log the
exception with its traceback twice per run: once where the flow engine
catches it, once more where ``python -m prefect.engine`` (how served and
worker runs start) sees the run fail.

Returning a Failed state is not quite enough in Prefect 3 either: the engine
then raises ``FailedRun`` for it, and ``python -m prefect.engine`` logs that
with a traceback too. That traceback says nothing the run has not said, so it
is dropped (only records carrying a ``FailedRun``, and only from the flow run
logger); any other exception, a bug, keeps its traceback.
"""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.exceptions import FailedRun
from prefect.states import Failed, State

_FLOW_RUN_LOGGER = "prefect.flow_runs"


def fail(message: str) -> State:
    """Log ``message`` as the run's one ERROR line and return the Failed state to end it with."""
    get_run_logger().error("%s", message)
    logging.getLogger(_FLOW_RUN_LOGGER).addFilter(_REPORTED)  # no-op when already there
    return Failed(message=message)


class _ReportedFailure(logging.Filter):
    """Drops the engine's record of a ``FailedRun``: a failure a flow returned, and so reported."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], FailedRun))


_REPORTED = _ReportedFailure()
