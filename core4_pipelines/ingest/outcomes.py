"""What became of a batch's files, as the operator sees it: the file table's rows, the run's
log lines, the failure of a batch that rejected files, and the diverted rows put beside them."""

from __future__ import annotations

import os
import shutil

from core4_pipelines._dagster import failure_without_stack
from core4_pipelines.ingest.assets import MAX_LISTED_IN_ERROR, FileRow, InError
from core4_pipelines.ingest.files import FileOutcome
from core4_pipelines.tags import MESSAGE_TAG, REJECTED_STATE, RETRY_TAG, STATE_TAG
from core4_resources.files.folders import FolderResource, printable_name


def file_row(o: FileOutcome) -> FileRow:
    if o.duplicate_of is not None and o.is_imported:
        return FileRow(o.name, "duplicate", 0, o.bytes, o.archive or "", o.duplicate_of)
    if o.is_imported:
        return FileRow(o.name, "imported", o.records, o.bytes, o.archive or "", o.bad_rows_summary or "", o.bad_rows)
    if o.error:
        return FileRow(o.name, "rejected", 0, o.bytes, o.archive or "", o.error)
    if o.changed:
        return FileRow(o.name, "returned", 0, o.bytes, o.archive or "", o.changed)
    if o.kept:
        return FileRow(o.name, "kept", o.records, o.bytes, "", o.kept)
    return FileRow(o.name, "vanished", 0, 0, "", "removed from the batch before it was imported")


def where_now(folders: FolderResource, path: str | None) -> str:
    """``path`` as an operator finds it: relative to folder.root (``error/demo/x.csv``) when under it."""
    if not path:
        return ""
    root = os.path.normpath(folders.root) if folders.root else ""
    inside = root and os.path.normpath(path).startswith(root + os.sep)
    return printable_name(os.path.relpath(path, root) if inside else path)


def report_file(context, folders: FolderResource, batch_id: str, o: FileOutcome) -> None:
    if o.error:
        context.log.error(f"{o.error} (moved to {where_now(folders, o.archive)})")
        return
    shown = printable_name(o.name)
    if o.is_imported:
        for note in o.notes:  # what its reader had to decide, e.g. a name for an unnamed column
            context.log.warning(note)
    if o.bad_rows and o.diverted is None and o.is_imported:
        context.log.warning(f"{shown}: {o.bad_rows_summary}")
    if o.duplicate_of is not None and o.is_imported:
        context.log.info(f"{shown}: {o.duplicate_of}; archived to {where_now(folders, o.archive)}, not imported again")
    elif o.changed:
        context.log.warning(
            f"{shown} was still being written ({o.changed}): its records were removed and the "
            f"file returned to {where_now(folders, o.archive)}, to be imported once it stays unchanged"
        )
    elif o.vanished:
        context.log.warning(f"{shown} vanished from batch {batch_id} before it was imported; nothing of it is kept")


class TempFolder:
    """One temp folder for a batch's diverted rows, made when the first is written."""

    def __init__(self, folders: FolderResource):
        self.folders, self.made = folders, None

    def path(self) -> str:
        if self.made is None:
            self.made = self.folders.make_temp_folder()
        return self.made

    def remove(self) -> None:
        if self.made is not None:
            shutil.rmtree(self.made, ignore_errors=True)


def divert_rows(context, folders: FolderResource, o: FileOutcome, base: str | None) -> None:
    """An imported file's diverted rows into the error folder, beside a reason saying what they are."""
    if o.diverted is None:
        return
    if not (o.is_imported and o.duplicate_of is None):
        os.unlink(o.diverted)
        return
    shown = printable_name(o.name)
    reason = (f"{o.bad_rows} bad rows of {shown}, left out of its import (bad_rows: divert); the file's other "
              f"{o.records} records were imported and it was archived to {where_now(folders, o.archive)}. "
              f"One line per row: where, reason, the row as read. {o.bad_rows_summary}")
    path = folders.move_error(o.diverted, reason, base=base)
    context.log.warning(f"{shown}: {o.bad_rows} bad rows diverted to {where_now(folders, path)}")


def retry_command(project: str, base: str | None = None) -> str:
    return f"coco retry {project}" + (f" --base {base}" if base else "")


def in_error(folders: FolderResource, pattern: str | None, base: str | None) -> InError:
    """What of this import waits in the error folder (one scan; reasons of the first few only)."""
    paths = folders.list_error(pattern, base)
    return InError(
        total=len(paths),
        files=[(os.path.basename(p), folders.error_reason(p) or "") for p in paths[:MAX_LISTED_IN_ERROR]],
        folder=where_now(folders, folders.error_folder(base)),
        retry=retry_command(folders.project, base),
    )


def rejected_failure(context, folders: FolderResource, batch_id: str, outcomes, failed, base: str | None) -> Exception:
    """The run's failure for files whose content was refused: what, where they are now and what to
    do, as lines without a stack trace (the stack of a data error helps nobody); the run is tagged
    so that `coco runs` and `coco restart` can tell it from a failure of code or infrastructure."""
    names = [printable_name(os.path.basename(o.archive or o.name)) for o in failed]
    retry = retry_command(folders.project, base)
    listing = "\n".join(f"- {o.error} (now {where_now(folders, o.archive)})" for o in failed)
    message = (
        f"{len(failed)} of {len(outcomes)} files of batch {batch_id} could not be imported and were moved to "
        f"the error folder:\n{listing}\nFix them, then put them back into proc: {retry} {' '.join(names[:10])}"
        + (" ..." if len(names) > 10 else "")
    )
    summary = f"{len(failed)} files moved to {where_now(folders, folders.error_folder(base))}: {', '.join(names[:5])}"
    context.instance.add_run_tags(context.run.run_id, {
        STATE_TAG: REJECTED_STATE, MESSAGE_TAG: (summary + (", ..." if len(names) > 5 else ""))[:500],
        RETRY_TAG: retry})
    return failure_without_stack(message)


