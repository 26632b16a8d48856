"""Import and download building blocks.

The unit of import work is a batch: a hidden folder of claimed files (see
``claims.py``). One run imports a batch; each file's records are written
with deterministic ``_id``s, so a retry or a re-execution never duplicates a
document, and the file is archived only once its records are written.
"""


import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import dagster as dg
from pydantic import Field

from core4_pipelines.claims import batch_files, batch_path, is_batch_id
from core4_pipelines.errors import ImportBatchError, RecordError
from core4_pipelines.readers import check_field_names
from core4_pipelines.properties import job_properties, with_declared  # noqa: F401 - job_properties is public here
from core4_pipelines.runtime import core4_op, set_sources
from core4_pipelines.writers import FileState, file_state, open_for_writing
from core4_resources.errors import MongoError
from core4_resources.folders import FolderResource, printable_name, safe_move
from core4_resources.moves import download_temp_name, open_new_file
from core4_resources.mongo import MongoResource

Reader = Callable[[str], Iterable[Mapping[str, Any]]]

IMPORT_OP_METADATA = "core4/import_op"
COLLECTION_METADATA = "core4/collection"
BATCH_TAG = "core4/batch"


class ImportBatchConfig(dg.Config):
    """Run configuration of an import run: which claimed batch to import."""

    batch_id: str = Field(description="The batch folder under <proc>/<project>/.batch/ to import")
    base: str | None = Field(
        default=None, description="Proc sub folder in place of the project's own (core4's base)"
    )


@dataclass
class FileOutcome:
    name: str
    bytes: int
    records: int = 0
    duplicates: int = 0
    archive: str | None = None  # where it went: archive, error folder or back to proc
    error: str | None = None  # content error: the file goes to the error folder
    changed: str | None = None  # still being written: its records removed, the file back to proc
    vanished: bool = False  # removed from the batch by someone else before it was imported
    kept: str | None = None  # not moved on for a passing reason: stays for the batch's next run

    @property
    def is_imported(self) -> bool:
        return not (self.error or self.changed or self.vanished or self.kept)


def record_id(batch_id: str, name: str, position: int) -> str:
    """The deterministic ``_id`` of a file's record: the same on every retry of the batch."""
    return f"{batch_id}/{name}#{position}"


def _records_with_ids(read: Reader, path: str, batch_id: str, name: str):
    # A reader's own _ids are checked for repeats within the file: the import ignores
    # duplicate keys (they are an earlier attempt's writes), so a repeat inside one
    # file would otherwise vanish silently.
    own_ids: dict[str, int] = {}
    checked_keys: tuple = ()
    for position, record in enumerate(read(path)):
        if not isinstance(record, Mapping):
            raise RecordError(
                f"{path}: record {position} is a {type(record).__name__}, expected a mapping"
            )
        document = dict(record)
        keys = tuple(document)
        if keys != checked_keys:  # records of one file mostly share their keys: checked once
            check_field_names(keys, f"{printable_name(path)}: record {position}")
            checked_keys = keys
        if "_id" in document:
            first = own_ids.setdefault(repr(document["_id"]), position)
            if first != position:
                raise RecordError(f"{path}: record {position}: _id {document['_id']!r} repeats record {first}")
        else:
            document["_id"] = record_id(batch_id, name, position)
        yield document


