"""File names as the OS takes them: at most 255 bytes, any bytes but "/" and NUL.

Every name made from another one stays within that: hidden in-flight names
(``.<name>.<random>.part``, downloads, move markers) cut the name and keep a
random or hash part apart; visible derived names (``<name>.gz``,
``<name>.reason.txt``, numbered copies) go through :func:`derived_name`. A name
that is not UTF-8 arrives as a ``str`` with surrogate escapes;
:func:`printable_name` shows it in text. Pure functions: no I/O here.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid

from core4_resources.errors import FolderError

# Suffixes kept together with the one before them when numbering a conflict:
# "a.csv.gz" becomes "a.1.csv.gz", so patterns on ".csv.gz" still match.
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst", ".lz4"}
# The longest file name (in bytes) Linux filesystems accept.
NAME_MAX = 255
# An extension longer than this is not kept when a name is shortened.
_MAX_KEPT_EXTENSION = 32
# Beside the source of a copy-move while its copy is installed: ".<name>.<hash>.moving".
MOVE_MARKER_SUFFIX = ".moving"
# The hidden folder of a proc folder that holds its claimed batches (core4_pipelines.ingest.claim).
BATCH_DIR = ".batch"
_PARTIAL_COPY = re.compile(r"^\..+\.(?:[0-9a-f]{12}|[0-9]+\.download)\.part$", re.DOTALL)
_MOVE_MARKER = re.compile(r"^\..+\.[0-9a-f]{8}" + re.escape(MOVE_MARKER_SUFFIX) + "$", re.DOTALL)



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


def byte_length(text: str) -> int:
    return len(os.fsencode(text))


def _cut(text: str, budget: int) -> str:
    """The longest start of ``text`` that is at most ``budget`` bytes; never half a character."""
    if byte_length(text) <= budget:
        return text
    used = 0
    for position, char in enumerate(text):
        used += byte_length(char)
        if used > budget:
            return text[:position]
    return text


def _name_hash(name: str) -> str:
    return hashlib.sha1(os.fsencode(name)).hexdigest()[:8]


def split_extension(name: str) -> tuple[str, str]:
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
    if byte_length(whole) <= NAME_MAX:
        return whole
    stem, ext = split_extension(name)
    if byte_length(ext) > _MAX_KEPT_EXTENSION:
        stem, ext = name, ""
    tail = f"~{_name_hash(name)}{ext}{suffix}"
    room = NAME_MAX - byte_length(tail)
    if room < 1:
        raise FolderError(f"suffix={printable_name(suffix)!r} leaves no room for a file name")
    return _cut(stem, room) + tail


def _hidden_name(name: str, tag: str) -> str:
    """``.<name>.<tag>``, the name cut so that the whole is at most ``NAME_MAX`` bytes."""
    return f".{_cut(name, NAME_MAX - 2 - byte_length(tag))}.{tag}"


def hidden_temp_name(name: str) -> str:
    """The in-flight name of ``name``: ``.<name>.<12 random hex>.part`` (the name cut to fit)."""
    return _hidden_name(name, f"{uuid.uuid4().hex[:12]}.part")


def download_temp_name(name: str, pid: int | None = None) -> str:
    """The in-flight name of a download of ``name``: ``.<name>.<pid>.download.part`` (cut to fit)."""
    return _hidden_name(name, f"{os.getpid() if pid is None else pid}.download.part")


def is_partial_copy(name: str) -> bool:
    """True for the names of :func:`hidden_temp_name` and :func:`download_temp_name`."""
    return _PARTIAL_COPY.match(os.path.basename(name)) is not None


_TEMP_TAG_BYTES = len("0123456789ab.part")


def partial_copy_target(name: str) -> str | None:
    """The (possibly cut) name a :func:`hidden_temp_name` was made for, or None for another name."""
    name = os.path.basename(name)
    if not (is_partial_copy(name) and name.endswith(".part")) or name.endswith(".download.part"):
        return None
    return name[1:-(_TEMP_TAG_BYTES + 1)]


def cut_for_temp(name: str) -> str:
    """``name`` as :func:`hidden_temp_name` keeps it (cut to fit)."""
    return _cut(name, NAME_MAX - 2 - _TEMP_TAG_BYTES)


def is_move_marker(name: str) -> bool:
    """True for the names of :func:`move_marker_path`."""
    return _MOVE_MARKER.match(os.path.basename(name)) is not None


def move_marker_path(source: str) -> str:
    """The hidden marker beside ``source`` that records its copy while being installed:
    ``.<name, cut to fit>.<hash of the whole name>.moving``."""
    folder, name = os.path.split(os.path.abspath(source))
    encoded = os.fsencode(name)
    tag = hashlib.sha1(encoded).hexdigest()[:8] + MOVE_MARKER_SUFFIX
    if len(encoded) + 2 + len(tag) <= NAME_MAX:  # fits uncut: the common case, probed on every move
        return f"{folder}/.{name}.{tag}" if folder != "/" else f"/.{name}.{tag}"
    return os.path.join(folder, _hidden_name(name, tag))
