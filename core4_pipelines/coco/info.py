"""`coco info`: what an operator asks first, on one screen.

The webserver and its daemon's heartbeat, the MongoDB in use (password masked), and per
project: files waiting in proc, claimed batches (and how many wait on a failed run), files
in the error folder, its sensors and schedules (paused or not) and its runs of the last 24
hours. Folders are read here, on this machine; runs and heartbeats come from the webserver
(GraphQL, standard library only: `coco info` does not load Dagster). Without a webserver
the folder counts are printed all the same.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from core4_pipelines.coco.dagster_api import DagsterAPI
from core4_pipelines.coco.errors import OperateError
from core4_pipelines.tags import BATCH_TAG, STATE_TAG
from core4_pipelines.ingest.reappear import read_holds
from core4_resources.config.settings import mask_url
from core4_resources.files.names import BATCH_DIR, printable_name

# As core4_resources.files.folders names it; repeated here because importing that loads Dagster.
# tests/test_coco_state.py keeps them equal.
REASON_SUFFIX = ".reason.txt"
DAY = 24 * 3600
MAX_BATCHES_CHECKED = 50

DAEMON_HEALTH = """
query DaemonHealth {
  instance { daemonHealth { allDaemonStatuses { daemonType healthy required lastHeartbeatTime } } }
}
"""

RECENT_RUNS = """
query RecentRuns($filter: RunsFilter, $limit: Int) {
  runsOrError(filter: $filter, limit: $limit) {
    __typename
    ... on Runs { results { runId status tags { key value } repositoryOrigin { repositoryLocationName } } }
    ... on InvalidPipelineRunsFilterError { message } ... on PythonError { message }
  }
}
"""

DOCUMENTS = ("DAEMON_HEALTH", "RECENT_RUNS")
QUEUED = {"QUEUED", "NOT_STARTED"}
RUNNING = {"STARTING", "STARTED", "CANCELING"}
NOT_FAILED = ("deferred", "relaunched")  # core4/state of a run that ended by defer()


@dataclass
class ProjectInfo:
    name: str
    proc: int = 0
    batches: int = 0
    batches_failed: int = 0
    batches_outage: int = 0  # of those, failed by an outage (run again by themselves)
    errors: int = 0
    runs: Counter = field(default_factory=Counter)
    instigators: str = ""
    batch_ids: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # reappeared under a name just claimed (ingest/reappear.py)


def _visible_files(folder: str) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if not e.name.startswith(".") and e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _batches(proc: str) -> list[str]:
    try:
        with os.scandir(os.path.join(proc, BATCH_DIR)) as entries:
            # A batch folder that is empty has been imported (or is being cleaned away).
            return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False)
                          and not e.name.startswith(".") and _visible_files(e.path))
    except FileNotFoundError:
        return []


def folder_counts(settings, project: str) -> ProjectInfo:
    proc = os.path.join(settings.folder.proc, project)
    errors = os.path.join(settings.folder.error, project)
    info = ProjectInfo(project, proc=len(_visible_files(proc)))
    info.errors = sum(1 for name in _visible_files(errors) if not name.endswith(REASON_SUFFIX))
    info.batch_ids = _batches(proc)
    info.held = sorted(printable_name(n) for n, h in read_holds(proc).items() if not h.released)
    info.batches = len(info.batch_ids)
    return info


def _tags(run: Mapping) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run.get("tags", [])}


def count_runs(runs: list[Mapping]) -> dict[str, Counter]:
    """Per project: queued, running, failed; deferred runs apart (they run again by themselves),
    those launched again already not at all."""
    counts: dict[str, Counter] = {}
    for run in runs:
        project = (run.get("repositoryOrigin") or {}).get("repositoryLocationName", "?")
        status = run["status"]
        state = _tags(run).get(STATE_TAG)
        kind = None
        if status in QUEUED or status in RUNNING:
            kind = "queued" if status in QUEUED else "running"
        elif status == "FAILURE" and state not in NOT_FAILED:
            kind = "failed"
        elif status == "FAILURE" and state == "deferred":
            kind = "deferred"
        if kind:
            counts.setdefault(project, Counter())[kind] += 1
    return counts


def batches_on_failed_run(api: DagsterAPI, batch_ids: list[str]) -> tuple[int, int]:
    """How many of the batches' newest runs failed (they wait for a retry or an operator), and how
    many of those the machine failed (the database, the disk, a dead worker: they use no attempt)."""
    from core4_pipelines.supervise.failures import is_infrastructure_failure

    failed = outages = 0
    for batch_id in batch_ids[:MAX_BATCHES_CHECKED]:
        runs = api.runs(tags={BATCH_TAG: batch_id}, limit=1)
        if runs and runs[0]["status"] in ("FAILURE", "CANCELED"):
            failed += 1
            outages += is_infrastructure_failure({t["key"]: t["value"] for t in runs[0].get("tags") or ()},
                                                 runs[0]["status"])
    return failed, outages


def disk_line(settings) -> str:
    """Free space against folder.min_free: whether claims pause for it."""
    from core4_resources.files.space import below_floor, parse_min_free

    folder = settings.folder
    low = below_floor([folder.root, folder.proc, folder.archive, folder.error, os.path.join(folder.root, "mongo")],
                      parse_min_free(folder.min_free))
    return f"claims paused: {low}" if low else f"enough free under root, archive and error (folder.min_free {folder.min_free})"


# Dagster's serdes keeps the field's old name: pipeline_run_id.
_RUN_ID = re.compile(r"""['"](?:pipeline_)?run_id['"]: ['"]([0-9a-f-]{36})['"]""")


def workers_line(settings) -> str:
    """engine celery: the workers that answer on the broker (Celery's inspect), each with its runs."""
    from celery import Celery

    url = settings.dagster.broker_url
    app = Celery("core4-info", broker=url, backend=url)
    app.conf.update(broker_connection_retry_on_startup=False, broker_connection_timeout=2, broker_connection_max_retries=0)
    try:
        active = app.control.inspect(timeout=1.0).active() or {}
    except Exception as exc:  # kombu's errors differ by transport: each means the broker is out of reach
        return f"unknown: the broker {mask_url(url)} does not answer ({type(exc).__name__}: {exc})"
    finally:
        app.close()
    if not active:
        return f"none answers on {mask_url(url)}: start one with `coco worker`"
    parts = []
    for name, tasks in sorted(active.items()):
        # The run's id is in the task's packed arguments (a dict, or its repr, by Celery's version).
        runs = [found.group(1)[:8] if (found := _RUN_ID.search(repr(t))) else "?" for t in tasks]
        parts.append(f"{name} ({len(runs)} runs{': ' + ', '.join(runs) if runs else ''})")
    return f"{len(parts)}: " + "; ".join(parts)


def heartbeat_line(api: DagsterAPI, now: float) -> str:
    statuses = api.query(DAEMON_HEALTH)["instance"]["daemonHealth"]["allDaemonStatuses"]
    required = [s for s in statuses if s["required"]]
    beats = [s["lastHeartbeatTime"] for s in required if s["lastHeartbeatTime"]]
    if not beats:
        return "daemon     no heartbeat yet"
    unhealthy = sorted(s["daemonType"] for s in required if not s["healthy"])
    text = f"daemon     last heartbeat {max(0.0, now - max(beats)):.0f}s ago"
    return text + (f"; not healthy: {', '.join(unhealthy)}" if unhealthy else f" ({len(required)} daemons healthy)")


def _instigator_text(items) -> str:
    running = sum(1 for i in items if i.status == "RUNNING")
    if not items:
        return "no sensors or schedules"
    return "paused" if running == 0 else f"{running} of {len(items)} sensors/schedules running"


def info_lines(settings, api: DagsterAPI | None, state, projects: list[str],
               now: Callable[[], float] = time.time) -> list[str]:
    from core4_resources.config.settings import load_config

    lines = [f"webserver  {api.url if api else '-'}" + ("" if state else "  (no running coco serve recorded here)")]
    mongo = state.mongo_url if state else (mask_url(settings.mongo_url) if settings.mongo_url else
                                           "embedded (started by coco serve; not running)")
    infos = [folder_counts(load_config(p), p) for p in projects]
    reachable = api is not None
    if reachable:
        try:
            lines.append(heartbeat_line(api, now()))
        except OperateError as exc:
            reachable = False
            lines.append(f"daemon     unknown: {exc}")
    lines.append(f"mongodb    {mongo}")
    lines.append(f"disk       {disk_line(settings)}")
    if settings.dagster.engine == "celery" and settings.dagster.broker_url:
        lines.append(f"workers    {workers_line(settings)}")
    if reachable:
        from core4_pipelines.coco.control import instigators

        found, broken = instigators(api)
        result = api.query(RECENT_RUNS, {"filter": {"createdAfter": now() - DAY}, "limit": 100000})["runsOrError"]
        counts = count_runs(result.get("results", []))
        for info in infos:
            info.runs = counts.get(info.name, Counter())
            info.batches_failed, info.batches_outage = batches_on_failed_run(api, info.batch_ids)
            info.instigators = (f"not loaded: {broken[info.name]}" if info.name in broken
                                else _instigator_text(found.get(info.name, [])))
    for info in infos:
        lines.append(f"project    {info.name}" + (f"  ({info.instigators})" if info.instigators else ""))
        lines.append(f"  proc     {info.proc} files waiting")
        outage = (f", {info.batches_outage} of them after an outage (database, disk, worker): run again by themselves"
                  if info.batches_outage else "")
        failed = f" ({info.batches_failed} wait on a failed run{outage})" if reachable else ""
        lines.append(f"  batches  {info.batches} claimed{failed}")
        lines.append(f"  error    {info.errors} files")
        if info.held:
            lines.append(f"  held     {len(info.held)} files appeared again soon after a file of the same name was "
                         f"claimed: {', '.join(info.held[:5])}{', ...' if len(info.held) > 5 else ''} "
                         f"(coco release {info.name} NAME imports one)")
        if reachable:
            runs = info.runs
            lines.append(f"  runs 24h {runs['queued']} queued, {runs['running']} running, {runs['failed']} failed"
                         + (f", {runs['deferred']} deferred" if runs["deferred"] else ""))
    return lines


def cmd_info(args) -> int:
    from core4_pipelines.coco.discovery import discover_projects
    from core4_pipelines.coco.state import served_url
    from core4_resources.config.settings import load_config

    settings = load_config()
    url, state = served_url(settings)
    api = DagsterAPI(args.url or url)
    projects = []
    if settings.folder.home:
        found, _ = discover_projects(settings.folder.home)
        projects = [p.name for p in found]
    for line in info_lines(settings, api, state, projects):
        print(line)
    return 0


def add_commands(sub) -> None:
    from core4_pipelines.coco.operate import URL_HELP

    p = sub.add_parser("info", help="webserver, daemon heartbeat, MongoDB, and per project: proc, batches, "
                                    "errors, runs of the last 24 h")
    p.add_argument("--url", help=URL_HELP)
    p.set_defaults(run=cmd_info)
