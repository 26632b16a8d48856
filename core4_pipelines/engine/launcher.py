"""Dagster's Celery run launcher, with a health check that also asks the worker.

``dagster_celery``'s launcher tells run monitoring a run's health from its Celery task's state in
the result backend. A worker killed as a whole (kill -9, a machine gone) leaves its tasks
``STARTED`` there for good, so its runs would look healthy forever. Here a run whose task is
``STARTED`` is also checked by a ping to the worker that started it (Celery's remote control: a
busy prefork worker answers from its main process): no answer within ``PING_TIMEOUT`` twice
in a row, and run monitoring fails the run -- a failure with no reason, which the proc sensor
runs again at once, using no attempt (core4_pipelines/supervise/failures.py).

``terminate`` marks the run canceling before it revokes the task, as Dagster's other launchers
do: the run, interrupted in its worker, then ends canceled (waiting for a human, like a run
killed on one machine), not failed (which the proc sensor would run again by itself).
"""

from __future__ import annotations

from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

from core4_pipelines._dagster import run_worker_health, worker_status

PING_TIMEOUT = 2.0


class SupervisedCeleryRunLauncher(CeleryRunLauncher):
    """``CeleryRunLauncher`` whose health check notices a dead worker (see the module's doc)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._silent: dict[str, int] = {}  # worker hostname -> pings in a row it did not answer

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        return super().terminate(run_id)

    def check_run_worker_health(self, run):
        result = super().check_run_worker_health(run)
        if worker_status(result) not in ("RUNNING", "UNKNOWN"):
            return result
        task = self.celery.AsyncResult(run.tags[DAGSTER_CELERY_TASK_ID_TAG])
        info = task.info if task.state == "STARTED" else None
        hostname = info.get("hostname") if isinstance(info, dict) else None
        if not hostname:  # still queued (PENDING): no worker has it yet
            return result
        if self.celery.control.ping(destination=[hostname], timeout=PING_TIMEOUT):
            self._silent.pop(hostname, None)
            return result
        self._silent[hostname] = self._silent.get(hostname, 0) + 1
        if self._silent[hostname] < 2:
            return result
        return run_worker_health(
            "FAILED",
            f"the Celery worker {hostname} (pid {info.get('pid')}) that started this run does not answer",
        )
