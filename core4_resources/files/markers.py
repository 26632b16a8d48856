"""The hidden markers that make an interrupted copy-move finishable, not repeatable.

While a copy-move's copy is installed, a marker beside the source records the source's
identity and the copy (``moves.copy_move``), or, for a batch move, every file of the
batch (``batch_moves.move_many``: the marker of its anchor source). The next move of
that source, the next batch move from its folder and the sweep of stale leftovers
finish what a marker records (:func:`finish_interrupted_move`): the source is removed
when its complete copy is in place, a copy never installed is removed. Below both kinds
of move, so that neither needs the other.
"""

from __future__ import annotations

import json
import os

from core4_resources.errors import FolderError
from core4_resources.files.fileops import fsync_dir, open_new_file, remove_quietly
from core4_resources.files.names import MOVE_MARKER_SUFFIX, is_hidden, move_marker_path, printable_name


def still_there(source: str, copied: os.stat_result) -> bool:
    try:
        now = os.stat(source)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (copied.st_dev, copied.st_ino)


def marker_source(marker: str) -> str | None:
    """The existing file beside ``marker`` whose move marker it is, or None."""
    folder, name = os.path.split(marker)
    start = name[1 : -len(MOVE_MARKER_SUFFIX)].rsplit(".", 1)[0]  # the source name, cut to fit
    try:
        with os.scandir(folder) as entries:
            candidates = [e.name for e in entries if e.name.startswith(start) and e.name != name]
    except FileNotFoundError:
        return None
    for candidate in candidates:
        source = os.path.join(folder, candidate)
        if move_marker_path(source) == marker:
            return source
    return None


def file_identity(stat: os.stat_result) -> list[int]:
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns]


def write_move_marker(marker: str, source: str, temp: str) -> None:
    # Not fsync'd: a marker cut short by a crash is ignored, and it is always
    # complete before the copy is installed. Losing it to a power cut costs a
    # second copy, never data.
    record = {
        "source": file_identity(os.stat(source)),
        "target_dir": os.path.dirname(temp),
        "temp": os.path.basename(temp),
        "copy": file_identity(os.stat(temp))[:3],
    }
    with open_new_file(marker, exclusive=False) as handle:
        handle.write(json.dumps(record).encode("ascii"))  # surrogate escapes become \udcNN


def read_move_marker(marker: str) -> dict | None:
    """The record of a marker file; None when it is missing or incomplete."""
    try:
        with open(marker, encoding="utf-8") as handle:
            record = json.load(handle)
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None
    keys = {"source", "target_dir", "temp", "copy"}
    return record if isinstance(record, dict) and keys <= set(record) else None


def finish_interrupted_move(source: str) -> str | None:
    """Finish a copy-move of ``source`` that was interrupted; the final path, or None.

    None means there is nothing to finish (no marker, a stale marker, or the copy was
    never installed -- then its hidden temp is removed) and the caller moves as usual.
    """
    source = os.path.abspath(source)
    marker = move_marker_path(source)
    try:
        os.lstat(marker)  # almost never there: one probe, no open, no exception from json
    except FileNotFoundError:
        return None
    record = read_move_marker(marker)
    if record is None:
        remove_quietly(marker)
        return None
    if "files" in record:  # the marker of a batch move whose anchor this source is
        return finish_batch_marker(marker, record).get(source)
    try:
        current = file_identity(os.stat(source))
    except FileNotFoundError:
        return None  # nothing left to move; the caller reports the missing source
    if current != record["source"]:
        remove_quietly(marker)  # left by an earlier file of the same name
        return None
    target_dir = record["target_dir"]
    temp = os.path.join(target_dir, record["temp"])
    copy = record["copy"]
    if os.path.lexists(temp):
        remove_quietly(temp)  # the copy was never installed: start again
        remove_quietly(marker)
        return None
    final = _installed_copy(target_dir, copy)
    if final is None:
        source, target_dir, marker = map(printable_name, (source, target_dir, marker))
        raise FolderError(
            f"an earlier move of {source} into {target_dir} was interrupted after its complete copy "
            "was installed, and that copy is no longer there (it was moved on or removed). "
            f"If it was processed, remove {source} and the marker {marker}; to move {source} "
            "again, remove only the marker"
        )
    fsync_dir(target_dir)
    remove_quietly(source)
    remove_quietly(marker)
    return final


def _installed_copy(target_dir: str, copy: list[int]) -> str | None:
    """The visible file in ``target_dir`` that is the installed copy (same inode), if any."""
    device, inode, size = copy
    try:
        with os.scandir(target_dir) as entries:
            for entry in entries:
                if entry.inode() != inode or is_hidden(entry.name):
                    continue
                stat = entry.stat(follow_symlinks=False)
                if stat.st_dev == device and stat.st_size == size:
                    return entry.path
    except FileNotFoundError:
        return None
    return None


def finish_batch_marker(marker: str, record: dict) -> dict[str, str]:
    """Finish what one batch marker records; {source: final path} of the sources it finished.

    A source whose copy was installed is removed (its copy is the move); a copy never
    installed is removed (its source moves again); then the marker goes.
    """
    folder = os.path.dirname(marker)
    target_dir = record["target_dir"]
    installed = _visible_inodes(target_dir)
    done = []
    for entry in record["files"]:
        source = os.path.join(folder, entry["source"])
        temp = os.path.join(target_dir, entry["temp"])
        if os.path.lexists(temp):
            remove_quietly(temp)  # never installed: the source moves again
            continue
        try:
            current = file_identity(os.stat(source))
        except FileNotFoundError:
            continue  # finished before the crash
        if current != entry["identity"]:
            continue  # another file of that name now
        final = installed.get(tuple(entry["copy"]))
        if final is None:
            raise FolderError(
                f"an earlier move of {printable_name(source)} into {printable_name(target_dir)} was "
                "interrupted after its complete copy was installed, and that copy is no longer there "
                f"(it was moved on or removed). If it was processed, remove {printable_name(source)} "
                f"and the marker {printable_name(marker)}; to move it again, remove only the marker"
            )
        done.append((source, final))
    if done:
        fsync_dir(target_dir)
    anchor = os.path.join(folder, record["files"][0]["source"])
    for source, _final in sorted(done, key=lambda pair: pair[0] == anchor):  # the anchor last
        remove_quietly(source)
    remove_quietly(marker)
    return dict(done)


def _visible_inodes(folder: str) -> dict[tuple[int, int, int], str]:
    found = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not is_hidden(entry.name):
                    stat = entry.stat(follow_symlinks=False)
                    found[(stat.st_dev, stat.st_ino, stat.st_size)] = entry.path
    except FileNotFoundError:
        pass
    return found
