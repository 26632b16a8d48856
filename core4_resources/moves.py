"""Crash-safe file moves: no-replace renames, hidden in-flight names, fsync'd copies.

A file in flight is always a hidden file (``.<name>.<random>.part``) inside the
target folder, so a listing or a sensor that skips hidden names never sees a
half-written file. An existing target is never replaced unless asked for. A
copy-move killed after its copy was installed is finished, not repeated, by the
next move of the same source (a hidden ``.moving`` marker beside the source).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import shutil
import uuid
from typing import BinaryIO, Callable

from core4_resources.errors import FolderError

__all__ = [
    "CONFLICT_POLICIES", "MOVE_MARKER_SUFFIX", "SourceMissingError", "copy_move",
    "finish_interrupted_move", "fsync_dir", "hidden_temp_name", "install_file", "is_hidden",
    "make_dirs", "move_marker_path", "read_move_marker", "rename_noreplace", "safe_move",
    "write_file_atomic",
]

CONFLICT_POLICIES = ("rename", "replace", "fail")
COPY_CHUNK = 1024 * 1024
# Suffixes kept together with the one before them when numbering a conflict:
# "a.csv.gz" becomes "a.1.csv.gz", so patterns on ".csv.gz" still match.
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst", ".lz4"}
_MAX_CONFLICT_NUMBER = 100_000
# Leave room for the dot, the random part and ".part" within NAME_MAX (255).
_MAX_TEMP_STEM = 200
# Beside the source of a copy-move while its copy is installed: ".<name>.<hash>.moving".
MOVE_MARKER_SUFFIX = ".moving"

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


class SourceMissingError(FolderError, FileNotFoundError):
    """The file to move does not exist (e.g. another process moved it first)."""


def _load_renameat2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def is_hidden(name: str) -> bool:
    """True for names starting with "." (in-flight files, batch folders)."""
    return os.path.basename(name).startswith(".")


def hidden_temp_name(name: str) -> str:
    """The in-flight name of ``name``: ``.<name>.<random>.part``."""
    return f".{name[:_MAX_TEMP_STEM]}.{uuid.uuid4().hex[:12]}.part"


def rename_noreplace(src: str, dst: str) -> None:
    """Rename atomically; FileExistsError if ``dst`` exists, OSError(EXDEV) across filesystems."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        # ENOSYS: old kernel; EINVAL: filesystem without RENAME_NOREPLACE. Anything else is real.
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), src, None, dst)
    _rename_noreplace_fallback(src, dst)


def _rename_noreplace_fallback(src: str, dst: str) -> None:
    if not os.path.isdir(src) or os.path.islink(src):
        try:
            # link() refuses an existing dst atomically; then the old name is dropped.
            os.link(src, dst, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
        else:
            os.unlink(src)
            return
    # Last resort (no hard links, or a directory): a small check-then-rename window.
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst)


