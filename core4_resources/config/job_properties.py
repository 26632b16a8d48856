"""core4 job properties: one pydantic model for every place a property is written.

:class:`JobProperties` is the single source of each property's type, bounds and
error text. It is used for

- the cascade's ``job:`` section (``config.JobSection``, the defaults of every job),
- a job's declaration in code (``job_properties(...)``: only the given fields),
- ``jobs.<job>`` of a project's configuration (only the given fields),
- launch-time run tags ``core4/<name>`` (one field each).

A field without a default here takes its default from the cascade's ``job:`` section:
the packaged ``core4.yaml`` holds those values (and so lists which properties the
cascade sets). The others are declared per job only; their defaults are here.
No Dagster at import time: ``config.py`` imports this module in every process.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

__all__ = ["STRICT", "JobProperties", "PROPERTY_NAMES", "check_value", "expected"]

# strict: a string where a number belongs is an error (ints still pass as floats)
STRICT = ConfigDict(frozen=True, strict=True, extra="forbid", allow_inf_nan=False)

CRON = "a cron expression such as '0 6 * * *' (minute hour day month weekday)"
TIMEZONE = "an IANA time zone name such as 'UTC' or 'Europe/Berlin'"
SCHEDULE_STATES = ("running", "stopped")
ZOMBIE_ACTIONS = ("flag", "kill")
CHAIN = "a job name or PROJECT.JOB, or a list of them"
TAG = "a tag name (letters, digits, _ . -), or a list of them"
_CHAIN_ENTRY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_TAG_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,50}$")


def _cron(value: str | None) -> str | None:
    if value is None:
        return None
    import dagster as dg  # Dagster only where a schedule is checked

    try:  # exactly the cron strings Dagster's schedules take
        dg.ScheduleDefinition(name="cron_check", cron_schedule=value, job_name="cron_check")
    except dg.DagsterInvalidDefinitionError:
        raise ValueError(CRON) from None
    return value


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (TypeError, ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ValueError(TIMEZONE) from None
    return value


def _names(pattern: re.Pattern, what: str) -> Callable[[Any], tuple[str, ...]]:
    """One name or a list of them, each matching ``pattern``, as a tuple."""

    def names(value: Any) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) and pattern.match(i) for i in items):
            raise ValueError(what)
        return tuple(items)

    return names


class JobProperties(BaseModel):
    """The core4 properties of one job (see README, "Job properties")."""

    model_config = STRICT

    # Defaults: the cascade's job.* (packaged core4.yaml, which also says what each means).
    attempts: int = Field(ge=1)
    error_time: float = Field(ge=0)
    defer_time: float = Field(ge=0)
    defer_max: float = Field(ge=0)
    wall_time: float | None = Field(gt=0)
    zombie_time: float = Field(gt=0)
    zombie_action: Literal["flag", "kill"] = Field(description=f"one of {', '.join(ZOMBIE_ACTIONS)}")
    max_parallel: int | None = Field(ge=1)
    priority: int
    progress_interval: float = Field(gt=0)
    # Declared per job only.
    schedule: Annotated[str | None, AfterValidator(_cron)] = Field(None, description=CRON)
    timezone: Annotated[str, AfterValidator(_timezone)] = Field("UTC", description=TIMEZONE)
    schedule_status: Literal["running", "stopped"] = Field(
        "running", description=f"one of {', '.join(SCHEDULE_STATES)}")
    chain: Annotated[tuple[str, ...], BeforeValidator(_names(_CHAIN_ENTRY, CHAIN))] = Field(
        (), description=CHAIN)
    tag: Annotated[tuple[str, ...], BeforeValidator(_names(_TAG_NAME, TAG))] = Field((), description=TAG)
    # An import's collection asset is overdue when not materialized for this many seconds.
    freshness: float | None = Field(None, gt=0)


PROPERTY_NAMES = tuple(JobProperties.model_fields)


def expected(field, unset: str = ", or ~ (unset)") -> str:
    """What a field accepts, in words: its description, else from its annotation and bounds
    (``unset`` is added for an optional one). config.py words its errors with it, too."""
    if field.description:
        return field.description
    annotation, optional = field.annotation, False
    if get_origin(annotation) in (Union, type(int | None)):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional, annotation = len(args) < len(get_args(annotation)), args[0]
    text = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))
    bounds = {attr: getattr(m, attr) for m in field.metadata
              for attr in ("gt", "ge", "lt", "le") if getattr(m, attr, None) is not None}
    if "ge" in bounds and "le" in bounds:
        text += f" from {bounds['ge']} to {bounds['le']}"
    else:
        text += "".join(f" {op} {bounds[attr]}" for attr, op in
                        (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")) if attr in bounds)
    return text + (unset if optional else "")


@functools.cache
def _field_adapter(name: str) -> TypeAdapter:
    """The model's own validation of one field (type, bounds, validators), alone."""
    field = JobProperties.model_fields[name]
    annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return TypeAdapter(annotation, config=ConfigDict(strict=True, allow_inf_nan=False))


def check_value(name: str, value: Any) -> Any:
    """``value`` validated as the property ``name`` (one of PROPERTY_NAMES), or ValueError
    ``expected ...``. A whole number given for a seconds property stays an int (JSON, tags)."""
    try:
        checked = _field_adapter(name).validate_python(value)
    except ValueError:  # pydantic's ValidationError is one
        raise ValueError(f"expected {expected(JobProperties.model_fields[name], unset='')}") from None
    if isinstance(checked, float) and type(value) is int:
        return value
    return checked
