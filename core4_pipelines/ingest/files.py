"""One file of a batch: its records written, then the file moved on.

The import writes every file of a batch (``ingest/write.write_batch_records``), makes the
batch's writes durable once, and only then moves each file on (:func:`finish_file`): to the
archive, to the error folder with the reason, or back to proc when a writer was still
at it. Records get deterministic ``_id``s, so a retry never duplicates a document.
"""

import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from core4_pipelines.errors import RecordError
from core4_pipelines.ingest.bad_rows import REJECTED_SUFFIX, BadRow, BadRowPolicy, FileBadRows
from core4_pipelines.ingest.readers import ReadNote, check_field_names
from core4_pipelines.ingest.ready import file_state, open_for_writing
from core4_pipelines.ingest.record_model import Converter
from core4_pipelines.ingest.reappear import release
from core4_resources.files.folders import FolderResource, printable_name
from core4_resources.mongo.resource import MongoResource

Reader = Callable[[str], Iterable[Mapping[str, Any]]]


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
    # What the write mode did with the records (ingest/modes.py); insert counts inserted only.
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0  # replace: the documents of the earlier file of that name
    duplicate_of: str | None = None  # the same content was imported before (ledger.py): archived, no records
    bad_rows: int = 0  # rows skipped or diverted (bad_rows.py)
    bad_rows_summary: str | None = None
    diverted: str | None = None  # the file of its diverted rows, until moved to the error folder
    notes: list[str] = field(default_factory=list)  # what its reader told (ReadNote): warnings in the log

    @property
    def is_imported(self) -> bool:
        return not (self.error or self.changed or self.vanished or self.kept)


def content_error(exc: Exception, path: str, shown: str) -> str:
    """The reason a file's content was refused, naming the file by its name: the path it was
    read from is the hidden batch folder, gone by the time anyone reads the reason."""
    text = str(exc) if isinstance(exc, RecordError) else f"{type(exc).__name__}: {exc}"
    for hidden in (path, printable_name(path)):
        text = text.replace(hidden, shown)
    return text if text.startswith(shown) else f"{shown}: {text}"


def change_after_read(path: str, before: tuple) -> tuple[bool, str | None]:
    """(vanished, why it is not to be imported now) of a file read whole since ``before``
    (its ``file_state``): gone, changed meanwhile, or still held open by a writer."""
    try:
        after = file_state(os.stat(path))
    except FileNotFoundError:
        return True, None
    if after != before:
        return False, f"it changed while it was read ({before[0]} -> {after[0]} bytes)"
    if open_for_writing(path):
        return False, "another process still holds it open for writing"
    return False, None


def file_bad_rows(policy: BadRowPolicy | None, shown: str, name: str,
                  temp_folder: Callable[[], str] | None) -> FileBadRows | None:
    """The bad-row tally of one file under ``policy`` (None: a bad row fails the file)."""
    if policy is None or policy.action == "fail":
        return None
    divert_to = None
    if policy.action == "divert" and temp_folder is not None:
        divert_to = os.path.join(temp_folder(), name + REJECTED_SUFFIX)
    return policy.for_file(shown, divert_to)


def keep_bad_rows(outcome: FileOutcome, tally: FileBadRows) -> None:
    """What a file read whole had of bad rows, on its outcome (the diverted ones' file closed)."""
    outcome.bad_rows = tally.count
    if tally.count:
        outcome.bad_rows_summary = tally.summary()
    outcome.diverted = tally.close()


def refuse_content(outcome: FileOutcome, exc: Exception, path: str, shown: str, tally: FileBadRows | None) -> None:
    """The reader failed on a file: it vanished meanwhile, or its content is the error."""
    if tally is not None:
        tally.discard()
    if not os.path.lexists(path):
        outcome.vanished = True
    else:
        outcome.error = content_error(exc, path, shown)


def record_id(batch_id: str, name: str, position: int) -> str:
    """The deterministic ``_id`` of a file's record: the same on every retry of the batch."""
    return f"{batch_id}/{name}#{position}"


