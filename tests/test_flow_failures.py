"""flows.failures: a reported failure loses the engine's traceback, a bug keeps it.

The whole path (a served scrape run whose discovery source is refused) is in
test_pipeline_e2e.py; this checks the filter on the flow run logger alone.
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
    logger = logging.getLogger(failures._FLOW_RUN_LOGGER)
    handler = Records()
    handlers, logger.handlers = logger.handlers, [handler]
    logger.addFilter(failures._REPORTED)
    try:
        yield handler.records
    finally:
        logger.removeFilter(failures._REPORTED)
        logger.handlers = handlers


def test_only_a_reported_failure_loses_its_traceback(flow_run_records: list[logging.LogRecord]) -> None:
    logger = logging.getLogger(failures._FLOW_RUN_LOGGER)
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
