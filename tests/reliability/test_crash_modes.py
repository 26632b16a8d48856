"""kill -9 an upsert, merge or replace import mid-batch; its retry leaves the collection as one
clean run would: one document per key with the newest values, no half-applied file, nothing twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import dagster as dg
import pytest
from support import SEED, STRESS, archived, claim_all, count, put, run_import, start_import_worker, visible_files

from core4_pipelines.ingest.job import import_job
from core4_pipelines.ingest.readers import read_csv

FILES = 2
ROWS = 1200  # per file: two write chunks, so a kill may land inside a file's writes


def rows(day: int, start: int, n: int) -> str:
    return "sku,day,price\n" + "".join(f"s{i},{day},{i * 10 + day}\n" for i in range(start, start + n))


def stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate(timeout=60)


def one_round(tmp_path, mongo, dagster_home, rng: random.Random, mode: str, round_no: int) -> bool:
    collection = f"prices_{mode}{round_no}"
    keys = ["sku", "day"] if mode == "upsert" else ["sku"] if mode == "merge" else None
    job = import_job("import_things", read=read_csv, collection=collection, mode=mode, keys=keys)
    root = tmp_path / f"{mode}{round_no}"
    from support import make_folders

    folders = make_folders(root)
    target = mongo.collection(collection)
    # Day 1, imported cleanly: what the killed batch updates (upsert, merge) or replaces.
    names = [f"snapshot-{i}.csv" for i in range(FILES)]
    for i, name in enumerate(names):
        put(folders.proc_folder(), name, rows(1, i * ROWS, ROWS))
    (first,) = claim_all(folders)
    assert run_import(folders, mongo, first, job=job).success
    # Day 2: the same names (replace) with half the keys again and half new ones.
    for i, name in enumerate(names):
        put(folders.proc_folder(), name, rows(2, i * ROWS + ROWS // 2, ROWS))
    (second,) = claim_all(folders)
    worker = start_import_worker(tmp_path, dagster_home, {
        "root": str(root), "mongo_url": mongo.mongo_url, "database": mongo.database, "batch_id": second,
        "collection": collection, "mode": mode, "keys": keys,
    })
    threshold = rng.randint(1, FILES * ROWS)
    deadline = time.monotonic() + 120
    try:
        while worker.poll() is None and target.count_documents({"day": 2}) < threshold:
            assert time.monotonic() < deadline, "the import worker wrote nothing in 120 s"
            time.sleep(0.01)
    finally:
        stop_group(worker)
    killed = worker.returncode == -signal.SIGKILL
    where = f"{mode} round {round_no}: killed at >= {threshold} day-2 records (seed {SEED})"
    with dg.DagsterInstance.ephemeral() as instance:
        if visible_files(folders.proc_folder()) or os.listdir(os.path.join(folders.proc_folder(), ".batch")):
            assert run_import(folders, mongo, second, job=job, instance=instance).success, where  # the retry
    docs = list(target.find({}, {"_id": 0, "sku": 1, "day": 1, "price": 1, "_src": 1}))
    day2 = {f"s{i}" for i in range(ROWS // 2, FILES * ROWS + ROWS // 2)}
    if mode == "replace":
        expected = {(f"s{i}", 2) for i in range(ROWS // 2, FILES * ROWS + ROWS // 2)}
        assert {(d["sku"], d["day"]) for d in docs} == expected, where
        assert len(docs) == len(expected), f"{where}: {len(docs)} documents"
    elif mode == "upsert":
        day1 = {(f"s{i}", 1) for i in range(FILES * ROWS)}
        assert {(d["sku"], d["day"]) for d in docs} == day1 | {(s, 2) for s in day2}, where
        assert len(docs) == len(day1) + len(day2), f"{where}: {len(docs)} documents"
    else:  # merge on sku: day 2's values on every key it names, day 1's on the others
        by_sku = {d["sku"]: d for d in docs}
        assert len(docs) == len(by_sku) == len(day2 | {f"s{i}" for i in range(FILES * ROWS)}), where
        assert all(by_sku[s]["day"] == 2 for s in day2), where
    assert all(d["price"] == int(d["sku"][1:]) * 10 + d["day"] for d in docs), f"{where}: a value of neither day"
    assert sorted(archived(folders)) == sorted(names) and all(len(p) == 2 for p in archived(folders).values()), where
    count("files checked", 2 * FILES)
    return killed


def kill_campaign(tmp_path, mongo, dagster_home, mode: str, kills: int) -> None:
    rng = random.Random(SEED)
    landed = 0
    for round_no in range(kills * 3):
        landed += one_round(tmp_path, mongo, dagster_home, rng, mode, round_no)
        if landed >= kills:
            break
    count("kills injected", landed)
    assert landed >= kills, f"only {landed} of {kills} kills landed before the worker finished"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["upsert", "merge", "replace"])
def test_kill_a_keyed_or_replacing_import_mid_batch(tmp_path, mongo, dagster_home, mode):
    kill_campaign(tmp_path, mongo, dagster_home, mode, kills=1)


@pytest.mark.stress
@pytest.mark.timeout(900)
@pytest.mark.skipif(not STRESS, reason="stress size: make test-stress (CORE4_STRESS=1)")
@pytest.mark.parametrize("mode", ["upsert", "merge", "replace"])
def test_kill_a_keyed_or_replacing_import_mid_batch_stress(tmp_path, mongo, dagster_home, mode):
    kill_campaign(tmp_path, mongo, dagster_home, mode, kills=8)
