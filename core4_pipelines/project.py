"""A project's configuration, resources and Definitions: what ``<project>/definitions.py`` calls.

Finding the projects in folder.home is the operator tool's (``core4_pipelines.coco.discovery``).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Iterable, Mapping

import dagster as dg

from core4_pipelines.project_assets import project_assets
from core4_pipelines.project_jobs import resolve_project_jobs
from core4_resources.config import Settings, load_config
from core4_resources.folders import FolderResource
from core4_resources.logs import configure_library_logging
from core4_resources.mongo import MongoResource


def _package_yaml(project: str) -> str | None:
    spec = importlib.util.find_spec(project)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], f"{project}.yaml")
    return path if os.path.isfile(path) else None


def project_settings(project: str, project_yaml: str | None = None) -> Settings:
    """The config cascade for ``project``, its yaml found next to its package."""
    return load_config(project, project_yaml=project_yaml or _package_yaml(project))


def mongo_url_env_name(project: str) -> str:
    return f"CORE4_MONGO_URL_{project.upper()}"


def project_resources(settings: Settings) -> dict[str, Any]:
    """The resources every project job, sensor and schedule can ask for.

    The MongoDB URL is bound through an environment variable of this process
    (every code server and run worker loads the definitions, and so sets it):
    Dagster then shows the variable's name, never the URL's password, in the
    UI's resource configuration.
    """
    mongo = MongoResource.from_settings(settings)
    if mongo.mongo_url and settings.project is not None:
        variable = mongo_url_env_name(settings.project.name)
        os.environ[variable] = mongo.mongo_url
        mongo = MongoResource(
            mongo_url=dg.EnvVar(variable),
            database=mongo.database,
            server_selection_timeout_ms=mongo.server_selection_timeout_ms,
        )
    return {"folders": FolderResource.from_settings(settings), "mongo": mongo}


def project_definitions(
    project: str,
    *,
    jobs: Iterable[Any] = (),
    sensors: Iterable[dg.SensorDefinition] = (),
    schedules: Iterable[Any] = (),
    assets: Iterable[Any] = (),
    resources: Mapping[str, Any] | None = None,
    project_yaml: str | None = None,
) -> dg.Definitions:
    """``Definitions`` for one project with its ``folders`` and ``mongo`` resources bound.

    Call it from ``<project>/definitions.py``: ``defs = project_definitions("demo", ...)``.
    Configuration comes from the cascade with the project's own yaml included; its
    ``logging`` section sets up the library's loggers in this process. Every job gets its
    core4 properties (see ``project_jobs.py``); invalid ones fail the load here.
    The components declared in ``<project>/defs/`` (``FileImport``, ``HttpDownload``: YAML,
    see ``components.py``) are added to ``jobs``, ``sensors``, ``schedules`` and ``assets``
    and treated exactly as those given here.
    """
    settings = project_settings(project, project_yaml)
    configure_library_logging(settings.logging)
    bound = project_resources(settings)
    bound.update(resources or {})
    declared = _declared_in_defs_folder(project)
    jobs, sensors = [*declared["jobs"], *jobs], [*declared["sensors"], *sensors]
    schedules, assets = [*declared["schedules"], *schedules], [*declared["assets"], *assets]
    # Imports and downloads built for this project (and its configured freshness), with
    # the inbox and collection assets they need.
    graph = project_assets(project, settings, jobs, sensors, schedules)
    # core4 job properties (job_properties(), jobs.<job> in the configuration, job.* defaults)
    # applied to every job; declared schedules and the chain sensor added.
    resolved = resolve_project_jobs(project, settings, graph.jobs, graph.sensors, graph.schedules)
    return dg.Definitions(
        jobs=resolved.jobs,
        sensors=resolved.sensors,
        schedules=resolved.schedules,
        assets=[*graph.assets, *assets],
        resources=bound,
    )


def _declared_in_defs_folder(project: str) -> Mapping[str, list[Any]]:
    from core4_pipelines.components import defs_folder_definitions, definitions_parts

    return definitions_parts(defs_folder_definitions(project))
