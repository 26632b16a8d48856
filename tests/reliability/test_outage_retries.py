"""An outage uses no attempt: runs the database failed are tagged so, and the claim sensor runs
the batch again soon (a short backoff, doubling) for as long as the outage lasts; once the
database is back the batch imports once. Real runs, a real proc sensor, a real server."""

from __future__ import annotations

import os
import socket

import dagster as dg
import pymongo

from core4_pipelines.ingest import sensor as sensor_module
from core4_pipelines.ingest.job import import_job
from core4_pipelines.ingest.readers import read_csv
from core4_pipelines.ingest.sensor import proc_folder_sensor
from core4_pipelines.project.definitions import project_definitions
from core4_pipelines.tags import FAILURE_KIND_TAG


def _dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"


def _defs(name: str, local, root, mongo_url: str) -> dg.Definitions:
    local.write_text(f"folder:\n  root: {root}\nDEFAULT:\n  mongo_url: '{mongo_url}'\n  mongo_database: {name}\n")
    job = import_job("import_things", read=read_csv, collection="things")
    return project_definitions(name, jobs=[job], sensors=[proc_folder_sensor(job, min_age_seconds=0)])


_last: list = [None]


def _tick_and_run(defs: dg.Definitions, instance, mongo_url: str | None = None) -> list[dg.ExecuteInProcessResult]:
    """One tick of the proc sensor of ``defs``, and each run it asks for executed (on the
    database at ``mongo_url`` if given: it may be gone by the time a run starts)."""
    from core4_resources.mongo.resource import MongoResource

    context = dg.build_sensor_context(instance=instance, definitions=defs,
                                      resources={key: defs.resources[key] for key in ("folders", "mongo")})
    result = defs.resolve_sensor_def("import_things_proc_sensor").evaluate_tick(context)
    done = []
    _last[:] = [result.skip_message]
    for request in result.run_requests or []:
        job = defs.resolve_job_def(request.job_name or "import_things")
        mongo = defs.resources["mongo"]
        if mongo_url is not None:
            mongo = MongoResource(mongo_url=mongo_url, database=mongo.database)
        done.append(job.execute_in_process(run_config=request.run_config, tags=request.tags, instance=instance,
                                           raise_on_error=False,
                                           resources={"folders": defs.resources["folders"], "mongo": mongo}))
    return done


def test_runs_an_outage_failed_use_no_attempt_and_the_batch_imports_once_when_it_is_back(
        project, isolated_config, tmp_path, instance, mongo_server, monkeypatch):
    monkeypatch.setattr(sensor_module, "OUTAGE_FIRST_WAIT", 0.0)
    name = project("outage1")
    root = tmp_path / "root"
    # The sensor claims while the database answers; it is gone again whenever a run starts.
    live = _defs(name, isolated_config, root, mongo_server.url)
    dead = _dead_url()
    folders = live.resources["folders"]
    proc = folders.proc_folder()
    os.makedirs(proc, exist_ok=True)
    for n in range(3):
        with open(f"{proc}/f{n}.csv", "wb") as out:
            out.write(f"a,b\n{n},x\n".encode())

    failed = []
    for _ in range(4):  # more than the batch's attempts (MIN_BATCH_RUNS, 3): none used up
        runs = _tick_and_run(live, instance, mongo_url=dead)
        assert len(runs) == 1, _last[0]
        (run,) = runs
        assert not run.success
        assert instance.get_run_by_id(run.run_id).tags[FAILURE_KIND_TAG] == "infrastructure"
        failed.append(run.run_id)
    assert len(set(failed)) == 4

    (run,) = _tick_and_run(live, instance)  # the database is back when the run starts
    assert run.success
    assert _tick_and_run(live, instance) == []  # nothing left
    with pymongo.MongoClient(mongo_server.url) as client:
        assert sorted(d["a"] for d in client[name].things.find()) == [0, 1, 2]
    archived = [f for _, _, files in os.walk(folders.archive_folder()) for f in files]
    assert len(archived) == 3


def test_a_run_failed_by_the_content_or_code_counts_against_the_attempts(project, isolated_config, tmp_path,
                                                                         instance, mongo_server):
    name = project("outage2")
    root = tmp_path / "root"
    with pymongo.MongoClient(mongo_server.url) as client:
        client[name].things.insert_many([{"id": 1}, {"id": 1}])  # the unique index cannot be made
    isolated_config.write_text(f"folder:\n  root: {root}\nDEFAULT:\n  mongo_url: '{mongo_server.url}'\n"
                               f"  mongo_database: {name}\njob:\n  error_time: 0\n")
    job = import_job("import_things", read=read_csv, collection="things", mode="upsert", keys=["id"])
    defs = project_definitions(name, jobs=[job], sensors=[proc_folder_sensor(job, min_age_seconds=0)])
    proc = defs.resources["folders"].proc_folder()
    os.makedirs(proc, exist_ok=True)
    with open(f"{proc}/f.csv", "wb") as out:
        out.write(b"id,b\n1,x\n")
    runs = []
    for _ in range(5):
        runs += _tick_and_run(defs, instance)
    assert len(runs) == 3 and not any(r.success for r in runs)  # then it waits for a human
    assert {instance.get_run_by_id(r.run_id).tags[FAILURE_KIND_TAG] for r in runs} == {"error"}


