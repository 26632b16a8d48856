"""Run one import batch in this process, as a Dagster run worker would; the parent may kill -9 it.

Usage: python import_worker.py SETTINGS.json   (root, project, mongo_url, database, batch_id;
  optional: collection, mode, keys)
DAGSTER_HOME must name the instance shared with the parent.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: support

import dagster as dg  # noqa: E402
from support import failure_text, make_folders, run_import  # noqa: E402

from core4_pipelines.ingest.job import import_job  # noqa: E402
from core4_pipelines.ingest.readers import read_csv  # noqa: E402
from core4_resources.mongo.resource import MongoResource  # noqa: E402


def main(settings_path: str) -> int:
    with open(settings_path) as handle:
        settings = json.load(handle)
    job = import_job("import_things", read=read_csv, collection=settings.get("collection", "things"),
                     mode=settings.get("mode", "insert"), keys=settings.get("keys"))
    folders = make_folders(settings["root"], settings.get("project", "demo"))
    mongo = MongoResource(mongo_url=settings["mongo_url"], database=settings["database"])
    with dg.DagsterInstance.get() as instance:
        result = run_import(folders, mongo, settings["batch_id"], job=job, instance=instance)
    print(json.dumps({"run_id": result.run_id, "success": result.success, "error": failure_text(result, job)}))
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
