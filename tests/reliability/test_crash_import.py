"""kill -9 an import run mid-batch; the sensor fails the orphaned run and asks for the batch again.

Every record once, every file archived once, no command typed.

The import runs in a separate Python process (as Dagster's run worker would)
against the real embedded MongoDB and a Dagster instance on disk shared with
this process. It is killed at a random number of written records -- during a
file's insert, between files, or while a file is being archived.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import dagster as dg
import pytest
from support import (
    SEED,
    STRESS,
    archived,
    content_sha256,
    count,
    csv_rows,
    hidden_files,
    make_folders,
    put,
    run_import,
    sha256_file,
    start_import_worker,
    tick,
    visible_files,
    walk_files,
)

from core4_pipelines.ingest.claim import batch_files, batch_path
from core4_pipelines.supervise.sweep import sweep
from core4_pipelines.ingest.job import import_job
from core4_pipelines.ingest.readers import read_csv
from core4_pipelines.ingest.job import BATCH_TAG
from core4_pipelines.supervise.recovery import RECOVERED_TAG
from core4_pipelines.ingest.sensor import proc_folder_sensor

FILES = 10
ROWS = 1500


def stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate(timeout=60)


def check_nothing_lost(folders, originals: dict[str, str], where: str) -> None:
    """Each file's bytes are still claimed in proc, or complete in the archive."""
    seen: dict[str, int] = {}
    claimed = [p for p in walk_files(folders.proc_folder()) if not os.path.basename(p).startswith(".")]
    for path in claimed + visible_files(folders.archive_folder()):
        name = os.path.basename(path)
        name = name.removesuffix(".gz")
        assert content_sha256(path) == originals[name], f"{where}: {path} is incomplete"
        seen[name] = seen.get(name, 0) + 1
        count("files checked")
    missing = set(originals) - set(seen)
    if missing:
        count("files lost", len(missing))
        pytest.fail(f"{where}: lost {sorted(missing)}")


def one_round(tmp_path, mongo, dagster_home, rng: random.Random, round_no: int) -> bool:
    collection = f"things{round_no}"
    job = import_job("import_things", read=read_csv, collection=collection)
    sensor = proc_folder_sensor(job, batch_size=6, min_age_seconds=0)
    folders = make_folders(tmp_path / f"round{round_no}")
    originals = {}
    for i in range(FILES):
        name = f"readings {i:02d}-ü.csv"
        originals[name] = sha256_file(put(folders.proc_folder(), name, csv_rows(ROWS, tag=str(i))))
    target = mongo.collection(collection)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        requests = tick(sensor, folders, mongo, instance).run_requests or []
        assert len(requests) == 2
        first = requests[0].run_key
        worker = start_import_worker(tmp_path, dagster_home, {
            "root": str(tmp_path / f"round{round_no}"), "mongo_url": mongo.mongo_url,
            "database": mongo.database, "batch_id": first, "collection": collection,
        })
        threshold = rng.randint(1, 6 * ROWS)
        deadline = time.monotonic() + 120
        try:
            while worker.poll() is None and target.estimated_document_count() < threshold:
                assert time.monotonic() < deadline, "the import worker wrote nothing in 120 s"
                time.sleep(0.01)
        finally:
            stop_group(worker)
        killed = worker.returncode == -signal.SIGKILL
        where = f"round {round_no}: killed at >= {threshold} records (seed {SEED})"
        check_nothing_lost(folders, originals, where)
        # No human: the next tick fails the run whose worker is gone and asks for that batch
        # again at once, together with the other claimed batch (no run yet).
        rest = tick(sensor, folders, mongo, instance).run_requests or []
        # A worker killed after it had moved every file on leaves nothing to run again.
        unfinished = killed and bool(batch_files(batch_path(folders.proc_folder(), first)))
        expected = {requests[1].run_key} | ({f"{first}.run2"} if unfinished else set())
        assert {r.run_key for r in rest} == expected, where
        if unfinished:
            (dead,) = instance.get_runs(filters=dg.RunsFilter(tags={BATCH_TAG: first}))
            assert dead.status == dg.DagsterRunStatus.FAILURE, where
            assert dead.tags[RECOVERED_TAG] == "worker_gone"
        for request in rest:
            assert run_import(folders, mongo, request.tags[BATCH_TAG], job=job, instance=instance).success, where
        assert not tick(sensor, folders, mongo, instance).run_requests, where
    records = [(d["_src"], d["id"]) for d in target.find({}, {"_src": 1, "id": 1, "_id": 0})]
    assert len(records) == FILES * ROWS, f"{where}: {len(records)} records"
    assert len(set(records)) == len(records), f"{where}: duplicate records"
    assert {src for src, _ in records} == set(originals)
    archives = archived(folders)
    assert sorted(archives) == sorted(originals), where
    for name, paths in archives.items():
        assert len(paths) == 1, f"{where}: {name} archived {len(paths)} times: {paths}"
        assert content_sha256(paths[0]) == originals[name]
        count("files checked")
    assert visible_files(folders.proc_folder()) == []
    # No litter in the archive without a sweep by hand: the batch's next run removed what a killed one left.
    assert hidden_files(folders.archive_folder()) == [], where
    sweep([folders.proc_folder()], older_than=0, apply=True)
    assert hidden_files(folders.proc_folder()) == []
    return killed


def import_kill_campaign(tmp_path, mongo, dagster_home, kills: int) -> None:
    rng = random.Random(SEED)
    landed = 0
    for round_no in range(kills * 3):
        landed += one_round(tmp_path, mongo, dagster_home, rng, round_no)
        if landed >= kills:
            break
    count("kills injected", landed)
    assert landed >= kills, f"only {landed} of {kills} kills landed before the worker finished"


@pytest.mark.timeout(300)
def test_kill_import_mid_batch(tmp_path, mongo, dagster_home):
    import_kill_campaign(tmp_path, mongo, dagster_home, kills=1)


@pytest.mark.stress
@pytest.mark.timeout(900)
@pytest.mark.skipif(not STRESS, reason="stress size: make test-stress (CORE4_STRESS=1)")
def test_kill_import_mid_batch_stress(tmp_path, mongo, dagster_home):
    import_kill_campaign(tmp_path, mongo, dagster_home, kills=12)
