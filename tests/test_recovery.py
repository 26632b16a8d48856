"""Runs orphaned by a crash: a live worker is left alone, a dead one's run is failed, a run that
never got its worker is failed -- by `python -m core4_pipelines.supervise.recovery`, as `coco serve` runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

import dagster as dg
import pytest

from core4_pipelines.supervise.recovery import RECOVERED_TAG, worker_gone, worker_pid

SLEEPER = """
import sys, time
import dagster as dg

@dg.op
def sleep_long():
    time.sleep(120)

@dg.job
def sleeper():
    sleep_long()

with dg.DagsterInstance.get() as instance:
    sleeper.execute_in_process(instance=instance)
"""


def recover(dagster_home: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core4_pipelines.supervise.recovery", dagster_home],
        capture_output=True, text=True, timeout=120, check=False,
    )


def started_run(instance: dg.DagsterInstance, timeout: float = 60) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        if runs and worker_pid(instance, runs[0].run_id):
            return runs[0]
        time.sleep(0.2)
    pytest.fail("the sleeper run did not start")


@pytest.mark.timeout(180)
def test_a_live_worker_is_left_alone_and_a_killed_one_is_failed(dagster_home):
    worker = subprocess.Popen([sys.executable, "-c", SLEEPER], env={**os.environ, "DAGSTER_HOME": dagster_home})
    try:
        with dg.DagsterInstance.from_config(dagster_home) as instance:
            run = started_run(instance)
            assert worker_pid(instance, run.run_id) == worker.pid
            # A run that waited in the queue for an hour before this worker took it is alive too.
            record = instance.get_run_record_by_id(run.run_id)
            queued = record._replace(create_timestamp=record.create_timestamp - timedelta(hours=1))
            assert worker_gone(instance, queued) is None
            assert recover(dagster_home).stdout == ""
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
            worker.kill()
            worker.wait()
            done = recover(dagster_home)
            assert done.returncode == 0, done.stderr
            assert f"run {run.run_id} failed: its run worker (pid {worker.pid}) is gone" in done.stdout
            after = instance.get_run_by_id(run.run_id)
            assert after.status == dg.DagsterRunStatus.FAILURE
            assert after.tags[RECOVERED_TAG] == "worker_gone"
    finally:
        worker.kill()
        worker.wait()


def test_a_run_that_never_got_a_worker_is_failed_at_start_and_after_the_grace_by_the_sensor(dagster_home):
    with dg.DagsterInstance.from_config(dagster_home) as instance:
        run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job(), status=dg.DagsterRunStatus.STARTING)
        (record,) = instance.get_run_records(filters=dg.RunsFilter(run_ids=[run.run_id]))
        # The sensor waits: a new run's worker may still be importing the project.
        assert worker_gone(instance, record, start_grace=120) is None
        assert "never started" in worker_gone(instance, record, now=time.time() + 121, start_grace=120)
        done = recover(dagster_home)  # coco serve at start: no grace, nothing can be starting
        assert f"run {run.run_id} failed: its run worker never started" in done.stdout
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE


def test_recovery_needs_its_argument():
    done = subprocess.run([sys.executable, "-m", "core4_pipelines.supervise.recovery"], capture_output=True, text=True)
    assert done.returncode == 2 and "usage" in done.stderr


def test_a_pid_beyond_pid_max_is_gone_and_this_process_is_alive():
    from core4_pipelines.supervise.recovery import _process_start_time

    assert _process_start_time(2**22 + 12345) is None
    assert time.time() - 3600 * 24 < _process_start_time(os.getpid()) <= time.time()
