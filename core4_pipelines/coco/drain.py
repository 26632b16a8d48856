"""`coco drain PROJECT`: a project's proc sensors evaluated in this process, every batch they
request imported here, until its proc folder holds nothing they would claim; then a summary.

Works for any project: its proc sensors are the sensors built by ``proc_folder_sensor``
(marked with ``PROC_SENSOR_METADATA``: job, pattern, proc sub folder). Runs are recorded
in the Dagster instance under DAGSTER_HOME, as with ``coco enqueue --local``; MongoDB is the
configured one, or the embedded server of folder.root while the drain lasts.

What it prints is a line per run, and a summary per job with each rejected file and its
reason; a failed run says why in one message. Dagster's own record of each run (its event
lines, a failure's stack trace) stays in the instance, where the UI shows it; ``verbose``
prints it here too. ``coco demo`` is a download run the same way, then a drain.

Dagster is imported inside the functions only: ``coco``'s parser does not load it.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from core4_pipelines.errors import PipelineError

POLL_SECONDS = 0.5  # between ticks while files wait to be seen unchanged (min_age_seconds)
# Dagster's console logger of an in-process run: only what is critical, unless verbose. The
# run's events are stored in the instance either way (the level is the console's only).
QUIET_CONSOLE_LEVEL = "CRITICAL"


@dataclass
class DrainedJob:
    """What draining did for one proc sensor and its import job."""

    job: str
    sensor: str
    collection: str  # "<database>.<collection>"
    runs: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)
    records: int = 0
    archives: list[str] = field(default_factory=list)  # one per imported file
    errors: list[str] = field(default_factory=list)  # files moved to the error folder
    reasons: dict[str, str] = field(default_factory=dict)  # file in error -> why
    failures: dict[str, str] = field(default_factory=dict)  # failed run -> why, when no file says it
    proc_left: int = 0  # matching files in proc and files in claimed batches, at the end
    waiting: str | None = None  # the sensor's last skip reason, when files are left

    @property
    def files(self) -> int:
        return len(self.archives) + len(self.errors)


@dataclass
class DrainResult:
    project: str
    mongo: str  # masked URL
    jobs: list[DrainedJob]
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return not self.timed_out and not any(j.errors or j.failed_runs or j.proc_left for j in self.jobs)


@dataclass
class LoadedProject:
    """A project's Definitions in this process, with the Dagster instance its runs are recorded in."""

    project: str
    defs: Any
    instance: Any
    mongo: str  # masked URL


@dataclass
class RunOutcome:
    run_id: str
    success: bool
    failure: str = ""  # why it failed: the failure's message, without a stack trace


def project_folder(home: str, project: str) -> str:
    """``<home>/<project>`` when it is a project folder, else PipelineError saying why not."""
    from core4_pipelines.coco.discovery import inspect_project_folder

    folder = os.path.join(home, project)
    info = inspect_project_folder(folder) if os.path.isdir(folder) else f"no project {project!r} in folder.home {home!r}"
    if isinstance(info, str):
        raise PipelineError(info)
    return info.folder


@contextlib.contextmanager
def loaded_project(settings, project: str, say: Callable[[str], None] = print) -> Iterator[LoadedProject]:
    """``project`` loaded in this process on its MongoDB (the configured one, or the embedded
    server of folder.root for the duration) and the instance under DAGSTER_HOME."""
    import dagster as dg

    from core4_pipelines.coco.discovery import load_definitions
    from core4_pipelines.coco.instance import dagster_home, instance_environment, write_instance
    from core4_pipelines.coco.serve import MONGO_URL_ENV, mongo_for
    from core4_resources.config.settings import mask_url

    home = settings.folder.home
    if not home:
        raise PipelineError("folder.home is not set: pass --home DIR or set folder.home in your config")
    folder = project_folder(home, project)
    with mongo_for(settings, say) as mongo_url:
        # Exported before the project loads: its definitions read them (project_definitions).
        os.environ[MONGO_URL_ENV] = mongo_url
        os.environ["CORE4_OPTION_folder__root"] = settings.folder.root
        os.environ["CORE4_OPTION_folder__home"] = home
        os.environ.update(instance_environment(settings))
        defs = load_definitions(folder, project)
        if not os.path.isfile(os.path.join(dagster_home(settings), "dagster.yaml")):
            write_instance(settings)  # keep the one `coco serve` wrote (it holds the run queue's limits)
        with dg.DagsterInstance.from_config(dagster_home(settings)) as instance:
            yield LoadedProject(project, defs, instance, mask_url(mongo_url))


