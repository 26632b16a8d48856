"""Runs whose worker is gone: told apart from live ones, and failed so their slots and batches free up.

Dagster's default run launcher starts each run as a process of the code server
and cannot tell, once it runs, whether that process still lives: a run worker
killed with ``kill -9`` -- or every process of the stack at once -- leaves its run
STARTED (or STARTING) for good, holding a run slot, and its batch waits for a
human. A run's worker is the process that logged the run's start event (every
Dagster event carries the pid of its process); it is gone when that pid is no
longer alive, or is alive but started after the run did (a reused pid).

This works where the run workers run on this machine (the default launcher,
which ``coco`` configures); with another launcher nothing is touched.
"""

from __future__ import annotations

import os
import time

import dagster as dg
from dagster import DagsterEventType

from core4_pipelines.tags import EXECUTING_STATUSES, RECOVERED_TAG  # noqa: F401 - RECOVERED_TAG importable here too

UNFINISHED = tuple(dg.DagsterRunStatus(status) for status in EXECUTING_STATUSES)
# A run this young may still be starting its worker (a new process imports the project).
DEFAULT_START_GRACE_SECONDS = 120.0


def _process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith(b"btime"))
    except (OSError, StopIteration, IndexError, ValueError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0  # alive, start unknown
    # field 22 of /proc/PID/stat (index 19 after the command name) is the start in clock ticks
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def run_start(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """(pid, time) of the process that started executing the run: its RUN_START event
    (None before it started)."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START, limit=1).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.pid:
            return event.pid, record.event_log_entry.timestamp
    return None


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that started executing the run (None before it started)."""
    start = run_start(instance, run_id)
    return start[0] if start else None


def is_local_launcher(instance: dg.DagsterInstance) -> bool:
    return isinstance(instance.run_launcher, dg.DefaultRunLauncher)


def worker_gone(
    instance: dg.DagsterInstance,
    record: dg.RunRecord,
    *,
    now: float | None = None,
    start_grace: float = DEFAULT_START_GRACE_SECONDS,
) -> str | None:
    """Why ``record``'s run can no longer finish on its own, or None while it may."""
    run = record.dagster_run
    if run.status not in UNFINISHED:
        return None
    now = time.time() if now is None else now
    start = run_start(instance, run.run_id)
    if start is None:
        if now - record.update_timestamp.timestamp() < start_grace:
            return None
        created = record.create_timestamp.timestamp()
        return f"its run worker never started (status {run.status.value} since {now - created:.0f}s)"
    pid, reported = start
    started = _process_start_time(pid)
    if started is None:
        return f"its run worker (pid {pid}) is gone: killed, or the machine or stack restarted"
    # The worker process began before it reported RUN_START; a process with that pid begun
    # later is another one. (Not the run's creation: a queued run's worker starts long after.)
    if started > reported + 1:
        return f"its run worker (pid {pid}) is gone; that pid now belongs to a newer process"
    return None


def fail_orphaned_run(instance: dg.DagsterInstance, record: dg.RunRecord, reason: str) -> None:
    """Mark the run failed (canceled when it was being canceled) with ``reason`` in its log."""
    run = record.dagster_run
    instance.add_run_tags(run.run_id, {RECOVERED_TAG: "worker_gone"})
    message = f"core4 recovery: {reason}"
    if run.status == dg.DagsterRunStatus.CANCELING:
        instance.report_run_canceled(run, message=message)
    else:
        instance.report_run_failed(run, message=message)


def fail_orphaned_runs(instance: dg.DagsterInstance, *, start_grace: float = 0.0) -> list[tuple[str, str]]:
    """Fail every unfinished run whose worker is gone; returns (run_id, reason) of each.

    ``coco serve`` calls it at start with ``start_grace`` 0: before its Dagster
    processes run, no run can be starting.
    """
    if not is_local_launcher(instance):
        return []
    failed = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=list(UNFINISHED))):
        reason = worker_gone(instance, record, start_grace=start_grace)
        if reason is not None:
            fail_orphaned_run(instance, record, reason)
            failed.append((record.dagster_run.run_id, reason))
    return failed


def main(argv: list[str] | None = None) -> int:
    """``python -m core4_pipelines.supervise.recovery DAGSTER_HOME``: fail the runs a crash orphaned.

    ``coco serve`` runs it before it starts Dagster, in a process of its own so that
    its own process stays free of Dagster. Prints one line per run it failed.
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m core4_pipelines.supervise.recovery DAGSTER_HOME", file=sys.stderr)
        return 2
    with dg.DagsterInstance.from_config(args[0]) as instance:
        for run_id, reason in fail_orphaned_runs(instance):
            print(f"run {run_id} failed: {reason}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
