"""The import job: one claimed batch imported into a collection asset.

The unit of import work is a batch: a hidden folder of claimed files (see
``ingest/claim.py``). One run imports a batch (``ingest/files.py`` writes and moves each
file); it materializes the collection once, with a table of the batch's files, and
evaluates the ``no_rejected_files`` check (``ingest/assets.py``).
"""


import functools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import dagster as dg
from pydantic import Field

from core4_pipelines.ingest.claim import batch_files, batch_path, claim_batches, is_batch_id, scan_ready
from core4_pipelines.download.job import download_job, download_to_proc  # noqa: F401 - public here too
from core4_pipelines.errors import ImportBatchError
from core4_resources.errors import MongoError
from core4_pipelines.ingest.assets import (
    bad_rows_check_result,
    bad_rows_check_spec,
    REJECTED_FILES_ACTIONS,
    ImportAssets,
    batch_materialization,
    collection_key,
    collection_spec,
    inbox_key,
    inbox_spec,
    reader_name,
    register,
    rejected_check_result,
    rejected_check_spec,
    resolve_asset_job,
)
from core4_pipelines.properties import job_properties, with_declared  # noqa: F401 - job_properties is public here
from core4_pipelines.ingest.write import finish_batch, write_batch_records
from core4_pipelines.ingest.files import (  # noqa: F401 - _records_with_ids for tests
    FileOutcome,
    Reader,
    _batch_lock,
    _records_with_ids,
)
from core4_pipelines.ingest.bad_rows import BadRowPolicy, check_bad_rows
from core4_pipelines.ingest.reappear import marked_held
from core4_pipelines.ingest.ledger import DUPLICATES_ACTIONS, Ledger, batch_file_hashes, duplicate_note
from core4_pipelines.ingest.modes import check_mode, ensure_key_index, mode_counts
from core4_pipelines.ingest.outcomes import TempFolder, divert_rows, file_row, in_error, rejected_failure, report_file
from core4_pipelines.ingest.record_model import model_converter
from core4_pipelines.supervise.runtime import core4_compute, heartbeat, set_sources
from core4_pipelines.tags import (  # noqa: F401 - BATCH_TAG importable here as before
    BATCH_TAG,
    MESSAGE_TAG,
    REJECTED_STATE,
    RETRY_TAG,
    STATE_TAG,
)
from core4_resources.files.folders import FolderResource, printable_name
from core4_resources.mongo.resource import MongoResource

UNASSIGNED_PROJECT = "unassigned"  # until project_definitions builds the job for its project
IMPORT_OP_METADATA = "core4/import_op"
COLLECTION_METADATA = "core4/collection"
PATTERN_METADATA = "core4/pattern"
INBOX_METADATA = "core4/inbox"


# What "Materialize" in the UI imports (a run without a batch_id): the files waiting now, up
# to this many, claimed as one batch; the sensor claims the rest.
MATERIALIZE_MAX_FILES = 1000


class ImportBatchConfig(dg.Config):
    """Run configuration of an import run: which claimed batch to import."""

    batch_id: str | None = Field(
        default=None,
        description=(
            "The batch folder under <proc>/<project>/.batch/ to import (the proc sensor gives it). "
            f"Empty, as when you click Materialize in the UI: up to {MATERIALIZE_MAX_FILES} files waiting "
            "in the inbox now (matching the import's pattern, not held open by a writer), claimed as one batch"
        ),
    )
    base: str | None = Field(
        default=None, description="Proc sub folder in place of the project's own (core4's base)"
    )


def _claim_waiting(context, folders: FolderResource, base: str | None, pattern: str | None) -> str | None:
    """Claim the files waiting in proc now as one batch (a run started without a batch_id);
    the run is tagged with it, so the sensor runs the batch again should this run fail."""
    proc = folders.proc_folder(base)
    # No wait for files to stay unchanged (an operator asked for it now); one still held open
    # for writing is left alone all the same.
    # A file held as reappearing (ingest/reappear.py) waits for `coco release` here too.
    scan = scan_ready(proc, pattern, 0, limit=MATERIALIZE_MAX_FILES, hold=marked_held(proc))
    batches = claim_batches(proc, scan.ready, MATERIALIZE_MAX_FILES, 1)
    if not batches:
        context.log.info(f"nothing waiting in {printable_name(proc)}" + (f" matching {pattern}" if pattern else ""))
        return None
    batch = batches[0]
    context.instance.add_run_tags(context.run.run_id, {BATCH_TAG: batch.batch_id})
    context.log.info(f"claimed {len(batch.files)} waiting files as batch {batch.batch_id}")
    return batch.batch_id


