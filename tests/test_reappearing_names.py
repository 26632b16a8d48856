"""A file that reappears under a name just claimed (a writer appending by path) is held, not imported.

The writer's first part is claimed and imported; its next write makes a new file under the
same name that holds only the rest (no header). That file stays in proc with a warning and a
hold marker until `coco release` -- across a restart of the sensor's process too.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import dagster as dg
import pytest
from support import JOB, put, run_import, tick

from core4_pipelines.coco.info import folder_counts
from core4_pipelines.ingest import reappear
from core4_pipelines.ingest.claim import batch_root, pending_batches
from core4_pipelines.ingest.reappear import held_folder, read_holds, release
from core4_pipelines.ingest.sensor import proc_folder_sensor

FIRST_PART = "id,price\n1,10\n2,20\n"
REST = "3,30\n4,40\n"  # what an appending writer wrote after the pause: rows without the header


def deliver(proc: str, name: str, content: str) -> str:
    """A file as a writer leaves it: written now (put() dates every file alike, an hour back)."""
    return put(proc, name, content, mtime=time.time())


def logged_tick(feed, folders, mongo, caplog):
    """A tick whose log (a sensor context without an instance logs nowhere) goes to caplog."""
    context = dg.build_sensor_context(resources={"folders": folders, "mongo": mongo})
    context.log.addHandler(caplog.handler)
    context.log.setLevel(logging.INFO)
    return feed.evaluate_tick(context)


def sensor(window: float = 300.0):
    return proc_folder_sensor(JOB, min_age_seconds=0, reappear_window_seconds=window)


def new_process() -> None:
    """What a restart of the sensor's process forgets: the claims it remembers."""
    reappear._guards.clear()


def claim_and_import(folders, mongo, feed) -> str:
    result = tick(feed, folders, mongo)
    (request,) = result.run_requests
    batch_id = request.tags["core4/batch"]
    assert run_import(folders, mongo, batch_id).success
    return batch_id


def test_the_rest_of_a_file_written_by_path_is_held_with_a_warning_not_imported(folders, mongo, caplog):
    proc = folders.proc_folder()
    feed = sensor()
    put(proc, "feed.csv", FIRST_PART)
    batch_id = claim_and_import(folders, mongo, feed)
    assert mongo.collection("things").count_documents({}) == 2

    deliver(proc, "feed.csv", REST)  # the writer opens the path again and appends the rest
    for _ in range(2):  # held on the tick it is seen, and on the ticks after
        result = logged_tick(feed, folders, mongo, caplog)
        assert result.run_requests == []
        assert "1 files held: they reappeared under a name claimed minutes before (feed.csv" in result.skip_message
    assert sorted(os.listdir(proc)) == [".batch", "feed.csv"]
    assert mongo.collection("things").count_documents({}) == 2  # no record named after the row "3,30"
    (hold,) = read_holds(proc).values()
    assert (hold.name, hold.batch, hold.released) == ("feed.csv", batch_id, False)
    assert hold.inode == os.stat(os.path.join(proc, "feed.csv")).st_ino
    assert "feed.csv appeared in" in caplog.text and "coco release unassigned feed.csv" in caplog.text
    assert caplog.text.count("held, not imported") == 1  # warned once, not every tick


def test_coco_info_shows_the_hold_and_coco_release_imports_the_file_as_one_of_its_own(folders, mongo, tmp_path):
    proc = folders.proc_folder()
    feed = sensor()
    put(proc, "feed.csv", FIRST_PART)
    claim_and_import(folders, mongo, feed)
    deliver(proc, "feed.csv", "id,price\n5,50\n")
    assert tick(feed, folders, mongo).run_requests == []

    class Settings:  # what folder_counts reads: the proc and error roots
        class folder:
            proc = os.path.dirname(folders.proc_folder())
            error = os.path.dirname(folders.error_folder())

    assert folder_counts(Settings, "demo").held == ["feed.csv"]

    assert release(proc, "feed.csv")
    (request,) = tick(feed, folders, mongo).run_requests
    assert run_import(folders, mongo, request.tags["core4/batch"]).success
    assert mongo.collection("things").count_documents({"id": 5}) == 1
    assert read_holds(proc) == {}  # claimed: the marker is gone
    assert folder_counts(Settings, "demo").held == []


def test_the_hold_outlives_a_restart_and_a_restarted_sensor_remembers_recent_claims(folders, mongo):
    proc = folders.proc_folder()
    feed = sensor()
    put(proc, "held.csv", FIRST_PART)
    put(proc, "later.csv", FIRST_PART)
    claim_and_import(folders, mongo, feed)
    deliver(proc, "held.csv", REST)
    assert tick(feed, folders, mongo).run_requests == []

    new_process()  # the claims are read back from the ledger; the hold from its marker
    deliver(proc, "later.csv", REST)
    result = tick(feed, folders, mongo)
    assert result.run_requests == []
    assert "2 files held" in result.skip_message
    assert sorted(read_holds(proc)) == ["held.csv", "later.csv"]


