"""The Celery app a `coco worker` runs (``celery -A core4_pipelines.engine.worker_app worker``).

The tasks of ``dagster_celery.app`` under the names Dagster's Celery run launcher sends: execute
a run (ours, which executes a run of a project with its own ``.venv`` in that interpreter:
run_task.py) and resume a run (dagster_celery's); on the broker of the core4 configuration: its
URL comes from the environment `coco worker` sets, never from a file.
"""

from __future__ import annotations

import os

from dagster_celery.config import DEFAULT_CONFIG
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_resume_job_task

from core4_pipelines.engine import BROKER_URL_ENV, DEFAULT_QUEUE
from core4_pipelines.engine.run_task import create_execute_run_task

_app = None


def __getattr__(name: str):
    """``app``, made on first use (``celery -A`` asks for it): importing this module needs no broker."""
    global _app
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        broker = os.environ.get(BROKER_URL_ENV)
        if not broker:
            raise RuntimeError(f"{BROKER_URL_ENV} is not set: start workers with `coco worker`, which sets it "
                               "from dagster.broker_url")
        _app = make_app(app_args={"broker": broker, "backend": broker, "include": [],
                                  "config_source": dict(DEFAULT_CONFIG), "task_default_queue": DEFAULT_QUEUE})
        create_execute_run_task(_app)
        create_resume_job_task(_app)
    return _app