def import_job(
    name: str,
    *,
    read: Reader,
    collection: str,
    pattern: str | re.Pattern[str] | None = None,
    model: type | None = None,
    freshness: timedelta | float | None = None,
    checks: Iterable[Any] = (),
    rejected_files: str = "fail",
    mode: str = "insert",
    keys: Sequence[str] | None = None,
    duplicates: str = "import",
    bad_rows: str = "fail",
    max_bad_rows: float | None = None,
    project: str | None = None,
    description: str | None = None,
    retry_policy: dg.RetryPolicy | None = None,
    tags: Mapping[str, str] | None = None,
    properties: Mapping[str, Any] | None = None,
) -> dg.JobDefinition:
    """A job that imports one claimed batch into the asset ``[project, collection]``.

    ``read(path)`` yields each file's records; ``model`` (a pydantic model) validates
    and converts each of them. The proc-folder sensor starts the job with
    ``ImportBatchConfig`` naming the batch. Each run materializes the collection once,
    with a table of the batch's files; the check ``no_rejected_files`` fails when files
    went to the error folder (with ``rejected_files="fail"``, the default, the run fails
    too, without retrying them: their content will not change; ``"warn"`` only warns).
    ``checks`` are further asset checks of the collection, run after each batch. ``mode``
    (``insert``, ``upsert``, ``merge``, ``replace``) is how records are written, ``keys``
    the fields that name a document for upsert and merge (see ``ingest/modes.py``). Every
    file is entered in the project's file ledger (``sys.files``, see ``ingest/ledger.py``);
    ``duplicates="skip"`` archives a file whose content this import imported before without
    importing it again (``"import"`` imports it all the same). ``bad_rows`` (``fail``, ``skip``,
    ``divert``) and ``max_bad_rows`` are what a file's bad rows do (see ``ingest/bad_rows.py``).
    ``pattern`` (names the sensor claims) and ``freshness`` (a timedelta or seconds; also
    ``jobs.<name>.freshness`` in the configuration) describe the asset. ``project`` is the
    first part of its asset keys: :func:`project_definitions` sets it to its own project (a
    job built without one, run on its own, uses ``unassigned``). ``properties`` declares core4 job
    properties (as :func:`job_properties` does); a MongoDB failure is retried per
    ``attempts``/``error_time``. The run's ``core4/sources`` tag lists the batch's files.
    """
    if rejected_files not in REJECTED_FILES_ACTIONS:
        raise ValueError(
            f"import_job({name}): rejected_files must be one of {', '.join(REJECTED_FILES_ACTIONS)}, "
            f"got {rejected_files!r}"
        )
    keys = check_mode(mode, keys, f"import_job({name})")
    if duplicates not in DUPLICATES_ACTIONS:
        raise ValueError(f"import_job({name}): duplicates must be one of {', '.join(DUPLICATES_ACTIONS)}, "
                         f"got {duplicates!r}")
    check_bad_rows(bad_rows, max_bad_rows, f"import_job({name})")
    row_policy = BadRowPolicy(bad_rows, max_bad_rows)
    pattern_text = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
    if pattern_text is not None:
        try:
            re.compile(pattern_text)
        except re.error as exc:
            raise ValueError(f"import_job({name}): pattern {pattern_text!r} is not a regular expression: {exc}") from None
    project = project or UNASSIGNED_PROJECT
    convert = model_converter(model) if model is not None else None
    checks = list(checks)
    op_name = f"{name}_batch"
    key = collection_key(project, collection)
    spec = collection_spec(
        project, collection, job_name=name, reader=reader_name(read), pattern=pattern_text,
        model=model, freshness=freshness, mode=mode, keys=keys,
    )

    def import_batch(
        context: dg.AssetExecutionContext,
        config: ImportBatchConfig,
        folders: FolderResource,
        mongo: MongoResource,
    ):
        if config.batch_id is None:
            config = config.model_copy(update={"batch_id": _claim_waiting(context, folders, config.base, pattern_text)})
            if config.batch_id is None:
                yield rejected_check_result(key, "(none)", [], rejected_files,
                                            in_error(folders, pattern_text, config.base))
                if bad_rows != "fail":
                    yield bad_rows_check_result(key, "(none)", [])
                return
        if not is_batch_id(config.batch_id):
            raise dg.Failure(f"run config batch_id {config.batch_id!r} is not a batch id", allow_retries=False)
        folder = batch_path(folders.proc_folder(config.base), config.batch_id)
        with _batch_lock(folder, config.batch_id):
            names = batch_files(folder)
            if not names:
                context.log.info(f"batch {config.batch_id}: nothing left to import in {folder}")
            else:
                sweep_earlier_runs(context, folders, config.batch_id, names, config.base)
                set_sources([printable_name(n) for n in names])  # lineage: every file of the run
                if keys:
                    ensure_key_index(mongo, collection, keys, context.log.info)
            ledger = Ledger(mongo, f"{project}.{name}", collection)
            hashes = batch_file_hashes(folder, names)
            earlier = ledger.begin(config.batch_id, context.run.run_id, hashes, duplicates == "skip")
            diverted = TempFolder(folders)
            # One stream of inserts for the whole batch, read while the database writes.
            outcomes = write_batch_records(
                [os.path.join(folder, file_name) for file_name in names if file_name not in earlier],
                read=read,
                collection=collection,
                mongo=mongo,
                batch_id=config.batch_id,
                run_id=context.run.run_id,
                convert=convert,
                beat=lambda: heartbeat(context.op_execution_context),  # the zombie monitor sees it work
                mode=mode,
                keys=keys,
                bad_rows=row_policy,
                temp_folder=diverted.path,
            )
            sizes = {file_name: size for file_name, _, size in hashes}
            outcomes += [FileOutcome(name=n, bytes=sizes[n], duplicate_of=duplicate_note(earlier[n])) for n in earlier]
            if outcomes:
                # The one durability point of the batch: no file is archived before its
                # records (and the removal of a bad file's records) are journaled.
                mongo.make_durable()
            finish_batch(outcomes, folder, folders, config.base)  # the archive: one fsync point too
            try:
                ledger.finish(config.batch_id, outcomes)
            except MongoError as exc:
                # Past the point of no return (records journaled, files archived): failing the
                # run would retry nothing. The entries stay "importing", which the duplicate
                # check counts as imported.
                context.log.warning(f"batch {config.batch_id}: {exc}; coco files shows its files as importing")
            for outcome in outcomes:
                divert_rows(context, folders, outcome, config.base)
            diverted.remove()
            for outcome in outcomes:
                report_file(context, folders, config.batch_id, outcome)
            try:
                os.rmdir(folder)
            except OSError:  # already gone, or files kept for the next run: keep it visible
                pass
        rows = [file_row(o) for o in outcomes]
        # Only a batch that imported something materializes the collection: one that imported
        # nothing (every file rejected, or imported before) is no success of the collection.
        if any(o.is_imported and o.duplicate_of is None for o in outcomes):
            # One event per batch: the file table is the per-file lineage (with _src/_job_id).
            counts = dict(mode_counts(outcomes)) if mode != "insert" else {}
            if ledger.replayed:  # put back from the archive by coco reimport
                counts["replayed_files"] = len(ledger.replayed)
            yield batch_materialization(key, config.batch_id, rows, duplicates=sum(o.duplicates for o in outcomes),
                                        counts=counts or None)
        yield rejected_check_result(key, config.batch_id, rows, rejected_files,
                                    in_error(folders, pattern_text, config.base))
        if bad_rows != "fail":
            yield bad_rows_check_result(key, config.batch_id, rows)
        kept = [o for o in outcomes if o.kept]
        if kept:
            listing = "\n".join(f"- {printable_name(o.name)}: {o.kept}" for o in kept)
            # Not a dg.Failure without retries: the batch's files wait for its next run.
            raise ImportBatchError(
                f"{len(kept)} of {len(outcomes)} files could not be moved on and stay in batch "
                f"{config.batch_id} (their records are written; the next run finishes them):\n{listing}"
            )
        failed = [o for o in outcomes if o.error]
        if failed and rejected_files == "fail":
            raise rejected_failure(context, folders, config.batch_id, outcomes, failed, config.base)

    import_assets = dg.multi_asset(
        name=op_name,
        specs=[spec.replace_attributes(skippable=True)],
        check_specs=[rejected_check_spec(key, rejected_files)]
        + ([bad_rows_check_spec(key, bad_rows)] if bad_rows != "fail" else []),
        retry_policy=retry_policy,
        description=f"Import a claimed batch into {collection}",
    )(core4_compute(import_batch))
    inbox = inbox_spec(
        inbox_key(project, collection),
        waiting_for=f"for {name}" + (f" (names matching {pattern_text})" if pattern_text else ""),
        metadata={"pattern": pattern_text or "any visible file", "import": name},
    )
    job = resolve_asset_job(
        name,
        [inbox, import_assets],
        checks,
        [key],
        description=description or f"Import claimed files into the {collection} collection",
        executor_def=dg.in_process_executor,
        metadata={
            IMPORT_OP_METADATA: op_name,
            COLLECTION_METADATA: collection,
            PATTERN_METADATA: pattern_text,
            INBOX_METADATA: inbox.key.to_user_string(),
        },
        tags=dict(tags or {}),
    )
    rebuild = functools.partial(
        import_job, name, read=read, collection=collection, pattern=pattern, model=model,
        checks=checks, rejected_files=rejected_files, mode=mode, keys=keys, duplicates=duplicates,
        bad_rows=bad_rows, max_bad_rows=max_bad_rows,
        description=description,
        retry_policy=retry_policy, tags=tags, properties=properties,
    )
    register(job, import_assets.node_def, ImportAssets(
        project=project, collection=collection, assets=[import_assets, *checks], inbox=inbox,
        rebuild=rebuild, freshness=freshness,
    ))
    return with_declared(job, properties) if properties else job


