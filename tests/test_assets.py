"""The asset model: inbox -> collection, one materialization per batch, checks, record models, freshness."""

from __future__ import annotations

import datetime as dt
import os
from datetime import timedelta

import dagster as dg
import pytest
from pydantic import BaseModel, Field
from support import archived, claim_all, csv_rows, put, run_import, tick

from core4_pipelines.download.job import download_job, download_to_proc
from core4_pipelines.errors import JobSettingsError
from core4_pipelines.ingest.assets import REJECTED_CHECK
from core4_pipelines.ingest.job import import_job
from core4_pipelines.project.definitions import project_definitions
from core4_pipelines.ingest.readers import read_csv
from core4_pipelines.ingest.sensor import proc_folder_sensor
from core4_resources.files.folders import FolderResource
from core4_resources.mongo.resource import MongoResource

BAD_CSV = b"id,tag,value\n1,a,1.0\n2,b\n"  # record 2 has a missing field


class Sale(BaseModel):
    day: dt.date
    amount: float = Field(ge=0)
    units: int



def fetch_two(context, folders: FolderResource) -> list[str]:
    return [download_to_proc(folders, f"sales-{n}.csv", lambda out: out.write(csv_rows(3))) for n in (1, 2)]


def check_results(result, key):
    return [c for c in result.get_asset_check_evaluations() if c.asset_key == key]


def test_the_project_graph_is_source_to_inbox_to_collection_with_the_download_as_the_inbox_job(project):
    name = project("shop")
    imports = import_job("import_sales", read=read_csv, collection="sales", pattern=r"sales-.*\.csv$")
    download = download_job("fetch_sales", fetch_two, produces=imports)
    defs = project_definitions(name, jobs=[download, imports], sensors=[proc_folder_sensor(imports)])
    graph = defs.resolve_asset_graph()
    collection, inbox = dg.AssetKey(["shop", "sales"]), dg.AssetKey(["shop", "sales_inbox"])
    source = dg.AssetKey(["shop", "sales_source"])
    assert graph.get_all_asset_keys() == {source, collection, inbox}
    node = graph.get(collection)
    assert node.parent_keys == {inbox}
    assert graph.get(inbox).parent_keys == {source}  # lineage: source -> inbox -> collection
    assert node.kinds == {"mongodb"} and node.group_name == "shop"
    assert node.metadata["pattern"] == r"sales-.*\.csv$" and "read_csv" in node.metadata["reader"]
    assert graph.get(inbox).is_materializable  # by the download
    assert {k.name for k in defs.resolve_asset_graph().asset_check_keys} == {REJECTED_CHECK}
    # The sensor and both jobs point at the rebuilt definitions of this project.
    assert defs.resolve_job_def("fetch_sales").asset_layer.selected_asset_keys == {inbox}
    assert defs.resolve_job_def("import_sales").asset_layer.selected_asset_keys == {collection}


def test_without_a_download_the_inbox_is_an_external_asset_and_a_second_import_into_it_is_refused(project):
    name = project("shop")
    imports = import_job("import_sales", read=read_csv, collection="sales")
    graph = project_definitions(name, jobs=[imports]).resolve_asset_graph()
    assert not graph.get(dg.AssetKey(["shop", "sales_inbox"])).is_materializable
    again = import_job("import_more_sales", read=read_csv, collection="sales")
    with pytest.raises(JobSettingsError, match="import_sales and import_more_sales both import into the collection sales"):
        project_definitions(name, jobs=[imports, again])


def test_a_download_materializes_the_inbox_listing_the_files_it_delivered(folders, mongo):
    imports = import_job("import_sales", read=read_csv, collection="sales", project="demo")
    download = download_job("fetch_sales", fetch_two, produces=imports)
    result = download.execute_in_process(resources={"folders": folders, "mongo": mongo})
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.asset_key == dg.AssetKey(["demo", "sales_inbox"])
    listed = [row.data["file"] for row in event.materialization.metadata["delivered"].value.records]
    assert [os.path.basename(p) for p in listed] == ["sales-1.csv", "sales-2.csv"]
    assert sorted(os.listdir(folders.proc_folder())) == ["sales-1.csv", "sales-2.csv"]


