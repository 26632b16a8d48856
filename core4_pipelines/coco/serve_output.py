"""What dagster dev and its processes print, passed through `coco serve`: ``DagsterOutputFilter``
leaves out what says nothing happened (a sensor tick that claimed nothing, each run's DEBUG
events: the UI has them), ``OutputForwarder`` copies each child's output to the terminal through
it. ``coco serve -v`` shows everything."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import subprocess
import sys
import threading
import time
from typing import IO, Callable

OUTPUT_CLOSE_SECONDS = 1.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Dagster's log format: "2026-01-31 12:00:00 +0000 - dagster.daemon.SensorDaemon - INFO - message".
_LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:[.,]\d+)?(?: [+-]\d{4})? - (?P<logger>\S+) - (?P<level>[A-Z]+) - "
    r"(?P<message>.*)$", re.DOTALL)
_SENSOR_SKIPPED = re.compile(r"Sensor (?P<sensor>\S+) skipped: (?P<reason>.*)$", re.DOTALL)
# Skip reasons that mean nothing happened: never shown (coco serve -v shows them).
_IDLE_REASONS = (
    re.compile(r"Sensor function returned an empty result$"),  # Dagster's, for a sensor that returned nothing
    re.compile(r"Initiating \S+\. Set cursor to "),  # a run status sensor's first tick
    re.compile(r"nothing to claim in (?:(?!: ).)*$"),  # a proc sensor with an empty proc folder
    re.compile(r"\d+ runs of \S+ running, none newly silent for its zombie_time; no deferred run due$"),  # core4_monitor
)
# A reason shown for a sensor is not shown again for it within this time: a busy tick's reason
# ("3 files not yet unchanged") changes while files settle, a stuck one is repeated as a reminder.
REPEAT_AFTER_SECONDS = 600.0


class DagsterOutputFilter:
    """Which lines of dagster dev's output coco serve shows: everything but what says nothing
    happened -- Dagster's DEBUG lines (each run's events, in the UI's run log), the daemon's
    "Checking for new runs for sensor: X" every tick, and "Sensor X skipped: R" when R is an
    idle reason or was shown for X within ``repeat_after`` seconds. Thread-safe."""

    def __init__(self, repeat_after: float = REPEAT_AFTER_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.repeat_after = repeat_after
        self.clock = clock
        self._shown: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def keep(self, line: str) -> bool:
        found = _LOG_LINE.match(_ANSI.sub("", line).rstrip("\r\n"))
        if found is None:  # not a log line of Dagster's: a warning, a traceback, a print
            return True
        if found["level"] == "DEBUG":
            return False
        message = found["message"]
        if not found["logger"].startswith("dagster.daemon"):
            return True
        if message.startswith("Checking for new runs for sensor: ") or (
                message.startswith("No run requests returned for ") and message.endswith(", skipping")):
            return False
        skipped = _SENSOR_SKIPPED.match(message)
        if skipped is None:
            return True
        reason = skipped["reason"]
        if any(idle.match(reason) for idle in _IDLE_REASONS):
            return False
        # By sensor and reason: several projects have sensors of the same name (core4_monitor).
        key, now = (skipped["sensor"], reason), self.clock()
        with self._lock:
            shown = self._shown.get(key)
            if shown is not None and now - shown < self.repeat_after:
                return False
            self._shown[key] = now
            if len(self._shown) > 1000:  # reasons with counts in them: forget the old ones
                self._shown = {k: t for k, t in self._shown.items() if now - t < self.repeat_after}
        return True


class OutputForwarder:
    """dagster dev's stdout and stderr -- shared by every process it starts -- read through
    pipes and written to coco serve's own, each line that ``keep`` accepts.

    Reading never waits for writing: read lines wait in a bounded queue for the writer thread.
    When coco serve's own output is not read (a paused terminal, a pipe nobody reads) and the
    queue is full, further lines are dropped and counted, so dagster dev never blocks on its
    output; the writer says how many it dropped once it can write again."""

    def __init__(self, keep: Callable[[str], bool], *, stdout: IO | None = None, stderr: IO | None = None,
                 max_lines: int = 10000):
        self.keep = keep
        self._targets = (stdout or sys.stdout, stderr or sys.stderr)
        self._queue: queue.Queue = queue.Queue(max_lines)
        self._dropped = 0
        self._lock = threading.Lock()
        self._readers: list[threading.Thread] = []
        self._writer = threading.Thread(target=self._write, name="coco-serve-output", daemon=True)

    @staticmethod
    def popen_arguments() -> dict:
        return {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}

    def start(self, process: subprocess.Popen) -> None:
        self.attach(process)
        self.start_writing()

    def start_writing(self) -> None:
        self._writer.start()

    def attach(self, process: subprocess.Popen) -> None:
        """Forward ``process``'s output too (a dagster dev started again after the first died)."""
        for pipe, target in ((process.stdout, self._targets[0]), (process.stderr, self._targets[1])):
            if pipe is None:  # started without a pipe (its output goes where it goes)
                continue
            reader = threading.Thread(target=self._read, args=(pipe, target), daemon=True,
                                      name=f"coco-serve-read-{len(self._readers)}")
            self._readers.append(reader)
            reader.start()

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._dropped

    def close(self, timeout: float) -> None:
        """Pass on what is left, for at most ``timeout`` seconds (the pipes end when every
        process of dagster dev is gone; a daemon thread left waiting ends with this process)."""
        deadline = time.monotonic() + timeout
        for reader in self._readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
        self._writer.join(max(0.0, deadline - time.monotonic()))

    def _read(self, pipe: IO[bytes], target: IO) -> None:
        try:
            # Bounded: a line without an end (binary output) is passed on in pieces.
            for line in iter(lambda: pipe.readline(1 << 16), b""):
                if not self.keep(line.decode("utf-8", "replace")):
                    continue
                try:
                    self._queue.put_nowait((target, line))
                except queue.Full:
                    with self._lock:
                        self._dropped += 1
        except (OSError, ValueError):  # the pipe closed under us: nothing more to read
            pass
        finally:
            with contextlib.suppress(OSError, ValueError):
                pipe.close()

    def _write(self) -> None:
        reported = 0
        broken: set[int] = set()
        while True:
            item = self._queue.get()
            if item is None:
                return
            target, line = item
            dropped = self.dropped
            if dropped > reported:
                note = (f"coco serve: {dropped - reported} lines of dagster dev's output dropped: "
                        f"this output was not read fast enough\n")
                _write_to(self._targets[1], note.encode(), broken)
                reported = dropped
            _write_to(target, line, broken)


def _write_to(target: IO, data: bytes, broken: set[int]) -> None:
    """``data`` to ``target``'s file descriptor: no lock shared with print(), which must not wait
    for this thread. A target that fails (closed, EPIPE) gets nothing more."""
    try:
        fd = target.fileno()
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's stream)
        with contextlib.suppress(OSError, ValueError):
            target.write(data.decode("utf-8", "replace"))
            target.flush()
        return
    if fd in broken:
        return
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:  # someone set the terminal non-blocking
            time.sleep(0.05)
        except OSError:
            broken.add(fd)
            return
