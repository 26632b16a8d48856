"""The write modes and the file ledger, each against its bare pymongo baseline on the same server.

- upsert / merge through an ``import_job`` run (read whole, content hash, bulk_write of
  ReplaceOne / UpdateOne with upsert on the key index) vs raw ``bulk_write`` of the same
  operations on already-parsed records (no hash, no stamps), into fresh collections
  with the same unique index. Throughput ratio = baseline time / our time.
- the ledger's cost on 1,000 x 50 KB files: the content hashes and the three ledger
  writes of a batch (``batch_file_hashes``, ``Ledger.begin`` and ``finish``) timed on their
  own, against the whole import of those files (``duplicates="skip"``): its share.
"""

from __future__ import annotations

import os
import statistics
import time

import dagster as dg

from bench import Row, at_least, at_most, csv_bytes, csv_records, folder_resource, interleaved, scratch, write_files

NAME = "write_modes"
TITLE = "upsert/merge vs raw bulk_write; the duplicate check's share of an import"
RECORDS = 20_000  # per case; upserts run at ~900 docs/s here: 100k took over 10 min a case
SMOKE_RECORDS = 1_000
RECORDS_PER_FILE = 5_000
CHUNK = 1_000
LEDGER_FILES = 1_000
SMOKE_LEDGER_FILES = 10
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run(smoke: bool) -> list[Row]:
    from core4_resources.mongo.embedded.server import EmbeddedMongo
    from core4_resources.mongo.resource import MongoResource

    with scratch(NAME) as root, EmbeddedMongo(os.path.join(root, "mongo")) as server:
        mongo = MongoResource(mongo_url=server.url, database="bench_modes")
        rows = [_mode_row(root, mongo, mode, smoke) for mode in ("upsert", "merge")]
        rows.append(_mode_row(root, mongo, "upsert", smoke, over_existing=True))
        rows.append(_ledger_row(root, mongo, smoke))
        mongo.db().client.drop_database("bench_modes")
    return rows


def _claim_all(folders) -> str:
    from core4_pipelines.ingest.claim import claim_batches

    proc = folders.proc_folder()
    names = sorted(n for n in os.listdir(proc) if not n.startswith("."))
    (batch,) = claim_batches(proc, names, batch_size=len(names), max_batches=1)
    return batch.batch_id


def _import(job, folders, mongo, batch_id: str) -> None:
    from core4_pipelines.ingest.job import import_run_config

    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            run_config={**import_run_config(job, batch_id), **QUIET},
            resources={"folders": folders, "mongo": mongo}, instance=instance, tags={"core4/batch": batch_id},
        )
    if not result.success:
        raise AssertionError(f"the import run failed: {result.run_id}")


