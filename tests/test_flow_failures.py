"""flows.failures: a reported failure loses the engine's traceback, a bug keeps it.

The whole path (a scrape run whose apps fail) is in test_fleet_flows.py; this
checks the filter on the run loggers alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from prefect.exceptions import FailedRun

from flows import failures
from flows.failures import failure_reason
from profiling.discovery import DiscoveryError


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def run_records() -> Iterator[list[logging.LogRecord]]:
    """What the flow and task run loggers pass to their handlers (here only ours, not Prefect's API handler)."""
    handler = Records()
    saved = []
    for name in failures.RUN_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers))
        logger.handlers = [handler]
        logger.addFilter(failures.REPORTED)
    try:
        yield handler.records
    finally:
        for logger, handlers in saved:
            logger.removeFilter(failures.REPORTED)
            logger.handlers = handlers


def test_only_a_reported_failure_loses_its_traceback(run_records: list[logging.LogRecord]) -> None:
    logger = logging.getLogger("prefect.flow_runs")
    raised = [FailedRun("cannot list the targets of shop: ..."), DiscoveryError("consul: ..."), KeyError("a bug")]
    for exc in raised:
        try:
            raise exc
        except Exception:
            logger.error("Engine execution exited with unexpected exception", exc_info=True)
    logger.error("cannot list the targets of shop: ...")
    kept = [(r.getMessage(), r.exc_info[1] if r.exc_info else None) for r in run_records]
    assert kept == [
        ("Engine execution exited with unexpected exception", raised[1]),
        ("Engine execution exited with unexpected exception", raised[2]),
        ("cannot list the targets of shop: ...", None),
    ]


def test_a_returned_failed_state_is_one_line(run_records: list[logging.LogRecord]) -> None:
    # Prefect logs a task that returned a Failed state with exc_info=True and nothing in flight, then
    # its end; only the end is kept. A task that raised keeps its traceback.
    tasks = logging.getLogger("prefect.task_runs")
    tasks.error("Task run failed with state: Failed(message='shop: cannot list targets: ...')", exc_info=True)
    tasks.error("Finished in state Failed('shop: cannot list targets: ...')")
    try:
        raise KeyError("a bug")
    except KeyError as exc:
        bug = exc
        tasks.error("Task run failed with exception: KeyError('a bug')", exc_info=True)
    # Anywhere else such a line stays, without the empty traceback.
    logging.getLogger("prefect.flow_runs").error("Flow run reported: Failed(...)", exc_info=True)
    assert [(r.getMessage(), r.exc_info[1] if r.exc_info else None) for r in run_records] == [
        ("Finished in state Failed('shop: cannot list targets: ...')", None),
        ("Task run failed with exception: KeyError('a bug')", bug),
        ("Flow run reported: Failed(...)", None),
    ]


def test_a_domain_error_is_its_reason_and_a_bug_keeps_its_traceback(run_records: list[logging.LogRecord]) -> None:
    """The flows' one mapping of errors: an AutopgoError says why in its own line; anything else is a bug,
    logged once with its traceback and named by its type."""
    log = logging.getLogger("prefect.flow_runs")
    assert failure_reason(DiscoveryError("consul: http://127.0.0.1:1/v1/catalog:\n  cannot connect"), log) == (
        "consul: http://127.0.0.1:1/v1/catalog: cannot connect"
    )
    assert not run_records
    try:
        {}["missing"]
    except KeyError as exc:
        assert failure_reason(exc, log) == "KeyError: 'missing'"
    assert [r.exc_info is not None and r.exc_info[0] for r in run_records] == [KeyError]
