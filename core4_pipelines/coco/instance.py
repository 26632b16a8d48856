"""DAGSTER_HOME and its dagster.yaml, generated from the configuration; the ``.env`` that
points `dagster dev` and `dg dev` at it."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

import yaml

from core4_pipelines.engine import BROKER_URL_ENV, DEFAULT_QUEUE
from core4_pipelines.errors import PipelineError
from core4_pipelines.tags import JOB_TAG
from core4_resources.config.settings import Settings
from core4_resources.logs import python_logs_config
from core4_resources.files.moves import make_dirs, write_file_atomic

# The PostgreSQL URL (which may hold a password) is read from this environment
# variable at run time and never written into dagster.yaml.
POSTGRES_URL_ENV = "CORE4_DAGSTER_POSTGRES_URL"
DEFAULT_MAX_CONCURRENT_RUNS = 4


def dagster_home(settings: Settings) -> str:
    return settings.dagster.home or os.path.join(settings.folder.root, "dagster")


def storage_config(home: str, postgres: bool) -> dict:
    if postgres:
        return {"storage": {"postgres": {"postgres_url": {"env": POSTGRES_URL_ENV}}}}
    base = os.path.join(home, "storage")
    # One event-log database for all runs instead of one per run: about half
    # the per-run cost of Dagster's default SQLite layout. dagster.yaml names a storage by
    # module and class; these are Dagster's own (no import here: Dagster loads them), and
    # tests/test_dagster_private.py checks each one still loads.
    return {
        "run_storage": {
            "module": "dagster._core.storage.runs",
            "class": "SqliteRunStorage",
            "config": {"base_dir": base},
        },
        "event_log_storage": {
            "module": "dagster._core.storage.event_log",
            "class": "ConsolidatedSqliteEventLogStorage",
            "config": {"base_dir": base},
        },
        "schedule_storage": {
            "module": "dagster._core.storage.schedules",
            "class": "SqliteScheduleStorage",
            "config": {"base_dir": base},
        },
    }


def job_concurrency_limits(job_limits: Mapping[str, int] | None) -> list[dict]:
    """core4's max_parallel as run-queue tag limits: ``{"<project>.<job>": N}`` -> at most N
    runs with the tag ``core4/job=<project>.<job>`` leave the queue at once."""
    return [{"key": JOB_TAG, "value": job, "limit": int(limit)} for job, limit in sorted((job_limits or {}).items())]


def instance_config(
    home: str,
    *,
    postgres: bool = False,
    max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS,
    tag_concurrency_limits: Iterable[Mapping] = (),
    job_limits: Mapping[str, int] | None = None,
    zombie_time: float | None = None,
    python_logs: Mapping | None = None,
    engine: str = "local",
) -> dict:
    """The content of dagster.yaml. ``job_limits``: max_parallel per ``<project>.<job>``;
    ``zombie_time``: seconds a run may stay starting or canceling before it is marked failed;
    ``python_logs``: where run logs go besides Dagster's own storage (core4_resources.logs);
    ``engine`` ``celery``: runs are Celery tasks that `coco worker`s execute (docs/scale-out.md)."""
    config = storage_config(home, postgres)
    if engine == "celery":
        # Dagster's Celery run launcher, with the health check that also asks the worker itself
        # (core4_pipelines/engine/launcher.py): run monitoring then fails the runs of a dead worker.
        config["run_launcher"] = {
            "module": "core4_pipelines.engine.launcher",
            "class": "SupervisedCeleryRunLauncher",
            "config": {"broker": {"env": BROKER_URL_ENV}, "backend": {"env": BROKER_URL_ENV},
                       "default_queue": DEFAULT_QUEUE},
        }
    monitoring: dict = {"enabled": True, "poll_interval_seconds": 5}
    if zombie_time:
        # A run whose worker process dies while it runs is marked failed by the code server
        # that started it (Dagster's default launcher); these catch the ones that never got
        # going or never finished stopping.
        monitoring.update(
            start_timeout_seconds=max(1, int(zombie_time)),
            cancel_timeout_seconds=max(1, int(zombie_time)),
            max_resume_run_attempts=0,
        )
    config.update(
        {
            "run_coordinator": {  # by module and class, as dagster.yaml names one (checked like the storages)
                "module": "dagster._core.run_coordinator",
                "class": "QueuedRunCoordinator",
                "config": {
                    "max_concurrent_runs": max_concurrent_runs,
                    # 1 s instead of 5 s: launch latency drops from ~5 s to ~1.5 s.
                    "dequeue_interval_seconds": 1,
                    "tag_concurrency_limits": list(tag_concurrency_limits)
                    + job_concurrency_limits(job_limits),
                },
            },
            # Enforces dagster/max_runtime (core4's wall_time) and detects dead run workers.
            "run_monitoring": monitoring,
            "retention": {
                "schedule": {"purge_after_days": 30},
                "sensor": {"purge_after_days": {"skipped": 1, "failure": 30, "success": 30}},
            },
            "telemetry": {"enabled": False},
            "nux": {"enabled": False},
        }
    )
    if python_logs:
        config["python_logs"] = dict(python_logs)
    return config


def write_instance(settings: Settings, *, job_limits: Mapping[str, int] | None = None, **options) -> str:
    """Create DAGSTER_HOME (and missing parents, 0o750) and write its dagster.yaml (0o640),
    whatever the umask; returns DAGSTER_HOME.

    ``job_limits`` (``{"<project>.<job>": max_parallel}``, see ``limits.collect_job_limits``)
    become run-queue limits; run monitoring uses ``job.zombie_time`` of the cascade, and
    ``logging.mongo_collection`` sends every run's log records there too.
    """
    home = dagster_home(settings)
    make_dirs(home)
    options.setdefault("zombie_time", settings.job.zombie_time)
    options.setdefault("max_concurrent_runs", settings.dagster.max_concurrent_runs)
    options.setdefault("python_logs", python_logs_config(settings.logging))
    options.setdefault("engine", settings.dagster.engine)
    config = instance_config(home, postgres=bool(settings.dagster.postgres_url), job_limits=job_limits, **options)
    text = "# Written by coco from the core4 configuration; edits are overwritten.\n"
    text += yaml.safe_dump(config, sort_keys=False)
    write_file_atomic(os.path.join(home, "dagster.yaml"), text.encode("utf-8"))
    return home


def ensure_instance(settings: Settings) -> tuple[str, bool]:
    """DAGSTER_HOME with its dagster.yaml, written only when missing: one that `coco serve`
    wrote holds the run queue's limits and stays. ``(DAGSTER_HOME, whether it was written)``."""
    home = dagster_home(settings)
    if os.path.isfile(os.path.join(home, "dagster.yaml")):
        return home, False
    return write_instance(settings), True