def test_a_bad_file_fails_the_check_with_its_reason_and_the_batch_materializes_once(folders, mongo):
    put(folders.proc_folder(), "good.csv", csv_rows(3))
    put(folders.proc_folder(), "bad.csv", BAD_CSV)
    (batch_id,) = claim_all(folders)
    job = import_job("import_things", read=read_csv, collection="things", project="demo")
    result = run_import(folders, mongo, batch_id, job=job)
    assert not result.success  # blocking by default: the run fails, as it always did
    key = dg.AssetKey(["demo", "things"])
    (event,) = result.get_asset_materialization_events()
    rows = {r.data["file"]: r.data for r in event.materialization.metadata["file_table"].value.records}
    assert rows["good.csv"]["outcome"] == "imported" and rows["good.csv"]["records"] == 3
    assert rows["bad.csv"]["outcome"] == "rejected" and "line 3: expected 3 fields, got 2" in rows["bad.csv"]["reason"]
    assert event.materialization.metadata["records"].value == 3
    (check,) = check_results(result, key)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    rejected = check.metadata["rejected_files"].value.records
    assert [r.data["file"] for r in rejected] == ["bad.csv"] and "error" in rejected[0].data["moved_to"]
    assert "bad.csv" in check.metadata["reasons"].value
    assert mongo.collection("things").count_documents({"_src": "good.csv"}) == 3
    assert mongo.collection("things").count_documents({"_src": "bad.csv"}) == 0


def test_rejected_files_warn_lets_the_run_succeed_with_a_warning(folders, mongo):
    put(folders.proc_folder(), "bad.csv", BAD_CSV)
    (batch_id,) = claim_all(folders)
    job = import_job("import_things", read=read_csv, collection="things", project="demo", rejected_files="warn")
    result = run_import(folders, mongo, batch_id, job=job)
    assert result.success
    (check,) = check_results(result, dg.AssetKey(["demo", "things"]))
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert os.listdir(folders.error_folder()) != []
    with pytest.raises(ValueError, match="rejected_files must be one of fail, warn, got 'ignore'"):
        import_job("import_things", read=read_csv, collection="things", rejected_files="ignore")


def test_a_record_model_converts_records_and_a_refused_record_names_record_field_and_message(folders, mongo):
    put(folders.proc_folder(), "jan.csv", "day,amount,units\n2026-01-02,10.5,3\n2026-01-03,0,1\n")
    put(folders.proc_folder(), "feb.csv", "day,amount,units\n2026-02-01,1.0,2\n2026-02-02,-4,two\n")
    (batch_id,) = claim_all(folders)
    job = import_job("import_sales", read=read_csv, collection="sales", project="demo", model=Sale)
    result = run_import(folders, mongo, batch_id, job=job)
    assert not result.success
    docs = list(mongo.collection("sales").find({"_src": "jan.csv"}, sort=[("day", 1)]))
    assert [(d["day"], d["amount"], d["units"]) for d in docs] == [
        (dt.datetime(2026, 1, 2), 10.5, 3), (dt.datetime(2026, 1, 3), 0.0, 1)]
    assert mongo.collection("sales").count_documents({"_src": "feb.csv"}) == 0
    (reason,) = [p for p in os.listdir(folders.error_folder()) if p.endswith(".reason.txt")] or [None]
    text = open(os.path.join(folders.error_folder(), reason)).read() if reason else ""
    assert "record 2 (line 3)" in text and "does not fit Sale" in text
    assert "field amount" in text and "greater than or equal to 0" in text and "field units" in text
    assert sorted(archived(folders)) == ["jan.csv"]


def test_user_checks_run_after_each_batch(folders, mongo):
    key = dg.AssetKey(["demo", "things"])

    @dg.asset_check(asset=key)
    def at_least_five_records(mongo: MongoResource) -> dg.AssetCheckResult:
        count = mongo.collection("things").count_documents({})
        return dg.AssetCheckResult(passed=count >= 5, metadata={"count": count})

    put(folders.proc_folder(), "a.csv", csv_rows(3))
    (batch_id,) = claim_all(folders)
    job = import_job("import_things", read=read_csv, collection="things", project="demo",
                     checks=[at_least_five_records])
    result = run_import(folders, mongo, batch_id, job=job)
    by_name = {c.check_name: c for c in check_results(result, key)}
    assert by_name[REJECTED_CHECK].passed
    assert not by_name["at_least_five_records"].passed and by_name["at_least_five_records"].metadata["count"].value == 3


def test_freshness_from_code_and_from_the_configuration(project):
    name = project("shop", """
        jobs:
          import_late:
            freshness: 7200
    """)
    early = import_job("import_early", read=read_csv, collection="early", freshness=timedelta(hours=26))
    late = import_job("import_late", read=read_csv, collection="late", freshness=60)
    graph = project_definitions(name, jobs=[early, late]).resolve_asset_graph()
    assert graph.get(dg.AssetKey(["shop", "early"])).freshness_policy.fail_window.to_timedelta() == timedelta(hours=26)
    assert graph.get(dg.AssetKey(["shop", "late"])).freshness_policy.fail_window.to_timedelta() == timedelta(hours=2)


def test_a_bad_freshness_in_the_configuration_names_the_key(project):
    name = project("shop", """
        jobs:
          import_late:
            freshness: soon
    """)
    late = import_job("import_late", read=read_csv, collection="late")
    with pytest.raises(JobSettingsError, match=r"shop\.jobs\.import_late\.freshness.*expected a number > 0"):
        project_definitions(name, jobs=[late])


