"""Archiving for FolderResource: the run's stamp folder, gzip, one file or a batch at once.

A mixin of :class:`core4_resources.files.folders.FolderResource` (it uses its fields
``archive_stamp`` and ``compress_level`` and its checked folders), apart so that
each module stays short.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone

from core4_resources.files.batch_moves import Moved, copy_move_many
from core4_resources.errors import FolderError
from core4_resources.files.paths import _as_utc, _source_path, _stamp_fields
from core4_resources.files.moves import (
    CONFLICT_POLICIES,
    COPY_CHUNK,
    FOLDER_MODE,
    copy_move,
    derived_name,
    finish_interrupted_move,
    make_dirs,
    printable_name,
    safe_move,
)

log = logging.getLogger("core4_resources.files.folders")
_ID_KEYS = {"_id", "run_id"}
_TIME_KEYS = {"year", "month", "day", "hour", "minute"}


class ArchiveMoves:
    """``move_archive`` and ``move_archive_many`` of FolderResource."""

    def _stamp(self, run_id: str | None, started: datetime | None) -> str:
        fields = _stamp_fields(self.archive_stamp)
        run_id = run_id or self._run_id
        if started is None:
            started = self._run_started
        if started is None and run_id is not None:
            started = datetime.now(timezone.utc)
        if (fields & _ID_KEYS and not run_id) or (fields & _TIME_KEYS and started is None):
            raise FolderError(
                f"move_archive: archive_stamp={self.archive_stamp!r} needs the run id and start time, "
                "but this is not a Dagster run; call it from an op that uses this resource, "
                "or pass run_id= and started="
            )
        values = {"_id": run_id, "run_id": run_id}
        if started is not None:
            started = _as_utc(started)
            values.update(
                year=started.year,
                month=started.month,
                day=started.day,
                hour=started.hour,
                minute=started.minute,
            )
        try:
            return self.archive_stamp.format(**values)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise FolderError(
                f"archive_stamp={self.archive_stamp!r} cannot be formatted ({exc!r}); "
                f"available keys: {', '.join(sorted(_ID_KEYS | _TIME_KEYS))}"
            ) from exc

    def sweep_archive_temps(self, names: Sequence[str], runs: Sequence[tuple[str, datetime]],
                            base: str | None = None, before: float | None = None) -> list[str]:
        """Remove the hidden partial copies (``.<name>.gz.<hex>.part``) that the earlier runs ``runs``
        ((run id, start)) of a batch left in their archive folders while archiving ``names``: a
        killed run's litter, removed when its batch runs again. Only copies last changed before
        ``before`` (epoch seconds: when those runs had ended) go; the removed paths are returned."""
        from core4_resources.files.names import cut_for_temp, derived_name, partial_copy_target

        targets = {cut_for_temp(derived_name(name, ".gz")) for name in names} | {cut_for_temp(n) for n in names}
        removed: list[str] = []
        for run_id, started in runs:
            try:
                folder = self._archive_folder_for(base, run_id, started)
                entries = list(os.scandir(folder))
            except (FolderError, OSError):
                continue  # no such folder: that run archived nothing there
            for entry in entries:
                if partial_copy_target(entry.name) not in targets:
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                    if not entry.is_file(follow_symlinks=False) or (
                            before is not None and max(info.st_mtime, info.st_ctime) > before):
                        continue
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                removed.append(entry.path)
        return removed

    def _archive_folder_for(self, base, run_id, started) -> str:
        return self._stamped_folder(self.archive_folder(base), self._stamp(run_id, started))

    def _checked_level(self, on_conflict: str) -> int:
        level = self.compress_level
        if not isinstance(level, int) or not 0 <= level <= 9:
            raise FolderError(f"compress_level={level!r} must be an integer from 0 to 9 (job.compress_level)")
        if on_conflict not in CONFLICT_POLICIES:
            raise FolderError(
                f"on_conflict={on_conflict!r} is not one of {', '.join(map(repr, CONFLICT_POLICIES))}"
            )
        return level

    def move_archive(
        self,
        source: str,
        compress: bool = True,
        base: str | None = None,
        *,
        run_id: str | None = None,
        started: datetime | None = None,
        on_conflict: str = "rename",
    ) -> str:
        """Move ``source`` to ``<archive>/<project|base>/<stamp>/<name>[.gz]``; return the final path.

        With ``compress`` the file is gzipped into a hidden temp beside its target,
        fsync'd and renamed; the source is removed only after that. Archiving a
        source whose earlier archiving was interrupted after the ``.gz`` was in
        place finishes that one (same path returned) instead of archiving twice.

        The gzip header holds the source's name, byte for byte (:func:`gzip_original_name`).
        A name too long for ``.gz`` is archived as ``derived_name(name, ".gz")``
        (``<start>~<8 hex>.csv.gz``, the same on every retry); the returned path
        says where it went and a log line names both.
        """
        source = _source_path(source)
        folder = self._archive_folder_for(base, run_id, started)
        if not compress:
            return safe_move(source, folder, on_conflict=on_conflict, mode=FOLDER_MODE)
        level = self._checked_level(on_conflict)
        original = os.path.basename(source)
        name = derived_name(original, ".gz")
        finished = finish_interrupted_move(source)
        if finished is not None:
            return finished
        make_dirs(folder, FOLDER_MODE)
        final = copy_move(source, folder, name, on_conflict, fill=_gzip_fill(original, level))
        _log_shortened(original, name, final)
        return final

    def move_archive_many(
        self,
        sources: Sequence[str],
        base: str | None = None,
        *,
        run_id: str | None = None,
        started: datetime | None = None,
        on_conflict: str = "rename",
    ) -> list[str | OSError]:
        """Archive (gzip) every file of ``sources`` as :meth:`move_archive` does, with one
        durability point for all of them; per source, its final path or the ``OSError``
        that kept it where it was (``FileNotFoundError`` when it was gone).

        The copies are written into hidden temps, their fsyncs issued together, then
        each is renamed into place, the folder fsync'd once, and only then are the
        sources removed: the same promises as one by one (nothing lost, nothing
        half-visible, nothing archived twice), two fsyncs less per file.
        """
        folder = self._archive_folder_for(base, run_id, started)
        level = self._checked_level(on_conflict)
        items = []
        for source in sources:
            path = _source_path(source, must_exist=False)
            original = os.path.basename(path)
            items.append(Moved(path, derived_name(original, ".gz"), fill=_gzip_fill(original, level)))
        if not items:
            return []
        make_dirs(folder, FOLDER_MODE)
        results: list[str | OSError] = []
        for item in copy_move_many(items, folder, on_conflict):
            if item.final is not None:
                _log_shortened(os.path.basename(item.source), item.name, item.final)
                results.append(item.final)
            else:
                results.append(item.error)
        return results


def _gzip_fill(original: str, level: int):
    """Write a source gzipped, its header naming the source as GNU gzip would."""
    # The original name's bytes (a str would be encoded as Latin-1, or left out); it keeps
    # the hidden temp name out of the header.
    header_name = os.fsencode(original) + b".gz"

    def fill(src, raw) -> None:
        mtime = int(os.fstat(src.fileno()).st_mtime)
        with gzip.GzipFile(header_name, mode="wb", fileobj=raw, compresslevel=level, mtime=mtime) as packed:
            shutil.copyfileobj(src, packed, COPY_CHUNK)

    return fill


def _log_shortened(original: str, name: str, final: str) -> None:
    if name != original + ".gz":
        log.info("archived %s as %s (name shortened)", printable_name(original), printable_name(final))
