"""The demo's Dagster definitions: a download job, the proc sensor and the import job."""


import os
import shutil

import dagster as dg

from core4_pipelines import (
    FolderResource,
    download_to_proc,
    import_job,
    proc_folder_sensor,
    project_definitions,
    read_csv,
)
from core4_pipelines.jobs import job_properties

SAMPLES = os.path.join(os.path.dirname(__file__), "samples")


class DownloadConfig(dg.Config):
    copies: int = 1  # how many copies of the sample set to fetch


@dg.op(description="Fetch the bundled sample files (an offline source) into proc via transfer")
def fetch_samples(context: dg.OpExecutionContext, config: DownloadConfig, folders: FolderResource) -> list[str]:
    fetched = []
    for copy in range(config.copies):
        for sample in sorted(os.listdir(SAMPLES)):
            stem, ext = os.path.splitext(sample)
            name = f"{stem}-{context.run_id[:8]}-{copy}{ext}"
            with open(os.path.join(SAMPLES, sample), "rb") as source:
                path = download_to_proc(folders, name, lambda out: shutil.copyfileobj(source, out))
            context.log.info(f"fetched {sample} -> {path}")
            fetched.append(path)
    return fetched


# core4 job properties: a daily download at 06:00 UTC, switched off until an operator starts
# the schedule in the UI; jobs.download_samples in demo.yaml (or env) overrides these values.
@job_properties(schedule="0 6 * * *", schedule_status="stopped", attempts=2, error_time=60)
@dg.job(description="Download the demo's sample readings into proc", executor_def=dg.in_process_executor)
def download_samples():
    fetch_samples()


import_readings = import_job("import_readings", read=read_csv, collection="readings")

defs = project_definitions(
    "demo",
    jobs=[download_samples, import_readings],
    sensors=[
        proc_folder_sensor(import_readings, pattern=r"readings-.*\.csv$", batch_size=100, min_age_seconds=1)
    ],
)
