"""`autopgo up` supervises its children: the restart policy, the loop on small real processes,
and the real pipeline, whose API is killed and comes back while the rest keeps running.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from processes import BIN, free_port, healthy, processes_using, stop_group, wait_for

from flows.supervisor import Child, RestartPolicy, Run, Supervisor, describe_exit

POLICY = RestartPolicy(first_delay=1, max_delay=30, stable_after=60, max_deaths=5, window=300)


def deaths(*uptimes: float, gap: float = 0.0, start: float = 1000.0) -> list[Run]:
    """Consecutive runs with these uptimes, each restarted ``gap`` seconds after the last died."""
    runs = []
    for uptime in uptimes:
        runs.append(Run(start, start + uptime))
        start += uptime + gap
    return runs


def test_policy_backoff_doubles_from_the_first_delay_up_to_the_cap() -> None:
    policy = RestartPolicy(first_delay=1, max_delay=30, stable_after=60, max_deaths=100, window=300)
    delays = [policy.restart_delay(deaths(*[2] * n)) for n in range(1, 9)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


def test_policy_starts_over_after_a_child_stayed_up() -> None:
    assert POLICY.restart_delay(deaths(2, 2, 2, 3600)) == 1  # died after an hour: first delay again
    assert POLICY.restart_delay(deaths(2, 2, 2, 3600, 2)) == 1
    assert POLICY.restart_delay(deaths(2, 2, 2, 3600, 2, 2)) == 2
    assert POLICY.restart_delay(deaths(2, 59.9, 2)) == 4  # under stable_after does not count as up


def test_policy_gives_up_after_max_deaths_within_the_window() -> None:
    assert POLICY.restart_delay(deaths(1, 1, 1, 1)) == 8
    assert POLICY.restart_delay(deaths(1, 1, 1, 1, 1)) is None
    # Stable runs do not save a child that keeps dying: five deaths in 300 s are too many.
    assert POLICY.restart_delay(deaths(61, 61, 61, 61, 1)) is None
    # The same five deaths spread over more than the window: the oldest no longer counts.
    assert POLICY.restart_delay(deaths(1, 1, 1, 1, 1, gap=100)) == 16
    assert POLICY.restart_delay(deaths(1, 1, 1, 1, 1, gap=60)) is None


def test_policy_needs_a_death() -> None:
    with pytest.raises(ValueError):
        POLICY.restart_delay([])


def test_describe_exit() -> None:
    assert describe_exit(0) == "exit status 0"
    assert describe_exit(3) == "exit status 3"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-200) == "killed by signal 200"


def test_a_child_that_keeps_dying_stops_everything(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Small real processes: one exits soon after each start; the other, with a child of its own, runs on."""
    caplog.set_level(logging.INFO, logger="flows.supervisor")
    env = {**os.environ, "AUTOPGO_TEST_MARKER": str(tmp_path)}
    flaky = Child("flaky", ["sh", "-c", "sleep 0.2; exit 3"], env)
    steady = Child("steady", ["sh", "-c", "sleep 300 & sleep 300 & wait"], env)
    policy = RestartPolicy(first_delay=0.05, max_delay=0.2, stable_after=60, max_deaths=3, window=60)
    supervisor = Supervisor([steady, flaky], policy, ready_timeout=10)
    stop = threading.Event()
    try:
        supervisor.start(stop)
        steady_pid = steady.process.pid if steady.process else 0
        assert supervisor.watch(stop) == 1
        assert steady.process is not None and steady.process.pid == steady_pid  # never restarted
    finally:
        supervisor.stop()

    messages = [r.getMessage() for r in caplog.records]
    died = [m for m in messages if m.startswith("flaky died (exit status 3 after ")]
    assert len(died) == 2 and all("s up); restarting it in " in m for m in died)
    assert len([m for m in messages if m.startswith("restarted flaky (pid ")]) == 2
    gave_up = [m for m in messages if m.startswith("flaky died 3 times within 60s (the last: exit status 3 after ")]
    assert len(gave_up) == 1 and gave_up[0].endswith("s up); stopping everything")
    assert [r.levelname for r in caplog.records if "stopping everything" in r.getMessage()] == ["ERROR"]
    assert wait_for("no process left behind", lambda: not processes_using(str(tmp_path)), 10) is True


def children(parent: int) -> dict[int, list[bytes]]:
    """The command line of each child process of ``parent``, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            found[int(entry.name)] = argv
    return found


def api_pid(up: int) -> int | None:
    """The pid of the API child of `autopgo up` process ``up`` (`autopgo server`)."""
    return next(
        (pid for pid, argv in children(up).items() if b"server" in argv and any(a.endswith(b"/autopgo") for a in argv)),
        None,
    )


@pytest.mark.slow
def test_up_restarts_a_killed_api(tmp_path: Path) -> None:
    api_port, prefect_port = free_port(), free_port()
    ready = f"http://127.0.0.1:{api_port}/api/ready"
    data = tmp_path / "data"
    config = tmp_path / "autopgo.yaml"
    config.write_text(f"blob_store: {tmp_path / 'blobs'}\napi:\n  url: http://127.0.0.1:{api_port}\n")
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            [str(BIN / "autopgo"), "up", "-c", str(config), "--data", str(data), "--prefect-port", str(prefect_port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for("the API", lambda: healthy(ready), 120)
        first = wait_for("the API's pid", lambda: api_pid(up.pid), 10)
        assert first is not None
        def the_other_two() -> set[int] | None:  # the Prefect server, and the flow server once the API is ready
            others = set(children(up.pid)) - {first}
            return others if len(others) == 2 else None

        others = wait_for("the other two children", the_other_two, 60)
        os.kill(first, signal.SIGKILL)

        def restarted() -> int | None:
            pid = api_pid(up.pid)
            return pid if pid != first else None

        second = wait_for("a new API process", restarted, 20)
        wait_for("the restarted API", lambda: healthy(ready), 20)
        assert up.poll() is None
        assert others < set(children(up.pid))  # only the API was restarted

        text = log.read_text()
        assert "api died (killed by SIGKILL after " in text
        assert f"restarted api (pid {second}): " in text
    finally:
        status = stop_group(up)
    assert status == 0, log.read_text()[-3000:]
    assert wait_for("no process left behind", lambda: not processes_using(str(data)), 20) is True
