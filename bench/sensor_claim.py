"""A sensor tick that claims one batch of 100 from a large proc folder, against scandir + stat + 100 renames.

The sensor scans every entry, orders the ready files by age, renames the
oldest 100 into a hidden batch folder and returns one run request. The
baseline scans the same folder and renames 100 files into a folder. Between
repeats the claimed files are put back, untimed.

The backlog row: the scaffold's sensor (batch 100, 10 batches per tick) ticks
until a backlog of 100,000 files is all claimed; files per second of sensor
time (the sum of the evaluations) against the target rate of 1,000 files/s,
with a bare scandir + stat + rename of every file beside it for context.
"""

from __future__ import annotations

import os
import shutil
import statistics

import dagster as dg

import time

from bench import Row, at_least, at_most, folder_resource, interleaved, scratch
from bench.sensor_tick import evaluate, fill, make_sensor, scandir_stat, sensor_mongo
from core4_pipelines.ingest.claim import batch_root

NAME = "sensor_claim"
TITLE = "sensor tick claiming one batch of 100, vs scandir + stat + 100 renames"
FILES = 100_000
SMOKE_FILES = 200
BATCH = 100
TARGET_FILES_PER_S = 1_000


def put_back(proc: str, claimed_root: str) -> None:
    """Move every claimed file back into ``proc`` and remove the (batch) folders."""
    if not os.path.isdir(claimed_root):
        return
    for folder in os.listdir(claimed_root):
        path = os.path.join(claimed_root, folder)
        for name in os.listdir(path):
            os.rename(os.path.join(path, name), os.path.join(proc, name))
        os.rmdir(path)


def run(smoke: bool) -> list[Row]:
    count = SMOKE_FILES if smoke else FILES
    sensor = make_sensor(batch_size=BATCH, max_batches_per_tick=1, min_age_seconds=0)
    with scratch(NAME) as root, dg.DagsterInstance.ephemeral() as instance, sensor_mongo() as mongo:
        folders = folder_resource(root)
        proc = folders.proc_folder()
        fill(proc, count)
        batches = batch_root(proc)
        baseline_root = os.path.join(proc, ".baseline")

        def ours():
            result = evaluate(sensor, instance, folders, mongo)
            if len(result.run_requests) != 1:
                raise AssertionError(f"expected one run request, got {len(result.run_requests)}")

        def baseline():
            target = os.path.join(baseline_root, "claimed")
            os.makedirs(target)
            taken = 0
            with os.scandir(proc) as entries:
                names = []
                for entry in entries:
                    entry.stat(follow_symlinks=False)
                    names.append(entry.name)
            for name in names:
                if taken == BATCH:
                    break
                if name.startswith("."):
                    continue
                os.rename(os.path.join(proc, name), os.path.join(target, name))
                taken += 1

        ours_s, baseline_s = interleaved(
            ours,
            baseline,
            3 if smoke else 7,
            prepare_ours=lambda: put_back(proc, batches),
            prepare_baseline=lambda: put_back(proc, baseline_root),
        )
        put_back(proc, batches)
        put_back(proc, baseline_root)  # the last baseline round's files, or the backlog row misses them
        shutil.rmtree(baseline_root, ignore_errors=True)
        scan_only_s, _ = interleaved(lambda: scandir_stat(proc), lambda: None, 3 if smoke else 7)
        backlog = backlog_row(folders, instance, mongo, proc, batches, count)
    return [
        backlog,
        Row(
            f"claim {BATCH} of {count:,} files",
            ours_s,
            baseline_s,
            at_most(1.5),
            context={
                "files": count,
                "batch_size": BATCH,
                "scandir_stat_alone_s": statistics.median(scan_only_s),
            },
        )
    ]


def backlog_row(folders, instance, mongo, proc: str, batches: str, count: int) -> Row:
    """Tick the scaffold's sensor until the whole backlog is claimed; sensor seconds in all."""
    sensor = make_sensor(batch_size=BATCH, min_age_seconds=0)  # 10 batches per tick, as scaffolded
    runs, ticks, bare = [], [], []
    for _ in range(2):
        put_back(proc, batches)
        spent, claimed, tick_count = 0.0, 0, 0
        while claimed < count:
            started = time.perf_counter()
            result = evaluate(sensor, instance, folders, mongo)
            spent += time.perf_counter() - started
            tick_count += 1
            claimed = sum(len(os.listdir(os.path.join(batches, b))) for b in os.listdir(batches))
            if tick_count > count:
                raise AssertionError(f"{claimed} of {count} claimed after {tick_count} ticks")
        runs.append(spent)
        ticks.append(tick_count)
        del result
        put_back(proc, batches)
        bare_root = os.path.join(os.path.dirname(proc), "bare-claim")
        os.makedirs(bare_root)
        started = time.perf_counter()
        with os.scandir(proc) as entries:
            names = [e.name for e in entries if not e.name.startswith(".") and e.stat(follow_symlinks=False)]
        for name in names:
            os.rename(os.path.join(proc, name), os.path.join(bare_root, name))
        bare.append(time.perf_counter() - started)
        for name in names:
            os.rename(os.path.join(bare_root, name), os.path.join(proc, name))
        os.rmdir(bare_root)
    ours = statistics.median(runs)
    return Row(
        f"claim a backlog of {count:,} files: files/s of sensor time vs {TARGET_FILES_PER_S:,}/s",
        runs,
        [count / TARGET_FILES_PER_S] * len(runs),
        at_least(1.0, f"({TARGET_FILES_PER_S:,} files/s)"),
        ratio_kind="throughput",
        context={
            "files": count,
            "ticks": ticks,
            "files_per_s": count / ours,
            "bare_scandir_stat_rename_all_s": statistics.median(bare),
            "bare_files_per_s": count / statistics.median(bare),
        },
    )