def fsync_dir(path: str) -> None:
    """Make renames and unlinks inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: str, mode: int = 0o750) -> str:
    """Create ``path`` and missing parents with exactly ``mode`` (the umask does not narrow it)."""
    path = os.path.abspath(path)
    missing = []
    probe = path
    while not os.path.isdir(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, mode)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise FolderError(
                    f"cannot create folder {folder}: a file of that name exists; remove or rename it"
                ) from None
            continue  # created concurrently by someone else: leave its mode alone
        except OSError as exc:
            raise FolderError(f"cannot create folder {folder}: {exc.strerror}") from exc
        os.chmod(folder, mode)
    return path


def _numbered_names(name: str):
    """``name``, then ``stem.1.ext``, ``stem.2.ext``, ..."""
    yield name
    stem, ext = os.path.splitext(name)
    if ext in _COMPRESSION_SUFFIXES:
        inner_stem, inner_ext = os.path.splitext(stem)
        if inner_ext:
            stem, ext = inner_stem, inner_ext + ext
    for number in range(1, _MAX_CONFLICT_NUMBER):
        yield f"{stem}.{number}{ext}"


def _check_policy(on_conflict: str) -> None:
    if on_conflict not in CONFLICT_POLICIES:
        raise FolderError(
            f"on_conflict={on_conflict!r} is not one of {', '.join(map(repr, CONFLICT_POLICIES))}"
        )


def install_file(src: str, target_dir: str, name: str, on_conflict: str = "rename") -> str:
    """Rename ``src`` to ``name`` in ``target_dir`` under the conflict policy; return the final path.

    OSError(EXDEV) is passed on unchanged so the caller can copy instead.
    """
    _check_policy(on_conflict)
    if on_conflict == "replace":
        final = os.path.join(target_dir, name)
        os.replace(src, final)
        return final
    for candidate in _numbered_names(name):
        final = os.path.join(target_dir, candidate)
        try:
            rename_noreplace(src, final)
            return final
        except FileExistsError:
            if on_conflict == "fail":
                raise FolderError(
                    f"target {final} already exists (on_conflict='fail'); {src} was left in place. "
                    "Remove the target or use on_conflict='rename' or 'replace'"
                ) from None
    raise FolderError(f"no free name for {name} in {target_dir}: too many numbered copies exist")


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _check_name(name: str, source: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise FolderError(f"name={name!r} (for source {source!r}) is not a plain file name")


def safe_move(
    source: str,
    target_dir: str,
    name: str | None = None,
    on_conflict: str = "rename",
    mode: int = 0o750,
) -> str:
    """Move ``source`` into ``target_dir`` as ``name`` (default: its basename); return the final path.

    Same filesystem: one no-replace rename. Across filesystems: :func:`copy_move`
    -- a crash leaves the data at the source or complete at the target, and the
    next move of the same source finishes an interrupted one instead of copying twice.
    """
    _check_policy(on_conflict)
    source = os.path.abspath(source)
    if name is None:
        name = os.path.basename(source)
    _check_name(name, source)
    if not os.path.lexists(source):
        raise SourceMissingError(f"source {source} does not exist; nothing was moved")
    finished = finish_interrupted_move(source)
    if finished is not None:
        return finished
    target_dir = make_dirs(target_dir, mode)
    try:
        return install_file(source, target_dir, name, on_conflict)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise FolderError(f"cannot move {source} into {target_dir}: {exc}") from exc
    if os.path.isdir(source) and not os.path.islink(source):
        raise FolderError(
            f"cannot move folder {source} into {target_dir}: they are on different filesystems; "
            "move its files one by one"
        )
    return copy_move(source, target_dir, name, on_conflict)


# -- copy-moves: across filesystems, or when the bytes change on the way (gzip) ------------


def _plain_copy(src: BinaryIO, dst: BinaryIO) -> None:
    shutil.copyfileobj(src, dst, COPY_CHUNK)


def copy_move(
    source: str,
    target_dir: str,
    name: str,
    on_conflict: str = "rename",
    fill: Callable[[BinaryIO, BinaryIO], None] | None = None,
) -> str:
    """Move ``source`` by copying: ``fill(src, dst)`` writes the copy (default: byte for byte).

    The copy is written into a hidden temp in ``target_dir``, fsync'd and renamed
    to ``name``; the folder is fsync'd and only then is the source removed. While
    the copy is installed, a hidden marker beside the source records it: a crash
    between installing and removing the source is finished by the next move of the
    same source (:func:`finish_interrupted_move`), so a file is never copied twice.
    """
    _check_policy(on_conflict)
    source_dir = os.path.dirname(source)
    if not os.access(source_dir, os.W_OK):
        raise FolderError(
            f"cannot move {source}: its folder {source_dir} is not writable, so the source could "
            "not be removed after copying; nothing was moved. Make the folder writable"
        )
    temp = os.path.join(target_dir, hidden_temp_name(name))
    try:
        with open(source, "rb") as src, open(temp, "xb") as dst:
            copied = os.fstat(src.fileno())
            (fill or _plain_copy)(src, dst)
            dst.flush()
            os.fsync(dst.fileno())
        if fill is None:
            # A moved file keeps its mtime and mode, as a rename would.
            shutil.copystat(source, temp)
        if not _still_there(source, copied):
            raise SourceMissingError(
                f"source {source} was moved or removed by someone else while it was being copied "
                f"into {target_dir}; nothing was moved"
            )
    except BaseException as exc:
        _remove_quietly(temp)
        if isinstance(exc, OSError) and not isinstance(exc, SourceMissingError):
            raise FolderError(
                f"copying {source} into {target_dir} failed ({exc}); the source is unchanged"
            ) from exc
        raise
    marker = move_marker_path(source)
    try:
        _write_marker(marker, source, temp)
        final = install_file(temp, target_dir, name, on_conflict)
    except BaseException as exc:
        _remove_quietly(temp)
        _remove_quietly(marker)
        if isinstance(exc, OSError):
            raise FolderError(f"cannot move {source} into {target_dir}: {exc}") from exc
        raise
    fsync_dir(target_dir)
    _remove_quietly(source)  # already gone: a concurrent move of the same source finished it
    _remove_quietly(marker)
    return final


def _still_there(source: str, copied: os.stat_result) -> bool:
    try:
        now = os.stat(source)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (copied.st_dev, copied.st_ino)


def move_marker_path(source: str) -> str:
    """The hidden marker beside ``source`` that records its copy while being installed."""
    folder, name = os.path.split(os.path.abspath(source))
    digest = hashlib.sha1(os.fsencode(name)).hexdigest()[:8]
    return os.path.join(folder, f".{name[:_MAX_TEMP_STEM]}.{digest}{MOVE_MARKER_SUFFIX}")


def _identity(stat: os.stat_result) -> list[int]:
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns]


def _write_marker(marker: str, source: str, temp: str) -> None:
    # Not fsync'd: a marker cut short by a crash is ignored, and it is always
    # complete before the copy is installed. Losing it to a power cut costs a
    # second copy, never data.
    record = {
        "source": _identity(os.stat(source)),
        "target_dir": os.path.dirname(temp),
        "temp": os.path.basename(temp),
        "copy": _identity(os.stat(temp))[:3],
    }
    with open(marker, "w", encoding="utf-8") as handle:
        json.dump(record, handle)


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
    record = read_move_marker(marker)
    if record is None:
        if os.path.lexists(marker):
            _remove_quietly(marker)
        return None
    try:
        current = _identity(os.stat(source))
    except FileNotFoundError:
        return None  # nothing left to move; the caller reports the missing source
    if current != record["source"]:
        _remove_quietly(marker)  # left by an earlier file of the same name
        return None
    target_dir = record["target_dir"]
    temp = os.path.join(target_dir, record["temp"])
    copy = record["copy"]
    if os.path.lexists(temp):
        _remove_quietly(temp)  # the copy was never installed: start again
        _remove_quietly(marker)
        return None
    final = _installed_copy(target_dir, copy)
    if final is None:
        raise FolderError(
            f"an earlier move of {source} into {target_dir} was interrupted after its complete copy "
            "was installed, and that copy is no longer there (it was moved on or removed). "
            f"If it was processed, remove {source} and the marker {marker}; to move {source} "
            "again, remove only the marker"
        )
    fsync_dir(target_dir)
    _remove_quietly(source)
    _remove_quietly(marker)
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


def write_file_atomic(path: str, data: bytes, mode: int = 0o640) -> str:
    """Write ``data`` to ``path`` through a hidden temp beside it; readers see old or new, never half."""
    folder, name = os.path.split(os.path.abspath(path))
    temp = os.path.join(folder, hidden_temp_name(name))
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with open(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        _remove_quietly(temp)
        raise
    fsync_dir(folder)
    return path
