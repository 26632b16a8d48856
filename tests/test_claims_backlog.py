"""Claims keep up with the backlog: batches grow with it, bounded by a file count and bytes."""

from __future__ import annotations

import os

from core4_pipelines.ingest.claim import batch_files, claim_batches, grown_batch_size, scan_ready


def fill(folder, sizes: list[int], prefix: str = "f") -> None:
    os.makedirs(folder, exist_ok=True)
    for index, size in enumerate(sizes):
        path = os.path.join(folder, f"{prefix}{index:05d}.csv")
        with open(path, "wb") as handle:
            handle.write(b"x" * size)
        os.utime(path, (1_600_000_000 + index, 1_600_000_000 + index))


def test_the_batch_grows_with_the_backlog_up_to_its_bound():
    assert grown_batch_size(50, 100, 10, 1000) == 100  # a small backlog: batches as configured
    assert grown_batch_size(1000, 100, 10, 1000) == 100
    assert grown_batch_size(2000, 100, 10, 1000) == 100  # two ticks as configured take it
    assert grown_batch_size(5000, 100, 10, 1000) == 500  # the whole backlog in one tick
    assert grown_batch_size(100_000, 100, 10, 1000) == 1000  # bounded
    assert grown_batch_size(100, 1, 100, 10) == 1  # run per file stays so while the tick can take all


def test_a_grown_batch_stops_at_its_byte_bound_a_configured_one_never(tmp_path):
    proc = str(tmp_path / "proc")
    fill(proc, [100] * 30)
    scan = scan_ready(proc, None, 0)
    assert scan.ready_bytes == [100] * 30 and len(scan.ready) == 30
    # grown to 20 files, but a batch past 5 files closes before 1,000 bytes: 9 files of 100 bytes
    batches = claim_batches(proc, scan.ready, 20, 2, sizes=scan.ready_bytes, min_files=5, max_bytes=950)
    assert [len(b.files) for b in batches] == [9, 9]
    assert sorted(batch_files(batches[0].path)) == batches[0].files == scan.ready[:9]
    # min_files is never cut by bytes: one file each bigger than the bound still makes a batch of min_files
    proc2 = str(tmp_path / "proc2")
    fill(proc2, [5000] * 6)
    scan = scan_ready(proc2, None, 0)
    batches = claim_batches(proc2, scan.ready, 4, 3, sizes=scan.ready_bytes, min_files=2, max_bytes=100)
    assert [len(b.files) for b in batches] == [2, 2, 2]
    claimed = [name for b in batches for name in b.files]
    assert sorted(claimed) == sorted(scan.ready) and len(set(claimed)) == 6


def test_one_tick_claims_a_backlog_of_many_ticks_each_file_once(folders, mongo):
    from support import JOB, tick

    from core4_pipelines.ingest.sensor import proc_folder_sensor

    proc = folders.proc_folder()
    fill(proc, [10] * 3000)
    sensor = proc_folder_sensor(JOB, batch_size=100, max_batches_per_tick=10, min_age_seconds=0)
    requests = tick(sensor, folders, mongo).run_requests
    assert len(requests) == 10 and {r.tags["core4/files"] for r in requests} == {"300"}
    claimed = [name for r in requests for name in batch_files(os.path.join(proc, ".batch", r.run_key))]
    assert len(claimed) == len(set(claimed)) == 3000 and os.listdir(proc) == [".batch"]
    # bounded in bytes: files of 1 KB, batches close at 150 KB (but never below batch_size)
    fill(proc, [1000] * 3000, prefix="g")  # new names: the old ones would be held as reappearing
    sensor = proc_folder_sensor(JOB, batch_size=100, min_age_seconds=0, max_batch_bytes=150_000)
    first = {r.run_key for r in requests}
    requests = [r for r in tick(sensor, folders, mongo).run_requests if r.run_key not in first]
    assert {r.tags["core4/files"] for r in requests} == {"150"} and len(requests) == 10


def test_a_file_unchanged_since_long_is_ready_at_first_sight_a_fresh_one_waits(tmp_path):
    import time

    from core4_pipelines.ingest.ready import StabilityTracker

    proc = str(tmp_path / "proc")
    fill(proc, [10, 10])
    tracker = StabilityTracker()
    now = time.time()
    # ctime is the kernel's: a file changed just now waits a second scan, min_age later
    assert scan_ready(proc, None, 5, now=now, tracker=tracker).ready == []
    assert scan_ready(proc, None, 5, now=now + 2, tracker=tracker).ready == []
    assert len(scan_ready(proc, None, 5, now=now + 5, tracker=tracker).ready) == 2
    # seen first a while after its last change: ready at once
    time.sleep(1.1)
    assert len(scan_ready(proc, None, 1, tracker=StabilityTracker()).ready) == 2
    # a change time in the future is not believed
    assert StabilityTracker().stable("x", (1, 1, 1), now, 5, changed_at=now + 3600) is False
