"""Crash-safe file moves: no-replace renames, hidden in-flight names, fsync'd copies.

A file in flight is always a hidden file (``.<name>.<random>.part``) inside the
target folder, so a listing or a sensor that skips hidden names never sees a
half-written file. An existing target is never replaced unless asked for. A
copy-move killed after its copy was installed is finished, not repeated, by the
next move of the same source (a hidden ``.moving`` marker beside the source).

Names stay within the OS's 255 bytes and print readably: see ``names.py``; the
file primitives (exact modes, no-replace rename, fsyncs) are in ``fileops.py``.
"""

from __future__ import annotations

import errno
import os
import shutil
from typing import BinaryIO, Callable

from core4_resources.errors import FolderError, SourceMissingError
from core4_resources.files.fileops import (
    FILE_MODE,
    FOLDER_MODE,
    fsync_dir,
    fsync_files,
    make_dirs,
    open_new_file,
    remove_quietly,
    rename_noreplace,
    write_file_atomic,
)
from core4_resources.files.markers import (
    finish_interrupted_move,
    marker_source,
    read_move_marker,
    still_there,
    write_move_marker,
)
from core4_resources.files.names import (
    MOVE_MARKER_SUFFIX,
    NAME_MAX,
    byte_length,
    derived_name,
    download_temp_name,
    hidden_temp_name,
    is_hidden,
    is_move_marker,
    is_partial_copy,
    move_marker_path,
    printable_name,
    split_extension,
)

__all__ = [
    "CONFLICT_POLICIES", "FILE_MODE", "FOLDER_MODE", "MOVE_MARKER_SUFFIX", "NAME_MAX",
    "copy_move", "derived_name", "download_temp_name",
    "finish_interrupted_move", "fsync_dir", "fsync_files", "hidden_temp_name", "install_file", "is_hidden",
    "is_move_marker", "is_partial_copy", "make_dirs", "marker_source", "move_marker_path",
    "open_new_file", "printable_name", "read_move_marker", "rename_noreplace", "safe_move",
    "write_file_atomic",
]

CONFLICT_POLICIES = ("rename", "replace", "fail")
COPY_CHUNK = 1024 * 1024
_MAX_CONFLICT_NUMBER = 100_000


def _numbered_names(name: str):
    """``name``, then ``stem.1.ext``, ``stem.2.ext``, ... (each shortened when too long)."""
    yield name
    stem, ext = split_extension(name)
    for number in range(1, _MAX_CONFLICT_NUMBER):
        yield derived_name(f"{stem}.{number}{ext}")


def check_policy(on_conflict: str) -> None:
    if on_conflict not in CONFLICT_POLICIES:
        raise FolderError(
            f"on_conflict={on_conflict!r} is not one of {', '.join(map(repr, CONFLICT_POLICIES))}"
        )


def install_file(src: str, target_dir: str, name: str, on_conflict: str = "rename") -> str:
    """Rename ``src`` to ``name`` in ``target_dir`` under the conflict policy; return the final path.

    OSError(EXDEV) is passed on unchanged so the caller can copy instead.
    """
    check_policy(on_conflict)
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
                    f"target {printable_name(final)} already exists (on_conflict='fail'); "
                    f"{printable_name(src)} was left in place. "
                    "Remove the target or use on_conflict='rename' or 'replace'"
                ) from None
    raise FolderError(
        f"no free name for {printable_name(name)} in {printable_name(target_dir)}: too many numbered copies exist"
    )


