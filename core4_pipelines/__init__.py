"""Dagster definitions for core4-style projects: sensors, jobs, projects as code locations.

This package is the library a project imports. The operator tool (`coco`) lives in
``core4_pipelines.coco``; nothing here imports it. The public names load lazily
(PEP 562), so a process that only needs a light module (``coco serve`` reading
``core4_pipelines.tags``) does not import Dagster with the package.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

# Dagster warns about its own calls -- beta classes its components use, the beta `owners` its
# sensor decorator always passes -- in every process that loads a project (code servers, run
# workers, coco drain); nobody can act on them. Ignored only where the warning is attributed to
# Dagster's own modules: a project that uses a beta API itself is still warned. Matched by
# Dagster's message texts (dagster_shared.utils.warnings): this package does not import Dagster.
for _text in ("is currently in beta", "is currently in preview", "is superseded and its usage is discouraged"):
    warnings.filterwarnings("ignore", message=rf".* {_text}", module=r"dagster(\.|$)")
del _text

if TYPE_CHECKING:
    from core4_pipelines.download.sftp import SftpSource, fetch_sftp_into_proc
    from core4_pipelines.project.components import FileImport, HttpDownload
    from core4_pipelines.project.sftp_download import SftpDownload
    from core4_pipelines.job_cookie import Cookie
    from core4_pipelines.download.job import download_job, download_to_proc
    from core4_pipelines.ingest.assets import collection_key, inbox_key
    from core4_pipelines.ingest.job import ImportBatchConfig, import_job, import_run_config
    from core4_pipelines.project.definitions import project_definitions
    from core4_pipelines.settings import project_resources, project_settings
    from core4_pipelines.properties import job_properties
    from core4_pipelines.ingest.readers import BadRow, ReadNote, read_csv, read_json, read_jsonl, read_parquet, read_xlsx
    from core4_pipelines.supervise.runtime import (
        collection,
        cookie,
        core4_op,
        defer,
        heartbeat,
        insert,
        job_config,
        progress,
        set_source,
    )
    from core4_pipelines.ingest.sensor import proc_folder_sensor
    from core4_resources.files.folders import FolderResource
    from core4_resources.mongo.resource import MongoResource

# public name -> the module that defines it
_EXPORTS = {
    "Cookie": "core4_pipelines.job_cookie",
    "FileImport": "core4_pipelines.project.components",
    "HttpDownload": "core4_pipelines.project.components",
    "SftpDownload": "core4_pipelines.project.sftp_download",
    "SftpSource": "core4_pipelines.download.sftp",
    "fetch_sftp_into_proc": "core4_pipelines.download.sftp",
    "FolderResource": "core4_resources.files.folders",
    "ImportBatchConfig": "core4_pipelines.ingest.job",
    "MongoResource": "core4_resources.mongo.resource",
    "collection": "core4_pipelines.supervise.runtime",
    "cookie": "core4_pipelines.supervise.runtime",
    "core4_op": "core4_pipelines.supervise.runtime",
    "defer": "core4_pipelines.supervise.runtime",
    "collection_key": "core4_pipelines.ingest.assets",
    "download_job": "core4_pipelines.download.job",
    "download_to_proc": "core4_pipelines.download.job",
    "inbox_key": "core4_pipelines.ingest.assets",
    "heartbeat": "core4_pipelines.supervise.runtime",
    "import_job": "core4_pipelines.ingest.job",
    "import_run_config": "core4_pipelines.ingest.job",
    "insert": "core4_pipelines.supervise.runtime",
    "job_config": "core4_pipelines.supervise.runtime",
    "job_properties": "core4_pipelines.properties",
    "proc_folder_sensor": "core4_pipelines.ingest.sensor",
    "progress": "core4_pipelines.supervise.runtime",
    "project_definitions": "core4_pipelines.project.definitions",
    "project_resources": "core4_pipelines.settings",
    "project_settings": "core4_pipelines.settings",
    "BadRow": "core4_pipelines.ingest.readers",
    "ReadNote": "core4_pipelines.ingest.readers",
    "read_csv": "core4_pipelines.ingest.readers",
    "read_json": "core4_pipelines.ingest.readers",
    "read_jsonl": "core4_pipelines.ingest.readers",
    "read_parquet": "core4_pipelines.ingest.readers",
    "read_xlsx": "core4_pipelines.ingest.readers",
    "set_source": "core4_pipelines.supervise.runtime",
}

__all__ = [
    "BadRow",
    "Cookie",
    "FileImport",
    "FolderResource",
    "HttpDownload",
    "ImportBatchConfig",
    "MongoResource",
    "ReadNote",
    "SftpDownload",
    "SftpSource",
    "collection",
    "collection_key",
    "cookie",
    "core4_op",
    "defer",
    "download_job",
    "download_to_proc",
    "fetch_sftp_into_proc",
    "heartbeat",
    "import_job",
    "import_run_config",
    "inbox_key",
    "insert",
    "job_config",
    "job_properties",
    "proc_folder_sensor",
    "progress",
    "project_definitions",
    "project_resources",
    "project_settings",
    "read_csv",
    "read_json",
    "read_jsonl",
    "read_parquet",
    "read_xlsx",
    "set_source",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
