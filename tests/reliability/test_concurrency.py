"""Two claimers on one proc folder, two imports into one collection: no file twice, no record twice."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess

import dagster as dg
import pytest
from support import (
    JOB,
    archived,
    claim_all,
    content_sha256,
    count,
    csv_rows,
    make_folders,
    put,
    sha256_file,
    start_import_worker,
    tick,
    visible_files,
)

from core4_pipelines.ingest import sensor as sensors
from core4_pipelines.ingest.claim import batch_files, batch_root, scan_ready
from core4_pipelines.ingest.sensor import proc_folder_sensor

FILES = 10_000


def _evaluate_until_empty(folders, mongo, start, queue) -> None:
    """A process evaluating the proc sensor tick after tick until nothing is left to claim."""
    claimed: list[str] = []
    real_claim = sensors.claim_batches

    def recording_claim(*args, **kwargs):
        batches = real_claim(*args, **kwargs)
        claimed.extend(name for batch in batches for name in batch.files)
        return batches

    sensors.claim_batches = recording_claim  # in this forked process only
    sensor = proc_folder_sensor(JOB, batch_size=100, min_age_seconds=0, max_batches_per_tick=10, max_batch_files=100)
    proc = folders.proc_folder()
    requested: list[str] = []
    start.wait(60)
    while True:
        requested += [r.run_key for r in tick(sensor, folders, mongo).run_requests or []]
        if not scan_ready(proc, None, 0).ready:
            break
    queue.put((sorted(set(requested)), claimed))


@pytest.mark.timeout(300)
def test_two_processes_evaluating_the_sensor_claim_each_file_once(folders, mongo):
    proc = folders.proc_folder()
    os.makedirs(proc)
    names = [f"reading-{i:05d}.csv" for i in range(FILES)]
    for name in names:
        with open(os.path.join(proc, name), "w") as handle:
            handle.write(name)
    ctx = multiprocessing.get_context("fork")
    start, queue = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_evaluate_until_empty, args=(folders, mongo, start, queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    start.set()
    try:
        results = [queue.get(timeout=240) for _ in workers]
    finally:
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()
    root = batch_root(proc)
    owner: dict[str, list[str]] = {}
    for batch_id in os.listdir(root):
        for name in batch_files(os.path.join(root, batch_id)):
            owner.setdefault(name, []).append(batch_id)
            # The file in the batch is the file that was put in proc, whole.
            assert open(os.path.join(root, batch_id, name)).read() == name
    count("files checked", len(owner))
    twice = {name: ids for name, ids in owner.items() if len(ids) > 1}
    assert twice == {}, f"claimed more than once: {list(twice.items())[:5]}"
    assert sorted(owner) == names, f"{FILES - len(owner)} files in no batch"
    assert visible_files(proc) == []
    # Every batch was requested; both processes claimed (they really competed), never the same file.
    (requested_a, claimed_a), (requested_b, claimed_b) = results
    assert set(os.listdir(root)) <= set(requested_a) | set(requested_b)
    assert claimed_a and claimed_b
    assert not set(claimed_a) & set(claimed_b)
    assert sorted(claimed_a + claimed_b) == names


def _finish(process: subprocess.Popen) -> dict:
    try:
        out, err = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.communicate()
        pytest.fail("an import worker did not finish within 240 s")
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.timeout(300)
def test_two_imports_into_one_collection_do_not_interfere(tmp_path, mongo):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # The instance exists before the two workers open it (two first openings race to create tables).
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
    roots = {"a": tmp_path / "a", "b": tmp_path / "b"}
    originals, batches = {}, {}
    for key, root in roots.items():
        folders = make_folders(root)
        for i in range(5):
            # The same file names in both projects: only the batch tells them apart.
            path = put(folders.proc_folder(), f"readings-{i}.csv", csv_rows(2000, tag=f"{key}{i}"))
            originals[(key, f"readings-{i}.csv")] = sha256_file(path)
        (batches[key],) = claim_all(folders)
    workers = {
        key: start_import_worker(tmp_path, str(home), {
            "root": str(root), "mongo_url": mongo.mongo_url, "database": mongo.database,
            "batch_id": batches[key], "collection": "shared",
        })
        for key, root in roots.items()
    }
    runs = {key: _finish(worker)["run_id"] for key, worker in workers.items()}
    shared = mongo.collection("shared")
    docs = list(shared.find({}, {"_id": 1, "_src": 1, "_job_id": 1, "tag": 1}))
    assert len(docs) == 10 * 2000
    for key in roots:
        mine = [d for d in docs if d["_job_id"] == runs[key]]
        assert len(mine) == 5 * 2000
        assert {d["tag"] for d in mine} == {f"{key}{i}" for i in range(5)}
        assert all(d["_id"].startswith(batches[key] + "/") for d in mine)
        paths = archived(make_folders(roots[key]))
        assert {name: len(p) for name, p in paths.items()} == {f"readings-{i}.csv": 1 for i in range(5)}
        for name, (path,) in paths.items():
            assert content_sha256(path) == originals[(key, name)]
            count("files checked")