def test_claims_pause_while_free_space_is_below_min_free_and_resume_by_themselves(project, isolated_config, tmp_path,
                                                                                  instance, mongo_server):
    name = project("lowdisk")
    root = tmp_path / "root"

    def defs_with(floor: str) -> dg.Definitions:
        isolated_config.write_text(f"folder:\n  root: {root}\n  min_free: '{floor}'\nDEFAULT:\n"
                                   f"  mongo_url: '{mongo_server.url}'\n  mongo_database: {name}\n")
        job = import_job("import_things", read=read_csv, collection="things")
        return project_definitions(name, jobs=[job], sensors=[proc_folder_sensor(job, min_age_seconds=0)])

    full = defs_with("100%")  # never met: as a disk with too little room
    proc = full.resources["folders"].proc_folder()
    os.makedirs(proc, exist_ok=True)
    with open(f"{proc}/a.csv", "wb") as out:
        out.write(b"a,b\n1,x\n")
    assert _tick_and_run(full, instance) == []
    assert f"not claiming from {proc}: " in _last[0] and "below folder.min_free 100%" in _last[0]
    assert "claims resume by themselves" in _last[0] and os.listdir(proc) == ["a.csv"]  # left in proc, visible

    roomy = defs_with("1 MB")  # space again
    (run,) = _tick_and_run(roomy, instance)
    assert run.success and [n for n in os.listdir(proc) if not n.startswith(".")] == []
    with pymongo.MongoClient(mongo_server.url) as client:
        assert client[name].things.count_documents({}) == 1


def test_min_free_is_a_share_or_a_size_and_anything_else_names_the_key(isolated_config):
    import pytest

    from core4_resources.config.settings import load_config
    from core4_resources.errors import ConfigError
    from core4_resources.files.space import parse_min_free

    assert parse_min_free("5%").required(1000) == 50
    assert parse_min_free("500 MB").required(10) == 500_000_000
    assert parse_min_free("1 GiB").required(0) == 2**30 and parse_min_free(0).required(10**12) == 0
    isolated_config.write_text("folder:\n  min_free: plenty\n")
    with pytest.raises(ConfigError, match=r"folder.min_free in .*local.yaml: expected a share of the disk such as 5%"):
        load_config()


def _failed_run(instance, job, request, reason: str | None = None) -> str:
    """A run of ``request`` failed as Dagster's code server fails one whose worker process died
    (no reason given), or with Dagster's ``reason`` for a failure inside the run."""
    run = instance.create_run_for_job(job, run_config=request.run_config, tags=request.tags)
    if reason is not None:
        instance.add_run_tags(run.run_id, {"dagster/failure_reason": reason})
    instance.report_run_failed(run)
    return run.run_id


def test_a_run_whose_worker_died_without_a_word_is_run_again_at_once_using_no_attempt(folders, mongo, instance,
                                                                                      monkeypatch):
    from support import JOB, put, tick

    from core4_pipelines.tags import ATTEMPT_TAG

    put(folders.proc_folder(), "a.csv")
    sensor = proc_folder_sensor(JOB, min_age_seconds=0)  # a run that failed inside waits 60 s
    (request,) = tick(sensor, folders, mongo, instance).run_requests
    _failed_run(instance, JOB, request)
    (request,) = tick(sensor, folders, mongo, instance).run_requests  # at once
    assert request.tags[ATTEMPT_TAG] == "2"
    monkeypatch.setattr(sensor_module, "OUTAGE_FIRST_WAIT", 0.0)  # the backoff after the first, shortened
    for attempt in range(3, 6):  # past the batch's 3 attempts: none is used up
        _failed_run(instance, JOB, request)
        (request,) = tick(sensor, folders, mongo, instance).run_requests
        assert request.tags[ATTEMPT_TAG] == str(attempt)


def test_a_run_that_failed_inside_waits_error_time_and_counts(folders, mongo, instance):
    from support import JOB, put, tick

    put(folders.proc_folder(), "a.csv")
    sensor = proc_folder_sensor(JOB, min_age_seconds=0)
    (request,) = tick(sensor, folders, mongo, instance).run_requests
    _failed_run(instance, JOB, request, reason="STEP_FAILURE")
    result = tick(sensor, folders, mongo, instance)
    assert result.run_requests == []
    assert "run 2 (2 of 3 attempts) in 60s" in result.skip_message
