"""Free space: the floor below which claims pause (``folder.min_free``), and the check of it.

A floor is a share of the filesystem (``5%``) or a size (``500 MB``, ``1 GB``, ``1 GiB``, or
a number of bytes); ``0`` means none.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_FLOOR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|[kmgt]i?b|b)?\s*$", re.IGNORECASE)
EXPECTED = "a share of the disk such as 5%, a size such as 500 MB or 1 GB, or 0 (no floor)"


@dataclass(frozen=True)
class MinFree:
    text: str
    fraction: float = 0.0   # of the filesystem's size
    size: int = 0           # bytes

    def required(self, total: int) -> int:
        return max(int(self.fraction * total), self.size)


def parse_min_free(value) -> MinFree:
    """``value`` as a floor; ValueError(EXPECTED) for anything else."""
    if isinstance(value, bool) or value is None:
        raise ValueError(EXPECTED)
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(EXPECTED)
        return MinFree(str(value), size=int(value))
    match = _FLOOR.match(str(value))
    if not match:
        raise ValueError(EXPECTED)
    number, unit = float(match[1]), (match[2] or "").lower()
    if unit == "%":
        if number > 100:
            raise ValueError(EXPECTED)
        return MinFree(str(value), fraction=number / 100)
    return MinFree(str(value), size=int(number * _UNITS[unit]))


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def below_floor(paths: Iterable[str], floor: MinFree) -> str | None:
    """Why claims should pause: the first folder (one per filesystem) with less free space than
    ``floor``; None when every one has enough, or ``floor`` is 0. A folder not there yet is skipped."""
    if not floor.fraction and not floor.size:
        return None
    seen = set()
    for path in paths:
        try:
            device = os.stat(path).st_dev
            if device in seen:
                continue
            seen.add(device)
            stats = os.statvfs(path)
        except OSError:
            continue
        total, free = stats.f_blocks * stats.f_frsize, stats.f_bavail * stats.f_frsize
        required = floor.required(total)
        if free < required:
            return (f"{path} has {human_size(free)} free of {human_size(total)}, below folder.min_free "
                    f"{floor.text} ({human_size(required)}); claims resume by themselves once there is room")
    return None
