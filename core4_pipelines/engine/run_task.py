"""The Celery task that executes a run on a `coco worker`, in the interpreter of its project.

Dagster's Celery run launcher sends a run as the task ``execute_job``; dagster_celery's own task
executes it in the worker's process, with the worker's packages. A project with a ``.venv`` of
its own (its code location's ``executable_path``, as `coco workspace` writes it) is loaded by
its code server with that interpreter, and on one machine its runs execute there too. Here the
same holds on a worker: a run whose job comes from an interpreter below ``folder.home`` (shared
by every machine, at the same path) is executed by that interpreter, as Dagster's run worker
command ``python -m dagster api execute_run``; the task waits for it and answers with its exit
code. Any other run executes in the worker's process, as with dagster_celery.

The child is the task's: a ``coco kill`` (Celery revokes the task with SIGTERM) reaches it as
Dagster's interrupt (SIGINT, the run ends canceled); a task process killed with -9 takes it along
(the kernel sends it SIGKILL when its parent dies), so no run goes on unseen.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

from dagster_celery.config import TASK_EXECUTE_JOB_NAME

from core4_pipelines._dagster import execute_run_args, execute_run_environment, execute_run_here

HOME_ENV = "CORE4_OPTION_folder__home"  # set by `coco worker`, as by `coco serve` for its code servers
_PR_SET_PDEATHSIG = 1


def project_interpreter(executable: str | None, home: str | None) -> str | None:
    """``executable`` when it is a project's own interpreter (below ``home``), else None."""
    if not executable or not home:
        return None
    home = os.path.abspath(home)
    if os.path.commonpath([os.path.abspath(executable), home]) != home:
        return None  # the interpreter of the code server's machine: the worker's own stands for it
    # Not resolved: a venv's python is a link to the base interpreter, the venv is the link's folder.
    if os.path.abspath(executable) == os.path.abspath(sys.executable):
        return None
    return executable


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def execute_in(interpreter: str, args) -> int:
    """Run ``args`` with ``interpreter`` as Dagster's run worker command; its exit code."""
    if not os.access(interpreter, os.X_OK):
        raise RuntimeError(f"run {args.run_id}: its project's interpreter {interpreter} is not on this worker "
                           f"(folder.home must be at the same path on every machine, with the project's .venv)")
    child = subprocess.Popen([interpreter, "-m", "dagster", "api", "execute_run"],
                             env={**os.environ, **execute_run_environment(args)}, stdin=subprocess.DEVNULL,
                             preexec_fn=_die_with_parent)

    def interrupt(_signo, _frame):
        if child.poll() is None:
            child.send_signal(signal.SIGINT)  # Dagster's interrupt: the run ends canceled

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def create_execute_run_task(app):
    """Register the task (under the name Dagster's Celery run launcher sends) on ``app``."""

    @app.task(bind=True, name=TASK_EXECUTE_JOB_NAME, track_started=True)
    def execute_job(_self, execute_job_args_packed) -> int:
        args = execute_run_args(execute_job_args_packed)
        interpreter = project_interpreter(args.job_origin.executable_path, os.environ.get(HOME_ENV))
        if interpreter is None:
            return execute_run_here(args)
        return execute_in(interpreter, args)

    return execute_job
