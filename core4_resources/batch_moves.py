"""Copy-moves of many files into one folder with one durability point for all of them.

The per-file copy-move (``moves.copy_move``) flushes every copy and the folder
once per file: two fsyncs a file, which is most of the cost of archiving small
files. Here all copies are written into hidden temps first, their fsyncs are
issued together, then each is renamed to its name (a marker beside its source
first, as in ``copy_move``), the folder is fsync'd once, and only then are the
sources removed. The promises are those of ``copy_move``: a crash leaves each
file at its source or complete at the target, never visible half-written, and
the next move of a source whose copy was installed finishes that move instead
of copying again (``moves.finish_interrupted_move``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from core4_resources import moves
from core4_resources.errors import FolderError, SourceMissingError
from core4_resources.fileops import fsync_files, open_new_file, remove_quietly
from core4_resources.names import hidden_temp_name, move_marker_path, printable_name

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
    moves._check_policy(on_conflict)
    pending = []
    writable: dict[str, bool] = {}
    for item in items:
        try:
            item.final = moves.finish_interrupted_move(item.source)
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
    installed = []
    for item in pending:
        if not moves._still_there(item.source, item._copied):
            remove_quietly(item._temp)
            item.error = SourceMissingError(
                f"source {printable_name(item.source)} was moved or removed by someone else while it "
                f"was being copied into {printable_name(target_dir)}; nothing was moved"
            )
            continue
        marker = move_marker_path(item.source)
        try:
            moves._write_marker(marker, item.source, item._temp)
            item.final = moves.install_file(item._temp, target_dir, item.name, on_conflict)
        except (OSError, FolderError) as exc:
            remove_quietly(item._temp)
            remove_quietly(marker)
            item.error = exc if isinstance(exc, OSError) else _as_os_error(exc)
            continue
        installed.append((item, marker))
    if installed:
        moves.fsync_dir(target_dir)  # the one folder flush: every rename above is durable
    for item, marker in installed:
        remove_quietly(item.source)  # already gone: a concurrent move of the same source finished it
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
            (item.fill or moves._plain_copy)(src, dst)
        if item.fill is None:
            os.utime(temp, ns=(item._copied.st_atime_ns, item._copied.st_mtime_ns))
    except BaseException:
        remove_quietly(temp)
        raise
    item._temp = temp
