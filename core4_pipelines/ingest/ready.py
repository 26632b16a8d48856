"""Is a file still being written? Two cheap tests, used before a file is claimed and archived.

A writer that does not use a hidden temp name (and a rename when done) leaves a
file under its final name while it writes. Two signs tell it apart from a
finished file:

* it changes: its (size, mtime, inode) differ between two scans; a file is
  ready only once it has been seen unchanged for ``min_age_seconds``
  (``StabilityTracker``). The file's own mtime is not trusted: a clock skew or
  ``touch -d tomorrow`` would otherwise hold it back (or let it through). Its
  change time (ctime) is set by the kernel on every write, rename or chmod and
  cannot be set by a user: a file first seen with a ctime ``min_age_seconds`` in
  the past has been unchanged that long already and need not wait a second scan
  (a ctime in the future is not believed; a network filesystem whose server clock
  runs behind this machine's would make files look older than they are).
* it is open for writing: on Linux a read lease (``F_SETLEASE``) cannot be
  taken while any process holds the file open for writing
  (``open_for_writing``). The lease is released at once; its break signal is
  set to SIGURG, which is ignored by default, so a writer opening the file in
  that instant cannot kill the process that checks.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import threading
import time

# (size, mtime in ns, inode): what "unchanged" compares.
FileState = tuple[int, int, int]


def file_state(stat: os.stat_result) -> FileState:
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino)


def open_for_writing(path: str) -> bool | None:
    """True when some process holds ``path`` open for writing; None when this cannot be told
    (not Linux, a file of another user without CAP_LEASE, a filesystem without leases)."""
    setlease = getattr(fcntl, "F_SETLEASE", None)
    if setlease is None:
        return None
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.fcntl(descriptor, fcntl.F_SETSIG, signal.SIGURG)
        try:
            fcntl.fcntl(descriptor, setlease, fcntl.F_RDLCK)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EBUSY):
                return True
            return None  # EACCES (not our file), EINVAL (no leases here)
        fcntl.fcntl(descriptor, setlease, fcntl.F_UNLCK)
        return False
    finally:
        os.close(descriptor)


class StabilityTracker:
    """Remembers each name's last state in one folder between scans (in this process).

    ``stable(name, state, now, min_age)``: the name was seen with exactly this
    state at least ``min_age`` seconds ago. A new or changed file starts its
    wait again. After a restart the memory is empty: every file waits once more.
    """

    def __init__(self) -> None:
        # name -> (state, first seen in that state): plain tuples, as 100,000 names may wait here
        self._seen: dict[str, tuple[FileState, float]] = {}

    def stable(
        self, name: str, state: FileState, now: float, min_age: float, changed_at: float | None = None
    ) -> bool:
        """``changed_at``: the file's ctime, when the caller has it (see the module's doc)."""
        seen = self._seen.get(name)
        if seen is None or seen[0] != state:
            # Judged on this machine's clock, as the kernel stamped it (``now`` may be a caller's).
            age = None if changed_at is None else time.time() - changed_at
            settled = age is not None and age >= min_age
            self._seen[name] = (state, min(now, changed_at) if settled else now)
            return settled
        return now - seen[1] >= min_age

    def forget_except(self, names: set[str]) -> None:
        """Drop names no longer in the folder (claimed, moved away), so memory follows the folder."""
        if len(self._seen) > len(names):  # every present name was recorded by stable()
            self._seen = {n: v for n, v in self._seen.items() if n in names}

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)


_trackers: dict[tuple[str, str], StabilityTracker] = {}
_trackers_lock = threading.Lock()


def tracker_for(folder: str, key: str = "") -> StabilityTracker:
    """The process-wide tracker of ``folder`` (one per folder and sensor ``key``)."""
    with _trackers_lock:
        return _trackers.setdefault((os.path.abspath(folder), key), StabilityTracker())
