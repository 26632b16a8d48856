"""Run one import batch in this process, as a Dagster run worker would; the parent may kill -9 it.

Usage: python import_worker.py SETTINGS.json   (root, project, mongo_url, database, batch_id)
DAGSTER_HOME must name the instance shared with the parent.
"""

from __future__ import annotations

import json
import sys

import dagster as dg
from reliability_support import make_folders

from core4_pipelines.jobs import import_job, import_run_config
from core4_pipelines.readers import read_csv
from core4_resources.mongo import MongoResource


def main(settings_path: str) -> int:
    with open(settings_path) as handle:
        settings = json.load(handle)
    job = import_job("import_things", read=read_csv, collection=settings.get("collection", "things"))
    folders = make_folders(settings["root"], settings.get("project", "demo"))
    mongo = MongoResource(mongo_url=settings["mongo_url"], database=settings["database"])
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            run_config=import_run_config(job, settings["batch_id"]),
            resources={"folders": folders, "mongo": mongo},
            instance=instance,
            raise_on_error=False,
            tags={"core4/batch": settings["batch_id"]},
        )
    failure = result.failure_data_for_node(f"{job.name}_batch")
    error = str(failure.error) if failure is not None else ""
    print(json.dumps({"run_id": result.run_id, "success": result.success, "error": error}))
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
