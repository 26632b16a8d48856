"""The proc-folder sensor: claims new files in batches and requests one import run per batch.

No wall-clock cursor: a file moved into proc keeps its old mtime, and a time
cursor would skip it. The claim (a rename into a hidden batch folder) is the
state; a batch folder that still holds files and has no run yet (the sensor
died between claim and request) is requested again, and Dagster's run_key
dedupe makes that idempotent.

The sensor also heals what a fault left behind, so that no human is needed:
a batch whose run ended while files remain in it (the run failed for a reason
that passes -- database down, disk full, worker killed; content errors move
their files out of the batch) is requested again after ``error_time``, up to
``attempts`` runs (at least ``MIN_BATCH_RUNS``); a run whose worker process is
gone is failed first (see ``supervise/recovery.py``). It claims nothing while MongoDB
does not answer.
"""


import re
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Pattern

import dagster as dg

from core4_pipelines.ingest.claim import Batch, claim_batches, grown_batch_size, pending_batches, scan_ready
from core4_pipelines.supervise.sweep import sweep_on_sensor_start
from core4_pipelines.ingest.assets import md_code, md_text
from core4_pipelines.ingest.job import import_run_config, inbox_of, pattern_of
from core4_pipelines.properties import declared_properties, resolved_properties
from core4_pipelines.supervise.failures import is_infrastructure_failure
from core4_pipelines.supervise.recovery import UNFINISHED, fail_orphaned_run, is_local_launcher, worker_gone
from core4_pipelines.tags import ATTEMPT_TAG, BATCH_TAG, RECOVERED_TAG, STATE_TAG
from core4_pipelines.ingest.ready import tracker_for
from core4_pipelines.ingest.reappear import DEFAULT_REAPPEAR_WINDOW, guard_for
from core4_pipelines.ingest.ledger import recent_claims
from core4_resources.errors import MongoError
from core4_resources.files.folders import FolderResource, printable_name
from core4_resources.mongo.resource import MongoResource

DEFAULT_BATCH_SIZE = 100
DEFAULT_MAX_BATCHES_PER_TICK = 10
# A backlog grows batches up to GROWTH times batch_size files and this many bytes.
GROWTH = 10
DEFAULT_MAX_BATCH_BYTES = 256 * 2**20
# A batch whose run the database or the disk failed runs again at once (this tick found the
# database answering), after more such failures in a row this many seconds later, doubling up to
# OUTAGE_MAX_WAIT, for as long as the outage lasts.
OUTAGE_FIRST_WAIT = 5.0
OUTAGE_MAX_WAIT = 300.0
# A batch gets at least this many runs before it waits for a human, whatever `attempts`
# says: a job's attempts (default 1) are about its code; a batch's faults are the machine's.
MIN_BATCH_RUNS = 3
# Between two runs of a batch when the job's error_time is not known (a unit test's sensor).
FALLBACK_ERROR_TIME = 60.0
# Marks a sensor built here (``coco drain`` finds them by it): its job, pattern and proc sub folder.
PROC_SENSOR_METADATA = "core4/proc_sensor"


def _instance_or_none(context: dg.SensorEvaluationContext) -> dg.DagsterInstance | None:
    # A sensor evaluated in a unit test may have no instance; then every pending batch is re-requested.
    try:
        return context.instance
    except dg.DagsterInvariantViolationError:
        return None


def batch_retry_settings(context: dg.SensorEvaluationContext, job: dg.JobDefinition) -> tuple[int, float]:
    """(runs per batch, seconds between them) from the job's core4 attempts and error_time."""
    try:
        repository = context.repository_def
        values = resolved_properties(repository.get_job(job.name)) if repository else declared_properties(job)
    except dg.DagsterInvariantViolationError:  # no repository in a unit test: the job as declared
        values = declared_properties(job)
    attempts = max(MIN_BATCH_RUNS, int(values.get("attempts") or 1))
    return attempts, float(values.get("error_time", FALLBACK_ERROR_TIME))


