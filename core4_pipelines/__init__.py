"""Dagster definitions for core4-style projects: sensors, jobs, projects as code locations."""

from core4_pipelines.cookie import Cookie
from core4_pipelines.jobs import ImportBatchConfig, download_to_proc, import_job, import_run_config
from core4_pipelines.project import project_definitions, project_resources, project_settings
from core4_pipelines.properties import job_properties
from core4_pipelines.readers import read_csv
from core4_pipelines.runtime import core4_op, cookie, defer, insert, job_config, progress, set_source
from core4_pipelines.sensors import proc_folder_sensor
from core4_resources.folders import FolderResource
from core4_resources.mongo import MongoResource

__all__ = [
    "Cookie",
    "FolderResource",
    "ImportBatchConfig",
    "MongoResource",
    "cookie",
    "core4_op",
    "defer",
    "download_to_proc",
    "import_job",
    "import_run_config",
    "insert",
    "job_config",
    "job_properties",
    "proc_folder_sensor",
    "progress",
    "project_definitions",
    "project_resources",
    "project_settings",
    "read_csv",
    "set_source",
]
