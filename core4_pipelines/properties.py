"""core4 job properties: declaring them, validating them and resolving their precedence.

A job's properties come from, highest first: launch-time run tags (``core4/<name>``,
read at run time by ``runtime.py``), the project's configuration ``jobs.<job>``
(project yaml, local file, env), the code's declaration (:func:`job_properties`),
and the ``job.*`` defaults of the cascade. ``project_definitions`` resolves
them when the code location loads and applies them to the Dagster job: tags,
a ``RetryPolicy``, metadata; ``triggers.py`` adds the schedule and the chain.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg
from dagster._utils.schedules import is_valid_cron_string

from core4_pipelines.errors import JobSettingsError
from core4_pipelines.tags import CHAIN_TAG, JOB_TAG, MAX_RUNTIME_TAG, PRIORITY_TAG, TAG_PREFIX
from core4_resources.config import Settings

# Job metadata.
DECLARED_METADATA = "core4/declared"   # what the code declared
RESOLVED_METADATA = "core4/properties" # the values in effect and where each came from

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TAG_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,50}$")
SCHEDULE_STATES = ("running", "stopped")


def _number(value: Any, *, minimum: float | None = None, exclusive: bool = False, integer: bool = False):
    kind = "an integer" if integer else "a number"
    if minimum is not None:
        kind += f" {'>' if exclusive else '>='} {minimum:g}"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        raise ValueError(f"expected {kind}")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        raise ValueError(f"expected {kind}")
    return value


def _cron(value: Any) -> str:
    if not isinstance(value, str) or not is_valid_cron_string(value):
        raise ValueError("expected a cron expression such as '0 6 * * *' (minute hour day month weekday)")
    return value


def _timezone(value: Any) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (TypeError, ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ValueError("expected an IANA time zone name such as 'UTC' or 'Europe/Berlin'") from None
    return value


def _names(pattern: re.Pattern, what: str) -> Callable[[Any], tuple[str, ...]]:
    def check(value: Any) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) and pattern.match(i) for i in items):
            raise ValueError(f"expected {what}, or a list of them")
        return tuple(items)
    return check


def _schedule_status(value: Any) -> str:
    if value not in SCHEDULE_STATES:
        raise ValueError(f"expected one of {', '.join(SCHEDULE_STATES)}")
    return value


@dataclass(frozen=True)
class _Spec:
    check: Callable[[Any], Any]
    nullable: bool = False


SPECS: dict[str, _Spec] = {
    "attempts": _Spec(lambda v: _number(v, minimum=1, integer=True)),
    "error_time": _Spec(lambda v: _number(v, minimum=0)),
    "defer_time": _Spec(lambda v: _number(v, minimum=0)),
    "defer_max": _Spec(lambda v: _number(v, minimum=0)),
    "wall_time": _Spec(lambda v: _number(v, minimum=0, exclusive=True), nullable=True),
    "zombie_time": _Spec(lambda v: _number(v, minimum=0, exclusive=True)),
    "max_parallel": _Spec(lambda v: _number(v, minimum=1, integer=True), nullable=True),
    "priority": _Spec(lambda v: _number(v, integer=True)),
    "progress_interval": _Spec(lambda v: _number(v, minimum=0, exclusive=True)),
    "schedule": _Spec(_cron, nullable=True),
    "timezone": _Spec(_timezone),
    "schedule_status": _Spec(_schedule_status),
    "chain": _Spec(_names(re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$"),
                          "a job name or PROJECT.JOB")),
    "tag": _Spec(_names(_TAG_NAME, "a tag name (letters, digits, _ . -)")),
}
PROPERTY_NAMES = tuple(SPECS)
# Properties without a `job.*` default in the cascade.
FRAMEWORK_DEFAULTS = {"schedule": None, "timezone": "UTC", "schedule_status": "running", "chain": (), "tag": ()}


@dataclass(frozen=True)
class JobProperties:
    """The core4 properties in effect for one job."""

    attempts: int
    error_time: float
    defer_time: float
    defer_max: float
    wall_time: float | None
    zombie_time: float
    max_parallel: int | None
    priority: int
    progress_interval: float
    schedule: str | None
    timezone: str
    schedule_status: str
    chain: tuple[str, ...]
    tag: tuple[str, ...]
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def values(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("sources")
        return data


def check_property(name: str, value: Any, where: str) -> Any:
    """The validated value, or JobSettingsError naming ``where`` (job and source) and the property."""
    spec = SPECS.get(name)
    if spec is None:
        raise JobSettingsError(f"{where}: unknown property {name!r}; known: {', '.join(PROPERTY_NAMES)}")
    if value is None and spec.nullable:
        return None
    try:
        return spec.check(value)
    except ValueError as exc:
        raise JobSettingsError(f"{where}: property {name} {exc}, got {value!r}") from None


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


def resolve_properties(project: str, job_name: str, declared: Mapping[str, Any], settings: Settings) -> JobProperties:
    """Precedence (later wins): ``job.*`` defaults, the code's declaration, ``jobs.<job>`` of the configuration."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in PROPERTY_NAMES:
        if name in FRAMEWORK_DEFAULTS:
            values[name], sources[name] = FRAMEWORK_DEFAULTS[name], "framework default"
        else:
            values[name] = getattr(settings.job, name)
            sources[name] = f"job.{name} ({settings.sources.get(f'job.{name}', 'defaults')})"
    values.update(_check_all(declared, lambda name: f"job {project}.{job_name} (declared in code)"))
    sources.update({name: "code" for name in declared})
    section = configured_section(settings, job_name)
    configured = {k: v for k, v in section.items() if k in SPECS}

    def where(name: str) -> str:
        source = settings.sources.get(f"{project}.jobs.{job_name}.{name}", "configuration")
        return f"job {project}.{job_name}: {project}.jobs.{job_name}.{name} in {source}"

    values.update(_check_all(configured, where))
    sources.update({name: settings.sources.get(f"{project}.jobs.{job_name}.{name}", "configuration")
                    for name in configured})
    return JobProperties(**values, sources=sources)


def configured_section(settings: Settings, job_name: str) -> Mapping[str, Any]:
    """``jobs.<job>`` of the project's configuration after the cascade ({} when absent)."""
    if settings.project is None:
        return {}
    return settings.project.jobs.get(job_name) or {}


def qualified_chain(project: str, chain: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(entry if "." in entry else f"{project}.{entry}" for entry in chain)


def apply_properties(job: dg.JobDefinition, project: str, props: JobProperties) -> dg.JobDefinition:
    """A copy of ``job`` carrying its properties: tags, RetryPolicy, metadata."""
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
                {"values": _jsonable(props.values()), "sources": dict(props.sources)}
            ),
        },
    }
    if job._run_tags is not None:  # explicit run tags replace `tags` on runs: ours must be there too
        copy["run_tags"] = {**job._run_tags, **tags}
    # core4's attempts: attempts - 1 retries, error_time apart. A job left at the cascade's
    # default keeps whatever retry policy its author gave it.
    if props.attempts > 1:
        copy["op_retry_policy"] = dg.RetryPolicy(max_retries=props.attempts - 1, delay=props.error_time)
    elif not props.sources.get("attempts", "").startswith("job."):
        copy["op_retry_policy"] = None
    # _copy is how Dagster itself derives a job (with_metadata, with_hooks ...); it keeps the
    # graph, resources, executor, config and partitions exactly as the author built them.
    return job._copy(**copy)