def _records_with_ids(read: Reader, path: str, batch_id: str, name: str, convert: Converter | None = None,
                      bad: FileBadRows | None = None, notes: list[str] | None = None):
    # A reader's own _ids are checked for repeats within the file: the import ignores
    # duplicate keys (they are an earlier attempt's writes), so a repeat inside one
    # file would otherwise vanish silently. ``bad``: the file's bad-row tally (bad_rows.py);
    # without one a bad row fails the file. ``notes`` collects what the reader tells (ReadNote).
    # Every document gets its _src here: ``name``, or ``<name>/<member>`` for a zip member.
    own_ids: dict[str, int] = {}
    checked_keys: tuple = ()
    shown = printable_name(path)
    position = -1
    for record in read(path):
        if isinstance(record, ReadNote):
            note = content_error(RecordError(record.text), path, name)
            if notes is not None and note not in notes:  # a file read twice (modes.py) tells it once
                notes.append(note)
            continue
        position += 1
        if bad is not None:
            bad.rows += 1
        if isinstance(record, BadRow):
            if bad is None:
                raise RecordError(f"{shown}: {record.where}: {record.reason}")
            bad.bad_row(record)
            continue
        if not isinstance(record, Mapping):
            raise RecordError(
                f"{path}: record {position} is a {type(record).__name__}, expected a mapping"
            )
        if convert is None:
            document = dict(record)
        elif bad is None:
            document = convert(record, position, shown)
        else:
            try:
                document = convert(record, position, shown)
            except RecordError as exc:  # the record model refused this one record
                bad.refuse(f"record {position + 1}", str(exc).removeprefix(f"{shown}: "), dict(record))
                continue
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
        member = getattr(record, "member", None)
        document["_src"] = name if member is None else f"{name}/{printable_name(member)}"
        yield document
    if bad is not None:
        bad.check_limit()


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
        {"$or": [{"_id": {"$regex": f"^{prefix}"}}, {"_src": source_pattern(shown), "_job_id": run_id}]}
    )


def source_pattern(shown: str) -> dict:
    """The ``_src`` of a file's documents: its name, or ``<name>/<member>`` for a zip's members."""
    return {"$regex": f"^{re.escape(shown)}(/|$)"}


# Archiving failed for a reason that passes (a full or failing disk): the file stays in
# its batch, whose next run imports it again (its records are there already: no duplicates).
_PASSING_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM, errno.EINTR})


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
    except OSError as exc:
        not_archived(outcome, exc, folder, folders, base)


def not_archived(outcome: FileOutcome, exc: OSError, folder: str, folders: FolderResource, base) -> None:
    """What becomes of an imported file that could not be moved on: vanished, kept in the batch
    for a passing reason (its next run finishes it), or to the error folder saying why."""
    if isinstance(exc, FileNotFoundError):
        outcome.vanished = True
        return
    cause = getattr(exc.__cause__, "errno", None)  # a move that wrapped the OSError it met
    if exc.errno in _PASSING_ERRNOS or (exc.errno is None and cause in _PASSING_ERRNOS):
        outcome.kept = f"{type(exc).__name__}: {exc}"
        return
    # A lasting reason (permissions, a name the archive cannot take): its records are in
    # MongoDB, so the file must not look unimported: to error, saying both.
    outcome.error = (
        f"its {outcome.records} records were imported (_src {printable_name(outcome.name)!r}), "
        f"but the file could not be archived: {type(exc).__name__}: {exc}"
    )
    try:
        outcome.archive = folders.move_error(os.path.join(folder, outcome.name), outcome.error, base=base)
    except OSError as again:
        outcome.kept = f"{outcome.error}; moving it to the error folder failed too: {again}"


def _return_to_proc(path: str, outcome: FileOutcome, folders: FolderResource, base: str | None) -> str:
    """A file a writer was still writing goes back to proc, to be claimed once it is stable."""
    try:
        # The claimed file itself, grown since: not a new file under a name just claimed.
        release(folders.proc_folder(base), outcome.name, os.stat(path).st_ino)
        return folders.move_proc(path, base=base, on_conflict="fail")
    except FileNotFoundError:
        raise
    except Exception as exc:  # its name is taken in proc again: keep both, loudly
        outcome.error = f"{outcome.changed}; returning it to proc failed ({exc})"
        outcome.changed = None
        return folders.move_error(path, outcome.error, base=base)
