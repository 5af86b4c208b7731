"""Logging adjustments for flow runs."""

from __future__ import annotations

import logging

_TASK_RUNS = "prefect.task_runs"


class _EmptyTraceback(logging.Filter):
    """Drops ``exc_info`` from records logged with it but no exception.

    Prefect logs a task that returns a Failed state with ``exc_info=True`` and
    no exception in flight, which prints ``NoneType: None`` under the one line
    that says why; the state's message is all there is to say.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is None:
            record.exc_info = None
        return True


def drop_empty_tracebacks() -> None:
    logger = logging.getLogger(_TASK_RUNS)
    if not any(isinstance(f, _EmptyTraceback) for f in logger.filters):
        logger.addFilter(_EmptyTraceback())