def _mode_row(root: str, mongo, mode: str, smoke: bool, over_existing: bool = False) -> Row:
    """``over_existing``: every key is already in the collection with other values (a daily
    snapshot over yesterday's), so every record is an update."""
    from pymongo import ReplaceOne, UpdateOne

    from core4_pipelines.ingest.job import import_job
    from core4_pipelines.ingest.readers import read_csv

    total = SMOKE_RECORDS if smoke else RECORDS
    header, *lines = csv_records(total).decode().splitlines(keepends=True)  # ids 0 .. total-1
    files = [(f"{mode}-{i:03d}.csv", (header + "".join(lines[start:start + RECORDS_PER_FILE])).encode())
             for i, start in enumerate(range(0, total, RECORDS_PER_FILE))]
    case = f"{mode}_existing" if over_existing else mode
    folders = folder_resource(os.path.join(root, case))
    database = mongo.db()
    parsed = [record for path in write_files(os.path.join(root, "src", mode), [n for n, _ in files],
                                             lambda i: files[i][1]) for record in read_csv(path)]
    state: dict = {"round": 0}

    def existing(collection) -> None:
        if over_existing:  # yesterday's documents: the same keys, other values (not timed)
            collection.insert_many([{"id": record["id"], "name": "yesterday"} for record in parsed], ordered=False)

    # A fresh collection each round, none dropped: on this server a dropped collection slows
    # the writes after it, which would favour whichever side runs first.
    def prepare_ours():
        state["round"] += 1
        state["ours"] = f"ours_{case}_{state['round']}"
        existing(database[state["ours"]])
        state["job"] = import_job(f"bench_{mode}", read=read_csv, collection=state["ours"], mode=mode, keys=["id"])
        write_files(folders.proc_folder(), [n for n, _ in files], lambda i: files[i][1])
        state["batch"] = _claim_all(folders)

    def ours():
        _import(state["job"], folders, mongo, state["batch"])

    def prepare_baseline():
        state["round"] += 1
        state["baseline"] = f"baseline_{case}_{state['round']}"
        database[state["baseline"]].create_index([("id", 1)], unique=True)
        existing(database[state["baseline"]])
        state["copies"] = [dict(record) for record in parsed]

    def baseline():
        collection = database[state["baseline"]]
        copies = state["copies"]
        for start in range(0, len(copies), CHUNK):
            chunk = copies[start:start + CHUNK]
            if mode == "upsert":
                operations = [ReplaceOne({"id": d["id"]}, d, upsert=True) for d in chunk]
            else:
                operations = [UpdateOne({"id": d["id"]}, {"$set": d}, upsert=True) for d in chunk]
            collection.bulk_write(operations, ordered=False)

    ours_s, baseline_s = interleaved(ours, baseline, 1 if smoke else 3,
                                     prepare_ours=prepare_ours, prepare_baseline=prepare_baseline)
    written = database[state["ours"]].count_documents({})
    if written != total or (over_existing and database[state["ours"]].count_documents({"name": "yesterday"})):
        raise AssertionError(f"{case}: the import left {written} documents of {total}, or yesterday's values")
    what = "records over yesterday's (every one an update)" if over_existing else "new records"
    return Row(f"{mode} of {total:,} {what} on one key", ours_s, baseline_s, at_least(0.8, "docs/s"),
               ratio_kind="throughput",
               context={"records": total, "ours_docs_per_s": total / statistics.median(ours_s),
                        "baseline_docs_per_s": total / statistics.median(baseline_s)})


def _ledger_row(root: str, mongo, smoke: bool) -> Row:
    from core4_pipelines.ingest.claim import batch_files, batch_path
    from core4_pipelines.ingest.files import FileOutcome
    from core4_pipelines.ingest.job import import_job
    from core4_pipelines.ingest.ledger import Ledger, batch_file_hashes
    from core4_pipelines.ingest.readers import read_csv

    count = SMOKE_LEDGER_FILES if smoke else LEDGER_FILES
    content, records = csv_bytes(50 * 1024)
    names = [f"file-{i:05d}.csv" for i in range(count)]
    folders = folder_resource(os.path.join(root, "ledger"))
    database = mongo.db()
    job = import_job("bench_ledger", read=read_csv, collection="ours_ledger", duplicates="skip")
    state: dict = {}

    def fresh_batch():
        database.drop_collection("ours_ledger")
        database.drop_collection("sys.files")
        # Each file different (its index in the first row): no duplicate, every file imported.
        write_files(folders.proc_folder(), names, lambda i: content.replace(b"\n0,", f"\n{i},".encode(), 1))
        state["batch"] = _claim_all(folders)

    def whole_import():
        _import(job, folders, mongo, state["batch"])

    def ledger_alone():
        folder = batch_path(folders.proc_folder(), state["batch"])
        ledger = Ledger(mongo, "bench.ledger", "ours_ledger")
        hashes = batch_file_hashes(folder, batch_files(folder))
        ledger.begin(state["batch"], "run", hashes, True)
        ledger.finish(state["batch"], [FileOutcome(name=n, bytes=s, records=records, archive="a") for n, _, s in hashes])

    def prepare_ledger():
        fresh_batch()
        time.sleep(0)  # the files just written are in the page cache, as for the import's own pass

    ledger_s, import_s = interleaved(ledger_alone, whole_import, 1 if smoke else 3,
                                     prepare_ours=prepare_ledger, prepare_baseline=fresh_batch)
    share = statistics.median(ledger_s) / statistics.median(import_s)
    return Row(f"duplicate check (hash + ledger) of {count:,} x 50 KB, share of the import", ledger_s, import_s,
               at_most(0.05), ratio_kind="time", context={"files": count, "share": share})
