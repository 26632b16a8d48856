"""A sensor tick that claims one batch of 100 from a large proc folder, against scandir + stat + 100 renames.

The sensor scans every entry, orders the ready files by age, renames the
oldest 100 into a hidden batch folder and returns one run request. The
baseline scans the same folder and renames 100 files into a folder. Between
repeats the claimed files are put back, untimed.
"""

from __future__ import annotations

import os
import shutil
import statistics

import dagster as dg

from bench import Row, at_most, folder_resource, interleaved, scratch
from bench.sensor_tick import evaluate, fill, make_sensor, scandir_stat, sensor_mongo
from core4_pipelines.claims import batch_root

NAME = "sensor_claim"
TITLE = "sensor tick claiming one batch of 100, vs scandir + stat + 100 renames"
FILES = 100_000
SMOKE_FILES = 200
BATCH = 100


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
        shutil.rmtree(baseline_root, ignore_errors=True)
        scan_only_s, _ = interleaved(lambda: scandir_stat(proc), lambda: None, 3 if smoke else 7)
    return [
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
