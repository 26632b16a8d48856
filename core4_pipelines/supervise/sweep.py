"""The sweep of stale hidden in-flight files, and how a project runs it (`coco clean` runs it by hand).

A crash (kill -9, power cut, full disk) can leave hidden leftovers behind. They
are invisible to listings and the sensor, so nothing ever reads them, but they
take space. The sweep removes, when older than a limit and without following
links, exactly these:

- partial copies: ``.<name>.<12 hex>.part`` (moves, archives, atomic writes) and
  ``.<name>.<pid>.download.part`` (``download_to_proc``);
- move markers (``.<name>.<hash>.moving``) whose source is gone or is another
  file now; a marker whose source still waits is *finished* instead
  (``finish_interrupted_move``: the source is removed when its complete copy is
  in place, or the unfinished copy is removed so the source moves again);
- empty batch folders in ``.batch/`` (``<batch id>`` and ``.<batch id>.claiming``).

The hidden names are made and recognised by ``core4_resources.files.moves``
(``hidden_temp_name``, ``download_temp_name``, ``move_marker_path``; a long
``<name>`` in them is cut so the whole stays within 255 bytes).

Nothing visible is ever removed. A staging folder that still holds files is
left to the sensor, which releases it as a batch. Age is measured from the
later of mtime and ctime, so a copy that was just given its source's old mtime
still counts as young.
"""

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg

from core4_pipelines.ingest.claim import (
    BATCH_DIR,
    STAGING_SUFFIX,
    STALE_STAGING_SECONDS,
    is_batch_id,
)
from core4_resources.errors import Core4Error
from core4_resources.files.folders import FolderResource
from core4_resources.files.moves import (
    finish_interrupted_move,
    is_move_marker,
    is_partial_copy,
    marker_source,
    printable_name,
    read_move_marker,
)

DEFAULT_OLDER_THAN = 3600.0


@dataclass
class SweepItem:
    path: str
    kind: str  # "partial copy", "move marker", "interrupted move", "empty batch folder"
    age: float
    action: str = ""  # what was done (or would be, in a dry run)


