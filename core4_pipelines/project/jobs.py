"""A project's jobs with their core4 properties in effect: what project_definitions registers.

Every ``JobDefinition`` of the project (given as a job, or as the target of a sensor or
schedule) is resolved (defaults < code < configuration) and replaced by a copy carrying
its properties; sensors and schedules are pointed at the copies, the declared schedules,
the project's chain sensor and its monitor sensor (zombies, deferred runs) are added.
Invalid properties are one error naming every job and property at fault, raised while
the code location loads.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from core4_pipelines.errors import JobSettingsError
from core4_pipelines.supervise.monitor import monitor_sensor
from core4_pipelines.properties import apply_properties, declared_properties, resolve_properties
from core4_pipelines.supervise.triggers import chain_sensor, job_schedule
from core4_resources.config.settings import Settings
from core4_resources.config.job_properties import PROPERTY_NAMES, JobProperties


@dataclass
class ProjectJobs:
    jobs: list[Any] = field(default_factory=list)
    sensors: list[Any] = field(default_factory=list)
    schedules: list[Any] = field(default_factory=list)
    properties: dict[str, JobProperties] = field(default_factory=dict)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)  # job -> property -> where from


def job_targets(definition: Any) -> list[dg.JobDefinition]:
    """The built jobs a schedule or sensor targets."""
    if isinstance(definition, dg.ScheduleDefinition):
        return [definition.job] if definition.has_job and isinstance(definition.job, dg.JobDefinition) else []
    if isinstance(definition, dg.SensorDefinition) and definition.has_jobs:
        return [job for job in definition.jobs if isinstance(job, dg.JobDefinition)]
    return []


def jobs_by_name(jobs: Iterable[Any], sensors: Iterable[Any], schedules: Iterable[Any]) -> dict[str, dg.JobDefinition]:
    """Every built job of a project by name: those given, then those only a sensor or schedule targets."""
    every: dict[str, dg.JobDefinition] = {}
    for job in [*jobs, *(t for d in [*sensors, *schedules] for t in job_targets(d))]:
        if isinstance(job, dg.JobDefinition):
            every.setdefault(job.name, job)
    return every


def retarget(definition: Any, resolved: dict[str, dg.JobDefinition]) -> Any:
    """``definition`` (a schedule or sensor) pointed at the jobs of ``resolved`` with the same names."""
    if isinstance(definition, dg.ScheduleDefinition):
        if definition.has_job and definition.job.name in resolved:
            return definition.with_updated_job(resolved[definition.job.name])
        return definition
    if isinstance(definition, dg.SensorDefinition) and definition.has_jobs:
        if len(definition.jobs) != len(definition.targets):
            return definition  # some targets are job names: nothing to replace there
        jobs = [resolved.get(job.name, job) for job in definition.jobs]
        if any(new is not old for new, old in zip(jobs, definition.jobs)):
            with warnings.catch_warnings():
                # Dagster's own copy passes its beta `owners` parameter along and warns about it.
                warnings.simplefilter("ignore", dg.BetaWarning)
                return definition.with_updated_jobs(jobs)
    return definition


def _check_chain(project: str, name: str, props: JobProperties, names: set[str]) -> list[str]:
    problems = []
    for entry in props.chain:
        owner, _, target = entry.rpartition(".")
        if owner in ("", project) and target not in names:
            problems.append(
                f"job {project}.{name}: property chain names {entry!r}, which is no job of {project} "
                f"(jobs: {', '.join(sorted(names))}); write PROJECT.JOB for a job of another project"
            )
    return problems


def resolve_project_jobs(
    project: str,
    settings: Settings,
    jobs: Iterable[Any] = (),
    sensors: Iterable[Any] = (),
    schedules: Iterable[Any] = (),
) -> ProjectJobs:
    jobs, sensors, schedules = list(jobs), list(sensors), list(schedules)
    originals = jobs_by_name(jobs, sensors, schedules)

    result = ProjectJobs()
    problems: list[str] = []
    for name, job in originals.items():
        try:
            result.properties[name], result.sources[name] = resolve_properties(
                project, name, declared_properties(job), settings)
        except JobSettingsError as exc:
            problems.append(str(exc))
    for name, props in result.properties.items():
        problems += _check_chain(project, name, props, set(originals))
    configured = settings.project.jobs if settings.project else {}
    for name, section in configured.items():
        keys = sorted(k for k in (section or {}) if k in PROPERTY_NAMES)
        if name not in originals and keys:
            source = settings.sources.get(f"{project}.jobs.{name}.{keys[0]}", "the configuration")
            problems.append(
                f"{project}.jobs.{name} in {source} sets {', '.join(keys)}, but project {project} has no "
                f"job {name!r} (jobs: {', '.join(sorted(originals)) or 'none'})"
            )
    if problems:
        raise JobSettingsError(
            f"project {project}: {len(problems)} invalid job properties:\n" + "\n".join(f"  {p}" for p in problems)
            if len(problems) > 1
            else f"project {project}: {problems[0]}"
        )

    resolved = {name: apply_properties(job, project, result.properties[name], result.sources[name])
                for name, job in originals.items()}
    result.jobs = [resolved.get(job.name, job) if isinstance(job, dg.JobDefinition) else job for job in jobs]
    listed = {job.name for job in result.jobs if isinstance(job, dg.JobDefinition)}
    result.jobs += [job for name, job in resolved.items() if name not in listed]
    result.sensors = [retarget(sensor, resolved) for sensor in sensors]
    result.schedules = [retarget(schedule, resolved) for schedule in schedules]
    for name, job in resolved.items():
        if result.properties[name].schedule:
            result.schedules.append(job_schedule(job, project, result.properties[name]))
    if resolved:
        result.sensors.append(chain_sensor(project, list(resolved.values())))
        defaults = {"zombie_time": settings.job.zombie_time, "zombie_action": settings.job.zombie_action}
        result.sensors.append(monitor_sensor(project, list(resolved.values()), defaults))
    return result
