"""A project's configuration and resources: what every part of the library may ask for.

Below the project's wiring (``project/definitions.py``) and the job's run-time view (``job_context.py``),
so that both can use it without importing each other.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import dagster as dg

from core4_resources.config.settings import Settings, load_config
from core4_resources.files.folders import FolderResource
from core4_resources.mongo.resource import MongoResource


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
