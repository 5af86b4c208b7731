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
from profiling.discovery import DiscoveryError


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def flow_run_records() -> Iterator[list[logging.LogRecord]]:
    """What the flow run logger passes to its handlers (here only ours, not Prefect's API handler)."""
    logger = logging.getLogger("prefect.flow_runs")
    handler = Records()
    handlers, logger.handlers = logger.handlers, [handler]
    logger.addFilter(failures._REPORTED)
    try:
        yield handler.records
    finally:
        logger.removeFilter(failures._REPORTED)
        logger.handlers = handlers


def test_only_a_reported_failure_loses_its_traceback(flow_run_records: list[logging.LogRecord]) -> None:
    logger = logging.getLogger("prefect.flow_runs")
    raised = [FailedRun("cannot list the targets of shop: ..."), DiscoveryError("consul: ..."), KeyError("a bug")]
    for exc in raised:
        try:
            raise exc
        except Exception:
            logger.error("Engine execution exited with unexpected exception", exc_info=True)
    logger.error("cannot list the targets of shop: ...")
    kept = [(r.getMessage(), r.exc_info[1] if r.exc_info else None) for r in flow_run_records]
    assert kept == [
        ("Engine execution exited with unexpected exception", raised[1]),
        ("Engine execution exited with unexpected exception", raised[2]),
        ("cannot list the targets of shop: ...", None),
    ]


def test_a_record_without_an_exception_loses_its_empty_traceback(flow_run_records: list[logging.LogRecord]) -> None:
    # Prefect logs a task that returned a Failed state with exc_info=True and nothing in flight.
    logging.getLogger("prefect.flow_runs").error("Task run failed with state: Failed(...)", exc_info=True)
    assert [(r.getMessage(), r.exc_info) for r in flow_run_records] == [("Task run failed with state: Failed(...)", None)]