class _Recovery:
    """What the pending batches need this tick: requests, and what to tell the operator."""

    def __init__(self):
        self.requests: list[dg.RunRequest] = []
        self.running = 0
        self.waiting: list[str] = []
        self.stranded: list[str] = []
        self.canceled: list[str] = []
        self.failed_orphans: list[str] = []


def _recover(
    context: dg.SensorEvaluationContext,
    job: dg.JobDefinition,
    pending: list[Batch],
    base: str | None,
    now: float,
) -> _Recovery:
    out = _Recovery()
    instance = _instance_or_none(context)
    records_by_batch: dict[str, list[dg.RunRecord]] = defaultdict(list)
    if instance is not None and pending:
        records = instance.get_run_records(
            filters=dg.RunsFilter(tags={BATCH_TAG: [b.batch_id for b in pending]})
        )
        for record in records:  # newest first
            records_by_batch[record.dagster_run.tags[BATCH_TAG]].append(record)
    local = instance is not None and pending and is_local_launcher(instance)
    attempts, error_time = batch_retry_settings(context, job) if pending else (0, 0.0)
    for batch in pending:
        records = records_by_batch.get(batch.batch_id, [])
        if not records:
            context.log.info(f"re-requesting batch {batch.batch_id} ({len(batch.files)} files, no run yet)")
            out.requests.append(_request(job, batch.batch_id, len(batch.files), base))
            continue
        latest = records[0]
        run = latest.dagster_run
        if run.status in UNFINISHED:
            reason = worker_gone(instance, latest, now=now) if local else None
            if reason is None:
                out.running += 1
                continue
            fail_orphaned_run(instance, latest, reason)
            out.failed_orphans.append(f"{run.run_id} (batch {batch.batch_id}): {reason}")
            latest = instance.get_run_record_by_id(run.run_id) or latest
            run = latest.dagster_run
        elif not run.is_finished:  # queued or not started: Dagster will run it
            out.running += 1
            continue
        # A canceled run waits for a human -- unless recovery failed it, or the zombie monitor
        # stopped it (zombie_action: kill): a hung worker is a passing fault like a dead one.
        stopped_as_zombie = run.tags.get(STATE_TAG) == "zombie"
        if run.status == dg.DagsterRunStatus.CANCELED and not (run.tags.get(RECOVERED_TAG) or stopped_as_zombie):
            out.canceled.append(f"{batch.batch_id} (run {run.run_id})")
            continue
        runs_done = sum(1 for r in records if r.dagster_run.is_finished) or 1
        counted = counted_runs(records)
        if counted >= attempts:
            out.stranded.append(
                f"{batch.batch_id} ({len(batch.files)} files, {runs_done} runs, last {run.run_id})"
            )
            continue
        ended = latest.end_time or latest.update_timestamp.timestamp()
        outage = outage_streak(records)
        if run.tags.get(RECOVERED_TAG) or stopped_as_zombie:
            wait = 0.0  # failed by recovery or stopped as a zombie: it ended long ago in truth
        elif outage:  # the database or the disk: at once (the sensor saw it answer), then backing off
            wait = (min(OUTAGE_FIRST_WAIT * 2 ** (outage - 2), OUTAGE_MAX_WAIT) if outage > 1 else 0.0) - (now - ended)
        else:
            wait = error_time - (now - ended)
        what = (f"run {runs_done + 1} (after {outage} infrastructure failure(s), which use no attempt)" if outage
                else f"run {runs_done + 1} ({counted + 1} of {attempts} attempts)")
        if wait > 0:
            out.waiting.append(f"{batch.batch_id} ({what} in {wait:.0f}s)")
            continue
        context.log.warning(
            f"batch {batch.batch_id} still holds {len(batch.files)} files after run {run.run_id} "
            f"ended {run.status.value}: requesting {what}"
        )
        out.requests.append(_request(job, batch.batch_id, len(batch.files), base, attempt=runs_done + 1))
    return out


