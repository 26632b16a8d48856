"""End to end through the live stack, against the plain-Python floor and against run-per-file.

One embedded MongoDB serves all three sides. The floor: one plain Python
process parses each CSV file, inserts its records (insert_many), gzips it at
level 6 into an archive folder and removes it. Ours: `coco serve` over two
generated projects; the files are renamed into the first project's proc
folder and the clock stops when every file is archived (sensor -> claimed
batches -> import runs -> MongoDB -> archive), with the scaffold's defaults
(batch size 100, 10 batches per tick, a tick every 10 s). Run-per-file: the
second project's sensor has batch_size=1 (and up to 100 batches per tick, so
the sensor is not what limits it) and imports a sample of the files.
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import time

from bench import Row, at_least, at_most, csv_bytes, scratch, write_files
from bench.live import coco_serve
from core4_pipelines.readers import convert_field

NAME = "end_to_end"
TITLE = "end to end through coco serve (sensor -> runs -> MongoDB -> archive)"
FILES, SAMPLE = 1_000, 100
SMOKE_FILES, SMOKE_SAMPLE = 20, 3
FILE_BYTES = 50 * 1024
BATCHED, PER_FILE = "e2e_batched", "e2e_per_file"


def floor(paths: list[str], collection, archive: str) -> int:
    """parse + insert + gzip + remove, file by file, in this process; returns records written."""
    written = 0
    os.makedirs(archive, exist_ok=True)
    for path in paths:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            records = [dict(zip(header, map(convert_field, row))) for row in reader if row]
        collection.insert_many(records)
        written += len(records)
        with open(path, "rb") as src, gzip.open(
            os.path.join(archive, os.path.basename(path) + ".gz"), "wb", compresslevel=6
        ) as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
        os.unlink(path)
    return written


def archived(folder: str) -> int:
    return sum(1 for _, _, names in os.walk(folder) for name in names if name.endswith(".gz") and not name.startswith("."))


def feed(staging: str, proc: str) -> float:
    """Rename every file from ``staging`` into ``proc``; returns the clock reading before the first."""
    os.makedirs(proc, exist_ok=True)
    started = time.perf_counter()
    for name in sorted(os.listdir(staging)):
        os.rename(os.path.join(staging, name), os.path.join(proc, name))
    return started


def wait_archived(started: float, archive: str, count: int, timeout: float) -> float:
    """Seconds from ``started`` until ``count`` files are archived in ``archive``."""
    while archived(archive) < count:
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{archived(archive)} of {count} files archived in {archive} after {timeout:g}s")
        time.sleep(0.25)
    return time.perf_counter() - started


def run_summary(dagster_home: str, location: str) -> dict:
    """Runs of the code location ``location``: count, statuses, seconds queued and running."""
    import dagster as dg

    with dg.DagsterInstance.from_config(dagster_home) as instance:
        records = [
            record
            for record in instance.get_run_records()
            if record.dagster_run.remote_job_origin is not None
            and record.dagster_run.remote_job_origin.location_name == location
        ]
    statuses: dict[str, int] = {}
    waits, durations = [], []
    for record in records:
        statuses[record.dagster_run.status.value] = statuses.get(record.dagster_run.status.value, 0) + 1
        if record.start_time and record.end_time:
            waits.append(record.start_time - record.create_timestamp.timestamp())
            durations.append(record.end_time - record.start_time)
    return {
        "runs": len(records),
        "statuses": statuses,
        "mean_queue_to_start_s": sum(waits) / len(waits) if waits else None,
        "mean_run_s": sum(durations) / len(durations) if durations else None,
        "first_created_to_last_end_s": (
            max(r.end_time for r in records if r.end_time) - min(r.create_timestamp.timestamp() for r in records)
            if records and all(r.end_time for r in records)
            else None
        ),
    }


def run(smoke: bool) -> list[Row]:
    import pymongo

    from bench.live import write_project
    from core4_resources.embedded import EmbeddedMongo

    files, sample = (SMOKE_FILES, SMOKE_SAMPLE) if smoke else (FILES, SAMPLE)
    content, records_per_file = csv_bytes(FILE_BYTES)
    names = [f"readings-{i:05d}.csv" for i in range(files)]
    timeout = 300 if smoke else 3600
    with scratch(NAME) as work, EmbeddedMongo(os.path.join(work, "mongo")) as server:
        config = os.path.join(work, "local.yaml")
        open(config, "w").close()
        client = pymongo.MongoClient(server.url)
        try:
            # (a) the floor, before the stack starts, so nothing else runs beside it
            paths = write_files(os.path.join(work, "floor-in"), names, content)
            started = time.perf_counter()
            written = floor(paths, client["floor"]["records"], os.path.join(work, "floor-archive"))
            floor_s = time.perf_counter() - started
            if written != files * records_per_file:
                raise AssertionError(f"floor wrote {written} records")

            home, root = os.path.join(work, "home"), os.path.join(work, "root")
            os.makedirs(home)
            # Smoke: sensors tick as often as the daemon loops, so the check is quick.
            quick = {"minimum_interval_seconds": 1} if smoke else {}
            write_project(home, BATCHED, **quick)
            write_project(home, PER_FILE, batch_size=1, max_batches_per_tick=sample, **quick)
            batched_in, per_file_in = os.path.join(work, "batched-in"), os.path.join(work, "per-file-in")
            write_files(batched_in, names, content)
            write_files(per_file_in, names[:sample], content)
            env = {"CORE4_OPTION_DEFAULT__mongo_url": server.url}
            dagster_home = os.path.join(root, "dagster")
            with coco_serve(home, root, config, **env) as stack:
                ready_s = stack.wait_ready(2, timeout=240)
                batched = (batched_in, os.path.join(root, "proc", BATCHED), os.path.join(root, "archive", BATCHED))
                per_file = (per_file_in, os.path.join(root, "proc", PER_FILE), os.path.join(root, "archive", PER_FILE))
                if smoke:  # both at once: the smoke run proves the code, its figures mean nothing
                    batched_t0, per_file_t0 = feed(*batched[:2]), feed(*per_file[:2])
                    ours_s = wait_archived(batched_t0, batched[2], files, timeout)
                    per_file_s = wait_archived(per_file_t0, per_file[2], sample, timeout)
                else:
                    ours_s = wait_archived(feed(*batched[:2]), batched[2], files, timeout)
                    per_file_s = wait_archived(feed(*per_file[:2]), per_file[2], sample, timeout)
                time.sleep(1)  # the last run's success event lands after its archive
                batched_runs = run_summary(dagster_home, BATCHED)
                per_file_runs = run_summary(dagster_home, PER_FILE)
            records = client[BATCHED]["records"].count_documents({})
            per_file_records = client[PER_FILE]["records"].count_documents({})
        finally:
            client.close()
    if records != files * records_per_file or per_file_records != sample * records_per_file:
        raise AssertionError(
            f"records in MongoDB: {records} (expected {files * records_per_file}), "
            f"run-per-file {per_file_records} (expected {sample * records_per_file})"
        )
    common = {
        "files": files,
        "file_bytes": len(content),
        "records": files * records_per_file,
        "stack_ready_s": ready_s,
        "ours_files_per_s": files / ours_s,
    }
    return [
        Row(
            f"{files:,} x 50 KB vs the plain-Python floor",
            [ours_s],
            [floor_s],
            at_most(1.3),
            context={**common, "floor_files_per_s": files / floor_s, "runs": batched_runs},
        ),
        Row(
            f"per file: batches of 100 vs run-per-file ({sample} files)",
            [ours_s / files],
            [per_file_s / sample],
            at_least(15, "faster"),
            ratio_kind="speedup",
            context={
                **common,
                "run_per_file_sample": sample,
                "run_per_file_s": per_file_s,
                "run_per_file_files_per_s": sample / per_file_s,
                "runs": per_file_runs,
            },
        ),
    ]
