"""Dagster definitions for core4-style projects: sensors, jobs, projects as code locations.

This package is the library a project imports. The operator tool (`coco`) lives in
``core4_pipelines.coco``; nothing here imports it. The public names load lazily
(PEP 562), so a process that only needs a light module (``coco serve`` reading
``core4_pipelines.tags``) does not import Dagster with the package.
"""

from __future__ import annotations

import importlib
import sys
import types
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
    from core4_pipelines.components import FileImport, HttpDownload
    from core4_pipelines.cookie import Cookie
    from core4_pipelines.downloads import download_job, download_to_proc
    from core4_pipelines.import_assets import collection_key, inbox_key
    from core4_pipelines.jobs import ImportBatchConfig, import_job, import_run_config
    from core4_pipelines.project import project_definitions
    from core4_pipelines.settings import project_resources, project_settings
    from core4_pipelines.properties import job_properties
    from core4_pipelines.readers import read_csv, read_jsonl
    from core4_pipelines.runtime import (
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
    from core4_pipelines.sensors import proc_folder_sensor
    from core4_resources.folders import FolderResource
    from core4_resources.mongo import MongoResource

# public name -> the module that defines it
_EXPORTS = {
    "Cookie": "core4_pipelines.cookie",
    "FileImport": "core4_pipelines.components",
    "HttpDownload": "core4_pipelines.components",
    "FolderResource": "core4_resources.folders",
    "ImportBatchConfig": "core4_pipelines.jobs",
    "MongoResource": "core4_resources.mongo",
    "collection": "core4_pipelines.runtime",
    "cookie": "core4_pipelines.runtime",
    "core4_op": "core4_pipelines.runtime",
    "defer": "core4_pipelines.runtime",
    "collection_key": "core4_pipelines.import_assets",
    "download_job": "core4_pipelines.downloads",
    "download_to_proc": "core4_pipelines.downloads",
    "inbox_key": "core4_pipelines.import_assets",
    "heartbeat": "core4_pipelines.runtime",
    "import_job": "core4_pipelines.jobs",
    "import_run_config": "core4_pipelines.jobs",
    "insert": "core4_pipelines.runtime",
    "job_config": "core4_pipelines.runtime",
    "job_properties": "core4_pipelines.properties",
    "proc_folder_sensor": "core4_pipelines.sensors",
    "progress": "core4_pipelines.runtime",
    "project_definitions": "core4_pipelines.project",
    "project_resources": "core4_pipelines.settings",
    "project_settings": "core4_pipelines.settings",
    "read_csv": "core4_pipelines.readers",
    "read_jsonl": "core4_pipelines.readers",
    "set_source": "core4_pipelines.runtime",
}

__all__ = [
    "Cookie",
    "FileImport",
    "FolderResource",
    "HttpDownload",
    "ImportBatchConfig",
    "MongoResource",
    "collection",
    "collection_key",
    "cookie",
    "core4_op",
    "defer",
    "download_job",
    "download_to_proc",
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
    "read_jsonl",
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


class _Library(types.ModuleType):
    """Keeps a public name that is also a submodule's name (``cookie``: runtime's function,
    not the module ``core4_pipelines.cookie``) from being replaced when the submodule loads."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Library
