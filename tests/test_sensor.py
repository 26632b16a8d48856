"""The proc-folder sensor on real folders: what it claims, what it leaves, what it re-requests."""

from __future__ import annotations

import multiprocessing
import os
import time

import dagster as dg
import pytest

from core4_pipelines.claims import batch_files, batch_root, claim_batches, pending_batches, scan_ready
from core4_pipelines.jobs import BATCH_TAG, import_job
from core4_pipelines.readers import read_csv
from core4_pipelines.sensors import proc_folder_sensor

JOB = import_job("import_things", read=read_csv, collection="things")
OLD = time.time() - 3600


def put(folder: str, name: str, content: str = "a,b\n1,2\n", mtime: float = OLD) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w") as handle:
        handle.write(content)
    os.utime(path, (mtime, mtime))
    return path


def evaluate(sensor, folders, instance=None):
    context = dg.build_sensor_context(instance=instance, resources={"folders": folders})
    return sensor.evaluate_tick(context)


def visible(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def claimed_names(folders) -> list[str]:
    root = batch_root(folders.proc_folder())
    return sorted(name for b in os.listdir(root) for name in os.listdir(os.path.join(root, b)))


def test_claims_matching_old_files_into_batches_with_run_config(folders):
    proc = folders.proc_folder()
    for i in range(5):
        put(proc, f"data-{i}.csv")
    sensor = proc_folder_sensor(JOB, pattern=r"data-.*\.csv$", batch_size=2)
    result = evaluate(sensor, folders)
    assert len(result.run_requests) == 3
    assert visible(proc) == []
    assert claimed_names(folders) == [f"data-{i}.csv" for i in range(5)]
    request = result.run_requests[0]
    batch_id = request.run_config["ops"]["import_things_batch"]["config"]["batch_id"]
    assert request.run_key == batch_id == request.tags[BATCH_TAG]
    assert sorted(os.listdir(os.path.join(batch_root(proc), batch_id))) == ["data-0.csv", "data-1.csv"]


def test_cap_on_batches_per_tick_leaves_the_rest_for_the_next_tick(folders):
    proc = folders.proc_folder()
    for i in range(10):
        put(proc, f"f{i:02d}.csv")
    sensor = proc_folder_sensor(JOB, batch_size=3, max_batches_per_tick=2)
    result = evaluate(sensor, folders)
    assert len(result.run_requests) == 2
    assert len(visible(proc)) == 4  # 10 - 2 * 3


def test_young_hidden_nonmatching_dirs_and_symlinks_are_left_alone(folders, tmp_path):
    proc = folders.proc_folder()
    put(proc, "young.csv", mtime=time.time())
    put(proc, ".hidden.csv")
    put(proc, "notes.txt")
    os.makedirs(os.path.join(proc, "subdir.csv"))
    outside = put(str(tmp_path / "outside"), "secret.csv")
    os.symlink(outside, os.path.join(proc, "link.csv"))
    sensor = proc_folder_sensor(JOB, pattern=r".*\.csv$", min_age_seconds=60)
    result = evaluate(sensor, folders)
    assert not result.run_requests
    assert "1 files younger than 60s" in result.skip_message
    assert "not regular files" in result.skip_message
    assert set(os.listdir(proc)) == {"young.csv", ".hidden.csv", "notes.txt", "subdir.csv", "link.csv"}
    assert os.path.exists(outside)


def test_pattern_is_anchored_at_the_start(folders):
    proc = folders.proc_folder()
    put(proc, "x-data.csv")
    put(proc, "data.csv")
    result = evaluate(proc_folder_sensor(JOB, pattern="data"), folders)
    assert len(result.run_requests) == 1
    assert visible(proc) == ["x-data.csv"]


def test_skip_reason_when_folder_is_empty_or_missing(folders):
    result = evaluate(proc_folder_sensor(JOB), folders)
    assert result.run_requests == [] or result.run_requests is None
    assert "nothing to claim" in result.skip_message


def test_orphan_batch_is_requested_again_until_it_has_a_run(folders):
    proc = folders.proc_folder()
    put(proc, "a.csv")
    sensor = proc_folder_sensor(JOB)
    with dg.instance_for_test() as instance:
        first = evaluate(sensor, folders, instance)
        (request,) = first.run_requests
        # The sensor "died" before the run was created: the next tick asks again, same run_key.
        second = evaluate(sensor, folders, instance)
        assert [r.run_key for r in second.run_requests] == [request.run_key]
        instance.create_run_for_job(JOB, run_config=request.run_config, tags=request.tags)
        third = evaluate(sensor, folders, instance)
        assert not third.run_requests


def test_stale_staging_folder_of_a_dead_claimer_is_released(folders):
    proc = folders.proc_folder()
    staging = os.path.join(batch_root(proc), ".20240101T000000-0123abcd.claiming")
    put(staging, "x.csv")
    os.utime(staging, (OLD, OLD))
    (batch,) = pending_batches(proc)
    assert batch.batch_id == "20240101T000000-0123abcd" and batch.files == ["x.csv"]


def test_fresh_staging_folder_is_not_touched(folders):
    proc = folders.proc_folder()
    staging = os.path.join(batch_root(proc), ".20240101T000000-0123abcd.claiming")
    put(staging, "x.csv")
    assert pending_batches(proc) == []
    assert os.path.isdir(staging)


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size"):
        proc_folder_sensor(JOB, batch_size=0)


def _claim_all(proc: str, queue) -> None:
    names = scan_ready(proc, None, 0).ready
    batches = claim_batches(proc, names, batch_size=50, max_batches=10_000)
    queue.put([name for b in batches for name in b.files])


def test_two_concurrent_claimers_never_claim_the_same_file(folders):
    proc = folders.proc_folder()
    os.makedirs(proc)
    names = [f"f{i:05d}.csv" for i in range(2000)]
    for name in names:
        open(os.path.join(proc, name), "w").close()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_claim_all, args=(proc, queue)) for _ in range(2)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(10)
    combined = results[0] + results[1]
    assert len(combined) == len(set(combined)) == len(names)
    assert sorted(combined) == names
    on_disk = [n for b in os.listdir(batch_root(proc)) for n in batch_files(os.path.join(batch_root(proc), b))]
    assert sorted(on_disk) == names
