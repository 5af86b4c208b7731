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
- a task that returns a Failed state is logged as ``Task run failed with
  state: Failed(message=..., type=FAILED, result=None)``, with ``exc_info=True``
  and no exception in flight (``NoneType: None`` under it), and then again as
  ``Finished in state Failed('...')``.

Neither says anything the run has not said, so both are dropped: records
carrying a ``FailedRun``, and task run records carrying no exception at all,
which leaves one line per failed task, its ``Finished in state``. Only the flow
and task run loggers are filtered; any other exception, a bug, keeps its traceback.

``failure_reason`` is where the flows turn an exception into that one line: an
``AutopgoError`` (a store that fails, a profile that is not one, a source that
cannot list) says why in its own message; anything else is a bug, whose
traceback is logged once before its line.
"""

from __future__ import annotations

import logging

from prefect import get_run_logger

from profiling.errors import AutopgoError
from prefect.exceptions import FailedRun
from prefect.states import Failed, State

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def fail(message: str) -> State:
    """Log ``message`` as the run's one ERROR line and return the Failed state to end it with."""
    get_run_logger().error("%s", message)
    return Failed(message=message)


def failure_reason(exc: Exception, log: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> str:
    """One line saying why ``exc`` ended an app's work.

    A bug (anything but an ``AutopgoError``) also logs its traceback to ``log``, once."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, AutopgoError):
        return text
    log.error("unexpected %s", type(exc).__name__, exc_info=exc)
    return f"{type(exc).__name__}: {text}"


class _ReportedFailure(logging.Filter):
    """Drops what repeats a failure a run returned, and so reported: a ``FailedRun``'s traceback, and the
    task engine's first line for a returned Failed state (its ``Finished in state`` line follows)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info:
            return True
        if isinstance(record.exc_info[1], FailedRun):
            return False
        if record.exc_info[0] is None:  # logged with exc_info=True and nothing in flight: a returned state
            if record.name == "prefect.task_runs":
                return False
            record.exc_info = None  # any other such line is kept, without "NoneType: None" under it
        return True


REPORTED = _ReportedFailure()


def quiet_reported_failures() -> None:
    """Install the filter on the run loggers (once per process; calling again changes nothing)."""
    for name in RUN_LOGGERS:
        logging.getLogger(name).addFilter(REPORTED)
