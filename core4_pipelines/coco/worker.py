"""`coco worker [--queue Q] [--concurrency N]`: a Celery worker that executes the runs of every
project in folder.home (``dagster.engine: celery``; docs/scale-out.md).

It is Dagster's own Celery run task (``dagster_celery``), started on the core4 configuration's
broker with the DAGSTER_HOME that `coco serve` uses (its dagster.yaml written here when this
machine has none: the same PostgreSQL storage and run launcher). A run's job is loaded from the
code location the run was launched from, so this machine needs folder.home and the folder root
at the same paths, and the same configuration; a project with a .venv of its own runs in that
interpreter (core4_pipelines/engine/run_task.py). The process becomes the Celery worker: Ctrl-C
(or SIGTERM) stops it after the runs in progress (a second one at once).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from core4_pipelines.coco.errors import OperateError
from core4_pipelines.engine import DEFAULT_QUEUE, check_engine
from core4_resources.files.probe import probe_root


def worker_command(queue: str, concurrency: int, name: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "core4_pipelines.engine.worker_app", "worker",
            "--queues", queue, "--concurrency", str(concurrency), "--hostname", f"{name}@{socket.gethostname()}",
            "--pool", "prefork", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
            # A run is one task that may take hours: one at a time per pool process, none held back.
            "--prefetch-multiplier", "1"]


def cmd_worker(args) -> int:
    from core4_pipelines.coco.instance import ensure_instance, instance_environment
    from core4_resources.config.settings import load_config

    settings = load_config(None)
    if settings.dagster.engine != "celery":
        raise OperateError("dagster.engine is local: runs execute on the machine of `coco serve`. Set "
                           "dagster.engine: celery (with dagster.broker_url) to run them on workers (docs/scale-out.md)")
    check_engine(settings, OperateError)
    if not settings.folder.home:
        raise OperateError("folder.home is not set: pass --home DIR or set folder.home in your config")
    if args.concurrency < 1:
        raise OperateError(f"--concurrency {args.concurrency}: expected 1 or more runs at once")
    probe_root(settings.folder.root)  # the shared root keeps claims and batch locks exclusive
    home, _ = ensure_instance(settings)
    env = {**os.environ, **instance_environment(settings), "DAGSTER_HOME": home,
           "CORE4_OPTION_folder__home": settings.folder.home, "CORE4_OPTION_folder__root": settings.folder.root}
    name = args.name or f"core4-{os.getpid()}"
    command = worker_command(args.queue, args.concurrency, name)
    print(f"coco worker {name}: runs from queue {args.queue!r}, {args.concurrency} at once, projects of "
          f"{settings.folder.home}", flush=True)
    os.execve(sys.executable, command, env)
    return 0  # not reached


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="a Celery worker that executes the runs of every project "
                                      "(dagster.engine: celery)")
    p.add_argument("--queue", default=DEFAULT_QUEUE, help=f"the Celery queue to take runs from (default {DEFAULT_QUEUE})")
    p.add_argument("--concurrency", type=int, default=2, help="runs at once (default 2)")
    p.add_argument("--name", help="the worker's name, unique among the workers (default core4-<pid>)")
    p.set_defaults(run=cmd_worker)
