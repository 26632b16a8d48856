"""`coco files` shows the ledger; `coco reimport` puts an archived file back, and its content passes the
duplicate check once."""

from __future__ import annotations

import os

from support import archived, claim_all, coco, put, run_import, visible_files

from core4_pipelines.ingest.job import import_job
from core4_pipelines.ingest.readers import read_csv

JOB = import_job("import_things", read=read_csv, collection="things", project="demo", duplicates="skip")


def _env(folders, mongo):
    return dict(os.environ, CORE4_OPTION_folder__root=str(folders.root),
                CORE4_OPTION_DEFAULT__mongo_url=mongo.mongo_url, CORE4_OPTION_DEFAULT__mongo_database=mongo.database)


def _import(folders, mongo, files):
    for name, content in files.items():
        put(folders.proc_folder(), name, content)
    (batch_id,) = claim_all(folders)
    return run_import(folders, mongo, batch_id, job=JOB)


def test_coco_files_lists_each_file_with_its_fate_and_one_name_in_detail(folders, mongo):
    first = _import(folders, mongo, {"day.csv": "id\n1\n2\n"})
    _import(folders, mongo, {"day-copy.csv": "id\n1\n2\n"})
    listing = coco("files", "demo", env=_env(folders, mongo))
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert "duplicate" in lines[0] and "day-copy.csv" in lines[0]  # the newest first
    assert "imported" in lines[1] and "day.csv  2 records" in lines[1] and first.run_id[:8] in lines[1]
    assert "-> archive/demo/" in lines[1]
    detail = coco("files", "demo", "day.csv", env=_env(folders, mongo))
    assert "job demo.import_things, collection things" in detail.stdout and "blake2b " in detail.stdout


def test_coco_reimport_puts_the_archived_file_back_and_it_is_imported_again_once(folders, mongo):
    _import(folders, mongo, {"day.csv": "id\n1\n2\n"})
    (archive,) = archived(folders)["day.csv"]
    relative = os.path.relpath(archive, folders.root)
    done = coco("reimport", "demo", relative, env=_env(folders, mongo))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "day.csv: back in proc/demo/day.csv" in done.stdout
    assert open(os.path.join(folders.proc_folder(), "day.csv")).read() == "id\n1\n2\n"  # decompressed
    result = _import(folders, mongo, {})  # the file put back is the batch
    assert result.success and mongo.collection("things").count_documents({}) == 4  # insert mode: again
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["replayed_files"].value == 1  # the asset shows it was a replay
    _import(folders, mongo, {"day-again.csv": "id\n1\n2\n"})
    assert mongo.collection("things").count_documents({}) == 4  # the replay let it through once only


def test_coco_reimport_by_date_and_pattern_and_a_dry_run_changes_nothing(folders, mongo):
    _import(folders, mongo, {"a-1.csv": "id\n1\n", "b-1.csv": "id\n2\n"})
    env = _env(folders, mongo)
    dry = coco("reimport", "demo", "--since", "2000-01-01", "--pattern", "a-", "--dry-run", env=env)
    assert dry.returncode == 0 and "would put back a-1.csv" in dry.stdout and "b-1" not in dry.stdout
    assert visible_files(folders.proc_folder()) == []
    done = coco("reimport", "demo", "--since", "2000-01-01", "--pattern", "a-", env=env)
    assert done.returncode == 0 and [os.path.basename(p) for p in visible_files(folders.proc_folder())] == ["a-1.csv"]


def test_coco_reimport_of_a_file_the_ledger_does_not_know_says_where_to_look(folders, mongo):
    done = coco("reimport", "demo", "archive/demo/nosuch.csv.gz", env=_env(folders, mongo))
    assert done.returncode == 2 and "no file imported into demo was archived there" in done.stderr
    assert "coco files demo NAME" in done.stderr
