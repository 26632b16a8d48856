"""Crash-safe file moves: no-replace renames, hidden in-flight names, fsync'd copies.

A file in flight is always a hidden file (``.<name>.<random>.part``) inside the
target folder, so a listing or a sensor that skips hidden names never sees a
half-written file. An existing target is never replaced unless asked for. A
copy-move killed after its copy was installed is finished, not repeated, by the
next move of the same source (a hidden ``.moving`` marker beside the source).

Names are bytes to the OS: any bytes but "/" and NUL, at most 255 of them
(``NAME_MAX``). Every name made here from another one stays within that:
hidden in-flight names cut the name (their random or hash part keeps them
apart), visible derived names (``<name>.gz``, ``<name>.reason.txt``, numbered
copies) go through :func:`derived_name`. A name that is not UTF-8 arrives as
a ``str`` with surrogate escapes; :func:`printable_name` shows it in text.
Every folder made here is ``0o750`` and every file ``0o640``, whatever the umask.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import re
import shutil
import uuid
from typing import BinaryIO, Callable

from core4_resources.errors import FolderError, SourceMissingError

__all__ = [
    "CONFLICT_POLICIES", "FILE_MODE", "FOLDER_MODE", "MOVE_MARKER_SUFFIX", "NAME_MAX",
    "copy_move", "derived_name", "download_temp_name",
    "finish_interrupted_move", "fsync_dir", "hidden_temp_name", "install_file", "is_hidden",
    "is_move_marker", "is_partial_copy", "make_dirs", "marker_source", "move_marker_path",
    "open_new_file", "printable_name", "read_move_marker", "rename_noreplace", "safe_move",
    "write_file_atomic",
]

CONFLICT_POLICIES = ("rename", "replace", "fail")
COPY_CHUNK = 1024 * 1024
# Suffixes kept together with the one before them when numbering a conflict:
# "a.csv.gz" becomes "a.1.csv.gz", so patterns on ".csv.gz" still match.
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst", ".lz4"}
_MAX_CONFLICT_NUMBER = 100_000
FOLDER_MODE = 0o750
FILE_MODE = 0o640
# The longest file name (in bytes) Linux filesystems accept.
NAME_MAX = 255
# An extension longer than this is not kept when a name is shortened.
_MAX_KEPT_EXTENSION = 32
# Beside the source of a copy-move while its copy is installed: ".<name>.<hash>.moving".
MOVE_MARKER_SUFFIX = ".moving"
_PARTIAL_COPY = re.compile(r"^\..+\.(?:[0-9a-f]{12}|[0-9]+\.download)\.part$", re.DOTALL)
_MOVE_MARKER = re.compile(r"^\..+\.[0-9a-f]{8}" + re.escape(MOVE_MARKER_SUFFIX) + "$", re.DOTALL)

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


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


# -- names: within NAME_MAX bytes, readable in text ------------------------------------------


def printable_name(name: str | bytes | os.PathLike) -> str:
    """``name`` (or a path, or any text holding one) as valid UTF-8 text for messages and logs.

    Bytes that are not UTF-8 (surrogate escapes in a ``str`` from the OS) are
    shown as ``\\xNN``: ``b"caf\\xe9.csv"`` and ``"caf\\udce9.csv"`` both give ``caf\\xe9.csv``.
    """
    name = os.fspath(name) if isinstance(name, os.PathLike) else name
    if isinstance(name, str):
        try:
            name = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no file name can hold: show it escaped
            return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return bytes(name).decode("utf-8", "backslashreplace")


def _size(text: str) -> int:
    return len(os.fsencode(text))


def _cut(text: str, budget: int) -> str:
    """The longest start of ``text`` that is at most ``budget`` bytes; never half a character."""
    if _size(text) <= budget:
        return text
    used = 0
    for position, char in enumerate(text):
        used += _size(char)
        if used > budget:
            return text[:position]
    return text


def _name_hash(name: str) -> str:
    return hashlib.sha1(os.fsencode(name)).hexdigest()[:8]


def _split_extension(name: str) -> tuple[str, str]:
    """``("a", ".csv")`` for ``a.csv``; a compression suffix keeps the one before it: ``.csv.gz``."""
    stem, ext = os.path.splitext(name)
    if ext in _COMPRESSION_SUFFIXES:
        inner_stem, inner_ext = os.path.splitext(stem)
        if inner_ext:
            stem, ext = inner_stem, inner_ext + ext
    return stem, ext


def derived_name(name: str, suffix: str = "") -> str:
    """``name + suffix``, shortened to at most ``NAME_MAX`` bytes when it is longer.

    A shortened name keeps the start of the stem and the extension and gets a
    hash of the whole ``name``: ``<start>~<8 hex><ext><suffix>`` (e.g. a 254-byte
    ``x...x.csv`` with ``.gz`` becomes ``x...x~1a2b3c4d.csv.gz``). The same name
    always gives the same result, so a retry derives the same name.
    """
    whole = name + suffix
    if _size(whole) <= NAME_MAX:
        return whole
    stem, ext = _split_extension(name)
    if _size(ext) > _MAX_KEPT_EXTENSION:
        stem, ext = name, ""
    tail = f"~{_name_hash(name)}{ext}{suffix}"
    room = NAME_MAX - _size(tail)
    if room < 1:
        raise FolderError(f"suffix={printable_name(suffix)!r} leaves no room for a file name")
    return _cut(stem, room) + tail


def _hidden_name(name: str, tag: str) -> str:
    """``.<name>.<tag>``, the name cut so that the whole is at most ``NAME_MAX`` bytes."""
    return f".{_cut(name, NAME_MAX - 2 - _size(tag))}.{tag}"


def hidden_temp_name(name: str) -> str:
    """The in-flight name of ``name``: ``.<name>.<12 random hex>.part`` (the name cut to fit)."""
    return _hidden_name(name, f"{uuid.uuid4().hex[:12]}.part")


def download_temp_name(name: str, pid: int | None = None) -> str:
    """The in-flight name of a download of ``name``: ``.<name>.<pid>.download.part`` (cut to fit)."""
    return _hidden_name(name, f"{os.getpid() if pid is None else pid}.download.part")


def is_partial_copy(name: str) -> bool:
    """True for the names of :func:`hidden_temp_name` and :func:`download_temp_name`."""
    return _PARTIAL_COPY.match(os.path.basename(name)) is not None


def is_move_marker(name: str) -> bool:
    """True for the names of :func:`move_marker_path`."""
    return _MOVE_MARKER.match(os.path.basename(name)) is not None


# -- files and folders with exact modes -------------------------------------------------------


def open_new_file(path: str, mode: int = FILE_MODE, *, exclusive: bool = True) -> BinaryIO:
    """Open ``path`` for writing, created with exactly ``mode`` (the umask does not change it).

    ``exclusive``: FileExistsError when it exists; else an existing file is emptied.
    The mode is set before anything is written.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, mode & 0o700)
    try:
        os.fchmod(fd, mode)
        return open(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


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


def make_dirs(path: str, mode: int = FOLDER_MODE) -> str:
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
                    f"cannot create folder {printable_name(folder)}: a file of that name exists; "
                    "remove or rename it"
                ) from None
            continue  # created concurrently by someone else: leave its mode alone
        except OSError as exc:
            raise FolderError(f"cannot create folder {printable_name(folder)}: {exc.strerror}") from exc
        os.chmod(folder, mode)
    return path