def test_a_restarted_sensor_remembers_a_batch_claimed_but_not_yet_imported(folders, mongo):
    proc = folders.proc_folder()
    feed = sensor()
    put(proc, "feed.csv", FIRST_PART)
    assert len(tick(feed, folders, mongo).run_requests) == 1
    new_process()
    deliver(proc, "feed.csv", REST)
    result = tick(feed, folders, mongo)
    assert [r.tags["core4/batch"] for r in result.run_requests] == [b.batch_id for b in pending_batches(proc)]
    assert "feed.csv" in os.listdir(proc) and "feed.csv" in read_holds(proc)


def test_the_claimed_file_itself_put_back_into_proc_is_claimed_again(folders, mongo):
    proc = folders.proc_folder()
    feed = sensor()
    put(proc, "feed.csv", FIRST_PART)
    (request,) = tick(feed, folders, mongo).run_requests
    batch = os.path.join(batch_root(proc), request.tags["core4/batch"])
    os.rename(os.path.join(batch, "feed.csv"), os.path.join(proc, "feed.csv"))  # same inode: no new file
    assert len(tick(feed, folders, mongo).run_requests) == 1
    assert read_holds(proc) == {}


def test_moving_the_held_file_away_ends_the_hold(folders, mongo, tmp_path):
    proc = folders.proc_folder()
    feed = sensor()
    put(proc, "feed.csv", FIRST_PART)
    claim_and_import(folders, mongo, feed)
    deliver(proc, "feed.csv", REST)
    tick(feed, folders, mongo)
    os.rename(os.path.join(proc, "feed.csv"), tmp_path / "kept-aside.csv")
    tick(feed, folders, mongo)
    assert os.listdir(held_folder(proc)) == []


@pytest.mark.parametrize("window", [0, 0.5])
def test_with_no_window_or_after_it_a_file_of_the_same_name_is_a_new_file(folders, mongo, window):
    proc = folders.proc_folder()
    feed = sensor(window)
    put(proc, "daily.csv", FIRST_PART)
    claim_and_import(folders, mongo, feed)
    time.sleep(window + 0.1)
    deliver(proc, "daily.csv", "id,price\n9,90\n")
    (request,) = tick(feed, folders, mongo).run_requests
    assert run_import(folders, mongo, request.tags["core4/batch"]).success
    assert mongo.collection("things").count_documents({"id": 9}) == 1


def test_coco_release_lists_held_files_and_refuses_a_name_not_held(folders):
    from support import coco

    env = dict(os.environ, CORE4_OPTION_folder__root=str(folders.root))
    proc = folders.proc_folder()
    deliver(proc, "feed.csv", REST)
    reappear.write_hold(proc, reappear.Hold("feed.csv", os.stat(os.path.join(proc, "feed.csv")).st_ino,
                                            time.time(), time.time() - 40, "20261204T120000-0123abcd"))
    listed = coco("release", "demo", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "1 files held" in listed.stdout and "feed.csv: 40s after batch 20261204T120000-0123abcd" in listed.stdout
    refused = coco("release", "demo", "other.csv", env=env)
    assert refused.returncode == 1 and "other.csv: not held" in refused.stdout and "held: feed.csv" in refused.stdout
    done = coco("release", "demo", "feed.csv", env=env)
    assert done.returncode == 0 and "feed.csv: released" in done.stdout
    assert read_holds(proc)["feed.csv"].released


def test_a_file_coco_retry_puts_back_soon_after_its_claim_is_imported_not_held(folders, mongo):
    from support import coco

    proc = folders.proc_folder()
    feed = sensor()
    put(proc, "feed.csv", "id,price\n1,10\n2,20,extra\n")
    result = tick(feed, folders, mongo)
    assert not run_import(folders, mongo, result.run_requests[0].tags["core4/batch"]).success  # the ragged row
    with open(os.path.join(folders.error_folder(), "feed.csv"), "w") as fixed:  # fixed in place
        fixed.write(FIRST_PART)
    done = coco("retry", "demo", "feed.csv", env=dict(os.environ, CORE4_OPTION_folder__root=str(folders.root)))
    assert done.returncode == 0, done.stdout + done.stderr
    (request,) = tick(feed, folders, mongo).run_requests
    assert run_import(folders, mongo, request.tags["core4/batch"]).success
    assert mongo.collection("things").count_documents({}) == 2


def test_a_negative_window_is_refused():
    with pytest.raises(ValueError, match="reappear_window_seconds must be >= 0, got -1"):
        proc_folder_sensor(JOB, reappear_window_seconds=-1)


def test_coco_info_reads_holds_without_loading_dagster():
    code = "import sys, core4_pipelines.coco.info; print('dagster' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