def test_the_sensor_observes_the_inbox_backlog_when_it_changes(folders, mongo):
    job = import_job("import_things", read=read_csv, collection="things", project="demo", pattern=r".*\.csv$")
    sensor = proc_folder_sensor(job, min_age_seconds=0)
    for n in range(3):
        put(folders.proc_folder(), f"f{n}.csv", csv_rows(2))
    put(folders.proc_folder(), "notes.txt", "not for this import")
    instance = dg.DagsterInstance.ephemeral()
    first = tick(sensor, folders, mongo, instance)
    (observation,) = first.asset_events
    assert observation.asset_key == dg.AssetKey(["demo", "things_inbox"])
    assert observation.metadata["files_waiting"].value == 3
    assert observation.metadata["bytes_waiting"].value == 3 * len(csv_rows(2))
    assert observation.metadata["claimed_now"].value == 3
    assert len(first.run_requests) == 1
    again = sensor.evaluate_tick(dg.build_sensor_context(
        instance=instance, resources={"folders": folders, "mongo": mongo}, cursor=first.cursor))
    unchanged = sensor.evaluate_tick(dg.build_sensor_context(
        instance=instance, resources={"folders": folders, "mongo": mongo}, cursor=again.cursor))
    assert again.asset_events and again.asset_events[0].metadata["files_waiting"].value == 0
    assert unchanged.asset_events == []  # nothing changed: nothing reported


def test_a_sensor_pattern_that_contradicts_the_jobs_is_refused():
    job = import_job("import_things", read=read_csv, collection="things", pattern=r"a.*")
    with pytest.raises(ValueError, match="differs from the job's own"):
        proc_folder_sensor(job, pattern=r"b.*")


def test_the_scaffolds_record_model_switched_on_refuses_a_bad_row(tmp_path, monkeypatch, folders, mongo):
    import importlib

    from core4_pipelines.coco.scaffold import init_project
    from core4_pipelines.ingest.assets import assets_of

    folder = init_project("shopmodel", str(tmp_path / "home"), say=lambda _: None, git=False)
    defs_yaml = os.path.join(folder, "shopmodel", "defs", "records", "defs.yaml")
    text = open(defs_yaml).read().replace("  # record_model: shopmodel.models.Record", "  record_model: shopmodel.models.Record")
    open(defs_yaml, "w").write(text)
    monkeypatch.syspath_prepend(folder)
    defs = importlib.import_module("shopmodel.definitions").defs
    job = defs.resolve_job_def("import_records")
    assert assets_of(job).assets[0].specs_by_key[dg.AssetKey(["shopmodel", "records"])].metadata["record_model"] \
        == "shopmodel.models.Record"
    put(folders.proc_folder(), "ok.csv", "city,celsius,note\nberlin,21.5,sunny\n")
    put(folders.proc_folder(), "hot.csv", "city,celsius\nkoeln,19\nmars,120\n")
    (batch_id,) = claim_all(folders)
    result = run_import(folders, mongo, batch_id, job=job)
    assert not result.success
    assert [(d["city"], d["celsius"], d["note"]) for d in mongo.collection("records").find({"_src": "ok.csv"})] \
        == [("berlin", 21.5, "sunny")]
    (reason,) = [p for p in os.listdir(folders.error_folder()) if p.endswith(".reason.txt")]
    text = open(os.path.join(folders.error_folder(), reason)).read()
    assert "record 2 (line 3)" in text and "field celsius" in text and "less than or equal to 60" in text


def test_materialize_without_a_batch_imports_what_waits_in_the_inbox(folders, mongo):
    from core4_pipelines.ingest.job import BATCH_TAG

    job = import_job("import_things", read=read_csv, collection="things", project="demo", pattern=r".*\.csv$")
    resources = {"folders": folders, "mongo": mongo}
    put(folders.proc_folder(), "a.csv", csv_rows(2))
    put(folders.proc_folder(), "b.csv", csv_rows(3))
    put(folders.proc_folder(), "notes.txt", "not this import's")
    with dg.instance_for_test() as instance:
        # What the UI's Materialize launches: the job with no run config at all.
        result = job.execute_in_process(resources=resources, instance=instance)
        assert result.success
        (event,) = result.get_asset_materialization_events()
        assert event.materialization.metadata["files_imported"].value == 2
        batch = instance.get_run_by_id(result.run_id).tags[BATCH_TAG]  # the sensor's recovery knows it
        assert event.materialization.metadata["batch"].value == batch
        assert mongo.collection("things").count_documents({}) == 5
        assert sorted(archived(folders)) == ["a.csv", "b.csv"]
        assert sorted(os.listdir(folders.proc_folder())) == [".batch", "notes.txt"]
        nothing = job.execute_in_process(resources=resources, instance=instance)
        assert nothing.success and not nothing.get_asset_materialization_events()
        (check,) = nothing.get_asset_check_evaluations()
        assert check.passed and check.description.startswith("no file to import")
