"""Bad configuration, bad projects and a bad MongoDB: a clear error naming what and where; nothing lost.

Every test here is a row of the table in docs/reliability.md.
"""

from __future__ import annotations

import os

import pytest
from support import (
    archived,
    claim_all,
    coco,
    content_sha256,
    count,
    csv_rows,
    failure_text,
    make_project,
    put,
    run_import,
    sha256_file,
    walk_files,
)

from core4_pipelines.ingest.job import import_job
from core4_pipelines.coco.discovery import discover_projects
from core4_pipelines.ingest.readers import read_csv
from core4_resources.config.settings import mask_url
from core4_resources.mongo.embedded.server import EmbeddedMongo, free_port
from core4_resources.mongo.resource import MongoResource

# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("folder:\n  procc: /data/proc\n", "unknown key 'folder.procc' in {path}: expected one of"),
        ("job:\n  attempts: three\n", "job.attempts in {path}: expected an integer >= 1, got 'three'"),
        ("folder:\n  root: /data\n  proc: [unclosed\n", "invalid YAML in {path} line"),
        ("folder:\n  home: /no/such/home\n", "folder.home in {path}: expected an existing directory"),
    ],
    ids=["typo-key", "wrong-type", "invalid-yaml", "home-missing"],
)
def test_a_bad_config_file_stops_coco_naming_file_and_key(tmp_path, text, expected):
    count("bad inputs tried")
    path = tmp_path / "local.yaml"
    path.write_text(text)
    done = coco("config", env={**os.environ, "CORE4_CONFIG": str(path)})
    assert done.returncode == 2
    assert done.stderr.startswith("coco config: ") and expected.format(path=path) in done.stderr, done.stderr
    assert done.stdout == ""


def test_folder_home_unset_is_explained(tmp_path):
    count("bad inputs tried")
    done = coco("projects")
    assert done.returncode == 2
    assert "folder.home is not set: pass --home DIR or set folder.home in your config" in done.stderr


# -- projects ---------------------------------------------------------------------------------


GOOD = "from core4_pipelines import project_definitions\ndefs = project_definitions({name!r})\n"


@pytest.mark.timeout(300)
def test_broken_projects_are_reported_and_do_not_stop_the_others(tmp_path):
    count("bad inputs tried", 2)
    home = tmp_path / "home"
    home.mkdir()
    make_project(home, "good", GOOD.format(name="good"))
    make_project(home, "syntax", "def broken(:\n    pass\n")
    make_project(home, "nodefs", "from core4_pipelines import project_definitions\nsomething = 1\n")
    done = coco("--home", str(home), "--root", str(tmp_path / "root"), "projects")
    assert done.returncode == 1
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line and not line.startswith(" ")}
    assert "loads" in rows["good"]
    assert "ERROR" in rows["syntax"] and 'syntax/definitions.py", line 1' in rows["syntax"]
    assert "SyntaxError: invalid syntax" in done.stdout
    assert "ERROR" in rows["nodefs"] and "defines no `defs`" in rows["nodefs"]
    # The workspace still lists every project: Dagster shows the broken ones as failed locations.
    workspace = tmp_path / "workspace.yaml"
    assert coco("--home", str(home), "workspace", "-o", str(workspace)).returncode == 0
    assert {"good", "syntax", "nodefs"} <= set(workspace.read_text().split())


def test_two_projects_whose_names_differ_only_in_case_are_both_refused(tmp_path):
    # One home cannot hold two folders of one name. Names that differ only in case would
    # share proc/<name> on a case-insensitive filesystem and a MongoDB database (database
    # names are case-insensitive there), so discovery refuses both and says why.
    count("bad inputs tried")
    home = tmp_path / "home"
    home.mkdir()
    make_project(home, "sales", GOOD.format(name="sales"))
    make_project(home, "Sales", GOOD.format(name="Sales"))
    projects, skipped = discover_projects(str(home))
    assert projects == []
    assert len(skipped) == 2 and all("differ only in case" in reason for reason in skipped)


def test_a_project_named_like_an_installed_package_is_refused(tmp_path):
    # A code location imports <name>.definitions with the project folder first on sys.path:
    # a project called "yaml" would hide PyYAML from Dagster itself.
    count("bad inputs tried")
    home = tmp_path / "home"
    home.mkdir()
    make_project(home, "yaml", GOOD.format(name="yaml"))
    projects, skipped = discover_projects(str(home))
    assert projects == []
    assert len(skipped) == 1 and "yaml" in skipped[0] and "installed" in skipped[0]


