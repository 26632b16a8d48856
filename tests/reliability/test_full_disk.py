"""The whole root fills up mid-import, then space comes back: no command typed, every record once,
every file archived once, no hidden temp left. The root is a small tmpfs mounted for the test
(root only; skipped with the reason elsewhere); the database lives outside it."""

from __future__ import annotations

import os
import subprocess
import time

import dagster as dg
import pytest
from support import archived, content_sha256, csv_rows, hidden_files, put, sha256_file, visible_files

from core4_pipelines.ingest.job import import_job
from core4_pipelines.ingest.readers import read_csv
from core4_pipelines.ingest.sensor import proc_folder_sensor
from core4_pipelines.tags import BATCH_TAG, FAILURE_KIND_TAG
from core4_resources.files.folders import FolderResource

FILES, ROWS = 20, 2000  # ~1.3 MB of CSV


@pytest.fixture
def small_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the root needs root; this user is not")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(root)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def _fill(root, leave: int) -> str:
    """A ballast file that leaves ``leave`` bytes free on the root's filesystem."""
    path = os.path.join(root, "ballast")
    stats = os.statvfs(root)
    free = stats.f_bavail * stats.f_frsize
    with open(path, "wb") as out:
        block = b"\0" * (1 << 20)
        left = free - leave
        while left > 0:
            out.write(block[:min(left, len(block))])
            left -= len(block)
    return path


def test_the_whole_root_full_mid_import_then_space_back_finishes_by_itself(small_root, mongo):
    folders = FolderResource.under_root(small_root, project="demo", min_free="0")
    originals = {}
    for i in range(FILES):
        name = f"r{i:02d}.csv"
        originals[name] = sha256_file(put(folders.proc_folder(), name, csv_rows(ROWS, tag=str(i))))
    job = import_job("import_things", read=read_csv, collection="things")
    sensor = proc_folder_sensor(job, min_age_seconds=0, batch_size=FILES)

    def tick(instance):
        context = dg.build_sensor_context(instance=instance, resources={"folders": folders, "mongo": mongo})
        return sensor.evaluate_tick(context)

    def run(instance, request):
        return job.execute_in_process(run_config=request.run_config, tags=request.tags, instance=instance,
                                      raise_on_error=False, resources={"folders": folders, "mongo": mongo})

    with dg.instance_for_test() as instance:
        (request,) = tick(instance).run_requests
        ballast = _fill(small_root, leave=64 * 1024)  # the disk fills after the claim: archiving cannot finish
        first = run(instance, request)
        assert not first.success
        assert instance.get_run_by_id(first.run_id).tags[FAILURE_KIND_TAG] == "infrastructure"
        os.remove(ballast)  # space comes back
        back = time.monotonic()
        for _ in range(10):
            requests = tick(instance).run_requests or []
            if not requests:
                break
            for again in requests:
                assert again.tags[BATCH_TAG] == request.tags[BATCH_TAG]
                assert run(instance, again).success
        assert time.monotonic() - back < 60  # finished within a minute of space returning
    things = mongo.collection("things")
    records = [(d["_src"], d["id"]) for d in things.find({}, {"_src": 1, "id": 1, "_id": 0})]
    assert len(records) == len(set(records)) == FILES * ROWS
    paths = archived(folders)
    assert sorted(paths) == sorted(originals)
    for name, (path,) in paths.items():
        assert content_sha256(path) == originals[name]
    assert visible_files(folders.proc_folder()) == []
    assert hidden_files(folders.archive_folder()) == []  # no .part left, no sweep by hand
