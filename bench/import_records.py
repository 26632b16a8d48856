"""Import of records through the import job, against raw insert_many into the same server.

Ours: the CSV files are claimed into a batch and imported by an ``import_job``
run (``execute_in_process``): parse, deterministic ``_id``s, ``_src`` /
``_job_id`` stamps, insert in chunks of 1,000, then each file is archived
(gzip 6, fsync'd). The baseline inserts the already-parsed records with
``insert_many`` in batches of 1,000 into the same embedded server, nothing
else. Both write into fresh collections. Throughput ratio = baseline time /
our time, i.e. our docs/s over the baseline's.
"""

from __future__ import annotations

import os
import statistics
import time

import dagster as dg

from bench import (
    Row,
    at_least,
    csv_records,
    folder_resource,
    interleaved,
    scratch,
    write_files,
)

NAME = "import_records"
TITLE = "import of records (parse, stamp, insert, archive), vs raw insert_many"
RECORDS = 100_000
SMOKE_RECORDS = 2_000
RECORDS_PER_FILE = 10_000
INSERT_BATCH = 1_000
# Dagster's console logger at WARNING: the run's debug events would flood the table.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def files_for(total: int) -> list[tuple[str, bytes]]:
    files = []
    for index, start in enumerate(range(0, total, RECORDS_PER_FILE)):
        count = min(RECORDS_PER_FILE, total - start)
        files.append((f"readings-{index:03d}.csv", csv_records(count, seed=index)))
    return files


def run(smoke: bool) -> list[Row]:
    from core4_pipelines.ingest.claim import claim_batches
    from core4_pipelines.ingest.job import import_job, import_run_config
    from core4_pipelines.ingest.readers import read_csv
    from core4_resources.mongo.embedded.server import EmbeddedMongo
    from core4_resources.mongo.resource import MongoResource

    total = SMOKE_RECORDS if smoke else RECORDS
    files = files_for(total)
    job = import_job("import_bench", read=read_csv, collection="ours")
    with scratch(NAME) as root, EmbeddedMongo(os.path.join(root, "mongo")) as server:
        folders = folder_resource(root)
        mongo = MongoResource(mongo_url=server.url, database="bench_import")
        database = mongo.db()
        source = os.path.join(root, "source")
        paths = write_files(source, [name for name, _ in files], lambda i: files[i][1])
        parsed = [record for path in paths for record in read_csv(path)]
        if len(parsed) != total:
            raise AssertionError(f"generated {len(parsed)} records, expected {total}")
        state: dict = {}

        def prepare_ours():
            database.drop_collection("ours")
            write_files(folders.proc_folder(), [name for name, _ in files], lambda i: files[i][1])
            proc = folders.proc_folder()
            names = sorted(n for n in os.listdir(proc) if not n.startswith("."))
            (batch,) = claim_batches(proc, names, batch_size=len(names), max_batches=1)
            state["batch"] = batch.batch_id

        def ours():
            with dg.DagsterInstance.ephemeral() as instance:
                result = job.execute_in_process(
                    run_config={**import_run_config(job, state["batch"]), **QUIET},
                    resources={"folders": folders, "mongo": mongo},
                    instance=instance,
                    tags={"core4/batch": state["batch"]},
                )
                state["op_s"] = _op_seconds(instance, result.run_id)

        def prepare_baseline():
            database.drop_collection("baseline")
            state["copies"] = [dict(record) for record in parsed]

        def baseline():
            collection = database["baseline"]
            copies = state["copies"]
            for start in range(0, len(copies), INSERT_BATCH):
                collection.insert_many(copies[start : start + INSERT_BATCH])

        op_seconds = []

        def ours_recorded():
            ours()
            op_seconds.append(state["op_s"])

        ours_s, baseline_s = interleaved(
            ours_recorded,
            baseline,
            1 if smoke else 3,
            prepare_ours=prepare_ours,
            prepare_baseline=prepare_baseline,
        )
        imported = database["ours"].count_documents({})
        if imported != total:
            raise AssertionError(f"the import job wrote {imported} of {total} records")
        parse_s = _time(lambda: sum(1 for path in paths for _ in read_csv(path)))
        # The batch's durability point (one j:true write), each time after 1,000 fresh
        # unjournaled documents, as at the end of a batch.
        durable_s = []
        for round_no in range(5 if smoke else 21):
            database["durability"].insert_many([{"n": round_no, "i": i} for i in range(INSERT_BATCH)])
            durable_s.append(_time(mongo.make_durable))
        database.client.drop_database(database.name)
    return [
        Row(
            f"{total:,} records in {len(files)} files",
            ours_s,
            baseline_s,
            at_least(0.8, "docs/s"),
            ratio_kind="throughput",
            context={
                "records": total,
                "files": len(files),
                "ours_docs_per_s": total / statistics.median(ours_s),
                "baseline_docs_per_s": total / statistics.median(baseline_s),
                "op_s": statistics.median(op_seconds[1:] or op_seconds),
                "parse_only_s": parse_s,
                # one per batch: its share of this import's time
                "durability_point_s": statistics.median(durable_s),
                "durability_point_share": statistics.median(durable_s) / statistics.median(ours_s),
            },
        )
    ]


def _time(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def _op_seconds(instance: dg.DagsterInstance, run_id: str) -> float | None:
    """Seconds between the import op's start and success events: the run minus Dagster's own setup."""
    events = {
        entry.dagster_event.event_type_value: entry.timestamp
        for entry in instance.all_logs(run_id)
        if entry.dagster_event is not None and entry.dagster_event.step_key
    }
    started, finished = events.get("STEP_START"), events.get("STEP_SUCCESS")
    return finished - started if started and finished else None