def execute(job, instance, *, run_config: dict | None = None, tags: dict | None = None, verbose: bool = False):
    """``job.execute_in_process``, its console quiet unless ``verbose``."""
    import dagster as dg

    run_config = dict(run_config or {})
    # Only Dagster's own console logger is known to take this config; a job's own loggers keep theirs.
    if not verbose and "loggers" not in run_config and job.loggers.get("console") is dg.colored_console_logger:
        run_config["loggers"] = {"console": {"config": {"log_level": QUIET_CONSOLE_LEVEL}}}
    return job.execute_in_process(run_config=run_config, instance=instance, tags=tags, raise_on_error=False)


def run_job(loaded: LoadedProject, job_name: str, *, verbose: bool = False) -> RunOutcome:
    """Run ``job_name`` of the loaded project once, in this process, with its default config."""
    result = execute(loaded.defs.resolve_job_def(job_name), loaded.instance, verbose=verbose)
    return RunOutcome(result.run_id, result.success, "" if result.success else failure_message(result))


def failure_message(result) -> str:
    """Why an in-process run failed, as its operator needs it: a ``dg.Failure``'s description, or
    the raised exception's type and message (the innermost cause: Dagster wraps what user code
    raised), without the stack trace."""
    messages = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            messages.append(data.user_failure_data.description.strip())
            continue
        error = data.error
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            # A Failure's class path is noise in a one-line summary (text only, nothing imported).
            messages.append(error.message.strip().removeprefix("dagster._core.definitions.events."))
    if not messages:  # failed before any step ran (resources, config)
        messages = [event.message.strip() for event in result.all_events
                    if event.event_type_value == "RUN_FAILURE" and event.message]
    return "\n".join(messages) or "the run failed"


def drain(settings, project: str, *, timeout: float = 300.0, say: Callable[[str], None] = print,
          verbose: bool = False) -> DrainResult:
    """Tick ``project``'s proc sensors and run each batch they request, in this process, until
    nothing is left to claim and no claimed batch waits (or ``timeout`` seconds passed)."""
    with loaded_project(settings, project, say) as loaded:
        return drain_loaded(loaded, timeout=timeout, say=say, verbose=verbose)


def drain_loaded(loaded: LoadedProject, *, timeout: float = 300.0, say: Callable[[str], None] = print,
                 verbose: bool = False) -> DrainResult:
    """``drain`` on a project loaded already (``coco demo`` ran its download on it first)."""
    drains = _proc_sensors(loaded.defs, loaded.project)
    timed_out = _until_empty(loaded.defs, drains, loaded.instance, timeout, say, verbose)
    return DrainResult(loaded.project, loaded.mongo, [d.done for d in drains], timed_out)


class _SensorDrain:
    """One proc sensor, its job, where it looks, and what its runs did."""

    def __init__(self, defs, sensor, spec: dict):
        from core4_pipelines.ingest.job import COLLECTION_METADATA

        self.sensor = sensor
        self.job = defs.resolve_job_def(sensor.job_name)
        self.pattern = spec.get("pattern")
        self.proc = defs.resources["folders"].proc_folder(spec.get("base"))
        collection = self.job.metadata.get(COLLECTION_METADATA)
        database = defs.resources["mongo"].database
        self.done = DrainedJob(self.job.name, sensor.name, f"{database}.{getattr(collection, 'value', collection)}")

    def left(self) -> int:
        """Files this sensor would still claim, or has claimed and not yet imported."""
        from core4_pipelines.ingest.claim import pending_batches, scan_ready
        from core4_pipelines.ingest.reappear import marked_held

        # A held file (a name that reappeared) waits for `coco release`: no drain waits for it.
        scan = scan_ready(self.proc, self.pattern, 0, hold=marked_held(self.proc))
        return len(scan.ready) + scan.open_for_writing + sum(len(b.files) for b in pending_batches(self.proc))

    def run(self, request, instance, say: Callable[[str], None], verbose: bool) -> None:
        import dagster as dg

        result = execute(self.job, instance, run_config=request.run_config, tags=request.tags, verbose=verbose)
        # From the instance's event log: a run that fails (a file in error) keeps its batch's
        # materialization there, while its in-process result may lack it. One per batch, with
        # a row per file (see import_assets.batch_materialization); a batch that imported
        # nothing materializes nothing, and its check no_rejected_files lists the rejected files.
        logs = instance.all_logs(result.run_id, of_type={dg.DagsterEventType.ASSET_MATERIALIZATION,
                                                         dg.DagsterEventType.ASSET_CHECK_EVALUATION})
        found: dict[tuple[str, str], dict] = {}
        for entry in logs:
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                table = event.materialization.metadata.get("file_table")
            else:
                table = event.event_specific_data.metadata.get("rejected_files")
            for row in _table_rows(table):
                found.setdefault((str(row.get("file")), str(row.get("outcome"))), row)
        rows = list(found.values())
        imported = [row for row in rows if row.get("outcome") == "imported"]
        rejected = [row for row in rows if row.get("outcome") == "rejected"]
        records = sum(int(row.get("records") or 0) for row in imported)
        done = self.done
        done.runs.append(result.run_id)
        done.records += records
        done.archives += [str(row.get("moved_to")) for row in imported]
        for row in rejected:
            done.errors.append(row["file"])
            done.reasons[row["file"]] = _reason(row["file"], row.get("reason"))
        if not result.success and not rejected:
            done.failed_runs.append(result.run_id)
            done.failures[result.run_id] = failure_message(result)
        state = "succeeded" if result.success else "failed"
        say(f"{self.job.name} batch {request.run_key}: {len(imported)} files imported, {records} records, "
            f"{len(rejected)} in error (run {result.run_id} {state})")


