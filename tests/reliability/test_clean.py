"""`coco clean` and the sweep: stale hidden leftovers go, everything else stays."""

from __future__ import annotations

import os
import time

import dagster as dg
import pytest
from support import (
    coco,
    content_sha256,
    csv_rows,
    hidden_files,
    make_folders,
    put,
    walk_files,
)

from core4_pipelines.supervise.sweep import clean_schedule, sweep, sweep_on_sensor_start
from core4_resources.files import moves
from core4_resources.files.markers import write_move_marker
from core4_resources.files.moves import hidden_temp_name, move_marker_path


def leftovers(root) -> dict[str, list[str]]:
    """Stale-looking leftovers in two projects, and things that must survive any sweep."""
    root = str(root)
    a, b = make_folders(root, "alpha"), make_folders(root, "beta")
    stale = [
        put(a.transfer_folder(), hidden_temp_name("x.csv"), "half"),
        put(a.proc_folder(), ".y.csv.4242.download.part", "half"),
        put(os.path.join(b.archive_folder(), "2024", "01", "02", "run"), hidden_temp_name("z.csv.gz"), "half"),
        put(b.error_folder(), hidden_temp_name("e.csv"), "half"),
        put(a.temp, hidden_temp_name("t"), "half"),
        put(a.proc_folder(), ".gone.csv.0123abcd.moving", "{}"),  # its source is gone
    ]
    empty_batch = os.path.join(a.proc_folder(), ".batch", "20240101T000000-0123abcd")
    os.makedirs(empty_batch)
    stale.append(empty_batch)
    keep = [
        put(a.proc_folder(), "waiting.csv", csv_rows(2)),
        put(a.proc_folder(), ".users-own-hidden.csv", "mine"),
        put(b.transfer_folder(), "x.part", "a visible name is never touched"),
        put(os.path.join(b.proc_folder(), ".batch", "20240101T000000-89abcdef"), "claimed.csv", csv_rows(1)),
        put(os.path.join(b.proc_folder(), ".batch", ".20240101T000000-00000000.claiming"), "c.csv", "x"),
    ]
    return {"stale": stale, "keep": keep}


def test_coco_clean_lists_by_default_and_removes_with_apply(tmp_path):
    found = leftovers(tmp_path / "root")
    env = {**os.environ, "CORE4_OPTION_folder__root": str(tmp_path / "root")}
    dry = coco("clean", "--older-than", "0", env=env)
    assert dry.returncode == 0, dry.stderr
    for path in found["stale"]:
        assert os.path.lexists(path)
        assert os.path.realpath(path) in dry.stdout
    assert "would remove" in dry.stdout and "dry run: pass --apply" in dry.stdout
    done = coco("clean", "--older-than", "0", "--apply", env=env)
    assert done.returncode == 0, done.stderr
    assert [p for p in found["stale"] if os.path.lexists(p)] == []
    assert [p for p in found["keep"] if not os.path.exists(p)] == []
    again = coco("clean", "--older-than", "0", env=env)
    assert again.stdout.startswith("0 stale items")


def test_only_items_older_than_the_limit_are_touched(tmp_path):
    found = leftovers(tmp_path / "root")
    roots = [str(tmp_path / "root" / kind) for kind in ("transfer", "proc", "archive", "error", "temp")]
    later = time.time() + 7200  # everything made above is two hours old then
    young = sweep(roots, older_than=3 * 3600, apply=True, now=later)
    assert young.items == [] and all(os.path.lexists(p) for p in found["stale"])
    old = sweep(roots, older_than=3600, apply=True, now=later)
    assert sorted(i.path for i in old.items) == sorted(os.path.realpath(p) for p in found["stale"])
    assert all(os.path.exists(p) for p in found["keep"])


def test_a_young_staging_folder_is_never_removed(tmp_path):
    proc = make_folders(tmp_path / "root").proc_folder()
    staging = os.path.join(proc, ".batch", ".20240101T000000-0123abcd.claiming")
    os.makedirs(staging)  # a claimer is about to fill it
    sweep([proc], older_than=0, apply=True)
    assert os.path.isdir(staging)
    sweep([proc], older_than=0, apply=True, now=time.time() + 3600)
    assert not os.path.exists(staging)


def test_interrupted_moves_are_finished_not_duplicated(tmp_path, monkeypatch):
    folders = make_folders(tmp_path / "root")
    # 1. Killed right after the copy was installed: the source is still there.
    installed = put(folders.proc_folder(), "installed.csv", csv_rows(3))

    def crash(path):
        raise SystemExit("killed")

    with monkeypatch.context() as patch:
        patch.setattr(moves, "fsync_dir", crash)
        with pytest.raises(SystemExit):
            folders.move_archive(installed, run_id="r1")
    assert os.path.exists(installed) and os.path.exists(move_marker_path(installed))
    # 2. Killed before the copy was installed: a hidden partial copy and the marker.
    pending = put(folders.proc_folder(), "pending.csv", csv_rows(4))
    temp = put(folders.transfer_folder(), hidden_temp_name("pending.csv"), "part of it")
    write_move_marker(move_marker_path(pending), pending, temp)

    report = sweep([folders.proc, folders.transfer, folders.archive], older_than=0, apply=True)
    actions = {os.path.basename(i.path): i.action for i in report.items}
    assert actions["installed.csv"].startswith("finished") and actions["pending.csv"] == "restarted: source kept"
    assert not os.path.exists(installed)
    (archived,) = [p for p in walk_files(folders.archive) if p.endswith(".gz")]
    assert content_sha256(archived) == content_sha256(put(tmp_path, "expected.csv", csv_rows(3)))
    assert open(pending, "rb").read() == csv_rows(4)
    for root in (folders.proc, folders.transfer, folders.archive):
        assert hidden_files(root) == []
    # The pending file moves normally afterwards.
    assert open(folders.move_transfer(pending), "rb").read() == csv_rows(4)


def test_clean_schedule_sweeps_the_project_folders(tmp_path):
    folders = make_folders(tmp_path / "root")
    part = put(folders.proc_folder(), hidden_temp_name("a.csv"), "half")
    other_project = put(make_folders(tmp_path / "root", "other").proc_folder(), hidden_temp_name("b"), "x")
    schedule = clean_schedule(older_than=0)
    assert schedule.cron_schedule == "17 * * * *" and schedule.execution_timezone == "UTC"
    defs = dg.Definitions(schedules=[schedule], resources={"folders": folders})
    job = defs.resolve_job_def("clean_stale_files")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance)
        (request,) = schedule.evaluate_tick(context).run_requests
        result = job.execute_in_process(run_config=request.run_config, instance=instance)
    assert result.success
    assert not os.path.exists(part)
    assert os.path.exists(other_project)  # another project's folders are its own schedule's


def test_sensor_start_sweeps_once_then_waits(tmp_path):
    folders = make_folders(tmp_path / "root")
    first = put(folders.proc_folder(), hidden_temp_name("a.csv"), "half")
    report = sweep_on_sensor_start(folders, older_than=0)
    assert report is not None and not os.path.exists(first)
    second = put(folders.proc_folder(), hidden_temp_name("b.csv"), "half")
    assert sweep_on_sensor_start(folders, older_than=0) is None
    assert os.path.exists(second)
    assert sweep_on_sensor_start(folders, older_than=0, every=0) is not None
    assert not os.path.exists(second)
