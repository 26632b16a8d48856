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

Small files (1 KB, about 20 records each): 5,000 and then 20,000 of them into a
third project on the scaffold's defaults, each against the floor over the same
number of files. The database's own limit is measured beside the floor:
``insert_many`` of ready-built documents (the very documents an import writes:
string ``_id``, ``_src``, ``_job_id``) in chunks of 1,000, so the 50 KB case can
be given as docs/s against it.

A burst: 200 small files dropped at once into the small files' project while it is idle, timed from
the first rename into proc to the last file archived: the latency a user waits for a burst, against
the 15 s target (the row's baseline), with the floor over the same files beside it.

``BENCH_E2E=large``, ``small`` or ``burst`` (comma-separated) runs only those cases (default all).
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import time

from bench import Row, at_least, at_most, csv_bytes, scratch, write_files
from bench.live import coco_serve
from core4_pipelines.ingest.readers import convert_field

NAME = "end_to_end"
TITLE = "end to end through coco serve (sensor -> runs -> MongoDB -> archive)"
FILES, SAMPLE = 1_000, 100
SMOKE_FILES, SMOKE_SAMPLE = 20, 3
FILE_BYTES = 50 * 1024
SMALL_CASES, SMOKE_SMALL_CASES = (5_000, 20_000), (20,)
SMALL_BYTES = 1024
BURST, SMOKE_BURST, BURST_TARGET_S = 200, 5, 15.0
DB_DOCS, SMOKE_DB_DOCS = 200_000, 2_000
BATCHED, PER_FILE, SMALL = "e2e_batched", "e2e_per_file", "e2e_small"


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


def distinct_copy(content: bytes, index: int) -> bytes:
    """``content`` with its first record's id made file ``index``'s own: files of one shape and size
    whose bytes differ (the scaffold's import skips a file whose bytes it imported before)."""
    header, first, rest = content.split(b"\n", 2)
    return b"\n".join([header, str(index).encode() + first[first.index(b","):], rest])


def archived(folder: str) -> int:
    return sum(1 for _, _, names in os.walk(folder) for name in names if name.endswith(".gz") and not name.startswith("."))


def feed(staging: str, proc: str) -> float:
    """Rename every file from ``staging`` into ``proc``; returns the clock reading before the first."""
    os.makedirs(proc, exist_ok=True)
    started = time.perf_counter()
    for name in sorted(os.listdir(staging)):
        os.rename(os.path.join(staging, name), os.path.join(proc, name))
    return started


def database_limit(collection, content: bytes, count: int) -> tuple[float, int]:
    """Seconds to ``insert_many`` ``count`` ready-built documents in chunks of 1,000 (nothing
    else timed); the documents are those an import writes for ``content`` repeated."""
    text = content.decode().splitlines()
    header, rows = text[0].split(","), [line.split(",") for line in text[1:] if line]
    records = [dict(zip(header, map(convert_field, row))) for row in rows]
    documents = [
        {**records[i % len(records)], "_id": f"20240101T000000-0123abcd/file-{i // len(records)}.csv#{i % len(records)}",
         "_src": f"file-{i // len(records)}.csv", "_job_id": "bench-run"}
        for i in range(count)
    ]
    collection.drop()
    started = time.perf_counter()
    for start in range(0, count, 1000):
        collection.insert_many(documents[start:start + 1000], ordered=False)
    elapsed = time.perf_counter() - started
    inserted = collection.count_documents({})
    collection.drop()
    return elapsed, inserted


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
    failures: dict[str, str] = {}
    for record in records:
        statuses[record.dagster_run.status.value] = statuses.get(record.dagster_run.status.value, 0) + 1
        if record.dagster_run.status.value == "FAILURE":
            failures[record.dagster_run.run_id] = _failure(dagster_home, record.dagster_run.run_id)
        if record.start_time and record.end_time:
            waits.append(record.start_time - record.create_timestamp.timestamp())
            durations.append(record.end_time - record.start_time)
    return {
        "runs": len(records),
        "statuses": statuses,
        "run_keys": sorted(r.dagster_run.tags.get("dagster/run_key", "") for r in records),
        "failures": failures,
        "mean_queue_to_start_s": sum(waits) / len(waits) if waits else None,
        "mean_run_s": sum(durations) / len(durations) if durations else None,
        "first_created_to_last_end_s": (
            max(r.end_time for r in records if r.end_time) - min(r.create_timestamp.timestamp() for r in records)
            if records and all(r.end_time for r in records)
            else None
        ),
    }


def _failure(dagster_home: str, run_id: str) -> str:
    """The first failure message in a run's event log (what made it fail), shortened."""
    import dagster as dg

    with dg.DagsterInstance.from_config(dagster_home) as instance:
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is not None and event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE", "ENGINE_EVENT"):
                if event.event_type_value != "ENGINE_EVENT" or "fail" in (entry.message or "").lower():
                    return (entry.message or event.event_type_value)[:500]
    return ""


def run(smoke: bool) -> list[Row]:
    import pymongo

    from bench.live import write_project
    from core4_resources.mongo.embedded.server import EmbeddedMongo

    which = os.environ.get("BENCH_E2E", "large,small,burst").split(",")
    large, small, burst = "large" in which, "small" in which, "burst" in which
    burst_files = SMOKE_BURST if smoke else BURST
    files, sample = (SMOKE_FILES, SMOKE_SAMPLE) if smoke else (FILES, SAMPLE)
    small_cases = SMOKE_SMALL_CASES if smoke else SMALL_CASES
    content, records_per_file = csv_bytes(FILE_BYTES)
    small_content, small_records = csv_bytes(SMALL_BYTES, seed=1)
    names = [f"readings-{i:05d}.csv" for i in range(files)]
    large_file, small_file = (lambda i: distinct_copy(content, i)), (lambda i: distinct_copy(small_content, i))
    timeout = 300 if smoke else 3600
    rows: list[Row] = []
    with scratch(NAME) as work, EmbeddedMongo(os.path.join(work, "mongo")) as server:
        config = os.path.join(work, "local.yaml")
        open(config, "w").close()
        client = pymongo.MongoClient(server.url)
        try:
            # The floors and the database limit, before the stack starts, so nothing runs beside them.
            db_s, db_docs = database_limit(client["floor"]["raw"], content, SMOKE_DB_DOCS if smoke else DB_DOCS)
            database = {"raw_insert_docs": db_docs, "raw_insert_s": db_s, "raw_docs_per_s": db_docs / db_s}
            if large:
                paths = write_files(os.path.join(work, "floor-in"), names, large_file)
                started = time.perf_counter()
                written = floor(paths, client["floor"]["records"], os.path.join(work, "floor-archive"))
                floor_s = time.perf_counter() - started
                if written != files * records_per_file:
                    raise AssertionError(f"floor wrote {written} records")
            small_floor_s = {}
            for count in ([burst_files] if burst else []) + list(small_cases if small else ()):
                small_names = [f"small-{count}-{i:05d}.csv" for i in range(count)]
                paths = write_files(os.path.join(work, f"floor-small-{count}"), small_names, small_file)
                client["floor"]["small"].drop()
                started = time.perf_counter()
                written = floor(paths, client["floor"]["small"], os.path.join(work, f"floor-small-archive-{count}"))
                small_floor_s[count] = time.perf_counter() - started
                if written != count * small_records:
                    raise AssertionError(f"small floor wrote {written} records")

            home, root = os.path.join(work, "home"), os.path.join(work, "root")
            os.makedirs(home)
            # Smoke: sensors tick as often as the daemon loops, so the check is quick.
            quick = {"minimum_interval_seconds": 1} if smoke else {}
            locations = 0
            if large:
                write_project(home, BATCHED, **quick)
                write_project(home, PER_FILE, batch_size=1, max_batches_per_tick=sample, **quick)
                locations += 2
                batched_in, per_file_in = os.path.join(work, "batched-in"), os.path.join(work, "per-file-in")
                write_files(batched_in, names, large_file)
                write_files(per_file_in, names[:sample], large_file)
            if small or burst:
                write_project(home, SMALL, **quick)
                locations += 1
                for count in ([burst_files] if burst else []) + list(small_cases if small else ()):
                    write_files(os.path.join(work, f"small-in-{count}"),
                                [f"small-{count}-{i:05d}.csv" for i in range(count)], small_file)
            env = {"CORE4_OPTION_DEFAULT__mongo_url": server.url}
            dagster_home = os.path.join(root, "dagster")
            small_s = {}
            with coco_serve(home, root, config, **env) as stack:
                ready_s = stack.wait_ready(locations, timeout=240)
                if large:
                    batched = (batched_in, os.path.join(root, "proc", BATCHED), os.path.join(root, "archive", BATCHED))
                    per_file = (per_file_in, os.path.join(root, "proc", PER_FILE), os.path.join(root, "archive", PER_FILE))
                    if smoke:  # both at once: the smoke run proves the code, its figures mean nothing
                        batched_t0, per_file_t0 = feed(*batched[:2]), feed(*per_file[:2])
                        ours_s = wait_archived(batched_t0, batched[2], files, timeout)
                        per_file_s = wait_archived(per_file_t0, per_file[2], sample, timeout)
                    else:
                        ours_s = wait_archived(feed(*batched[:2]), batched[2], files, timeout)
                        per_file_s = wait_archived(feed(*per_file[:2]), per_file[2], sample, timeout)
                done = 0
                if burst:  # first, while the project is idle: a burst after a quiet spell
                    done += burst_files
                    burst_s = wait_archived(
                        feed(os.path.join(work, f"small-in-{burst_files}"), os.path.join(root, "proc", SMALL)),
                        os.path.join(root, "archive", SMALL), done, timeout,
                    )
                for count in small_cases if small else ():
                    done += count
                    small_s[count] = wait_archived(
                        feed(os.path.join(work, f"small-in-{count}"), os.path.join(root, "proc", SMALL)),
                        os.path.join(root, "archive", SMALL), done, timeout,
                    )
                time.sleep(1)  # the last run's success event lands after its archive
                batched_runs = run_summary(dagster_home, BATCHED) if large else None
                per_file_runs = run_summary(dagster_home, PER_FILE) if large else None
                small_runs = run_summary(dagster_home, SMALL) if small or burst else None
            records = client[BATCHED]["records"].count_documents({})
            per_file_records = client[PER_FILE]["records"].count_documents({})
            small_written = client[SMALL]["records"].count_documents({})
        finally:
            client.close()
    if large and (records != files * records_per_file or per_file_records != sample * records_per_file):
        raise AssertionError(
            f"records in MongoDB: {records} (expected {files * records_per_file}), "
            f"run-per-file {per_file_records} (expected {sample * records_per_file})"
        )
    small_expected = (sum(small_cases) if small else 0) + (burst_files if burst else 0)
    if (small or burst) and small_written != small_expected * small_records:
        raise AssertionError(f"small files: {small_written} records, expected {small_expected * small_records}")
    if large:
        common = {
            "files": files,
            "file_bytes": len(content),
            "records": files * records_per_file,
            "stack_ready_s": ready_s,
            "ours_files_per_s": files / ours_s,
            "ours_docs_per_s": files * records_per_file / ours_s,
            "floor_docs_per_s": files * records_per_file / floor_s,
            **database,
        }
        rows += [
            Row(
                f"{files:,} x 50 KB vs the plain-Python floor",
                [ours_s],
                [floor_s],
                at_most(1.3),
                context={**common, "floor_files_per_s": files / floor_s, "runs": batched_runs},
            ),
            Row(
                f"{files:,} x 50 KB, docs/s vs raw insert_many of built docs",
                [ours_s],
                # the time the raw rate would need for our records: the database's limit
                [files * records_per_file / database["raw_docs_per_s"]],
                at_least(0.85, "docs/s"),
                ratio_kind="throughput",
                context=common,
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
    if burst:
        rows.append(
            Row(
                f"a burst of {burst_files} x 1 KB, first dropped -> last archived, vs {BURST_TARGET_S:g} s",
                [burst_s],
                [BURST_TARGET_S],
                at_most(1.0),
                context={"files": burst_files, "burst_s": burst_s, "floor_s": small_floor_s[burst_files],
                         "target_s": BURST_TARGET_S, "runs": small_runs},
            )
        )
    for count in small_cases if small else ():
        rows.append(
            Row(
                f"{count:,} x 1 KB vs the plain-Python floor",
                [small_s[count]],
                [small_floor_s[count]],
                at_most(1.5),
                context={
                    "files": count,
                    "file_bytes": len(small_content),
                    "records": count * small_records,
                    "ours_files_per_s": count / small_s[count],
                    "floor_files_per_s": count / small_floor_s[count],
                    "ours_docs_per_s": count * small_records / small_s[count],
                    "floor_docs_per_s": count * small_records / small_floor_s[count],
                    **database,
                    "runs": small_runs,  # of both small cases together
                },
            )
        )
    return rows
