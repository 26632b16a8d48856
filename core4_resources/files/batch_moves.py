"""Copy-moves of many files into one folder with one durability point for all of them.

The per-file copy-move (``moves.copy_move``) flushes every copy and the folder
once per file and writes a marker file per file: most of the cost of archiving
small files. Here all copies are written into hidden temps first and their
fsyncs issued together; then one marker beside the sources records every copy,
each copy is renamed to its name, the folder is fsync'd once, and only then are
the sources and the marker removed. The promises are those of ``copy_move``: a
crash leaves each file at its source or complete at the target, never visible
half-written, and what the marker records is finished, not copied again -- a
file is never archived twice.

The batch marker is the per-file marker of one of its sources (the *anchor*,
removed last) with every file's record added: so the next batch move from the
folder, a move of the anchor (``finish_interrupted_move``) and the sweep
of stale leftovers all find it and finish the whole batch; once the anchor is
gone every other source is gone too, and the marker is a plain stale one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from core4_resources.files import moves
from core4_resources.errors import FolderError, SourceMissingError
from core4_resources.files.markers import (
    file_identity,
    finish_batch_marker,
    finish_interrupted_move,
    read_move_marker,
    still_there,
)
from core4_resources.files.fileops import fsync_files, open_new_file, remove_quietly
from core4_resources.files.names import hidden_temp_name, is_move_marker, move_marker_path, printable_name

Fill = Callable[[BinaryIO, BinaryIO], None]


@dataclass
class Moved:
    """One file of a batch move: where it went (``final``) or why it did not (``error``)."""

    source: str
    name: str
    fill: Fill | None = None
    final: str | None = None
    error: OSError | None = None
    _temp: str | None = None
    _copied: os.stat_result | None = None


def copy_move_many(
    items: Sequence[Moved], target_dir: str, on_conflict: str = "rename"
) -> Sequence[Moved]:
    """Copy-move every item into ``target_dir`` (which exists); each gets ``final`` or ``error``.

    A failure of one file (its source gone, unreadable, a name conflict under
    ``on_conflict="fail"``) is that file's ``error`` and leaves its source as it
    was; the others carry on. A failure to make the copies durable is every
    pending file's error. ``fill(src, dst)`` writes a copy (default: byte for byte,
    keeping the source's mtime).
    """
    moves.check_policy(on_conflict)
    finished: dict[str, str] = {}
    for folder in {os.path.dirname(item.source) for item in items}:
        finished.update(finish_interrupted_batches(folder))
    pending = []
    writable: dict[str, bool] = {}
    for item in items:
        try:
            item.final = finished.get(item.source) or finish_interrupted_move(item.source)
            if item.final is None:
                _write_copy(item, target_dir, writable)
                pending.append(item)
        except OSError as exc:
            item.error = exc
    if not pending:
        return items
    try:
        fsync_files([item._temp for item in pending])
    except OSError as exc:
        for item in pending:
            remove_quietly(item._temp)
            item.error = exc
        return items
    for item in pending:
        if not still_there(item.source, item._copied):
            remove_quietly(item._temp)
            item.error = SourceMissingError(
                f"source {printable_name(item.source)} was moved or removed by someone else while it "
                f"was being copied into {printable_name(target_dir)}; nothing was moved"
            )
    pending = [item for item in pending if item.error is None]
    markers = _write_markers(pending, target_dir)
    installed = []
    for item in pending:
        try:
            item.final = moves.install_file(item._temp, target_dir, item.name, on_conflict)
        except (OSError, FolderError) as exc:
            remove_quietly(item._temp)
            item.error = exc if isinstance(exc, OSError) else _as_os_error(exc)
            continue
        installed.append(item)
    if installed:
        moves.fsync_dir(target_dir)  # the one folder flush: every rename above is durable
    anchors = {anchor for anchor, _ in markers}
    for item in installed:
        if item.source not in anchors:
            remove_quietly(item.source)  # already gone: a concurrent move of the same source finished it
    for anchor, marker in markers:
        remove_quietly(anchor)  # last: while it is there, its marker finds the whole batch
        remove_quietly(marker)
    return items


def _as_os_error(exc: FolderError) -> OSError:
    error = OSError(str(exc))
    error.__cause__ = exc
    return error


def _write_copy(item: Moved, target_dir: str, writable: dict[str, bool]) -> None:
    source_dir = os.path.dirname(item.source)
    if source_dir not in writable:
        writable[source_dir] = os.access(source_dir, os.W_OK)
    if not writable[source_dir]:
        raise PermissionError(
            f"cannot move {printable_name(item.source)}: its folder {printable_name(source_dir)} is not "
            "writable, so the source could not be removed after copying; nothing was moved"
        )
    temp = os.path.join(target_dir, hidden_temp_name(item.name))
    try:
        with open(item.source, "rb") as src, open_new_file(temp) as dst:
            item._copied = os.fstat(src.fileno())
            (item.fill or moves.plain_copy)(src, dst)
        if item.fill is None:
            os.utime(temp, ns=(item._copied.st_atime_ns, item._copied.st_mtime_ns))
    except BaseException:
        remove_quietly(temp)
        raise
    item._temp = temp


def _write_markers(items: list[Moved], target_dir: str) -> list[tuple[str, str]]:
    """One marker per source folder, complete before the first copy is installed; (anchor, marker).

    Not fsync'd, as the per-file marker: one cut short by a crash is ignored, and
    losing it to a power cut costs a second copy, never data."""
    by_folder: dict[str, list[Moved]] = {}
    for item in items:
        by_folder.setdefault(os.path.dirname(item.source), []).append(item)
    markers = []
    for group in by_folder.values():
        files = [
            {
                "source": os.path.basename(item.source),
                "identity": file_identity(item._copied),
                "temp": os.path.basename(item._temp),
                "copy": file_identity(os.stat(item._temp))[:3],
            }
            for item in group
        ]
        anchor = group[0].source
        # The anchor's own record in the per-file form, so that every reader of markers knows it.
        record = {"source": files[0]["identity"], "target_dir": target_dir, "temp": files[0]["temp"],
                  "copy": files[0]["copy"], "files": files}
        marker = move_marker_path(anchor)
        with open_new_file(marker, exclusive=False) as handle:
            handle.write(json.dumps(record).encode("ascii"))  # surrogate escapes become \udcNN
        markers.append((anchor, marker))
    return markers


def finish_interrupted_batches(folder: str) -> dict[str, str]:
    """Finish the batch moves out of ``folder`` that a crash interrupted; {source: final path}."""
    try:
        with os.scandir(folder) as entries:
            markers = [entry.path for entry in entries if is_move_marker(entry.name)]
    except (FileNotFoundError, NotADirectoryError):
        return {}
    finished: dict[str, str] = {}
    for marker in markers:
        record = read_move_marker(marker)
        if record is not None and "files" in record:
            finished.update(finish_batch_marker(marker, record))
    return finished


