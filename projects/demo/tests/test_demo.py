"""The demo end to end: download_samples fetches the four sample files into proc, the proc sensor
claims the readings-*.csv files among what is there (once unchanged for 1 s), and the job it starts,
import_readings, puts their 96 readings into MongoDB and archives them.

A private embedded MongoDB and folders under pytest's tmp_path: nothing configured is touched.
"""

import os
import time

import dagster as dg
import pytest

from core4_pipelines import FolderResource, MongoResource
from core4_resources.mongo.embedded.server import EmbeddedMongo
from demo.definitions import defs


@pytest.fixture(scope="module")
def mongo(tmp_path_factory):
    with EmbeddedMongo(tmp_path_factory.mktemp("mongo") / "data") as server:
        yield MongoResource(mongo_url=server.url, database="demo")


def visible(folder) -> list[str]:
    return sorted(name for _, _, names in os.walk(folder) for name in names if not name.startswith("."))


def test_download_claim_import_and_archive(tmp_path, mongo):
    folders = FolderResource.under_root(tmp_path / "root", "demo")
    resources = {"folders": folders, "mongo": mongo}
    proc = folders.proc_folder()
    sensor = defs.resolve_sensor_def("import_readings_proc_sensor")
    assert sensor.job_name == "import_readings"
    with dg.instance_for_test() as instance:
        download = defs.resolve_job_def("download_samples").execute_in_process(instance=instance, resources=resources)
        assert download.success
        fetched = visible(proc)
        assert len(fetched) == 4 and all(n.startswith("readings-") and n.endswith(".csv") for n in fetched)
        with open(os.path.join(proc, "notes.txt"), "w") as handle:
            handle.write("not readings-*.csv: the sensor leaves it\n")

        context = dg.build_sensor_context(instance=instance, resources=resources)
        assert not sensor.evaluate_tick(context).run_requests  # first sight: not yet unchanged for 1 s
        time.sleep(1.5)
        (request,) = sensor.evaluate_tick(context).run_requests  # all four in one batch (batch_size 100)
        imported = defs.resolve_job_def(sensor.job_name).execute_in_process(
            run_config=request.run_config, tags=request.tags, instance=instance, resources=resources
        )
        assert imported.success

    readings = mongo.collection("readings")
    assert readings.count_documents({}) == 96
    assert sorted(readings.distinct("_src")) == fetched
    assert sorted(readings.distinct("station")) == ["berlin", "cologne", "hamburg", "munich"]
    assert visible(folders.archive_folder()) == [f"{name}.gz" for name in fetched]
    assert visible(proc) == ["notes.txt"]
