"""The demo's Dagster definitions: a download job in Python; the import and its proc sensor are
declared in defs/readings/defs.yaml (a FileImport component) and loaded by project_definitions.

In the asset graph: readings_source (what fetch_samples copies from) -> readings_inbox
(delivered by download_samples, observed by the sensor) -> readings (the MongoDB
collection, materialized once per imported batch).
"""


import os
import shutil

import dagster as dg

from core4_pipelines import FolderResource, download_job, download_to_proc, inbox_key, project_definitions

SAMPLES = os.path.join(os.path.dirname(__file__), "samples")


class DownloadConfig(dg.Config):
    copies: int = 1  # how many copies of the sample set to fetch


def fetch_samples(context: dg.AssetExecutionContext, config: DownloadConfig, folders: FolderResource) -> list[str]:
    """Fetch the bundled sample files (an offline source) into proc via transfer."""
    fetched = []
    for copy in range(config.copies):
        for sample in sorted(os.listdir(SAMPLES)):
            stem, ext = os.path.splitext(sample)
            name = f"{stem}-{context.run.run_id[:8]}-{copy}{ext}"
            with open(os.path.join(SAMPLES, sample), "rb") as source:
                path = download_to_proc(folders, name, lambda out: shutil.copyfileobj(source, out))
            context.log.info(f"fetched {sample} -> {path}")
            fetched.append(path)
    return fetched


# core4 job properties: a daily download at 06:00 UTC, switched off until an operator starts
# the schedule in the UI; jobs.download_samples in demo.yaml (or env) overrides these values.
download_samples = download_job(
    "download_samples",
    fetch_samples,
    produces=inbox_key("demo", "readings"),  # the inbox of the import in defs/readings
    description="Download the demo's sample readings into proc",
    properties={"schedule": "0 6 * * *", "schedule_status": "stopped", "attempts": 2, "error_time": 60},
)

defs = project_definitions("demo", jobs=[download_samples])