# -- MongoDB ----------------------------------------------------------------------------------


def test_mongodb_unreachable_at_start_fails_masked_and_the_retry_imports_once(folders, mongo):
    count("bad inputs tried")
    put(folders.proc_folder(), "a.csv", csv_rows(7))
    (batch_id,) = claim_all(folders)
    url = f"mongodb://core4:S3cret-pw@127.0.0.1:{free_port()}/?authSource=admin"
    dead = MongoResource(mongo_url=url, database=mongo.database, server_selection_timeout_ms=500)
    result = run_import(folders, dead, batch_id)
    assert not result.success
    message = failure_text(result)
    assert "S3cret-pw" not in message and "core4:***@127.0.0.1" in message, message
    claimed = walk_files(folders.proc_folder())
    assert [os.path.basename(p) for p in claimed] == ["a.csv"]
    # MongoDB is back (here: the test server): the same batch imports once and is archived once.
    again = run_import(folders, mongo, batch_id)
    assert again.success, failure_text(again)
    assert mongo.collection("things").count_documents({}) == 7
    assert [len(p) for p in archived(folders).values()] == [1]


@pytest.mark.timeout(300)
def test_mongodb_going_away_mid_import_fails_the_run_and_the_retry_imports_once(folders, tmp_path):
    count("bad inputs tried")
    storage = tmp_path / "mongo-going-away"
    server = EmbeddedMongo(storage)
    server.start()
    try:
        url = server.url

        def read_then_pull_the_plug(path):
            for position, record in enumerate(read_csv(path)):
                if position == 2500 and path.endswith("b.csv"):
                    server.stop()
                yield record

        job = import_job("import_things", read=read_then_pull_the_plug, collection="things")
        originals = {}
        for name in ("a.csv", "b.csv", "c.csv"):
            originals[name] = sha256_file(put(folders.proc_folder(), name, csv_rows(4000, tag=name[0])))
        (batch_id,) = claim_all(folders)
        mongo = MongoResource(mongo_url=url, database="going_away", server_selection_timeout_ms=1000)
        result = run_import(folders, mongo, batch_id, job=job)
        assert not result.success
        message = failure_text(result)
        # The reader runs ahead of the insert: the chunk in flight when the server went may hold
        # a.csv's or b.csv's records. The error names the files of that chunk, whichever they are.
        assert mask_url(url) in message and ("a.csv" in message or "b.csv" in message), message
        # Nothing is archived before the batch's durability point: all three wait, claimed.
        assert archived(folders) == {}
        assert sorted(os.path.basename(p) for p in walk_files(folders.proc_folder())) == ["a.csv", "b.csv", "c.csv"]
        # The server comes back with its data; re-executing the batch imports every record once.
        server = EmbeddedMongo(storage, port=int(url.rsplit(":", 1)[1]))
        server.start()
        again = run_import(folders, mongo, batch_id, job=import_job("import_things", read=read_csv,
                                                                      collection="things"))
        assert again.success, failure_text(again)
        things = mongo.collection("things")
        records = [(d["_src"], d["id"]) for d in things.find({}, {"_src": 1, "id": 1, "_id": 0})]
        assert len(records) == len(set(records)) == 3 * 4000
        paths = archived(folders)
        assert {name: len(p) for name, p in paths.items()} == {"a.csv": 1, "b.csv": 1, "c.csv": 1}
        for name, (path,) in paths.items():
            assert content_sha256(path) == originals[name]
    finally:
        server.stop()


def test_a_reader_yielding_a_duplicate_id_is_a_clear_error(folders, mongo):
    count("bad inputs tried")

    def read_with_duplicate_ids(path):
        yield {"_id": "k1", "value": 1}
        yield {"_id": "k2", "value": 2}
        yield {"_id": "k1", "value": 3}  # the file's own duplicate: not a retry, a content error

    job = import_job("import_things", read=read_with_duplicate_ids, collection="things")
    put(folders.proc_folder(), "dups.csv", "whatever")
    (batch_id,) = claim_all(folders)
    result = run_import(folders, mongo, batch_id, job=job)
    assert not result.success
    message = failure_text(result)
    assert "dups.csv" in message and "'k1'" in message
    assert mongo.collection("things").count_documents({}) == 0
    assert os.path.exists(os.path.join(folders.error_folder(), "dups.csv"))
