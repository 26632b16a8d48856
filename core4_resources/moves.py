"""Crash-safe file moves: no-replace renames, hidden in-flight names, fsync'd copies.

A file in flight is always a hidden file (``.<name>.<random>.part``) inside the
target folder, so a listing or a sensor that skips hidden names never sees a
half-written file. An existing target is never replaced unless asked for.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import uuid

from core4_resources.errors import FolderError

__all__ = [
    "CONFLICT_POLICIES",
    "SourceMissingError",
    "fsync_dir",
    "hidden_temp_name",
    "install_file",
    "is_hidden",
    "make_dirs",
    "rename_noreplace",
    "safe_move",
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


def _copy_to_hidden(source: str, target_dir: str, name: str) -> str:
    """Copy ``source`` into a hidden temp in ``target_dir``, fsync'd, metadata kept; return its path."""
    temp = os.path.join(target_dir, hidden_temp_name(name))
    try:
        with open(source, "rb") as src, open(temp, "xb") as dst:
            shutil.copyfileobj(src, dst, COPY_CHUNK)
            dst.flush()
            os.fsync(dst.fileno())
        # A moved file keeps its mtime and mode, as a rename would.
        shutil.copystat(source, temp)
    except BaseException:
        _remove_quietly(temp)
        raise
    return temp


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

    Same filesystem: one no-replace rename. Across filesystems: copy into a hidden
    temp in ``target_dir``, fsync it, rename it, fsync the folder, then remove the
    source -- a crash leaves the data at the source or complete at the target.
    """
    _check_policy(on_conflict)
    source = os.path.abspath(source)
    if name is None:
        name = os.path.basename(source)
    _check_name(name, source)
    if not os.path.lexists(source):
        raise SourceMissingError(f"source {source} does not exist; nothing was moved")
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
    try:
        temp = _copy_to_hidden(source, target_dir, name)
    except OSError as exc:
        raise FolderError(
            f"copying {source} into {target_dir} failed ({exc}); the source is unchanged"
        ) from exc
    try:
        final = install_file(temp, target_dir, name, on_conflict)
    except BaseException as exc:
        _remove_quietly(temp)
        if isinstance(exc, OSError):
            raise FolderError(f"cannot move {source} into {target_dir}: {exc}") from exc
        raise
    fsync_dir(target_dir)
    os.unlink(source)
    return final


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
