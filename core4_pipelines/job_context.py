"""The running core4 job: its op context, its properties, its own configuration and cookie.

Every helper finds the running op through Dagster's current execution context.
Properties are read with core4's precedence: a run tag ``core4/<name>`` given at
launch, then the values ``project_definitions`` resolved into the job's metadata,
then the cascade's ``job.*`` defaults. ``supervise/runtime.py`` builds on these (and offers them
under its name too).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, TypeVar

import dagster as dg
from pydantic import BaseModel, ValidationError

from core4_pipelines.errors import JobSettingsError, PipelineError
from core4_pipelines.properties import JOB_TAG, configured_section, resolved_properties, tag_property
from core4_pipelines.settings import project_settings
from core4_pipelines.tags import LAUNCH_TAG_PREFIX
from core4_resources.config.job_properties import PROPERTY_NAMES


T = TypeVar("T", bound=BaseModel)


def current_context() -> dg.OpExecutionContext:
    try:
        return dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        raise PipelineError("no op is running here: call this inside an op of a core4 job") from None


def step_key(context: dg.OpExecutionContext) -> str:
    return context.get_step_execution_context().step.key


def qualified_job(context: dg.OpExecutionContext | None = None) -> str:
    """``<project>.<job>`` of the running job (its ``core4/job`` tag)."""
    context = context or current_context()
    name = context.run.tags.get(JOB_TAG)
    if not name:
        raise PipelineError(
            f"job {context.job_name} has no {JOB_TAG} tag: build its Definitions with project_definitions()"
        )
    return name


@functools.lru_cache(maxsize=1)
def _cascade_defaults() -> Mapping[str, Any]:
    from core4_resources.config.settings import load_config

    return dict(load_config().job)


def run_property(name: str, context: dg.OpExecutionContext | None = None) -> Any:
    """A property's value for the running job: launch tag > resolved job metadata > job.* default."""
    context = context or current_context()
    tag = context.run.tags.get(f"{LAUNCH_TAG_PREFIX}{name}")
    if tag is not None:
        return tag_property(name, tag, f"run tag {LAUNCH_TAG_PREFIX}{name} of run {context.run_id}")
    resolved = resolved_properties(context.job_def)
    if name in resolved:
        return resolved[name]
    if name not in PROPERTY_NAMES:
        raise JobSettingsError(f"unknown property {name!r}")
    return _cascade_defaults().get(name)


def job_settings(project: str, job: str, model: type[T], settings=None) -> T:
    """``jobs.<job>`` of the project's configuration (without core4 properties) as ``model``."""
    settings = settings or project_settings(project)
    section = {k: v for k, v in configured_section(settings, job).items() if k not in PROPERTY_NAMES}
    try:
        return model.model_validate(section)
    except ValidationError as exc:
        problems = "; ".join(
            f"{project}.jobs.{job}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise JobSettingsError(f"job {project}.{job}: its configuration does not fit {model.__name__}: {problems}") from None


def job_config(model: type[T]) -> T:
    """The running job's own section of the configuration, as ``model`` (a pydantic model)."""
    project, _, job = qualified_job().partition(".")
    return job_settings(project, job, model)


def cookie(mongo):
    """The running job's persistent key/value store (see :class:`core4_pipelines.job_cookie.Cookie`)."""
    from core4_pipelines.job_cookie import Cookie

    return Cookie(mongo, qualified_job())