def _numbered_names(name: str):
    """``name``, then ``stem.1.ext``, ``stem.2.ext``, ... (each shortened when too long)."""
    yield name
    stem, ext = _split_extension(name)
    for number in range(1, _MAX_CONFLICT_NUMBER):
        yield derived_name(f"{stem}.{number}{ext}")


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
                    f"target {printable_name(final)} already exists (on_conflict='fail'); "
                    f"{printable_name(src)} was left in place. "
                    "Remove the target or use on_conflict='rename' or 'replace'"
                ) from None
    raise FolderError(
        f"no free name for {printable_name(name)} in {printable_name(target_dir)}: too many numbered copies exist"
    )


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _check_name(name: str, source: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise FolderError(
            f"name={printable_name(name)!r} (for source {printable_name(source)!r}) is not a plain file name"
        )
    if _size(name) > NAME_MAX:
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
    _check_policy(on_conflict)
    source = os.path.abspath(source)
    if name is None:
        name = os.path.basename(source)
    _check_name(name, source)
    if not os.path.lexists(source):
        raise SourceMissingError(f"source {printable_name(source)} does not exist; nothing was moved")
    finished = finish_interrupted_move(source)
    if finished is not None:
        return finished
    target_dir = make_dirs(target_dir, mode)
    try:
        return install_file(source, target_dir, name, on_conflict)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise _move_failed(source, target_dir, exc) from exc
    if os.path.isdir(source) and not os.path.islink(source):
        raise FolderError(
            f"cannot move folder {printable_name(source)} into {printable_name(target_dir)}: they are on "
            "different filesystems; move its files one by one"
        )
    return copy_move(source, target_dir, name, on_conflict)


# -- copy-moves: across filesystems, or when the bytes change on the way (gzip) ------------


def _plain_copy(src: BinaryIO, dst: BinaryIO) -> None:
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
    _check_policy(on_conflict)
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
            (fill or _plain_copy)(src, dst)
            dst.flush()
            os.fsync(dst.fileno())
        if fill is None:
            # A moved file keeps its mtime, as a rename would; its mode is FILE_MODE.
            os.utime(temp, ns=(copied.st_atime_ns, copied.st_mtime_ns))
        if not _still_there(source, copied):
            raise SourceMissingError(
                f"source {printable_name(source)} was moved or removed by someone else while it was "
                f"being copied into {printable_name(target_dir)}; nothing was moved"
            )
    except BaseException as exc:
        _remove_quietly(temp)
        if isinstance(exc, OSError) and not isinstance(exc, SourceMissingError):
            raise FolderError(
                f"copying {printable_name(source)} into {printable_name(target_dir)} failed "
                f"({printable_name(str(exc))}); the source is unchanged"
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
            raise _move_failed(source, target_dir, exc) from exc
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
    """The hidden marker beside ``source`` that records its copy while being installed:
    ``.<name, cut to fit>.<hash of the whole name>.moving``."""
    folder, name = os.path.split(os.path.abspath(source))
    return os.path.join(folder, _hidden_name(name, _name_hash(name) + MOVE_MARKER_SUFFIX))


def marker_source(marker: str) -> str | None:
    """The existing file beside ``marker`` whose move marker it is, or None."""
    folder, name = os.path.split(marker)
    start = name[1 : -len(MOVE_MARKER_SUFFIX)].rsplit(".", 1)[0]  # the source name, cut to fit
    try:
        with os.scandir(folder) as entries:
            candidates = [e.name for e in entries if e.name.startswith(start) and e.name != name]
    except FileNotFoundError:
        return None
    for candidate in candidates:
        source = os.path.join(folder, candidate)
        if move_marker_path(source) == marker:
            return source
    return None


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
    with open_new_file(marker, exclusive=False) as handle:
        handle.write(json.dumps(record).encode("ascii"))  # surrogate escapes become \udcNN


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
        source, target_dir, marker = map(printable_name, (source, target_dir, marker))
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


def write_file_atomic(path: str, data: bytes, mode: int = FILE_MODE) -> str:
    """Write ``data`` to ``path`` (exactly ``mode``) through a hidden temp beside it;
    readers see old or new, never half."""
    folder, name = os.path.split(os.path.abspath(path))
    temp = os.path.join(folder, hidden_temp_name(name))
    try:
        with open_new_file(temp, mode) as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        _remove_quietly(temp)
        raise
    fsync_dir(folder)
    return path
