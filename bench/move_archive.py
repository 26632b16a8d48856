"""FolderResource.move_archive (gzip level 6, crash-safe), against Python's gzip on the same bytes.

Both compress the same CSV files at level 6 into an archive folder and remove
the source. Ours writes a hidden temp, fsyncs it, renames it, fsyncs the
folder and removes the source; the baseline gzips straight into the target
and unlinks the source. Throughput ratio = baseline time / our time.

The batch rows archive the same files with ``move_archive_many`` in batches of
100 (what an import run does with its batch): the copies' fsyncs issued
together and one folder fsync per batch instead of two fsyncs per file.
"""

from __future__ import annotations

import gzip
import os
import shutil
import statistics
import time
from datetime import UTC, datetime

from bench import (
    Row,
    at_least,
    csv_bytes,
    folder_resource,
    interleaved,
    scratch,
    write_files,
)

NAME = "move_archive"
TITLE = "move_archive (gzip 6), vs Python gzip level 6 on the same bytes"
# (files, bytes each, files per move_archive_many call or None for move_archive per file)
CASES = ((1_000, 50 * 1024, None), (1_000, 50 * 1024, 100), (1, 50 * 2**20, None), (5_000, 1024, 100))
SMOKE_CASES = ((20, 50 * 1024, None), (20, 50 * 1024, 10), (1, 2 * 2**20, None), (40, 1024, 10))
STARTED = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)


def gzip_file(source: str, target: str) -> None:
    with open(source, "rb") as src, gzip.open(target, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
    os.unlink(source)


def flush_costs(folder: str, samples: int = 50) -> dict[str, float]:
    """Median milliseconds of an fsync of a freshly written 13 KB file, and of a folder after a rename."""
    os.makedirs(folder, exist_ok=True)
    file_ms, folder_ms = [], []
    for index in range(samples):
        path = os.path.join(folder, f"probe-{index}")
        with open(path, "wb") as handle:
            handle.write(b"x" * 13_000)
            handle.flush()
            started = time.perf_counter()
            os.fsync(handle.fileno())
            file_ms.append(1e3 * (time.perf_counter() - started))
        os.rename(path, path + ".done")
        started = time.perf_counter()
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        folder_ms.append(1e3 * (time.perf_counter() - started))
    return {"fsync_file_ms": statistics.median(file_ms), "fsync_folder_ms": statistics.median(folder_ms)}


def measure(count: int, size: int, batch: int | None, smoke: bool) -> Row:
    content, _ = csv_bytes(size)
    names = [f"reading-{i:05d}.csv" for i in range(count)]
    with scratch(NAME) as root:
        folders = folder_resource(root)
        incoming = os.path.join(root, "incoming")
        plain = os.path.join(root, "plain-archive")
        paths = [os.path.join(incoming, name) for name in names]

        def refill(target: str):
            def prepare():
                shutil.rmtree(target, ignore_errors=True)
                os.makedirs(target)
                write_files(incoming, names, content)

            return prepare

        def ours():
            if batch is None:
                for path in paths:
                    folders.move_archive(path, run_id="bench-run", started=STARTED)
                return
            for start in range(0, len(paths), batch):
                results = folders.move_archive_many(paths[start:start + batch], run_id="bench-run", started=STARTED)
                if not all(isinstance(r, str) for r in results):
                    raise AssertionError(f"move_archive_many failed: {results}")

        def baseline():
            for name, path in zip(names, paths):
                gzip_file(path, os.path.join(plain, name + ".gz"))

        repeats = 2 if smoke else (5 if count > 1 else 7)
        ours_s, baseline_s = interleaved(
            ours, baseline, repeats,
            prepare_ours=refill(folders.archive_folder()),
            prepare_baseline=refill(plain),
        )
        archived = [n for _, _, files in os.walk(folders.archive_folder()) for n in files]
        if len(archived) != count:
            raise AssertionError(f"move_archive left {len(archived)} of {count} archives")
        packed = sum(
            os.path.getsize(os.path.join(d, n)) for d, _, files in os.walk(plain) for n in files
        )
        flushes = flush_costs(os.path.join(root, "fsync-probe"), 10 if smoke else 50)
    megabytes = count * len(content) / 2**20
    label = f"{count:,} x {len(content) // 1024:,} KB" if size < 2**20 else f"{count} x {size // 2**20} MB"
    if batch is not None:
        label += f", move_archive_many by {batch}"
    return Row(
        label,
        ours_s,
        baseline_s,
        at_least(0.8, "throughput"),
        ratio_kind="throughput",
        context={
            "files": count,
            "file_bytes": len(content),
            "batch": batch,
            "ours_mb_per_s": megabytes / statistics.median(ours_s),
            "baseline_mb_per_s": megabytes / statistics.median(baseline_s),
            "compression_ratio": packed / (count * len(content)) if packed else None,
            "extra_ms_per_file": 1e3 * (statistics.median(ours_s) - statistics.median(baseline_s)) / count,
            **flushes,
        },
    )


def run(smoke: bool) -> list[Row]:
    return [measure(count, size, batch, smoke) for count, size, batch in (SMOKE_CASES if smoke else CASES)]