@contextlib.contextmanager
def _batch_lock(folder: str, batch_id: str):
    """Hold the batch for this run: a second run of the same batch (a re-execution
    started while the first still runs) is refused with a clear message."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:  # already imported: nothing to hold
        yield
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise dg.Failure(
                f"batch {batch_id} is being imported by another run; wait for it to finish",
                allow_retries=False,
            ) from None
        yield
    finally:
        os.close(descriptor)


def _remove_partial(mongo: MongoResource, collection: str, batch_id: str, shown: str, run_id: str):
    """Delete what a failed or discarded read of one file had already written."""
    prefix = re.escape(f"{batch_id}/{shown}#")
    mongo.collection(collection).delete_many(
        {"$or": [{"_id": {"$regex": f"^{prefix}"}}, {"_src": shown, "_job_id": run_id}]}
    )


# Archiving failed for a reason that passes (a full or failing disk): the file stays in
# its batch, whose next run imports it again (its records are there already: no duplicates).
_PASSING_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM, errno.EINTR})


def write_file_records(
    path: str,
    *,
    read: Reader,
    collection: str,
    mongo: MongoResource,
    batch_id: str,
    run_id: str,
) -> FileOutcome:
    """Write one file's records; nothing moves yet (see :func:`finish_file`).

    A MongoDB failure is raised: the file stays claimed and is imported again.
    A content failure, a file that vanished or one still being written is
    recorded in the outcome, with whatever it had written removed again.
    """
    name = os.path.basename(path)
    shown = printable_name(name)
    try:
        before = file_state(os.stat(path))
    except FileNotFoundError:
        return FileOutcome(name=name, bytes=0, vanished=True)
    outcome = FileOutcome(name=name, bytes=before[0])
    try:
        result = mongo.insert_stamped(
            collection,
            _records_with_ids(read, path, batch_id, shown),
            source=shown,
            job_id=run_id,
            on_duplicate="ignore",
        )
    except MongoError:
        raise
    except Exception as exc:  # the reader failed on this file's content (or the file went away)
        _remove_partial(mongo, collection, batch_id, shown, run_id)
        if not os.path.lexists(path):
            outcome.vanished = True
        else:
            outcome.error = str(exc) if isinstance(exc, RecordError) else f"{type(exc).__name__}: {exc}"
        return outcome
    try:
        after: FileState | None = file_state(os.stat(path))
    except FileNotFoundError:
        after = None
    if after != before or open_for_writing(path):
        _remove_partial(mongo, collection, batch_id, shown, run_id)
        if after is None:
            outcome.vanished = True
        elif after != before:
            outcome.changed = f"it changed while it was read ({before[0]} -> {after[0]} bytes)"
        else:
            outcome.changed = "another process still holds it open for writing"
        return outcome
    outcome.records = result.inserted + result.duplicates
    outcome.duplicates = result.duplicates
    return outcome


def finish_file(outcome: FileOutcome, folder: str, folders: FolderResource, base: str | None) -> None:
    """Move one file on, once the batch's writes are durable: archive, error, or back to proc."""
    path = os.path.join(folder, outcome.name)
    if outcome.vanished:
        return
    try:
        if outcome.error is not None:
            outcome.archive = folders.move_error(path, outcome.error, base=base)
        elif outcome.changed is not None:
            outcome.archive = _return_to_proc(path, outcome, folders, base)
        else:
            outcome.archive = folders.move_archive(path, base=base)
    except FileNotFoundError:
        outcome.vanished = True
    except OSError as exc:
        if exc.errno in _PASSING_ERRNOS:
            outcome.kept = f"{type(exc).__name__}: {exc}"
            return
        # A lasting reason (permissions, a name the archive cannot take): its records are in
        # MongoDB, so the file must not look unimported: to error, saying both.
        outcome.error = (
            f"its {outcome.records} records were imported (_src {printable_name(outcome.name)!r}), "
            f"but the file could not be archived: {type(exc).__name__}: {exc}"
        )
        try:
            outcome.archive = folders.move_error(path, outcome.error, base=base)
        except OSError as again:
            outcome.kept = f"{outcome.error}; moving it to the error folder failed too: {again}"


def _return_to_proc(path: str, outcome: FileOutcome, folders: FolderResource, base: str | None) -> str:
    """A file a writer was still writing goes back to proc, to be claimed once it is stable."""
    try:
        return folders.move_proc(path, base=base, on_conflict="fail")
    except FileNotFoundError:
        raise
    except Exception as exc:  # its name is taken in proc again: keep both, loudly
        outcome.error = f"{outcome.changed}; returning it to proc failed ({exc})"
        outcome.changed = None
        return folders.move_error(path, outcome.error, base=base)


def _file_event(project: str, collection: str, run_id: str, batch_id: str, o: FileOutcome):
    return dg.AssetMaterialization(
        asset_key=dg.AssetKey([project, collection]),
        description=f"imported {printable_name(o.name)}",
        metadata={
            "source": printable_name(o.name),
            "records": o.records,
            "duplicates_skipped": o.duplicates,
            "bytes": o.bytes,
            "archive": dg.MetadataValue.path(o.archive or ""),
            "batch": batch_id,
            "run_id": run_id,
        },
        tags={BATCH_TAG: batch_id},
    )


def _report(context, project: str, collection: str, batch_id: str, o: FileOutcome) -> None:
    shown = printable_name(o.name)
    if o.is_imported:
        context.log_event(_file_event(project, collection, context.run_id, batch_id, o))
    elif o.error:
        context.log.error(f"{shown} moved to {printable_name(o.archive or '')}: {o.error}")
    elif o.changed:
        context.log.warning(
            f"{shown} was still being written ({o.changed}): its records were removed and the "
            f"file returned to {printable_name(o.archive or '')}, to be imported once it stays unchanged"
        )
    elif o.vanished:
        context.log.warning(f"{shown} vanished from batch {batch_id} before it was imported; nothing of it is kept")


