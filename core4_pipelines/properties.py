"""core4 job properties: declaring them, validating them and resolving their precedence.

A job's properties come from, highest first: launch-time run tags (``core4/<name>``,
read at run time by ``supervise/runtime.py``), the project's configuration ``jobs.<job>``
(project yaml, local file, env), the code's declaration (:func:`job_properties`),
and the ``job.*`` defaults of the cascade. ``project_definitions`` resolves
them when the code location loads and applies them to the Dagster job: tags,
a ``RetryPolicy``, metadata; ``supervise/triggers.py`` adds the schedule and the chain.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from core4_pipelines._dagster import derive_job, explicit_run_tags
from core4_pipelines.errors import JobSettingsError
from core4_pipelines.tags import CHAIN_TAG, JOB_TAG, MAX_RUNTIME_TAG, PRIORITY_TAG, TAG_PREFIX
from core4_resources.config.settings import Settings
from core4_resources.config.job_properties import PROPERTY_NAMES, JobProperties, check_value

# Job metadata.
DECLARED_METADATA = "core4/declared"   # what the code declared
RESOLVED_METADATA = "core4/properties" # the values in effect and where each came from


def check_property(name: str, value: Any, where: str) -> Any:
    """The value validated by :class:`JobProperties`, or JobSettingsError naming ``where``
    (job and source) and the property."""
    if name not in PROPERTY_NAMES:
        raise JobSettingsError(f"{where}: unknown property {name!r}; known: {', '.join(PROPERTY_NAMES)}")
    try:
        return check_value(name, value)
    except ValueError as exc:
        raise JobSettingsError(f"{where}: property {name} {exc}, got {value!r}") from None


def tag_property(name: str, text: str, where: str) -> Any:
    """A launch-time run tag ``core4/<name>``: its text read as JSON (else as a string) and
    checked like every other source of the property."""
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    return check_property(name, value, where)


def _check_all(values: Mapping[str, Any], where: Callable[[str], str]) -> dict[str, Any]:
    checked, problems = {}, []
    for name, value in values.items():
        try:
            checked[name] = check_property(name, value, where(name))
        except JobSettingsError as exc:
            problems.append(str(exc))
    if problems:
        raise JobSettingsError(problems[0] if len(problems) == 1 else "\n".join(problems))
    return checked


def job_properties(**declared: Any) -> Callable[[dg.JobDefinition], dg.JobDefinition]:
    """Declare core4 properties on a job: ``@job_properties(attempts=3, schedule="0 6 * * *")``
    above ``@dg.job``. Values are checked now; the project's configuration may override them.
    """

    def declare(job: dg.JobDefinition) -> dg.JobDefinition:
        if not isinstance(job, dg.JobDefinition):
            raise JobSettingsError(f"@job_properties goes above @dg.job, not on {type(job).__name__}")
        return with_declared(job, declared)

    return declare


def with_declared(job: dg.JobDefinition, declared: Mapping[str, Any]) -> dg.JobDefinition:
    checked = _check_all(declared, lambda name: f"job {job.name} (declared in code)")
    merged = {**declared_properties(job), **checked}
    return job.with_metadata({**job.metadata, DECLARED_METADATA: dg.MetadataValue.json(_jsonable(merged))})


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _metadata_dict(job: dg.JobDefinition, key: str) -> dict[str, Any]:
    value = job.metadata.get(key)
    data = getattr(value, "data", value)
    return dict(data) if isinstance(data, Mapping) else {}


def declared_properties(job: dg.JobDefinition) -> dict[str, Any]:
    return _metadata_dict(job, DECLARED_METADATA)


def resolved_properties(job: dg.JobDefinition) -> dict[str, Any]:
    """The values project_definitions put into effect (empty for a job it did not resolve)."""
    return _metadata_dict(job, RESOLVED_METADATA).get("values", {})


def resolve_properties(
    project: str, job_name: str, declared: Mapping[str, Any], settings: Settings
) -> tuple[JobProperties, dict[str, str]]:
    """The properties in effect and where each came from. Precedence (later wins): the
    ``job.*`` defaults, the code's declaration, ``jobs.<job>`` of the configuration."""
    defaults = settings.job
    values = {name: getattr(defaults, name) for name in PROPERTY_NAMES}
    sources = {
        name: f"job.{name} ({settings.sources.get(f'job.{name}', 'defaults')})"
        if name in defaults.model_fields_set else "framework default"
        for name in PROPERTY_NAMES
    }
    values.update(_check_all(declared, lambda name: f"job {project}.{job_name} (declared in code)"))
    sources.update({name: "code" for name in declared})
    section = configured_section(settings, job_name)
    configured = {k: v for k, v in section.items() if k in PROPERTY_NAMES}

    def where(name: str) -> str:
        source = settings.sources.get(f"{project}.jobs.{job_name}.{name}", "configuration")
        return f"job {project}.{job_name}: {project}.jobs.{job_name}.{name} in {source}"

    values.update(_check_all(configured, where))
    sources.update({name: settings.sources.get(f"{project}.jobs.{job_name}.{name}", "configuration")
                    for name in configured})
    return JobProperties.model_validate(values), sources


def configured_section(settings: Settings, job_name: str) -> Mapping[str, Any]:
    """``jobs.<job>`` of the project's configuration after the cascade ({} when absent)."""
    if settings.project is None:
        return {}
    return settings.project.jobs.get(job_name) or {}


def qualified_chain(project: str, chain: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(entry if "." in entry else f"{project}.{entry}" for entry in chain)


def apply_properties(
    job: dg.JobDefinition, project: str, props: JobProperties, sources: Mapping[str, str]
) -> dg.JobDefinition:
    """A copy of ``job`` carrying its properties (``sources``: where each came from): tags,
    RetryPolicy, metadata."""
    tags = {JOB_TAG: f"{project}.{job.name}"}
    if props.priority:
        tags[PRIORITY_TAG] = str(props.priority)
    if props.wall_time is not None:
        tags[MAX_RUNTIME_TAG] = f"{props.wall_time:g}"
    if props.chain:
        tags[CHAIN_TAG] = ",".join(qualified_chain(project, props.chain))
    tags.update({f"{TAG_PREFIX}{name}": "" for name in props.tag})
    copy: dict[str, Any] = {
        "tags": {**job.tags, **tags},
        "metadata": {
            **job.metadata,
            RESOLVED_METADATA: dg.MetadataValue.json(
                {"values": props.model_dump(mode="json"), "sources": dict(sources)}
            ),
        },
    }
    run_tags = explicit_run_tags(job)
    if run_tags is not None:  # explicit run tags replace `tags` on runs: ours must be there too
        copy["run_tags"] = {**run_tags, **tags}
    # core4's attempts: attempts - 1 retries, error_time apart. A job left at the cascade's
    # default keeps whatever retry policy its author gave it.
    if props.attempts > 1:
        copy["op_retry_policy"] = dg.RetryPolicy(max_retries=props.attempts - 1, delay=props.error_time)
    elif not sources.get("attempts", "").startswith("job."):
        copy["op_retry_policy"] = None
    # Derived as Dagster derives a job itself (with_metadata, with_hooks ...): graph, resources,
    # executor, config and partitions stay exactly as the author built them.
    return derive_job(job, **copy)