def _ledger_job(context: dg.SensorEvaluationContext, job: dg.JobDefinition) -> str | None:
    """``<project>.<job>``, as import_job names its ledger entries: from the job the repository
    holds (project_definitions rebuilds a job for its project), else the one given."""
    try:
        repository = context.repository_def
        current = repository.get_job(job.name) if repository else job
    except dg.DagsterInvariantViolationError:
        current = job
    inbox = inbox_of(current)
    return f"{inbox.path[0]}.{job.name}" if inbox else None


def counted_runs(records: Sequence[dg.RunRecord]) -> int:
    """The finished runs of a batch that count against its attempts: not those the machine failed
    (the database, the disk, a dead worker: core4_pipelines.supervise.failures)."""
    return sum(1 for r in records if r.dagster_run.is_finished and not _machine_failed(r.dagster_run))


def _machine_failed(run: dg.DagsterRun) -> bool:
    return is_infrastructure_failure(run.tags, run.status.value)


def outage_streak(records: Sequence[dg.RunRecord]) -> int:
    """How many of the batch's latest finished runs (newest first) in a row the machine failed."""
    streak = 0
    for record in records:
        if not record.dagster_run.is_finished:
            continue
        if not _machine_failed(record.dagster_run):
            break
        streak += 1
    return streak


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
    max_batch_files: int | None = None,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    reappear_window_seconds: float = DEFAULT_REAPPEAR_WINDOW,
) -> dg.SensorDefinition:
    """A sensor that claims files in ``<proc>/<project>/`` and starts ``job`` per batch.

    ``job`` is built by :func:`core4_pipelines.ingest.job.import_job`. ``pattern`` is a
    regex matched at the start of the file name (core4's ``list_proc`` meaning);
    it defaults to the job's own ``pattern``. Each tick whose backlog changed reports
    it as an observation of the job's inbox asset (files waiting, bytes, age of the
    oldest, claimed batches waiting), so the UI plots the backlog over time.
    A file is claimed once it has stayed unchanged (size, mtime, inode) for
    ``min_age_seconds`` between scans and no process holds it open for writing,
    so a writer that ignores the hidden-temp-name convention is not read half-way
    (``min_age_seconds=0`` claims at first sight: for writers that rename when done).

    When the backlog is more than two ticks' worth, batches grow so that one tick
    claims it (up to ``max_batch_files`` files, default ten times ``batch_size``; a
    grown batch closes at ``max_batch_bytes``): the claim rate follows the backlog
    instead of capping it at ``batch_size * max_batches_per_tick`` per interval.

    A file that shows up under a name claimed less than ``reappear_window_seconds`` before
    (a writer appending by path: the rest of a file already imported) is held, with a warning,
    until ``coco release`` (see ``ingest/reappear.py``); 0 imports it as a new file.
    """
    if batch_size < 1:
        raise ValueError(f"proc_folder_sensor({job.name}): batch_size must be >= 1, got {batch_size}")
    if max_batches_per_tick < 1:
        raise ValueError(
            f"proc_folder_sensor({job.name}): max_batches_per_tick must be >= 1, got {max_batches_per_tick}"
        )
    if min_age_seconds < 0:
        raise ValueError(f"proc_folder_sensor({job.name}): min_age_seconds must be >= 0, got {min_age_seconds}")
    if reappear_window_seconds < 0:
        raise ValueError(f"proc_folder_sensor({job.name}): reappear_window_seconds must be >= 0, "
                         f"got {reappear_window_seconds}")
    max_batch_files = GROWTH * batch_size if max_batch_files is None else max_batch_files
    if max_batch_files < batch_size:
        raise ValueError(
            f"proc_folder_sensor({job.name}): max_batch_files ({max_batch_files}) must be >= batch_size ({batch_size})"
        )
    import_run_config(job, "00000000T000000-00000000")  # fails now, not at the first tick, if job is wrong
    own = pattern_of(job)
    given = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
    if given is not None and own is not None and given != own:
        raise ValueError(
            f"proc_folder_sensor({job.name}): pattern {given!r} differs from the job's own {own!r}; "
            "give it in one place (import_job(pattern=...))"
        )
    pattern = pattern if pattern is not None else own
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    inbox = inbox_of(job)
    sensor_name = name or f"{job.name}_proc_sensor"
    project = inbox.path[0] if inbox else None

    @dg.sensor(
        name=sensor_name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        metadata={PROC_SENSOR_METADATA: {"job": job.name, "pattern": regex.pattern if regex else None, "base": base}},
        description=(  # Markdown in the UI: the pattern as a code span keeps its backslashes and stars
            f"Claims files matching {md_code(regex.pattern) if regex else 'anything'} in the project's "
            f"proc folder, {batch_size} per batch, and starts {md_text(job.name)} for each batch"
        ),
    )
    def proc_sensor(context: dg.SensorEvaluationContext, folders: FolderResource, mongo: MongoResource):
        proc = folders.proc_folder(base)
        try:
            mongo.ping()
        except MongoError as exc:
            # Claimed files would only wait in batches whose runs fail: leave them in proc.
            return dg.SkipReason(f"not claiming from {proc}: {exc}")
        low = folders.low_space()
        if low is not None:  # back pressure: a full disk would fail the runs, the archive and the database
            context.log.warning(f"not claiming from {proc}: {low}")
            return dg.SkipReason(f"not claiming from {proc}: {low}")
        # Leftovers of crashed moves (hidden .part files, empty batch folders) are swept on
        # the first tick in this process and then hourly.
        swept = sweep_on_sensor_start(folders, base)
        if swept is not None and (swept.items or swept.errors):
            context.log.info(f"swept {proc}: {swept.summary()}")
        now = time.time()
        pending = pending_batches(proc)
        recovery = _recover(context, job, pending, base, now)
        guard = None
        if reappear_window_seconds > 0:
            guard = guard_for(proc, sensor_name, reappear_window_seconds)
            if not guard.seeded:  # a new process: the claims of the last minutes, from disk and the ledger
                ledger_job = _ledger_job(context, job)
                try:
                    earlier = recent_claims(mongo, ledger_job, now - reappear_window_seconds) if ledger_job else []
                except MongoError as exc:
                    return dg.SkipReason(f"not claiming from {proc}: {exc}")
                guard.seed(pending, earlier, now)
            guard.begin_scan()
        for line in recovery.failed_orphans:
            context.log.warning(f"failed run {line}")
        if recovery.stranded:
            context.log.error(
                "batches whose every run failed wait for a human (re-execute the last run after "
                "fixing the cause, e.g. `coco restart RUN_ID`): " + ", ".join(recovery.stranded)
            )
        if recovery.canceled:
            context.log.warning(
                "batches whose run was canceled still hold files; re-execute the run to import them: "
                + ", ".join(recovery.canceled)
            )
        scan = scan_ready(
            proc, regex, min_age_seconds, now=now, limit=max_batch_files * max_batches_per_tick,
            tracker=tracker_for(proc, sensor_name), hold=guard.check if guard else None,
        )
        requests = list(recovery.requests)
        size = grown_batch_size(scan.ready_total, batch_size, max_batches_per_tick, max_batch_files)
        claimed = claim_batches(
            proc, scan.ready, size, max_batches_per_tick,
            sizes=scan.ready_bytes, min_files=batch_size, max_bytes=max_batch_bytes,
        )
        held: list[str] = []
        if guard is not None:
            guard.end_scan(claimed, dict(zip(scan.ready, scan.ready_identities)), now)
            for hold in guard.new_holds:
                context.log.warning(
                    f"{printable_name(hold.name)} appeared in {printable_name(proc)} again {now - hold.claimed_at:.0f}s "
                    f"after a file of that name was claimed (batch {hold.batch}): held, not imported -- a writer "
                    "appending to the file by path? Its rest would be imported as a file of its own (a CSV "
                    f"without its header). `coco release {project or 'PROJECT'} {printable_name(hold.name)}` imports "
                    "it all the same; moving it out of proc ends the hold"
                )
            held = [printable_name(h.name) for h in guard.held()]
        for batch in claimed:
            requests.append(_request(job, batch.batch_id, len(batch.files), base))
        observation, cursor = _inbox_observation(inbox, scan, claimed, recovery, now, context.cursor)
        return dg.SensorResult(
            run_requests=requests,
            skip_reason=None if requests else _skip_reason(proc, regex, min_age_seconds, scan, recovery, held),
            asset_events=[observation] if observation else [],
            cursor=cursor,
        )

    return proc_sensor