def import_job(
    name: str,
    *,
    read: Reader,
    collection: str,
    description: str | None = None,
    retry_policy: dg.RetryPolicy | None = None,
    tags: Mapping[str, str] | None = None,
    properties: Mapping[str, Any] | None = None,
) -> dg.JobDefinition:
    """A job that imports one claimed batch: ``read(path)`` yields each file's records.

    The proc-folder sensor starts it with ``ImportBatchConfig`` naming the batch.
    Files that cannot be read go to the error folder with the reason; the others
    are imported and archived, and the run then fails listing the bad files
    (without retrying them: their content will not change). ``properties`` declares
    core4 job properties (as :func:`job_properties` does); a MongoDB failure is retried
    per ``attempts``/``error_time``. The run's ``core4/sources`` tag lists the batch's files.
    """
    op_name = f"{name}_batch"

    @core4_op(name=op_name, retry_policy=retry_policy, description=f"Import a batch into {collection}")
    def import_batch_op(
        context: dg.OpExecutionContext,
        config: ImportBatchConfig,
        folders: FolderResource,
        mongo: MongoResource,
    ) -> dict:
        if not is_batch_id(config.batch_id):
            raise dg.Failure(f"run config batch_id {config.batch_id!r} is not a batch id", allow_retries=False)
        folder = batch_path(folders.proc_folder(config.base), config.batch_id)
        with _batch_lock(folder, config.batch_id):
            names = batch_files(folder)
            if not names:
                context.log.info(f"batch {config.batch_id}: nothing left to import in {folder}")
            else:
                set_sources([printable_name(n) for n in names])  # lineage: every file of the run
            outcomes = [
                write_file_records(
                    os.path.join(folder, file_name),
                    read=read,
                    collection=collection,
                    mongo=mongo,
                    batch_id=config.batch_id,
                    run_id=context.run_id,
                )
                for file_name in names
            ]
            if outcomes:
                # The one durability point of the batch: no file is archived before its
                # records (and the removal of a bad file's records) are journaled.
                mongo.make_durable()
            for outcome in outcomes:
                finish_file(outcome, folder, folders, config.base)
                _report(context, folders.project, collection, config.batch_id, outcome)
            try:
                os.rmdir(folder)
            except OSError:  # already gone, or files kept for the next run: keep it visible
                pass
        failed = [o for o in outcomes if o.error]
        kept = [o for o in outcomes if o.kept]
        summary = {
            "batch": config.batch_id,
            "files": len(outcomes),
            "imported": sum(1 for o in outcomes if o.is_imported),
            "records": sum(o.records for o in outcomes if o.is_imported),
            "errors": len(failed),
            "returned_to_proc": sum(1 for o in outcomes if o.changed),
            "vanished": sum(1 for o in outcomes if o.vanished),
        }
        if kept:
            listing = "\n".join(f"- {printable_name(o.name)}: {o.kept}" for o in kept)
            # Not a dg.Failure without retries: the batch's files wait for its next run.
            raise ImportBatchError(
                f"{len(kept)} of {len(outcomes)} files could not be moved on and stay in batch "
                f"{config.batch_id} (their records are written; the next run finishes them):\n{listing}"
            )
        if failed:
            listing = "\n".join(
                f"- {printable_name(o.name)} -> {printable_name(o.archive or '')}: {o.error}" for o in failed
            )
            raise dg.Failure(
                description=f"{len(failed)} of {len(outcomes)} files could not be imported and "
                f"were moved to the error folder:\n{listing}",
                metadata={**summary, "failed_files": [printable_name(o.name) for o in failed]},
                allow_retries=False,
            )
        context.add_output_metadata(summary)
        return summary

    @dg.job(
        name=name,
        description=description or f"Import claimed files into the {collection} collection",
        executor_def=dg.in_process_executor,
        metadata={IMPORT_OP_METADATA: op_name, COLLECTION_METADATA: collection},
        tags=dict(tags or {}),
    )
    def import_files_job():
        import_batch_op()

    return with_declared(import_files_job, properties) if properties else import_files_job


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


def download_to_proc(
    folders: FolderResource,
    filename: str,
    write: Callable[[BinaryIO], None],
    *,
    base: str | None = None,
    on_conflict: str = "rename",
) -> str:
    """Download through transfer into proc: ``write(handle)`` fills the file.

    The bytes land under a hidden name in transfer, become visible there only
    when complete, and then move into proc (``move_proc``) where the sensor
    will claim them. Returns the path in proc.
    """
    target = folders.make_transfer(filename, base=base)
    folder, final_name = os.path.split(target)
    partial = os.path.join(folder, download_temp_name(final_name))
    try:
        with open_new_file(partial) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        in_transfer = safe_move(partial, folder, name=final_name, on_conflict=on_conflict)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return folders.move_proc(in_transfer, base=base, on_conflict=on_conflict)
