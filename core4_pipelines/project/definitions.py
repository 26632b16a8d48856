"""A project's configuration, resources and Definitions: what ``<project>/definitions.py`` calls.

Finding the projects in folder.home is the operator tool's (``core4_pipelines.coco.discovery``).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import dagster as dg

from core4_pipelines.alerts.sensor import alerts_sensor, ui_address, watched_imports
from core4_pipelines.project.components import definitions_parts, defs_folder_definitions
from core4_pipelines.project.assets import project_assets
from core4_pipelines.project.jobs import resolve_project_jobs
from core4_pipelines.settings import project_resources, project_settings
from core4_resources.logs import configure_library_logging


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
    core4 properties (see ``project/jobs.py``); invalid ones fail the load here.
    The components declared in ``<project>/defs/`` (``FileImport``, ``HttpDownload``: YAML,
    see ``project/components.py``) are added to ``jobs``, ``sensors``, ``schedules`` and ``assets``
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
    alerting = []
    if settings.alerts:  # the local file's rules and the project's own (the configuration's alerts:)
        built = [job for job in resolved.jobs if isinstance(job, dg.JobDefinition)]
        alerting.append(alerts_sensor(project, settings.alerts, watched_imports(project, built),
                                      [job.name for job in built], ui_address(settings.dagster.host, settings.dagster.port)))
    return dg.Definitions(
        jobs=resolved.jobs,
        sensors=[*resolved.sensors, *alerting],
        schedules=resolved.schedules,
        assets=[*graph.assets, *assets],
        resources=bound,
    )


def _declared_in_defs_folder(project: str) -> Mapping[str, list[Any]]:
    return definitions_parts(defs_folder_definitions(project))
