"""Benchmarks: every hot path against its bare baseline, measured in the same run.

Timings on a small shared machine are noisy, so a figure is always a ratio to
a baseline measured right beside it (medians over repeats, ours and the
baseline interleaved); absolute times are printed for context only. Each
benchmark module exposes ``NAME``, ``TITLE`` and ``run(smoke) -> list[Row]``;
``python -m bench`` runs them, prints one table and writes
``bench/results/<name>.json``. Nothing here asserts on time.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SMOKE_RESULTS_DIR = os.path.join(RESULTS_DIR, "smoke")
# Keys every benchmark's JSON has, and every row in it (the smoke test checks them).
RESULT_KEYS = ("benchmark", "title", "mode", "started_at", "duration_s", "machine", "rows", "error")
ROW_KEYS = (
    "case", "ours_s", "baseline_s", "ratio", "ratio_meaning", "target", "met",
    "ours_runs_s", "baseline_runs_s", "context",
)


@dataclass
class Target:
    """A goal on ``ratio``: ``op`` is "<=" or ">=", or None for "report only"."""

    op: str | None
    value: float | None
    text: str

    def met(self, ratio: float | None) -> bool | None:
        if self.op is None or ratio is None:
            return None
        return ratio <= self.value if self.op == "<=" else ratio >= self.value


def at_most(value: float) -> Target:
    return Target("<=", value, f"<= {value:g}x")


def at_least(value: float, what: str = "") -> Target:
    return Target(">=", value, f">= {value:g}x{(' ' + what) if what else ''}")


REPORT_ONLY = Target(None, None, "report")


@dataclass
class Row:
    """One line of a benchmark's table: our time beside the baseline's, and their ratio."""

    case: str
    ours_runs_s: list[float]
    baseline_runs_s: list[float]
    target: Target
    # "time": ours/baseline (lower is better); "throughput": baseline/ours (higher is better);
    # "speedup": baseline/ours where the baseline is the slow way; "memory": ours/baseline bytes.
    ratio_kind: str = "time"
    context: dict[str, Any] = field(default_factory=dict)
    ours_value: float | None = None  # for memory rows: bytes instead of seconds
    baseline_value: float | None = None

    @property
    def ours(self) -> float:
        return self.ours_value if self.ours_value is not None else statistics.median(self.ours_runs_s)

    @property
    def baseline(self) -> float:
        if self.baseline_value is not None:
            return self.baseline_value
        return statistics.median(self.baseline_runs_s)

    @property
    def ratio(self) -> float | None:
        ours, baseline = self.ours, self.baseline
        if self.ratio_kind in ("time", "memory"):
            return ours / baseline if baseline else None
        return baseline / ours if ours else None

    def as_dict(self) -> dict[str, Any]:
        meaning = {
            "time": "ours / baseline time (lower is better)",
            "throughput": "our throughput / baseline throughput = baseline time / our time",
            "speedup": "how many times faster than the baseline = baseline time / our time",
            "memory": "our total PSS / baseline total PSS (lower is better)",
        }[self.ratio_kind]
        ratio = self.ratio
        return {
            "case": self.case,
            "ours_s": self.ours if self.ratio_kind != "memory" else None,
            "baseline_s": self.baseline if self.ratio_kind != "memory" else None,
            "ours_bytes": self.ours if self.ratio_kind == "memory" else None,
            "baseline_bytes": self.baseline if self.ratio_kind == "memory" else None,
            "ratio": ratio,
            "ratio_meaning": meaning,
            "target": asdict(self.target),
            "met": self.target.met(ratio),
            "ours_runs_s": self.ours_runs_s,
            "baseline_runs_s": self.baseline_runs_s,
            "context": self.context,
        }


def interleaved(
    ours: Callable[[], Any],
    baseline: Callable[[], Any],
    repeats: int,
    *,
    prepare_ours: Callable[[], Any] | None = None,
    prepare_baseline: Callable[[], Any] | None = None,
    warmup: bool = True,
) -> tuple[list[float], list[float]]:
    """Time ``ours`` and ``baseline`` alternately, ``repeats`` times each.

    ``prepare_*`` run untimed before each timed call (restoring the files a
    move consumed, dropping a collection). Alternating spreads drift from other
    load on the machine over both sides evenly.
    """
    ours_times: list[float] = []
    baseline_times: list[float] = []
    rounds = repeats + (1 if warmup else 0)
    for index in range(rounds):
        for function, prepare, times in (
            (ours, prepare_ours, ours_times),
            (baseline, prepare_baseline, baseline_times),
        ):
            if prepare is not None:
                prepare()
            started = time.perf_counter()
            function()
            elapsed = time.perf_counter() - started
            if not (warmup and index == 0):
                times.append(elapsed)
    return ours_times, baseline_times


# -- test data -------------------------------------------------------------------

CSV_HEADER = "id,station,time,temperature,humidity,pressure,wind_speed,quality\n"
_STATIONS = ("berlin-tempelhof", "hamburg-fuhlsbuettel", "koeln-bonn", "muenchen-stadt", "dresden-klotzsche")


def csv_row(index: int, rng: random.Random) -> str:
    return (
        f"{index},{rng.choice(_STATIONS)},2024-01-{1 + index % 28:02d}T{index % 24:02d}:{index % 60:02d}:00Z,"
        f"{rng.uniform(-15, 35):.2f},{rng.uniform(10, 100):.1f},{rng.uniform(960, 1040):.2f},"
        f"{rng.uniform(0, 25):.1f},{rng.choice(('ok', 'ok', 'ok', 'estimated'))}\n"
    )


def csv_bytes(size: int, seed: int = 0) -> tuple[bytes, int]:
    """CSV weather readings of about ``size`` bytes (whole rows) and their record count."""
    rng = random.Random(seed)
    parts = [CSV_HEADER]
    length = len(CSV_HEADER)
    records = 0
    while length < size:
        row = csv_row(records, rng)
        parts.append(row)
        length += len(row)
        records += 1
    return "".join(parts).encode(), records


def csv_records(count: int, seed: int = 0) -> bytes:
    """CSV with exactly ``count`` records."""
    rng = random.Random(seed)
    return (CSV_HEADER + "".join(csv_row(i, rng) for i in range(count))).encode()


def write_files(folder: str, names: list[str], content: bytes | Callable[[int], bytes]) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index, name in enumerate(names):
        path = os.path.join(folder, name)
        with open(path, "wb") as handle:
            handle.write(content(index) if callable(content) else content)
        paths.append(path)
    return paths


@contextlib.contextmanager
def scratch(prefix: str, parent: str | None = None) -> Iterator[str]:
    """A temporary folder removed afterwards, also when the benchmark fails."""
    path = tempfile.mkdtemp(prefix=f"core4-bench-{prefix}-", dir=parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def folder_resource(root: str, project: str = "bench"):
    """A FolderResource with every folder under ``root``."""
    from core4_resources.files.folders import FolderResource

    return FolderResource.under_root(root, project)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()),
    }


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f} us"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def megabytes(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"
