"""The proc-folder sensor on real folders: what it claims, what it leaves, what it re-requests."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

import dagster as dg
import pytest
from support import JOB, OLD, put, tick

from core4_pipelines.ingest.claim import batch_files, batch_root, claim_batches, pending_batches, scan_ready
from core4_pipelines.ingest.job import BATCH_TAG, import_job
from core4_pipelines.ingest.readers import read_csv
from core4_pipelines.supervise.runtime import STATE_TAG
from core4_pipelines.ingest.sensor import proc_folder_sensor
from core4_pipelines.ingest.ready import StabilityTracker


def visible(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def claimed_names(folders) -> list[str]:
    root = batch_root(folders.proc_folder())
    return sorted(name for b in os.listdir(root) for name in os.listdir(os.path.join(root, b)))


def test_claims_matching_old_files_into_batches_with_run_config(folders, mongo):
    proc = folders.proc_folder()
    for i in range(5):
        put(proc, f"data-{i}.csv")
    sensor = proc_folder_sensor(JOB, pattern=r"data-.*\.csv$", batch_size=2, min_age_seconds=0)
    result = tick(sensor, folders, mongo)
    assert len(result.run_requests) == 3
    assert visible(proc) == []
    assert claimed_names(folders) == [f"data-{i}.csv" for i in range(5)]
    request = result.run_requests[0]
    batch_id = request.run_config["ops"]["import_things_batch"]["config"]["batch_id"]
    assert request.run_key == batch_id == request.tags[BATCH_TAG]
    assert sorted(os.listdir(os.path.join(batch_root(proc), batch_id))) == ["data-0.csv", "data-1.csv"]


def test_cap_on_batches_per_tick_leaves_the_rest_for_the_next_tick(folders, mongo):
    proc = folders.proc_folder()
    for i in range(10):
        put(proc, f"f{i:02d}.csv")
    sensor = proc_folder_sensor(JOB, batch_size=3, max_batches_per_tick=2, min_age_seconds=0)
    result = tick(sensor, folders, mongo)
    assert len(result.run_requests) == 2
    assert len(visible(proc)) == 4  # 10 - 2 * 3


def test_young_hidden_nonmatching_dirs_and_symlinks_are_left_alone(folders, tmp_path, mongo):
    proc = folders.proc_folder()
    put(proc, "young.csv", mtime=time.time())
    put(proc, ".hidden.csv")
    put(proc, "notes.txt")
    os.makedirs(os.path.join(proc, "subdir.csv"))
    outside = put(str(tmp_path / "outside"), "secret.csv")
    os.symlink(outside, os.path.join(proc, "link.csv"))
    sensor = proc_folder_sensor(JOB, pattern=r".*\.csv$", min_age_seconds=60)
    result = tick(sensor, folders, mongo)
    assert not result.run_requests
    assert "1 files not yet unchanged for 60s" in result.skip_message
    assert "not regular files" in result.skip_message
    assert "1 hidden names (starting with '.') are never imported" in result.skip_message
    assert set(os.listdir(proc)) == {"young.csv", ".hidden.csv", "notes.txt", "subdir.csv", "link.csv"}
    assert os.path.exists(outside)


def test_a_file_is_claimed_only_after_it_stayed_unchanged_for_min_age(folders):
    proc = folders.proc_folder()
    path = put(proc, "growing.csv", "a,b\n1,2\n")
    tracker = StabilityTracker()
    t0 = time.time()
    assert scan_ready(proc, None, 5, now=t0, tracker=tracker).ready == []  # first sight
    with open(path, "a") as handle:  # the writer goes on after a pause
        handle.write("3,4\n")
    assert scan_ready(proc, None, 5, now=t0 + 6, tracker=tracker).ready == []  # changed: wait anew
    assert scan_ready(proc, None, 5, now=t0 + 9, tracker=tracker).ready == []  # 3 s unchanged
    assert scan_ready(proc, None, 5, now=t0 + 11, tracker=tracker).ready == ["growing.csv"]


def test_a_file_dated_in_the_future_is_claimed_once_unchanged(folders):
    proc = folders.proc_folder()
    put(proc, "tomorrow.csv", mtime=time.time() + 86400)
    tracker = StabilityTracker()
    t0 = time.time()
    assert scan_ready(proc, None, 5, now=t0, tracker=tracker).ready == []
    assert scan_ready(proc, None, 5, now=t0 + 5, tracker=tracker).ready == ["tomorrow.csv"]


def test_a_file_held_open_for_writing_is_not_claimed(folders, mongo):
    proc = folders.proc_folder()
    path = put(proc, "open.csv")
    writer = subprocess.Popen(
        [sys.executable, "-c", f"import sys, time; f = open({path!r}, 'a'); print(flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    try:
        writer.stdout.readline()  # the file is open now
        scan = scan_ready(proc, None, 0)
        assert scan.ready == [] and scan.open_for_writing == 1
        sensor = proc_folder_sensor(JOB, min_age_seconds=0)
        result = tick(sensor, folders, mongo)
        assert not result.run_requests
        assert "1 files still open for writing" in result.skip_message
    finally:
        writer.kill()
        writer.wait()
    assert scan_ready(proc, None, 0).ready == ["open.csv"]


def test_pattern_is_anchored_at_the_start(folders, mongo):
    proc = folders.proc_folder()
    put(proc, "x-data.csv")
    put(proc, "data.csv")
    result = tick(proc_folder_sensor(JOB, pattern="data", min_age_seconds=0), folders, mongo)
    assert len(result.run_requests) == 1
    assert visible(proc) == ["x-data.csv"]


@pytest.mark.parametrize("state", ["missing", "empty", "emptied"])
def test_skip_reason_when_folder_is_empty_or_missing(folders, mongo, state):
    """Nothing to claim, and nothing else to say: proc never made, made and empty, or emptied
    (only the sensor's own batch folder left once every batch was imported)."""
    proc = folders.proc_folder()
    if state != "missing":
        os.makedirs(proc)
    if state == "emptied":
        os.makedirs(batch_root(proc))
    result = tick(proc_folder_sensor(JOB), folders, mongo)
    assert not result.run_requests
    assert result.skip_message == f"nothing to claim in {proc}"
    assert os.path.isdir(proc) == (state != "missing")


def test_orphan_batch_is_requested_again_until_it_has_a_run(folders, mongo):
    proc = folders.proc_folder()
    put(proc, "a.csv")
    sensor = proc_folder_sensor(JOB, min_age_seconds=0)
    with dg.instance_for_test() as instance:
        first = tick(sensor, folders, mongo, instance)
        (request,) = first.run_requests
        # The sensor "died" before the run was created: the next tick asks again, same run_key.
        second = tick(sensor, folders, mongo, instance)
        assert [r.run_key for r in second.run_requests] == [request.run_key]
        instance.create_run_for_job(JOB, run_config=request.run_config, tags=request.tags)
        third = tick(sensor, folders, mongo, instance)
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


def test_a_run_stopped_as_a_zombie_is_run_again_and_a_canceled_one_waits_for_a_human(folders, mongo):
    proc = folders.proc_folder()
    put(proc, "a.csv")
    job = import_job("import_things", read=read_csv, collection="things", properties={"error_time": 0})
    sensor = proc_folder_sensor(job, min_age_seconds=0)
    with dg.instance_for_test() as instance:
        (request,) = tick(sensor, folders, mongo, instance).run_requests
        run = instance.create_run_for_job(job, run_config=request.run_config, tags=request.tags,
                                          status=dg.DagsterRunStatus.CANCELED)
        # Canceled by an operator: the batch waits, and the skip reason says so.
        waiting = tick(sensor, folders, mongo, instance)
        assert not waiting.run_requests and "canceled run" in waiting.skip_message
        # Stopped by the zombie monitor (zombie_action: kill): a passing fault, run again.
        instance.add_run_tags(run.run_id, {STATE_TAG: "zombie"})
        (again,) = tick(sensor, folders, mongo, instance).run_requests
        assert again.run_key == f"{request.run_key}.run2"
