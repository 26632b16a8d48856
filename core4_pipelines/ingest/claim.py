"""Claiming files in a proc folder into hidden batch folders.

A claim is a rename: atomic on one filesystem, so two claimers (two sensors,
or a sensor and a person moving files by hand) can never take the same file.
The batch folder is filled under a hidden staging name and renamed to its
final name only when complete, so a batch is never seen half-filled.
"""

from __future__ import annotations

import heapq
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Pattern

from core4_pipelines.ingest.ready import StabilityTracker, file_state, open_for_writing, tracker_for
from core4_resources.files.folders import FOLDER_MODE, is_hidden, make_dirs, rename_noreplace
from core4_resources.files.names import BATCH_DIR

STAGING_SUFFIX = ".claiming"
# A staging folder this old belongs to a claimer that died; it is released as a batch.
STALE_STAGING_SECONDS = 600.0
_BATCH_ID = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{8}$")


@dataclass
class ScanResult:
    """What one scan of a proc folder found."""

    ready: list[str] = field(default_factory=list)  # names, oldest first
    ready_bytes: list[int] = field(default_factory=list)  # their sizes, in the same order
    ready_identities: list[tuple[int, int]] = field(default_factory=list)  # (inode, mtime in ns)
    held: int = 0  # reappeared under a name just claimed (ingest/reappear.py): not claimed
    too_young: int = 0  # new or changed since the last scan: not yet stable for min_age_seconds
    open_for_writing: int = 0  # stable, but a process still holds them open for writing
    not_matching: int = 0
    not_regular: int = 0
    hidden: int = 0
    ready_total: int = 0
    # Every matching visible regular file (the inbox's backlog), young or ready.
    waiting: int = 0
    waiting_bytes: int = 0
    oldest_mtime: float | None = None


@dataclass
class Batch:
    batch_id: str
    path: str
    files: list[str]


