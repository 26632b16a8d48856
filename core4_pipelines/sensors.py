"""The proc-folder sensor: claims new files in batches and requests one import run per batch.

No wall-clock cursor: a file moved into proc keeps its old mtime, and a time
cursor would skip it. The claim (a rename into a hidden batch folder) is the
state; a batch folder that still holds files and has no run yet (the sensor
died between claim and request) is requested again, and Dagster's run_key
dedupe makes that idempotent.
"""


import re
from typing import Pattern

import dagster as dg

from core4_pipelines.clean import sweep_on_sensor_start
from core4_pipelines.claims import claim_batches, pending_batches, scan_ready
from core4_pipelines.jobs import BATCH_TAG, import_run_config
from core4_resources.folders import FolderResource

DEFAULT_BATCH_SIZE = 100
DEFAULT_MAX_BATCHES_PER_TICK = 10


def _runs_by_batch(instance: dg.DagsterInstance | None, batch_ids: list[str]) -> dict[str, dg.DagsterRun]:
    if instance is None or not batch_ids:
        return {}
    runs = instance.get_runs(filters=dg.RunsFilter(tags={BATCH_TAG: batch_ids}))
    return {run.tags[BATCH_TAG]: run for run in runs}


def _instance_or_none(context: dg.SensorEvaluationContext) -> dg.DagsterInstance | None:
    # A sensor evaluated in a unit test may have no instance; then every pending batch is re-requested.
    try:
        return context.instance
    except dg.DagsterInvariantViolationError:
        return None


def proc_folder_sensor(
    job: dg.JobDefinition,
    *,
    pattern: str | Pattern[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    min_age_seconds: float = 5.0,
    max_batches_per_tick: int = DEFAULT_MAX_BATCHES_PER_TICK,
    minimum_interval_seconds: int = 10,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    base: str | None = None,
    name: str | None = None,
) -> dg.SensorDefinition:
    """A sensor that claims files in ``<proc>/<project>/`` and starts ``job`` per batch.

    ``job`` is built by :func:`core4_pipelines.jobs.import_job`. ``pattern`` is a
    regex matched at the start of the file name (core4's ``list_proc`` meaning).
    Files younger than ``min_age_seconds`` wait for a later tick, so a writer that
    ignores the hidden-temp-name convention is never read half-way.
    """
    if batch_size < 1:
        raise ValueError(f"proc_folder_sensor({job.name}): batch_size must be >= 1, got {batch_size}")
    if max_batches_per_tick < 1:
        raise ValueError(
            f"proc_folder_sensor({job.name}): max_batches_per_tick must be >= 1, got {max_batches_per_tick}"
        )
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    import_run_config(job, "00000000T000000-00000000")  # fails now, not at the first tick, if job is wrong

    @dg.sensor(
        name=name or f"{job.name}_proc_sensor",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            f"Claims files matching {regex.pattern if regex else 'anything'} in the project's "
            f"proc folder, {batch_size} per batch, and starts {job.name} for each batch"
        ),
    )
    def proc_sensor(context: dg.SensorEvaluationContext, folders: FolderResource):
        proc = folders.proc_folder(base)
        # Leftovers of crashed moves (hidden .part files, empty batch folders) are swept on
        # the first tick in this process and then hourly.
        swept = sweep_on_sensor_start(folders, base)
        if swept is not None and (swept.items or swept.errors):
            context.log.info(f"swept {proc}: {swept.summary()}")
        pending = pending_batches(proc)
        runs = _runs_by_batch(_instance_or_none(context), [b.batch_id for b in pending])
        requests = []
        waiting_failed = []
        for batch in pending:
            run = runs.get(batch.batch_id)
            if run is None:
                context.log.info(f"re-requesting batch {batch.batch_id} ({len(batch.files)} files, no run yet)")
                requests.append(_request(job, batch.batch_id, len(batch.files), base))
            elif run.status == dg.DagsterRunStatus.FAILURE:
                waiting_failed.append(f"{batch.batch_id} (run {run.run_id})")
        if waiting_failed:
            context.log.warning(
                "batches whose run failed still hold files; re-execute the run to import them: "
                + ", ".join(waiting_failed)
            )
        scan = scan_ready(proc, regex, min_age_seconds, limit=batch_size * max_batches_per_tick)
        for batch in claim_batches(proc, scan.ready, batch_size, max_batches_per_tick):
            requests.append(_request(job, batch.batch_id, len(batch.files), base))
        if requests:
            return requests
        reason = f"nothing to claim in {proc}"
        details = []
        if scan.too_young:
            details.append(f"{scan.too_young} files younger than {min_age_seconds:g}s wait for the next tick")
        if scan.not_matching:
            details.append(f"{scan.not_matching} names do not match {regex.pattern if regex else ''!r}")
        if scan.not_regular:
            details.append(f"{scan.not_regular} entries are not regular files")
        if waiting_failed:
            details.append(f"{len(waiting_failed)} claimed batches wait for their failed run to be re-executed")
        return dg.SkipReason(reason + (": " + "; ".join(details) if details else ""))

    return proc_sensor


def _request(job: dg.JobDefinition, batch_id: str, files: int, base: str | None) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=batch_id,
        run_config=import_run_config(job, batch_id, base),
        tags={BATCH_TAG: batch_id, "core4/files": str(files)},
    )
