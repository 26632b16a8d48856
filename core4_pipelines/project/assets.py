"""A project's asset graph: the inbox and collection assets behind its import and download jobs.

``import_job`` and ``download_job`` build their asset jobs at once (so they run and can be
targeted like any job) for the project they guess; here, while the project's Definitions
are built, each is built again when the project or the configured freshness differ, and
the assets they need are collected: every import's collection (with its checks), its
inbox (as an external asset unless a download of the project materializes it), and each
download's source (an external asset upstream of the inbox it materializes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from core4_pipelines.errors import JobSettingsError
from core4_pipelines.ingest.assets import assets_of
from core4_pipelines.project.jobs import jobs_by_name, retarget
from core4_pipelines.properties import configured_section, declared_properties, with_declared
from core4_resources.config.settings import Settings
from core4_resources.config.job_properties import check_value


@dataclass
class ProjectAssets:
    jobs: list[Any] = field(default_factory=list)
    sensors: list[Any] = field(default_factory=list)
    schedules: list[Any] = field(default_factory=list)
    assets: list[Any] = field(default_factory=list)


def _freshness(settings: Settings, project: str, job: dg.JobDefinition, built: Any) -> Any:
    configured = configured_section(settings, job.name).get("freshness")
    if configured is not None:
        try:
            return check_value("freshness", configured)
        except ValueError as exc:
            source = settings.sources.get(f"{project}.jobs.{job.name}.freshness", "the configuration")
            raise JobSettingsError(f"{project}.jobs.{job.name}.freshness in {source}: {exc}") from None
    return declared_properties(job).get("freshness", built)


def _again(job: dg.JobDefinition, new: dg.JobDefinition) -> dg.JobDefinition:
    declared = declared_properties(job)  # @job_properties put on the job after import_job()
    return with_declared(new, declared) if declared else new


def project_assets(
    project: str, settings: Settings, jobs: Iterable[Any], sensors: Iterable[Any], schedules: Iterable[Any]
) -> ProjectAssets:
    jobs, sensors, schedules = list(jobs), list(sensors), list(schedules)
    every = jobs_by_name(jobs, sensors, schedules)

    rebuilt: dict[str, dg.JobDefinition] = {}
    moved_inboxes: dict[dg.AssetKey, dg.AssetKey] = {}
    for name, job in every.items():
        found = assets_of(job)
        if found is None or found.collection is None:
            continue
        freshness = _freshness(settings, project, job, found.freshness)
        if found.project != project or freshness != found.freshness:
            new = _again(job, found.rebuild(project=project, freshness=freshness))
            rebuilt[name] = new
            moved_inboxes[found.inbox.key] = assets_of(new).inbox.key
    for name, job in every.items():
        found = assets_of(job)
        if found is not None and found.produces in moved_inboxes:
            rebuilt[name] = _again(job, found.rebuild(produces=moved_inboxes[found.produces]))
    final = {name: rebuilt.get(name, job) for name, job in every.items()}

    result = ProjectAssets(
        jobs=[rebuilt.get(j.name, j) if isinstance(j, dg.JobDefinition) else j for j in jobs],
        sensors=[retarget(s, final) for s in sensors],
        schedules=[retarget(s, final) for s in schedules],
    )
    produced: dict[dg.AssetKey, str] = {}
    collections: dict[dg.AssetKey, str] = {}
    specs: dict[dg.AssetKey, tuple[str, dg.AssetSpec]] = {}
    inboxes = []
    for name, job in final.items():
        found = assets_of(job)
        if found is None:
            continue
        if found.produces is not None:
            if found.produces in produced:
                raise JobSettingsError(
                    f"project {project}: jobs {produced[found.produces]} and {name} both download into "
                    f"{found.produces.to_user_string()}; one download job per import"
                )
            produced[found.produces] = name
        else:
            key = dg.AssetKey([project, found.collection])
            if key in collections:
                raise JobSettingsError(
                    f"project {project}: import jobs {collections[key]} and {name} both import into the "
                    f"collection {found.collection}; give one of them another collection"
                )
            collections[key] = name
            inboxes.append(found.inbox)
        result.assets += [a for a in found.assets if _new_spec(project, name, a, specs)]
    result.assets += [inbox for inbox in inboxes if inbox.key not in produced]
    return result


def _new_spec(project: str, job: str, asset: Any, specs: dict[dg.AssetKey, tuple[str, dg.AssetSpec]]) -> bool:
    """False for an AssetSpec already added (one source shared by two downloads); an error for
    another spec under a key already taken."""
    if not isinstance(asset, dg.AssetSpec):
        return True
    if asset.key not in specs:
        specs[asset.key] = (job, asset)
        return True
    first, spec = specs[asset.key]
    if spec != asset:
        raise JobSettingsError(
            f"project {project}: jobs {first} and {job} declare different assets {asset.key.to_user_string()}; "
            f"pass the same AssetSpec to both, or give one another key"
        )
    return False