# Dagster's `dagster dev` (and `dg dev`, which runs it in the project's folder) loads the .env
# of the folder it starts in before it looks for DAGSTER_HOME; without one it keeps the run
# history in a temporary .tmp_dagster_home_* there, removed at exit.
DOTENV = ".env"
DOTENV_HEADER = """\
# DAGSTER_HOME for `dagster dev` and `dg dev` started in this folder: the instance `coco serve`
# uses (dagster.home, by default <folder.root>/dagster), so their runs are kept with its runs;
# an exported DAGSTER_HOME wins. coco init, coco workspace and coco serve create that folder.
# Dagster passes every variable here on to code locations and runs: put no secrets here.
"""
_DAGSTER_HOME_LINE = re.compile(r"^\s*(export\s+)?DAGSTER_HOME\s*=")
# What a double-quoted .env value with a ${VAR:-default} cannot carry literally.
_NOT_IN_DOTENV = set('"\\$`{}\n\r')


def dagster_home_assignment(home: str) -> str:
    """The .env line: ``home`` unless DAGSTER_HOME is set already (coco serve, a test, a shell)."""
    bad = sorted(set(home) & _NOT_IN_DOTENV)
    if bad or not os.path.isabs(home):
        reason = f"holds {' '.join(repr(c) for c in bad)}" if bad else "is not an absolute path"
        raise PipelineError(f"DAGSTER_HOME {home!r} {reason}: a .env file cannot set it; "
                            f"configure dagster.home (or folder.root) to a plain absolute path")
    return f'DAGSTER_HOME="${{DAGSTER_HOME:-{home}}}"'


def write_dagster_env(folder: str, home: str) -> str:
    """``<folder>/.env`` setting DAGSTER_HOME to ``home`` (0o640); its other lines are kept and
    an earlier DAGSTER_HOME line is replaced. Returns the file's path."""
    path = os.path.join(folder, DOTENV)
    line = dagster_home_assignment(home)
    try:
        with open(path, encoding="utf-8") as handle:
            old = handle.read()
    except FileNotFoundError:
        old = None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"cannot read {path} to set DAGSTER_HOME in it: {exc}") from None
    if old is None:
        text = DOTENV_HEADER + line + "\n"
    else:
        lines = old.splitlines()
        kept = [item for item in lines if not _DAGSTER_HOME_LINE.match(item)]
        if len(kept) == len(lines):
            text = old + ("" if not old or old.endswith("\n") else "\n") + DOTENV_HEADER + line + "\n"
        else:
            at = next(i for i, item in enumerate(lines) if _DAGSTER_HOME_LINE.match(item))
            text = "\n".join(kept[:at] + [line] + kept[at:]) + "\n"
        if text == old:
            return path
    write_file_atomic(path, text.encode("utf-8"))
    return path


def instance_environment(settings: Settings) -> dict[str, str]:
    """Environment variables the Dagster processes need beside DAGSTER_HOME."""
    env = {"DAGSTER_HOME": dagster_home(settings)}
    if settings.dagster.postgres_url:
        env[POSTGRES_URL_ENV] = with_postgres_driver(settings.dagster.postgres_url)
    if settings.dagster.broker_url:
        env[BROKER_URL_ENV] = settings.dagster.broker_url
    return env


def with_postgres_driver(url: str) -> str:
    """``url`` naming the psycopg2 driver that dagster-postgres installs.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, which
    dagster-postgres does not depend on; an explicit ``+driver`` is kept.
    """
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg2://{rest}"
    return url