@dataclass
class SweepReport:
    roots: list[str]
    applied: bool
    items: list[SweepItem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verb = "handled" if self.applied else "found"
        text = f"{len(self.items)} stale items {verb} in {len(self.roots)} folders"
        if self.errors:
            text += f", {len(self.errors)} errors"
        return text


def _age(path: str, now: float) -> float | None:
    try:
        stat = os.lstat(path)
    except FileNotFoundError:
        return None
    return now - max(stat.st_mtime, stat.st_ctime)


def _distinct_roots(roots: Iterable[str]) -> list[str]:
    """Existing folders, each once; a root inside another root is covered by that one."""
    real = sorted({os.path.realpath(r) for r in roots if r and os.path.isdir(r)})
    kept: list[str] = []
    for root in real:
        if not any(root == k or root.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(root)
    return kept


def _shown(path: str) -> str:
    """A path as printed: bytes that are not UTF-8 as \\xNN, quoted when it holds a newline
    or other unprintable characters."""
    text = printable_name(path)
    return text if text.isprintable() else repr(text)


def sweep(
    roots: Iterable[str],
    older_than: float = DEFAULT_OLDER_THAN,
    apply: bool = False,
    now: float | None = None,
) -> SweepReport:
    """Find (and with ``apply`` remove or finish) the stale leftovers under ``roots``."""
    if older_than < 0:
        raise Core4Error(f"older_than={older_than!r}: expected a number of seconds >= 0")
    now = time.time() if now is None else now
    report = SweepReport(roots=_distinct_roots(roots), applied=apply)
    markers: list[tuple[str, float]] = []
    partials: list[tuple[str, float]] = []
    batch_dirs: list[tuple[str, float]] = []

    def old(path: str) -> float | None:
        age = _age(path, now)
        return age if age is not None and age >= older_than else None

    for root in report.roots:
        for folder, _dirs, files in os.walk(root, topdown=False, onerror=lambda e: report.errors.append(str(e))):
            for name in files:
                path = os.path.join(folder, name)
                marker = is_move_marker(name)
                if not (marker or is_partial_copy(name)) or os.path.islink(path):
                    continue
                age = old(path)
                if age is not None:
                    (markers if marker else partials).append((path, age))
            if os.path.basename(os.path.dirname(folder)) == BATCH_DIR:
                name = os.path.basename(folder)
                staging = name.startswith(".") and name.endswith(STAGING_SUFFIX)
                batch_id = name[1 : -len(STAGING_SUFFIX)] if staging else name
                age = old(folder)
                # A young staging folder may belong to a claimer about to fill it.
                if is_batch_id(batch_id) and age is not None and (not staging or age >= STALE_STAGING_SECONDS):
                    batch_dirs.append((folder, age))

    in_flight: set[str] = set()  # the partial copies that markers still account for
    for path, age in markers:
        _handle_marker(report, path, age, apply, in_flight)
    for path, age in partials:
        if path in in_flight:
            continue
        _remove(report, SweepItem(path, "partial copy", age), apply, os.unlink)
    for path, age in batch_dirs:
        try:
            empty = not os.listdir(path)
        except FileNotFoundError:
            continue
        if empty:
            _remove(report, SweepItem(path, "empty batch folder", age), apply, os.rmdir)
    return report


def _handle_marker(report: SweepReport, path: str, age: float, apply: bool, in_flight: set[str]) -> None:
    record = read_move_marker(path)
    source = marker_source(path) if record is not None else None
    if record is None or source is None:
        _remove(report, SweepItem(path, "move marker", age), apply, os.unlink)
        return
    temp = os.path.join(record["target_dir"], record["temp"])
    item = SweepItem(source, "interrupted move", age)
    if not apply:
        item.action = f"would finish (marker {_shown(path)})"
        in_flight.add(temp)
        report.items.append(item)
        return
    try:
        final = finish_interrupted_move(source)
    except (Core4Error, OSError) as exc:
        in_flight.add(temp)
        report.errors.append(f"{_shown(source)}: {exc}")
        return
    item.action = f"finished: copy at {_shown(final)}, source removed" if final else "restarted: source kept"
    report.items.append(item)


def _remove(report: SweepReport, item: SweepItem, apply: bool, remove) -> None:
    if not apply:
        item.action = "would remove"
        report.items.append(item)
        return
    try:
        remove(item.path)
    except FileNotFoundError:
        return  # someone else removed it meanwhile
    except OSError as exc:
        report.errors.append(f"{_shown(item.path)}: cannot remove: {exc.strerror}")
        return
    item.action = "removed"
    report.items.append(item)


# -- where to sweep -------------------------------------------------------------------------


def project_roots(folders: FolderResource, bases: Iterable[str] = ()) -> list[str]:
    """One project's folders (its own and those of ``bases``) and the global temp folder."""
    roots = []
    for base in (None, *bases):
        roots += [folders.transfer_folder(base), folders.proc_folder(base),
                  folders.archive_folder(base), folders.error_folder(base)]
    return roots + [folders.temp]


# -- how a project runs it: a schedule, or the proc sensor's start ---------------------------


# No `from __future__ import annotations` in this module: Dagster reads the op's annotations.
class CleanConfig(dg.Config):
    older_than: float = DEFAULT_OLDER_THAN
    bases: list[str] = []


def clean_schedule(
    cron_schedule: str = "17 * * * *",
    *,
    name: str = "clean_stale_files",
    older_than: float = DEFAULT_OLDER_THAN,
    bases: Iterable[str] = (),
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.RUNNING,
) -> dg.ScheduleDefinition:
    """A schedule (and its job) that sweeps this project's folders; add it to ``schedules=``."""

    @dg.op(name=f"{name}_sweep", description="Remove stale hidden leftovers of interrupted moves")
    def sweep_op(context: dg.OpExecutionContext, config: CleanConfig, folders: FolderResource) -> dict:
        report = sweep(project_roots(folders, config.bases), config.older_than, apply=True)
        for item in report.items:
            context.log.info(f"{item.kind} {_shown(item.path)}: {item.action}")
        for error in report.errors:
            context.log.warning(error)
        return {"handled": len(report.items), "errors": len(report.errors)}

    @dg.job(name=name, description="Sweep stale hidden in-flight files", executor_def=dg.in_process_executor)
    def clean_job():
        sweep_op()

    run_config = {"ops": {f"{name}_sweep": {"config": {"older_than": older_than, "bases": list(bases)}}}}
    return dg.ScheduleDefinition(
        name=f"{name}_schedule",
        job=clean_job,
        cron_schedule=cron_schedule,
        execution_timezone="UTC",
        run_config=run_config,
        default_status=default_status,
    )


_last_sensor_sweep: dict[str, float] = {}
_sensor_sweep_lock = threading.Lock()


def sweep_on_sensor_start(
    folders: FolderResource,
    base: str | None = None,
    *,
    older_than: float = DEFAULT_OLDER_THAN,
    every: float = 3600.0,
) -> SweepReport | None:
    """Sweep the proc folder the sensor watches on its first tick in a process, then at most every ``every`` s.

    Returns the report when it swept, else None. Cheap: one walk of the proc folder.
    """
    proc = folders.proc_folder(base)
    now = time.monotonic()
    with _sensor_sweep_lock:
        last = _last_sensor_sweep.get(proc)
        if last is not None and now - last < every:
            return None
        _last_sensor_sweep[proc] = now
    return sweep([proc], older_than, apply=True)