def _reason(name: str, reason: Any) -> str:
    """A rejected file's reason without its name in front (the summary names the file)."""
    text = str(reason or "").strip()
    return text.removeprefix(f"{name}: ") or "no reason recorded"


def _table_rows(table) -> list[dict]:
    return [record.data for record in getattr(getattr(table, "value", None), "records", None) or []]


def _proc_sensors(defs, project: str) -> list[_SensorDrain]:
    from core4_pipelines.ingest.sensor import PROC_SENSOR_METADATA

    drains = []
    for sensor in defs.get_repository_def().sensor_defs:
        spec = sensor.metadata.get(PROC_SENSOR_METADATA)
        if spec is not None:
            drains.append(_SensorDrain(defs, sensor, getattr(spec, "value", spec)))
    if not drains:
        raise PipelineError(f"project {project} has no proc sensor (made by proc_folder_sensor): nothing to drain")
    return drains


def _until_empty(defs, drains: list[_SensorDrain], instance, timeout: float, say: Callable[[str], None],
                 verbose: bool) -> bool:
    """Tick every sensor, run what it requests; True when ``timeout`` passed with files left.

    A sensor claims a file only once it has seen it unchanged across scans ``min_age_seconds``
    apart: while nothing is requested but files wait, tick again after a short sleep.
    """
    import dagster as dg

    deadline = time.monotonic() + timeout
    while True:
        requested = False
        for entry in drains:
            context = dg.build_sensor_context(
                instance=instance, definitions=defs, resources=defs.resources, sensor_name=entry.sensor.name
            )
            data = entry.sensor.evaluate_tick(context)
            entry.done.waiting = data.skip_message
            for request in data.run_requests or []:
                requested = True
                entry.run(request, instance, say, verbose)
        for entry in drains:
            entry.done.proc_left = entry.left()
        if not requested and not any(d.done.proc_left for d in drains):
            return False
        if time.monotonic() > deadline:
            return True
        if not requested:
            time.sleep(POLL_SECONDS)


def _indented(text: str, prefix: str) -> list[str]:
    """``text`` after ``prefix``, its further lines indented below."""
    first, *more = text.splitlines() or [""]
    return [f"{prefix}{first}", *(f"    {line}" for line in more)]


def summary_lines(result: DrainResult) -> list[str]:
    """The summary ``coco drain`` prints: one block per proc sensor's job, each file in error
    with its reason, each run that failed otherwise with why."""
    lines = [f"drained {result.project} (MongoDB {result.mongo})"]
    for job in result.jobs:
        runs = f"{len(job.runs)} run{'' if len(job.runs) == 1 else 's'}"
        if job.failed_runs:
            runs += f" ({len(job.failed_runs)} failed: {', '.join(job.failed_runs)})"
        lines.append(f"{job.job}: {job.files} files, {job.records} records into {job.collection}, {runs}, "
                     f"{len(job.errors)} files in error, {len(job.archives)} archived, {job.proc_left} left in proc")
        for name in job.errors:
            lines += _indented(job.reasons.get(name, "no reason recorded"), f"  in error: {name}: ")
        if job.errors:
            lines.append(f"  fixed? put them back into proc: coco retry {result.project} NAME... (or --all)")
        for run_id in job.failed_runs:
            lines += _indented(job.failures.get(run_id, "the run failed"), f"  run {run_id} failed: ")
        if job.proc_left and job.waiting:
            lines.append(f"  {job.waiting}")
    if result.timed_out:
        lines.append("stopped at the timeout with files left in proc (raise --timeout, or see the reasons above)")
    return lines