def new_batch_id(now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(now if now is not None else time.time(), tz=timezone.utc)
    return f"{stamp:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def is_batch_id(value: str) -> bool:
    return bool(_BATCH_ID.match(value))


def batch_root(proc_folder: str) -> str:
    return os.path.join(proc_folder, BATCH_DIR)


def batch_path(proc_folder: str, batch_id: str) -> str:
    if not is_batch_id(batch_id):
        raise ValueError(f"not a batch id: {batch_id!r} (expected e.g. 20240131T120000-0123abcd)")
    return os.path.join(batch_root(proc_folder), batch_id)


def scan_ready(
    proc_folder: str,
    pattern: str | Pattern[str] | None,
    min_age_seconds: float,
    now: float | None = None,
    limit: int | None = None,
    tracker: StabilityTracker | None = None,
    hold: Callable[[str, os.stat_result, float], bool] | None = None,
) -> ScanResult:
    """One ``os.scandir`` of the folder: regular, visible, matching files that are done.

    A file is done when ``tracker`` (default: this process's tracker of the
    folder) has seen it unchanged -- same size, mtime and inode -- for at least
    ``min_age_seconds`` (or its ctime is that old at first sight: see ``ingest/ready.py``),
    and no process holds it open for writing. Its own mtime is not trusted (a file
    dated in the future is not held back forever);
    ``min_age_seconds`` 0 takes every file at once (for writers that use hidden
    names and a rename). ``ready`` holds the oldest ``limit`` of them (all when
    None); ``ready_total`` counts every stable one.

    Symlinks are never followed (``follow_symlinks=False``), so a link to a file
    outside the folder is not a regular file here and is left alone.
    """
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    now = time.time() if now is None else now
    waiting = min_age_seconds > 0
    tracker = (tracker or tracker_for(proc_folder)) if waiting else None
    result = ScanResult()
    dated: list[tuple[float, str, int, tuple[int, int]]] = []
    present: set[str] = set()
    try:
        entries = os.scandir(proc_folder)
    except FileNotFoundError:
        return result
    with entries:
        for entry in entries:
            name = entry.name
            if name[0] == ".":  # is_hidden, inlined: this loop runs once per file per tick
                if name != BATCH_DIR:
                    result.hidden += 1
                continue
            if regex is not None and not regex.match(name):
                result.not_matching += 1
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    result.not_regular += 1
                    continue
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # gone between listing and stat: someone else took it
                continue
            result.waiting += 1
            result.waiting_bytes += stat.st_size
            if result.oldest_mtime is None or stat.st_mtime < result.oldest_mtime:
                result.oldest_mtime = stat.st_mtime
            if hold is not None and hold(name, stat, now):
                result.held += 1
                continue
            if tracker is not None:
                present.add(name)
                if not tracker.stable(name, file_state(stat), now, min_age_seconds, stat.st_ctime):
                    result.too_young += 1
                    continue
            dated.append((stat.st_mtime, name, stat.st_size, (stat.st_ino, stat.st_mtime_ns)))
    if tracker is not None:
        tracker.forget_except(present)
    result.ready_total = len(dated)
    if limit is not None and len(dated) > limit:
        dated = heapq.nsmallest(limit, dated)  # no full sort of 100k names for one batch
    else:
        dated.sort()
    for _, name, size, identity in dated:
        if open_for_writing(os.path.join(proc_folder, name)):
            result.open_for_writing += 1
            result.ready_total -= 1
            if tracker is not None:
                tracker.forget(name)  # it will change again: start its wait anew
            continue
        result.ready.append(name)
        result.ready_bytes.append(size)
        result.ready_identities.append(identity)
    return result


def grown_batch_size(backlog: int, batch_size: int, max_batches: int, max_batch_files: int) -> int:
    """Files per batch this tick: ``batch_size``, grown when the backlog would need more
    than two ticks of ``max_batches`` batches, up to ``max_batch_files``.

    A tick claims at most ``max_batches`` batches, so without growth a backlog of
    100k files would take 100 ticks (1,000 s at the defaults) just to be claimed.
    Up to two ticks' worth, the next tick takes the rest as configured.
    """
    if backlog <= 2 * batch_size * max_batches:
        return batch_size
    wanted = -(-backlog // max_batches)  # ceil: the whole backlog in this tick's batches
    return max(batch_size, min(max_batch_files, wanted))


def claim_batches(
    proc_folder: str,
    names: list[str],
    batch_size: int,
    max_batches: int,
    *,
    sizes: list[int] | None = None,
    min_files: int | None = None,
    max_bytes: int | None = None,
) -> list[Batch]:
    """Rename up to ``batch_size * max_batches`` of ``names`` into new batch folders.

    With ``sizes`` (of ``names``) and ``max_bytes``, a batch that already holds
    ``min_files`` files closes before the next file would take it past ``max_bytes``:
    a grown batch stays bounded in bytes, and a batch of up to ``min_files`` never is.
    """
    batches: list[Batch] = []
    if not names:
        return batches
    min_files = batch_size if min_files is None else min_files
    root = make_dirs(batch_root(proc_folder), FOLDER_MODE)
    position = 0
    while position < len(names) and len(batches) < max_batches:
        batch_id = new_batch_id()
        staging = os.path.join(root, f".{batch_id}{STAGING_SUFFIX}")
        os.mkdir(staging, FOLDER_MODE)
        os.chmod(staging, FOLDER_MODE)  # exactly 0o750, whatever the umask
        claimed: list[str] = []
        claimed_bytes = 0
        while position < len(names) and len(claimed) < batch_size:
            name = names[position]
            size = sizes[position] if sizes is not None else 0
            if max_bytes is not None and len(claimed) >= min_files and claimed_bytes + size > max_bytes:
                break
            claimed_bytes += size
            position += 1
            try:
                rename_noreplace(os.path.join(proc_folder, name), os.path.join(staging, name))
            except FileNotFoundError:  # claimed by someone else since the scan
                continue
            claimed.append(name)
        if not claimed:
            os.rmdir(staging)
            continue
        final = os.path.join(root, batch_id)
        rename_noreplace(staging, final)  # never onto another batch folder
        batches.append(Batch(batch_id, final, claimed))
    return batches


def pending_batches(proc_folder: str, now: float | None = None) -> list[Batch]:
    """Batch folders that still hold files: claimed, and not (yet) imported.

    Staging folders left by a claimer that died are released as batches once
    they are older than ``STALE_STAGING_SECONDS``.
    """
    root = batch_root(proc_folder)
    now = time.time() if now is None else now
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    batches = []
    for name in names:
        path = os.path.join(root, name)
        if name.startswith(".") and name.endswith(STAGING_SUFFIX):
            batch_id = name[1 : -len(STAGING_SUFFIX)]
            try:
                stale = now - os.stat(path).st_mtime > STALE_STAGING_SECONDS
            except FileNotFoundError:
                continue
            if not (stale and is_batch_id(batch_id)):
                continue
            final = os.path.join(root, batch_id)
            try:
                rename_noreplace(path, final)
            except (FileNotFoundError, FileExistsError):
                continue
            path, name = final, batch_id
        if not is_batch_id(name) or not os.path.isdir(path):
            continue
        files = batch_files(path)
        if files:
            batches.append(Batch(name, path, files))
    return batches


def batch_files(path: str) -> list[str]:
    """The visible regular files of a batch folder, sorted by name."""
    try:
        with os.scandir(path) as entries:
            return sorted(
                e.name for e in entries if not is_hidden(e.name) and e.is_file(follow_symlinks=False)
            )
    except FileNotFoundError:
        return []