def sweep_earlier_runs(context, folders: FolderResource, batch_id: str, names: list[str], base: str | None) -> None:
    """The hidden archive temps that earlier (killed or failed) runs of this batch left behind,
    removed before this run archives the same files: no litter stays after a crash."""
    from datetime import datetime, timezone

    records = context.instance.get_run_records(filters=dg.RunsFilter(tags={BATCH_TAG: batch_id}))
    earlier = [r for r in records if r.dagster_run.run_id != context.run.run_id and r.dagster_run.is_finished]
    if not earlier:
        return
    runs = [(r.dagster_run.run_id, datetime.fromtimestamp(r.start_time or r.create_timestamp.timestamp(),
                                                          tz=timezone.utc)) for r in earlier]
    ended = max((r.end_time or r.update_timestamp.timestamp()) for r in earlier)
    removed = folders.sweep_archive_temps(names, runs, base, before=ended + 1)
    if removed:
        context.log.info(f"batch {batch_id}: removed {len(removed)} hidden archive temp(s) that earlier runs left "
                         f"({', '.join(printable_name(os.path.basename(p)) for p in removed[:5])}"
                         + (", ..." if len(removed) > 5 else "") + ")")


def inbox_of(job: dg.JobDefinition) -> dg.AssetKey | None:
    """The inbox asset an import job reads (None for another job)."""
    value = job.metadata.get(INBOX_METADATA)
    value = getattr(value, "value", value)
    return dg.AssetKey.from_user_string(value) if value else None


def pattern_of(job: dg.JobDefinition) -> str | None:
    value = job.metadata.get(PATTERN_METADATA)
    return getattr(value, "value", value) or None


def import_run_config(job: dg.JobDefinition, batch_id: str, base: str | None = None) -> dict:
    """The run config that makes ``job`` (built by :func:`import_job`) import ``batch_id``."""
    op_name = job.metadata.get(IMPORT_OP_METADATA)
    if op_name is None:
        raise ImportBatchError(f"job {job.name!r} was not built by import_job(); it cannot import batches")
    op_name = getattr(op_name, "value", op_name)
    config: dict[str, Any] = {"batch_id": batch_id}
    if base is not None:
        config["base"] = base
    return {"ops": {op_name: {"config": config}}}
