"""FolderResource: core4's folder helpers for one project, with strict paths and safe moves.

transfer, proc, archive and error are per project (``<folder>/<project>``, or
``<folder>/<base>`` when a base is given); temp is global. Every move goes
through :mod:`core4_resources.files.moves`, so a file in flight is hidden and an
existing target is never replaced unless asked for.

Any file name the OS allows works (up to 255 bytes, not necessarily UTF-8).
A name derived from it that would be too long (``<name>.gz``,
``<name>.reason.txt``, a numbered copy) is shortened by :func:`derived_name`
(``<start>~<8 hex>.csv.gz``); the original name is then in the reason file
(``original name: ...``) and in the gzip header of the archive
(:func:`gzip_original_name`, ``gzip -lN``). Text about a name goes through
:func:`printable_name`. Folders made here are 0o750, files 0o640, whatever the umask.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field, PrivateAttr

from core4_resources.files.archiving import ArchiveMoves
from core4_resources.errors import ConfigError, FolderError, SourceMissingError
from core4_resources.files.paths import (
    _checked_inside,
    _source_path,
    gzip_original_name,
)
from core4_resources.files.moves import (
    CONFLICT_POLICIES,
    FILE_MODE,
    FOLDER_MODE,
    NAME_MAX,
    derived_name,
    fsync_dir,
    hidden_temp_name,
    is_hidden,
    make_dirs,
    open_new_file,
    printable_name,
    rename_noreplace,
    safe_move,
    write_file_atomic,
)

if TYPE_CHECKING:
    from core4_resources.config.settings import Settings

__all__ = [
    "CONFLICT_POLICIES",
    "FILE_MODE",
    "FOLDER_MODE",
    "FolderResource",
    "NAME_MAX",
    "SourceMissingError",
    "derived_name",
    "fsync_dir",
    "gzip_original_name",
    "hidden_temp_name",
    "is_hidden",
    "make_dirs",
    "open_new_file",
    "printable_name",
    "rename_noreplace",
    "safe_move",
    "write_file_atomic",
]

REASON_SUFFIX = ".reason.txt"
PatternLike = str | re.Pattern[str] | None


class FolderResource(ArchiveMoves, dg.ConfigurableResource):
    """The folders of one project: list, make and move files the core4 way, safely.

    transfer, proc, archive and error hold one folder per project
    (``<proc>/<project>/``, or ``<proc>/<base>/`` for a method's ``base``); temp is
    shared. Every move is crash-safe: a file in flight has a hidden name, and an
    existing target is never replaced unless ``on_conflict="replace"`` asks for it.
    ``project_definitions`` binds one for the project from the configuration
    (:meth:`from_settings`); :meth:`under_root` builds one for tests and tools.

    Examples:
        .. code-block:: python

            import dagster as dg
            from core4_pipelines import FolderResource, project_definitions

            @dg.op
            def fetch(folders: FolderResource) -> list[str]:
                path = folders.make_transfer("prices.csv")
                with open(path, "w") as out:
                    out.write("day,price\\n2024-03-05,7\\n")
                return [folders.move_proc(path)]  # now in <proc>/<project>/

            @dg.job
            def fetch_prices():
                fetch()

            # the folders come from the configuration (folder.root, folder.proc, ...)
            defs = project_definitions("shop", jobs=[fetch_prices])

            # or, outside a project, every folder under one root:
            folders = FolderResource.under_root("/srv/core4", project="shop")
    """

    project: str = Field(
        description="The project whose folders these are: the sub-folder of transfer, proc, archive and "
        "error every method uses unless it is given a base.",
    )
    root: str = Field(description="folder.root, the absolute base the configuration joins relative folders onto.")
    transfer: str = Field(description="Absolute path of the transfer folder: files being fetched, before they are complete.")
    proc: str = Field(description="Absolute path of the proc folder: complete files waiting to be processed.")
    archive: str = Field(description="Absolute path of the archive folder: processed files, gzipped under archive_stamp.")
    temp: str = Field(description="Absolute path of the temp folder (shared by all projects): scratch files and folders.")
    error: str = Field(description="Absolute path of the error folder: files that failed, each with a <name>.reason.txt.")
    archive_stamp: str = Field(
        default="{year:04d}/{month:02d}/{day:02d}/{_id}",
        description="The sub-folder of archive/<project> a processed file goes to, as a format string; "
        "keys: year, month, day, hour, minute (the run's start, UTC) and _id or run_id (the run's id).",
    )
    compress_level: int = Field(
        default=6,
        description="gzip level (0-9) of archived files: 1 is fastest, 9 smallest, 0 stores uncompressed.",
    )
    min_free: str = Field(
        default="1%",
        description="folder.min_free: claims pause while less is free under root, archive, error or the "
        "embedded database's folder (5%, 500 MB, 1 GB; 0 = never).",
    )

    _run_id: str | None = PrivateAttr(default=None)
    _run_started: datetime | None = PrivateAttr(default=None)
    # Folders resolved and checked once per instance, not once per file: the check guards
    # against configuration pointing through a symlink, which a per-call re-check would not
    # close either (the rename after it races anyway).
    _checked: dict = PrivateAttr(default_factory=dict)

    @classmethod
    def under_root(cls, root: str | os.PathLike, project: str, **options) -> "FolderResource":
        """Every folder under ``root`` with the packaged default names (tests, benchmarks, tools)."""
        root = os.fspath(root)
        folders = {kind: os.path.join(root, kind) for kind in ("transfer", "proc", "archive", "temp", "error")}
        return cls(project=project, root=root, **folders, **options)

    @classmethod
    def from_settings(cls, settings: Settings, project: str | None = None) -> FolderResource:
        """Bind the configured folders to ``project`` (default: the loaded project)."""
        if project is None:
            if settings.project is None:
                raise ConfigError(
                    "FolderResource.from_settings: no project given and the configuration has none; "
                    "pass project= or load the configuration with load_config(<project>)"
                )
            project = settings.project.name
        folder = settings.folder
        return cls(
            project=project,
            root=folder.root,
            transfer=folder.transfer,
            proc=folder.proc,
            archive=folder.archive,
            temp=folder.temp,
            error=folder.error,
            archive_stamp=settings.job.archive_stamp,
            compress_level=settings.job.compress_level,
            min_free=str(folder.min_free),
        )

    def low_space(self) -> str | None:
        """Why claims should pause (a folder whose filesystem has less free than ``min_free``), or None."""
        from core4_resources.files.space import below_floor, parse_min_free

        paths = [self.root, self.proc, self.archive, self.error, os.path.join(self.root, "mongo")]
        return below_floor(paths, parse_min_free(self.min_free))

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Capture the run id and the run's start time (UTC) for the archive stamp."""
        run_id = context.run.run_id if context.run is not None else None
        if not run_id:
            return
        started = None
        if context.instance is not None:
            record = context.instance.get_run_record_by_id(run_id)
            if record is not None and record.start_time is not None:
                started = datetime.fromtimestamp(record.start_time, tz=timezone.utc)
        self._run_id = run_id
        self._run_started = started or datetime.now(timezone.utc)

    # -- folders ---------------------------------------------------------------

    def _root(self, kind: str) -> str:
        value = getattr(self, kind)
        if not isinstance(value, str) or not os.path.isabs(value):
            raise FolderError(
                f"folder {kind}={value!r} is not an absolute path; configure folder.{kind} "
                "(relative values are joined onto folder.root by the configuration)"
            )
        return os.path.normpath(value)

    def _project_folder(self, kind: str, base) -> str:
        # Keyed by the configured values too: model_copy(update=...) shares this dict.
        key = (kind, base, getattr(self, kind), self.project)
        cacheable = base is None or isinstance(base, str)
        checked = self._checked  # a private attribute costs a lookup through pydantic: once
        if cacheable and key in checked:
            return checked[key]
        root = self._root(kind)
        if base is None:
            if not isinstance(self.project, str) or "/" in self.project:
                raise FolderError(f"project={self.project!r} is not a plain folder name")
            folder = _checked_inside("project", self.project, root)
        else:
            folder = _checked_inside("base", base, root)
        if cacheable:
            checked[key] = folder
        return folder

    def _stamped_folder(self, folder: str, stamp: str) -> str:
        if not stamp:
            return folder
        key = ("stamp", folder, stamp)
        if key not in self._checked:
            self._checked[key] = _checked_inside("archive_stamp", stamp, folder)
        return self._checked[key]

    def transfer_folder(self, base: str | None = None) -> str:
        return self._project_folder("transfer", base)

    def proc_folder(self, base: str | None = None) -> str:
        return self._project_folder("proc", base)

    def archive_folder(self, base: str | None = None) -> str:
        return self._project_folder("archive", base)

    def error_folder(self, base: str | None = None) -> str:
        return self._project_folder("error", base)

    # -- listings --------------------------------------------------------------

    def _list(self, kind: str, pattern: PatternLike, base: str | None) -> list[str]:
        folder = self._project_folder(kind, base)
        if isinstance(pattern, str):
            try:
                pattern = re.compile(pattern)
            except re.error as exc:
                raise FolderError(f"pattern={pattern!r} is not a valid regular expression: {exc}") from exc
        try:
            with os.scandir(folder) as entries:
                names = [
                    entry.name
                    for entry in entries
                    if not is_hidden(entry.name) and (pattern is None or pattern.match(entry.name))
                ]
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            raise FolderError(
                f"{kind} folder {folder} is a file, not a folder; remove or rename it"
            ) from None
        return [os.path.join(folder, name) for name in sorted(names)]

    def list_transfer(self, pattern: PatternLike = None, base: str | None = None) -> list[str]:
        """Sorted full paths in the transfer folder whose names ``pattern.match``; hidden ones skipped."""
        return self._list("transfer", pattern, base)

    def list_proc(self, pattern: PatternLike = None, base: str | None = None) -> list[str]:
        """Sorted full paths in the proc folder whose names ``pattern.match``; hidden ones skipped."""
        return self._list("proc", pattern, base)

    # -- paths to write --------------------------------------------------------

    def _make(self, folder: str, filename) -> str:
        path = _checked_inside("filename", filename, folder)
        make_dirs(os.path.dirname(path), FOLDER_MODE)
        return path

    def _make_new(self, folder: str, filename, what: str) -> str:
        """``filename`` in ``folder``, or with None a fresh unique name not yet in it; not created."""
        if filename is not None:
            return self._make(folder, filename)
        for _ in range(100):
            path = self._make(folder, f"{what}-{uuid.uuid4().hex}")
            if not os.path.lexists(path):
                return path
        raise FolderError(f"no unused name found in {folder}")  # pragma: no cover - 100 uuid4 collisions

    def make_transfer(self, filename: str | None = None, base: str | None = None) -> str:
        """Full path for ``filename`` in the transfer folder, or a new unique name when None;
        parents created, the file not."""
        return self._make_new(self.transfer_folder(base), filename, "transfer")

    def make_proc(self, filename: str | None = None, base: str | None = None) -> str:
        """Full path for ``filename`` in the proc folder, or a new unique name when None;
        parents created, the file not."""
        return self._make_new(self.proc_folder(base), filename, "proc")

    def make_temp(self, filename: str | None = None, folder: bool = False) -> str:
        """A path in the global temp folder; a fresh unique name when ``filename`` is None.
        With ``folder=True`` the folder is created (0750): a fresh one, or ``filename``."""
        if folder:
            if filename is None:
                return self.make_temp_folder()
            path = self._make(self._root("temp"), filename)
            return make_dirs(path, FOLDER_MODE)
        return self._make_new(self._root("temp"), filename, "temp")

    def make_temp_folder(self) -> str:
        """Create and return a fresh folder inside the global temp folder."""
        temp = make_dirs(self._root("temp"), FOLDER_MODE)
        folder = tempfile.mkdtemp(dir=temp)
        os.chmod(folder, FOLDER_MODE)
        return folder

    # -- moves -----------------------------------------------------------------

    @staticmethod
    def derived_name(name: str, suffix: str = "") -> str:
        """``name + suffix`` within 255 bytes: shortened to ``<start>~<8 hex><ext><suffix>``
        when too long, the same for the same name (see :func:`core4_resources.files.moves.derived_name`)."""
        return derived_name(name, suffix)

    @staticmethod
    def _move(source, folder: str, on_conflict: str) -> str:
        # A missing source is found by the rename itself (SourceMissingError), not checked first.
        return safe_move(_source_path(source, must_exist=False), folder, on_conflict=on_conflict, mode=FOLDER_MODE)

    def move_transfer(self, source: str, base: str | None = None, on_conflict: str = "rename") -> str:
        """Move ``source`` (basename kept) into the transfer folder; return the final path."""
        return self._move(source, self.transfer_folder(base), on_conflict)

    def move_proc(self, source: str, base: str | None = None, on_conflict: str = "rename") -> str:
        """Move ``source`` (basename kept) into the proc folder; return the final path."""
        return self._move(source, self.proc_folder(base), on_conflict)

    def move_error(
        self, source: str, reason: str, base: str | None = None, on_conflict: str = "rename"
    ) -> str:
        """Move ``source`` into the error folder and write ``reason`` to ``<final name>.reason.txt``.

        The reason file's name is ``derived_name(<final name>, ".reason.txt")``: for a
        name too long for the suffix it is shortened, and the reason then ends with a
        line ``original name: <name>`` -- as it does for a name that is not UTF-8
        (shown with ``\\xNN`` escapes, see :func:`printable_name`).
        """
        original = os.path.basename(_source_path(source))
        final = self._move(source, self.error_folder(base), on_conflict)
        error_name = os.path.basename(final)
        reason_name = derived_name(error_name, REASON_SUFFIX)
        text = printable_name(str(reason)).rstrip("\n") + "\n"  # a text file: ends with a newline
        if reason_name != error_name + REASON_SUFFIX or printable_name(original) != original:
            text += f"original name: {printable_name(original)}\n"
        write_file_atomic(os.path.join(os.path.dirname(final), reason_name), text.encode("utf-8"))
        return final

    # -- files in error --------------------------------------------------------

    def list_error(self, pattern: PatternLike = None, base: str | None = None) -> list[str]:
        """Sorted full paths of the files waiting in the error folder whose names ``pattern.match``
        (their ``.reason.txt`` files and hidden names not listed)."""
        return [path for path in self._list("error", pattern, base) if not path.endswith(REASON_SUFFIX)]

    def error_reason(self, path: str) -> str | None:
        """The reason written beside a file in the error folder by :meth:`move_error` (None: none)."""
        reason_path = os.path.join(os.path.dirname(path), derived_name(os.path.basename(path), REASON_SUFFIX))
        try:
            with open(reason_path, encoding="utf-8", errors="replace") as handle:
                return handle.read().strip() or None
        except (FileNotFoundError, IsADirectoryError):
            return None

    def move_back_from_error(self, name: str, base: str | None = None) -> str:
        """Move the file ``name`` of the error folder back into proc (to be imported again) and
        remove its reason file; return its path in proc. A file of that name already waiting
        in proc is never replaced: FolderError, and nothing moves."""
        error_folder = self.error_folder(base)
        source = _checked_inside("name", name, error_folder)
        target = self._move(source, self.proc_folder(base), "fail")  # FolderError naming both when taken
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(os.path.dirname(source), derived_name(os.path.basename(source), REASON_SUFFIX)))
        return target
