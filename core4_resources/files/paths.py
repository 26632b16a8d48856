"""Checked paths and archive stamps for FolderResource.

A ``base``, ``filename`` or ``source`` from a caller is checked here: no
absolute path, no ``..``, nothing that resolves outside the folder it
addresses, no name the filesystem cannot take.
"""

from __future__ import annotations

import os
import string
from datetime import datetime, timezone

from core4_resources.errors import FolderError, SourceMissingError
from core4_resources.files.names import NAME_MAX, printable_name


def _quoted(value) -> str:
    """A value in a message: a name quoted and readable (see printable_name), else its repr."""
    return f"'{printable_name(value)}'" if isinstance(value, str) else repr(value)


def _checked_inside(argument: str, value, folder: str) -> str:
    """``folder/value`` when ``value`` is a relative path that stays inside ``folder``."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    where = f"{argument}={_quoted(value)}"
    folder_shown = printable_name(folder)
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise FolderError(f"{where} is not a usable path; pass a relative path inside {folder_shown}")
    if os.path.isabs(value):
        raise FolderError(
            f"{where} is absolute; pass a path relative to {folder_shown} (e.g. 'name' or 'sub/name')"
        )
    if ".." in value.split("/"):
        raise FolderError(f"{where} contains '..'; pass a path that stays inside {folder_shown}")
    if any(len(os.fsencode(part)) > NAME_MAX for part in value.split("/")):
        raise FolderError(f"{where} has a name longer than {NAME_MAX} bytes; no filesystem takes it")
    relative = os.path.normpath(value)
    if relative == ".":
        raise FolderError(f"{where} names {folder_shown} itself; pass a name inside it")
    path = os.path.join(folder, relative)
    real_folder = os.path.realpath(folder)
    real_path = os.path.realpath(path)
    if not real_path.startswith(real_folder.rstrip("/") + "/"):
        raise FolderError(
            f"{where} resolves to {printable_name(real_path)}, outside {folder_shown} (through a "
            "symbolic link); remove the link or pass another path"
        )
    return path


def _source_path(source, *, must_exist: bool = True) -> str:
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str) or not source.strip() or "\0" in source:
        raise FolderError(f"source={source!r} is not a usable file path")
    path = os.path.abspath(source)
    if os.path.basename(path) in ("", ".", ".."):
        raise FolderError(f"source={_quoted(source)} does not name a file")
    if must_exist and not os.path.lexists(path):
        raise SourceMissingError(
            f"source={_quoted(source)} does not exist ({printable_name(path)}); nothing was moved"
        )
    return path


def gzip_original_name(path: str) -> str | None:
    """The original file name that ``move_archive`` wrote into the header of the ``.gz``
    at ``path`` (as ``gzip -lN`` shows it); None when the header holds none."""
    with open(path, "rb") as handle:
        header = handle.read(10)
        if len(header) < 10 or header[:2] != b"\037\213" or not header[3] & 0x08:  # FNAME
            return None
        if header[3] & 0x04:  # FEXTRA comes first
            handle.seek(int.from_bytes(handle.read(2), "little"), os.SEEK_CUR)
        name = b""
        while (chunk := handle.read(256)) and b"\0" not in chunk:
            name += chunk
        name += chunk.split(b"\0", 1)[0]
    return os.fsdecode(name)


def _as_utc(moment: datetime) -> datetime:
    # A naive datetime is taken as UTC, the zone of every stamp.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _stamp_fields(stamp: str) -> set[str]:
    try:
        parsed = list(string.Formatter().parse(stamp))
    except ValueError as exc:
        raise FolderError(f"archive_stamp={stamp!r} is not a valid format string: {exc}") from exc
    # "{a.b}" and "{a[0]}" use key "a"
    return {field.split(".")[0].split("[")[0] for _, field, _, _ in parsed if field}
