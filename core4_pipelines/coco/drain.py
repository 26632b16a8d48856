"""`coco drain PROJECT`: a project's proc sensors evaluated in this process, every batch they
request imported here, until its proc folder holds nothing they would claim; then a summary.

Works for any project: its proc sensors are the sensors built by ``proc_folder_sensor``
(marked with ``PROC_SENSOR_METADATA``: job, pattern, proc sub folder). Runs are recorded
in the Dagster instance under DAGSTER_HOME, as with ``coco enqueue --local``; MongoDB is the
configured one, or the embedded server of folder.root while the drain lasts.

Dagster is imported inside the functions only: ``coco``'s parser does not load it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from core4_pipelines.errors import PipelineError

POLL_SECONDS = 0.5  # between ticks while files wait to be seen unchanged (min_age_seconds)


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


def project_folder(home: str, project: str) -> str:
    """``<home>/<project>`` when it is a project folder, else PipelineError saying why not."""
    from core4_pipelines.coco.discovery import inspect_project_folder

    folder = os.path.join(home, project)
    info = inspect_project_folder(folder) if os.path.isdir(folder) else f"no project {project!r} in folder.home {home!r}"
    if isinstance(info, str):
        raise PipelineError(info)
    return info.folder


def drain(settings, project: str, *, timeout: float = 300.0, say: Callable[[str], None] = print) -> DrainResult:
    """Tick ``project``'s proc sensors and run each batch they request, in this process, until
    nothing is left to claim and no claimed batch waits (or ``timeout`` seconds passed)."""
    import dagster as dg

    from core4_pipelines.coco.discovery import load_definitions
    from core4_pipelines.coco.instance import dagster_home, instance_environment, write_instance
    from core4_pipelines.coco.serve import MONGO_URL_ENV, mongo_for
    from core4_resources.config import mask_url

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
        drains = _proc_sensors(defs, project)
        if not os.path.isfile(os.path.join(dagster_home(settings), "dagster.yaml")):
            write_instance(settings)  # keep the one `coco serve` wrote (it holds the run queue's limits)
        with dg.DagsterInstance.from_config(dagster_home(settings)) as instance:
            timed_out = _until_empty(defs, drains, instance, timeout, say)
    return DrainResult(project, mask_url(mongo_url), [d.done for d in drains], timed_out)


class _SensorDrain:
    """One proc sensor, its job, where it looks, and what its runs did."""

    def __init__(self, defs, sensor, spec: dict):
        from core4_pipelines.jobs import COLLECTION_METADATA

        self.sensor = sensor
        self.job = defs.resolve_job_def(sensor.job_name)
        self.pattern = spec.get("pattern")
        self.proc = defs.resources["folders"].proc_folder(spec.get("base"))
        collection = self.job.metadata.get(COLLECTION_METADATA)
        database = defs.resources["mongo"].database
        self.done = DrainedJob(self.job.name, sensor.name, f"{database}.{getattr(collection, 'value', collection)}")

    def left(self) -> int:
        """Files this sensor would still claim, or has claimed and not yet imported."""
        from core4_pipelines.claims import pending_batches, scan_ready

        scan = scan_ready(self.proc, self.pattern, 0)
        return len(scan.ready) + scan.open_for_writing + sum(len(b.files) for b in pending_batches(self.proc))

    def run(self, request, instance, say: Callable[[str], None]) -> None:
        import dagster as dg

        result = self.job.execute_in_process(
            run_config=request.run_config, instance=instance, tags=request.tags, raise_on_error=False
        )
        # From the instance's event log: a run that fails (a file in error) keeps its batch's
        # materialization there, while its in-process result may lack it. One per batch, with
        # a row per file (see import_assets.batch_materialization).
        logs = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        rows = [
            row.data
            for entry in logs
            if entry.dagster_event is not None
            for row in _file_rows(entry.dagster_event.materialization.metadata)
        ]
        imported = [row for row in rows if row.get("outcome") == "imported"]
        errors = [row["file"] for row in rows if row.get("outcome") == "rejected"]
        records = sum(int(row.get("records") or 0) for row in imported)
        done = self.done
        done.runs.append(result.run_id)
        done.records += records
        done.archives += [str(row.get("moved_to")) for row in imported]
        done.errors += errors
        if not result.success and not errors:
            done.failed_runs.append(result.run_id)
        state = "succeeded" if result.success else "failed"
        say(f"{self.job.name} batch {request.run_key}: {len(imported)} files imported, {records} records, "
            f"{len(errors)} in error (run {result.run_id} {state})")


def _file_rows(metadata) -> list:
    table = metadata.get("file_table")
    return list(getattr(getattr(table, "value", None), "records", None) or [])


def _proc_sensors(defs, project: str) -> list[_SensorDrain]:
    from core4_pipelines.sensors import PROC_SENSOR_METADATA

    drains = []
    for sensor in defs.get_repository_def().sensor_defs:
        spec = sensor.metadata.get(PROC_SENSOR_METADATA)
        if spec is not None:
            drains.append(_SensorDrain(defs, sensor, getattr(spec, "value", spec)))
    if not drains:
        raise PipelineError(f"project {project} has no proc sensor (made by proc_folder_sensor): nothing to drain")
    return drains


def _until_empty(defs, drains: list[_SensorDrain], instance, timeout: float, say: Callable[[str], None]) -> bool:
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
                entry.run(request, instance, say)
        for entry in drains:
            entry.done.proc_left = entry.left()
        if not requested and not any(d.done.proc_left for d in drains):
            return False
        if time.monotonic() > deadline:
            return True
        if not requested:
            time.sleep(POLL_SECONDS)


def summary_lines(result: DrainResult) -> list[str]:
    """The summary ``coco drain`` prints: one block per proc sensor's job."""
    lines = [f"drained {result.project} (MongoDB {result.mongo})"]
    for job in result.jobs:
        runs = f"{len(job.runs)} run{'' if len(job.runs) == 1 else 's'}"
        if job.failed_runs:
            runs += f" ({len(job.failed_runs)} failed: {', '.join(job.failed_runs)})"
        lines.append(f"{job.job}: {job.files} files, {job.records} records into {job.collection}, {runs}, "
                     f"{len(job.errors)} files in error, {len(job.archives)} archived, {job.proc_left} left in proc")
        lines += [f"  in error: {name}" for name in job.errors]
        if job.proc_left and job.waiting:
            lines.append(f"  {job.waiting}")
    if result.timed_out:
        lines.append("stopped at the timeout with files left in proc (raise --timeout, or see the reasons above)")
    return lines
