"""A file that reappears under a name just claimed is held, not imported as a new file.

A writer that appends to a file by path, pausing longer than the sensor's min age, has its
first part claimed and imported; its next write creates a new file under the same name that
holds only the rest (a CSV without its header, whose first data row would name the fields).
So a file seen in proc under a name claimed less than ``window`` seconds before, that is not
the claimed file itself (a file put back into proc keeps its inode and mtime; a freed inode is
soon given to a new file, so the inode alone does not tell), is held: left in proc,
not claimed, recorded by a marker ``<proc>/.batch/.held/<name>``, reported in the sensor's
log and tick and by ``coco info`` -- until the operator decides. ``coco release PROJECT NAME``
imports it as a file of its own; moving it out of proc (or renaming it) ends the hold.
``coco retry``, ``coco reimport`` and an import that returns a file still being written to
proc release the files they put back themselves.

The claims are remembered in the sensor's process; after a restart they are read again from
the claimed batch folders and the file ledger (the batch id holds the time of its claim).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from core4_resources.files.fileops import FOLDER_MODE, make_dirs, remove_quietly, write_file_atomic
from core4_resources.files.names import BATCH_DIR

if TYPE_CHECKING:  # claim loads Dagster; coco info reads the holds without it
    from core4_pipelines.ingest.claim import Batch

HELD_DIR = ".held"
# Seconds after a claim in which a file of the same name is held (FileImport reappear_window_seconds).
DEFAULT_REAPPEAR_WINDOW = 300.0
# A claim read back from the ledger or a batch folder: its file is not in proc, any file there is new.
_UNKNOWN = (-1, -1)


def held_folder(proc_folder: str) -> str:
    return os.path.join(proc_folder, BATCH_DIR, HELD_DIR)


@dataclass
class Hold:
    name: str
    inode: int
    since: float
    claimed_at: float
    batch: str | None
    released: bool = False


def read_holds(proc_folder: str) -> dict[str, Hold]:
    """The hold markers of a proc folder (name -> hold); unreadable markers are skipped."""
    folder = held_folder(proc_folder)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return {}
    holds = {}
    for name in names:
        if name.startswith("."):
            continue  # a marker being written
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                record = json.load(handle)
            holds[name] = Hold(name, int(record["inode"]), float(record["since"]), float(record["claimed_at"]),
                               record.get("batch"), bool(record.get("released")))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return holds


def write_hold(proc_folder: str, hold: Hold) -> None:
    folder = make_dirs(held_folder(proc_folder), FOLDER_MODE)
    record = {"inode": hold.inode, "since": hold.since, "claimed_at": hold.claimed_at, "batch": hold.batch,
              "released": hold.released}
    write_file_atomic(os.path.join(folder, hold.name), json.dumps(record).encode("ascii"))


def remove_hold(proc_folder: str, name: str) -> None:
    remove_quietly(os.path.join(held_folder(proc_folder), name))


def release(proc_folder: str, name: str, inode: int | None = None) -> bool:
    """Let the file ``name`` in proc be claimed as a file of its own (held or not, e.g. put back
    by ``coco retry``); ``inode`` of the file to let through (default: the file there now).
    False when there is no such file."""
    if inode is None:
        try:
            inode = os.stat(os.path.join(proc_folder, name), follow_symlinks=False).st_ino
        except FileNotFoundError:
            return False
    now = time.time()
    write_hold(proc_folder, Hold(name, inode, now, now, None, released=True))
    return True


def marked_held(proc_folder: str):
    """A ``scan_ready`` hold check that keeps the files held now held (for claims outside the sensor)."""
    holds = {name: hold for name, hold in read_holds(proc_folder).items() if not hold.released}
    if not holds:
        return None
    return lambda name, stat, now: name in holds and holds[name].inode == stat.st_ino


def batch_time(batch_id: str) -> float | None:
    try:
        return datetime.strptime(batch_id[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


class ReappearGuard:
    """The names one sensor claimed in the last ``window`` seconds, and the holds of its proc folder.

    ``check(name, stat, now)`` is asked for every matching file of a scan: True holds it.
    """

    def __init__(self, proc_folder: str, window: float):
        self.proc, self.window = proc_folder, window
        self.claimed: dict[str, tuple[float, tuple[int, int], str]] = {}  # name -> (claim time, (inode, mtime), batch)
        self.holds: dict[str, Hold] = {}
        self.new_holds: list[Hold] = []
        self.present: set[str] = set()
        self.seeded = False

    def seed(self, pending: Iterable[Batch], ledger_claims: Iterable[tuple[str, str]], now: float) -> None:
        """After a start: the claims of the last ``window`` seconds, from the batch folders still
        claimed and from the ledger's (name, batch) entries."""
        found = [(name, batch_id) for name, batch_id in ledger_claims]
        found += [(name, batch.batch_id) for batch in pending for name in batch.files]
        dated = [(at, name, batch_id) for name, batch_id in found
                 if (at := batch_time(batch_id)) is not None and now - at <= self.window]
        for at, name, batch_id in sorted(dated):  # oldest first, as end_scan keeps them
            self.claimed.pop(name, None)
            self.claimed[name] = (at, _UNKNOWN, batch_id)
        self.seeded = True

    def begin_scan(self) -> None:
        self.holds = read_holds(self.proc)
        self.new_holds = []
        self.present = set()

    def check(self, name: str, stat: os.stat_result, now: float) -> bool:
        self.present.add(name)
        hold = self.holds.get(name)
        if hold is not None:
            if hold.inode == stat.st_ino:
                return not hold.released
            remove_hold(self.proc, name)  # another file under that name now: the earlier hold is over
            del self.holds[name]
        claim = self.claimed.get(name)
        if claim is None:
            return False
        at, identity, batch_id = claim
        if now - at > self.window or identity == (stat.st_ino, stat.st_mtime_ns):
            return False
        hold = Hold(name, stat.st_ino, now, at, batch_id)
        write_hold(self.proc, hold)
        self.holds[name] = hold
        self.new_holds.append(hold)
        return True

    def end_scan(self, claimed: Iterable[Batch], identities: dict[str, tuple[int, int]], now: float) -> None:
        """Remember this tick's claims; drop old claims and the holds of files no longer in proc."""
        for batch in claimed:
            for name in batch.files:
                self.claimed.pop(name, None)  # to the end: the dict stays oldest first
                self.claimed[name] = (now, identities.get(name, _UNKNOWN), batch.batch_id)
                if name in self.holds:  # a released file, claimed now
                    remove_hold(self.proc, name)
                    del self.holds[name]
        for name in [n for n in self.holds if n not in self.present]:
            remove_hold(self.proc, name)  # moved away, renamed or claimed: the hold is over
            del self.holds[name]
        cutoff = now - self.window
        if self.claimed and next(iter(self.claimed.values()))[0] < cutoff:  # oldest first: prune rarely
            self.claimed = {n: c for n, c in self.claimed.items() if c[0] >= cutoff}

    def held(self) -> list[Hold]:
        return [h for h in self.holds.values() if not h.released]


_guards: dict[tuple[str, str], ReappearGuard] = {}
_guards_lock = threading.Lock()


def guard_for(proc_folder: str, key: str, window: float) -> ReappearGuard:
    """The process-wide guard of ``proc_folder`` for the sensor ``key``."""
    with _guards_lock:
        guard = _guards.get((os.path.abspath(proc_folder), key))
        if guard is None or guard.window != window:
            guard = _guards[(os.path.abspath(proc_folder), key)] = ReappearGuard(proc_folder, window)
        return guard