def _check_name(name: str, source: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise FolderError(
            f"name={printable_name(name)!r} (for source {printable_name(source)!r}) is not a plain file name"
        )
    if byte_length(name) > NAME_MAX:
        raise FolderError(
            f"name={printable_name(name)!r} (for source {printable_name(source)!r}) is longer than "
            f"{NAME_MAX} bytes; pass a shorter name (derived_name() shortens one)"
        )


def safe_move(
    source: str,
    target_dir: str,
    name: str | None = None,
    on_conflict: str = "rename",
    mode: int = FOLDER_MODE,
) -> str:
    """Move ``source`` into ``target_dir`` as ``name`` (default: its basename); return the final path.

    Same filesystem: one no-replace rename. Across filesystems: :func:`copy_move`
    -- a crash leaves the data at the source or complete at the target, and the
    next move of the same source finishes an interrupted one instead of copying twice.
    """
    check_policy(on_conflict)
    source = os.path.abspath(source)
    if name is None:
        name = os.path.basename(source)
    _check_name(name, source)
    finished = finish_interrupted_move(source)
    if finished is not None:
        return finished
    target_dir = os.path.abspath(target_dir)
    # No existence checks up front: the rename's own ENOENT says that the source or the
    # target folder is missing, and only then is it looked at (one syscall per move saved).
    try:
        try:
            return install_file(source, target_dir, name, on_conflict)
        except FileNotFoundError:
            if not os.path.lexists(source):
                raise SourceMissingError(
                    f"source {printable_name(source)} does not exist; nothing was moved"
                ) from None
            make_dirs(target_dir, mode)
            return install_file(source, target_dir, name, on_conflict)
    except OSError as exc:
        if isinstance(exc, SourceMissingError):
            raise
        if exc.errno != errno.EXDEV:
            raise _move_failed(source, target_dir, exc) from exc
    if os.path.isdir(source) and not os.path.islink(source):
        raise FolderError(
            f"cannot move folder {printable_name(source)} into {printable_name(target_dir)}: they are on "
            "different filesystems; move its files one by one"
        )
    make_dirs(target_dir, mode)  # a rename may fail with EXDEV before it looks at the target folder
    return copy_move(source, target_dir, name, on_conflict)


# -- copy-moves: across filesystems, or when the bytes change on the way (gzip) ------------


def plain_copy(src: BinaryIO, dst: BinaryIO) -> None:
    shutil.copyfileobj(src, dst, COPY_CHUNK)


def _move_failed(source: str, target_dir: str, exc: OSError) -> FolderError:
    return FolderError(
        f"cannot move {printable_name(source)} into {printable_name(target_dir)}: {printable_name(str(exc))}"
    )


def copy_move(
    source: str,
    target_dir: str,
    name: str,
    on_conflict: str = "rename",
    fill: Callable[[BinaryIO, BinaryIO], None] | None = None,
) -> str:
    """Move ``source`` by copying: ``fill(src, dst)`` writes the copy (default: byte for byte).

    The copy is written into a hidden temp in ``target_dir`` (mode ``FILE_MODE``
    from its creation on; a plain copy keeps the source's mtime), fsync'd and renamed
    to ``name``; the folder is fsync'd and only then is the source removed. While
    the copy is installed, a hidden marker beside the source records it: a crash
    between installing and removing the source is finished by the next move of the
    same source (:func:`finish_interrupted_move`), so a file is never copied twice.
    """
    check_policy(on_conflict)
    source_dir = os.path.dirname(source)
    if not os.access(source_dir, os.W_OK):
        raise FolderError(
            f"cannot move {printable_name(source)}: its folder {printable_name(source_dir)} is not "
            "writable, so the source could not be removed after copying; nothing was moved. "
            "Make the folder writable"
        )
    temp = os.path.join(target_dir, hidden_temp_name(name))
    try:
        with open(source, "rb") as src, open_new_file(temp) as dst:
            copied = os.fstat(src.fileno())
            (fill or plain_copy)(src, dst)
            dst.flush()
            os.fsync(dst.fileno())
        if fill is None:
            # A moved file keeps its mtime, as a rename would; its mode is FILE_MODE.
            os.utime(temp, ns=(copied.st_atime_ns, copied.st_mtime_ns))
        if not still_there(source, copied):
            raise SourceMissingError(
                f"source {printable_name(source)} was moved or removed by someone else while it was "
                f"being copied into {printable_name(target_dir)}; nothing was moved"
            )
    except BaseException as exc:
        remove_quietly(temp)
        if isinstance(exc, OSError) and not isinstance(exc, SourceMissingError):
            raise FolderError(
                f"copying {printable_name(source)} into {printable_name(target_dir)} failed "
                f"({printable_name(str(exc))}); the source is unchanged"
            ) from exc
        raise
    marker = move_marker_path(source)
    try:
        write_move_marker(marker, source, temp)
        final = install_file(temp, target_dir, name, on_conflict)
    except BaseException as exc:
        remove_quietly(temp)
        remove_quietly(marker)
        if isinstance(exc, OSError):
            raise _move_failed(source, target_dir, exc) from exc
        raise
    fsync_dir(target_dir)
    remove_quietly(source)  # already gone: a concurrent move of the same source finished it
    remove_quietly(marker)
    return final