def _inbox_observation(
    inbox: dg.AssetKey | None, scan, claimed: list[Batch], recovery: _Recovery, now: float, cursor: str | None
) -> tuple[dg.AssetObservation | None, str | None]:
    """The inbox's backlog as this tick found it (before its claim), when it changed since the
    last one reported (the cursor holds those counts: the oldest file's age changes every tick)."""
    if inbox is None:
        return None, cursor
    batches = recovery.running + len(recovery.waiting) + len(recovery.stranded) + len(recovery.canceled)
    failed = len(recovery.waiting) + len(recovery.stranded) + len(recovery.canceled)
    counts = f"{scan.waiting}/{scan.waiting_bytes}/{batches}/{failed}"
    if counts == cursor:
        return None, cursor
    oldest = 0.0 if scan.oldest_mtime is None else max(0.0, now - scan.oldest_mtime)
    return dg.AssetObservation(
        asset_key=inbox,
        metadata={
            "files_waiting": scan.waiting,
            "bytes_waiting": scan.waiting_bytes,
            "oldest_age_seconds": round(oldest, 1),
            "claimed_batches": batches,
            "batches_waiting_on_a_failed_run": failed,
            "claimed_now": sum(len(b.files) for b in claimed),
        },
    ), counts


def _skip_reason(proc, regex, min_age_seconds, scan, recovery: _Recovery, held: Sequence[str] = ()) -> str:
    details = []
    if held:
        details.append(f"{len(held)} files held: they reappeared under a name claimed minutes before "
                       f"({', '.join(sorted(held)[:5])}{', ...' if len(held) > 5 else ''}; coco release PROJECT NAME)")
    if scan.too_young:
        details.append(
            f"{scan.too_young} files not yet unchanged for {min_age_seconds:g}s (new, or still growing)"
        )
    if scan.open_for_writing:
        details.append(f"{scan.open_for_writing} files still open for writing by another process")
    if scan.not_matching:
        details.append(f"{scan.not_matching} names do not match {regex.pattern if regex else ''!r}")
    if scan.not_regular:
        details.append(f"{scan.not_regular} entries are not regular files")
    if scan.hidden:
        details.append(
            f"{scan.hidden} hidden names (starting with '.') are never imported: files in flight, or "
            f"dotfiles to rename"
        )
    if recovery.running:
        details.append(f"{recovery.running} claimed batches have a run queued or in progress")
    if recovery.waiting:
        details.append("batches to run again: " + ", ".join(recovery.waiting))
    if recovery.stranded:
        details.append(f"{len(recovery.stranded)} batches failed every run and wait for a human: "
                       + ", ".join(recovery.stranded))
    if recovery.canceled:
        details.append(f"{len(recovery.canceled)} claimed batches wait for their canceled run to be re-executed")
    return f"nothing to claim in {printable_name(proc)}" + (": " + "; ".join(details) if details else "")


def _request(
    job: dg.JobDefinition, batch_id: str, files: int, base: str | None, attempt: int = 1
) -> dg.RunRequest:
    tags = {BATCH_TAG: batch_id, "core4/files": str(files)}
    if attempt > 1:
        tags[ATTEMPT_TAG] = str(attempt)
    return dg.RunRequest(
        # Dagster never repeats a run_key: each further run of a batch needs a key of its own.
        run_key=batch_id if attempt == 1 else f"{batch_id}.run{attempt}",
        run_config=import_run_config(job, batch_id, base),
        tags=tags,
    )
