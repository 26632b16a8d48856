"""What a core4 job calls while it runs: defer, heartbeat, progress, set_source, collection;
its own config and cookie (from job_context.py, offered here too).

Every helper finds the running op through Dagster's current execution context, so
ops call ``defer("source not ready")`` as core4 jobs called ``self.defer(...)``.
Properties are read with core4's precedence (see job_context.run_property).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

import dagster as dg

from core4_pipelines.errors import PipelineError
from core4_pipelines.job_context import (  # noqa: F401 - public here too, as core4 jobs import them
    LAUNCH_TAG_PREFIX,
    cookie,
    current_context,
    job_config,
    job_settings,
    qualified_job,
    run_property,
    step_key,
)
from core4_pipelines.tags import (  # noqa: F401 - the tags a run reports, importable here as before
    DEFER_AT_TAG,
    FAILURE_KIND_TAG,
    DEFER_COUNT_TAG,
    DEFER_ROOT_TAG,
    DEFER_SINCE_TAG,
    DEFERRED_FROM_TAG,
    HEARTBEAT_TAG,
    MESSAGE_TAG,
    PROGRESS_AT_TAG,
    PROGRESS_MESSAGE_TAG,
    PROGRESS_TAG,
    RELAUNCHED_AS_TAG,
    SOURCE_COUNT_TAG,
    SOURCE_TAG,
    SOURCES_TAG,
    STATE_TAG,
)
from core4_resources.errors import Core4Error

HEARTBEAT_INTERVAL = 5.0                  # seconds between stored heartbeats (less for a short zombie_time)
MAX_SOURCES_TAG_CHARS = 4000              # the full list is in the run's log lines either way
_MARKER = "__core4_op__"

# -- attempts and defer --------------------------------------------------------------------


def _after_failure(exc: Exception) -> dg.RetryRequested | None:
    """The retry request for an op's failure (None: let the failure stand as it is)."""
    if isinstance(exc, dg.Failure) and not exc.allow_retries:
        return None
    context = current_context()
    try:
        attempts = run_property("attempts", context)
        error_time = run_property("error_time", context)
    except Core4Error as problem:  # a bad launch tag or config must not hide the op's own error
        context.log.error(f"no retry for this failure: {problem}")
        return None
    failures = context.retry_number  # earlier failed attempts of this step
    if attempts == 1 and f"{LAUNCH_TAG_PREFIX}attempts" not in context.run.tags:
        return None  # one attempt: the plain failure (an author's own RetryPolicy still applies)
    if failures + 1 < attempts:
        context.log.warning(
            f"attempt {failures + 1} of {attempts} failed ({type(exc).__name__}: {exc}); "
            f"next attempt in {error_time:g}s"
        )
    return dg.RetryRequested(max_retries=attempts - 1, seconds_to_wait=error_time)


@contextlib.contextmanager
def _core4_failures():
    """An op body's failure turned into the retry its job's attempts ask for (or left as it is)."""
    try:
        yield
    except dg.RetryRequested:
        raise
    except Exception as exc:
        _tag_failure_kind(exc)
        retry = _after_failure(exc)
        if retry is None:
            raise
        raise retry from exc


def _tag_failure_kind(exc: Exception) -> None:
    """The run says whether the machine failed it (database, disk) or its content or code."""
    from core4_pipelines.supervise.failures import failure_kind

    if isinstance(exc, dg.Failure) and not exc.allow_retries:
        kind = "error"  # the op itself said: nothing to retry
    else:
        kind = failure_kind(exc)
    try:
        context = current_context()
        context.instance.add_run_tags(context.run.run_id, {FAILURE_KIND_TAG: kind})
    except Exception:  # noqa: BLE001 -- the op's own failure is what the run must report
        pass


def core4_compute(fn: Callable) -> Callable:
    """``fn`` with core4's failure handling: retried per the job's ``attempts``/``error_time``
    (launch tags included), :func:`defer` using no attempt. For a body handed to ``dg.op``
    or ``dg.multi_asset``; :func:`core4_op` is the common case."""
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise PipelineError(f"core4_op {fn.__name__}: async ops are not supported; use dg.op")
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with _core4_failures():
                return (yield from fn(*args, **kwargs))
    else:

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with _core4_failures():
                return fn(*args, **kwargs)

    setattr(wrapper, _MARKER, True)
    return wrapper


def core4_op(fn: Callable | None = None, **op_kwargs: Any):
    """``dg.op`` whose failures are retried per the job's ``attempts``/``error_time`` (launch tags
    included), and which may :func:`defer` (that uses no attempt). Takes the same arguments as
    ``dg.op``.
    """

    def decorate(fn: Callable) -> dg.OpDefinition:
        return dg.op(**op_kwargs)(core4_compute(fn))

    return decorate(fn) if fn is not None else decorate


def _in_core4_op(context: dg.OpExecutionContext) -> bool:
    compute = getattr(context.op_def, "compute_fn", None)
    return bool(getattr(getattr(compute, "decorated_fn", None), _MARKER, False))


def _first_start(context: dg.OpExecutionContext) -> float:
    record = context.instance.get_run_record_by_id(context.run_id)
    if record is not None and record.start_time:
        return record.start_time
    if record is not None:
        return record.create_timestamp.timestamp()
    return time.time()


def defer(message: str) -> NoReturn:
    """Postpone the running job: the run ends now and is launched again after ``defer_time``.

    The run ends tagged ``core4/state=deferred`` (with ``core4/message`` and ``core4/defer_at``),
    so it holds no run slot while it waits; it uses no attempt and is no failure an operator
    has to handle: the project's monitor sensor launches it again with the same config and
    tags (``core4/defer_count`` counting). Once ``defer_max`` seconds have passed since the
    first deferring run first started, the run fails as inactive instead: run tags
    ``core4/state=inactive`` and ``core4/message`` carry the message.
    """
    context = current_context()
    if not _in_core4_op(context):
        raise PipelineError(
            f"defer() in op {context.op_def.name}: declare the op with @core4_op (instead of @dg.op) "
            f"so that a defer does not use one of its attempts"
        )
    defer_time = run_property("defer_time", context)
    defer_max = run_property("defer_max", context)
    tags = context.run.tags
    since = _float_tag(tags, DEFER_SINCE_TAG) or _first_start(context)
    elapsed = time.time() - since
    if elapsed >= defer_max:
        context.instance.add_run_tags(context.run_id, {STATE_TAG: "inactive", MESSAGE_TAG: message[:500]})
        raise dg.Failure(
            description=(
                f"inactive: still deferring {elapsed:.0f}s after the run first started "
                f"(defer_max {defer_max:g}s): {message}"
            ),
            metadata={"state": "inactive", "message": message, "defer_max": float(defer_max)},
            allow_retries=False,
        )
    count = int(_float_tag(tags, DEFER_COUNT_TAG) or 0) + 1
    again = time.time() + defer_time
    context.instance.add_run_tags(context.run_id, {
        STATE_TAG: "deferred", MESSAGE_TAG: message[:500],
        DEFER_AT_TAG: f"{again:.3f}", DEFER_SINCE_TAG: f"{since:.3f}",
    })
    raise dg.Failure(
        description=(
            f"deferred: {message}; launched again in {defer_time:g}s (defer {count}; inactive "
            f"{max(0.0, defer_max - elapsed):.0f}s from now, after defer_max {defer_max:g}s)"
        ),
        metadata={"state": "deferred", "message": message, "defer_at": again, "defer_count": count},
        allow_retries=False,  # a defer is no failure: it uses no attempt
    )


def _float_tag(tags: Mapping[str, str], key: str) -> float | None:
    try:
        return float(tags[key])
    except (KeyError, ValueError):
        return None


# -- what this process knows of a run ------------------------------------------------------


@dataclass
class RunState:
    """What this process remembers of a run between calls: when it last stored a heartbeat or
    a progress update (to store them at most every few seconds), and its sources."""

    heartbeat_every: float | None = None
    last_heartbeat: float | None = None
    last_progress: dict[str, float] = field(default_factory=dict)  # step key -> monotonic time
    sources: list[str] | None = None  # every source set, in order (None: not loaded yet)
    current_source: str | None = None


class RecentRuns:
    """The state of the runs this process executed lately, the oldest forgotten first: a run
    worker executes one run, an in-process executor (a test, ``coco enqueue --local``) many."""

    def __init__(self, keep: int = 32) -> None:
        self._keep = keep
        self._runs: collections.OrderedDict[str, RunState] = collections.OrderedDict()

    def of(self, run_id: str) -> RunState:
        state = self._runs.get(run_id)
        if state is None:
            state = self._runs[run_id] = RunState()
            while len(self._runs) > self._keep:
                self._runs.popitem(last=False)
        else:
            self._runs.move_to_end(run_id)
        return state

    def get(self, run_id: str) -> RunState | None:
        return self._runs.get(run_id)


RUNS = RecentRuns()


# -- heartbeat -------------------------------------------------------------------------------


def heartbeat(context: dg.OpExecutionContext | None = None) -> bool:
    """Tell the zombie monitor this run is alive: run tag ``core4/heartbeat``, stored at most
    every few seconds (cheap to call per file or per chunk). Returns whether it was stored;
    False also where no op runs (a thread of its own, a plain function in a test).

    A run whose last heartbeat (or start) is older than its ``zombie_time`` is flagged
    ``core4/state=zombie`` by the project's monitor sensor, and stopped with
    ``zombie_action: kill``. :func:`progress` beats too.
    """
    if context is None:
        try:
            context = dg.OpExecutionContext.get()
        except dg.DagsterInvariantViolationError:
            return False
    run_id = context.run_id
    now = time.time()
    state = RUNS.of(run_id)
    if state.heartbeat_every is None:
        try:  # a short zombie_time needs more frequent beats
            state.heartbeat_every = min(HEARTBEAT_INTERVAL, float(run_property("zombie_time", context)) / 3)
        except Core4Error:
            state.heartbeat_every = HEARTBEAT_INTERVAL
    if state.last_heartbeat is not None and now - state.last_heartbeat < state.heartbeat_every:
        return False
    state.last_heartbeat = now
    context.instance.add_run_tags(run_id, {HEARTBEAT_TAG: f"{now:.3f}"})
    return True


# -- progress ------------------------------------------------------------------------------


def progress(fraction: float, message: str = "") -> bool:
    """Report progress (0..1) and a message: a log line, and run tags an operator sees in the UI.

    Stored at most every ``progress_interval`` seconds (the final 1.0 always); returns whether
    this update was stored.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise PipelineError(f"progress({fraction!r}): expected a fraction from 0 to 1")
    context = current_context()
    heartbeat(context)
    stored, step = RUNS.of(context.run_id).last_progress, step_key(context)
    now = time.monotonic()
    last = stored.get(step)
    if last is not None and now - last < run_property("progress_interval", context) and fraction < 1:
        return False
    stored[step] = now
    percent = f"{fraction * 100:.0f}%"
    context.log.info(f"progress {percent}" + (f": {message}" if message else ""))
    context.instance.add_run_tags(
        context.run_id,
        {
            PROGRESS_TAG: percent,
            PROGRESS_MESSAGE_TAG: message[:200],
            PROGRESS_AT_TAG: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )
    return True


# -- sources and lineage -------------------------------------------------------------------


def _known_sources(context: dg.OpExecutionContext) -> list[str]:
    state = RUNS.of(context.run_id)
    if state.sources is None:
        # Other steps (another process) may have recorded sources already.
        run = context.instance.get_run_by_id(context.run_id)
        stored = (run.tags if run else {}).get(SOURCES_TAG)
        try:
            state.sources = list(json.loads(stored)) if stored else []
        except ValueError:
            state.sources = []
    return state.sources


def set_sources(names: Iterable[str], current: str | None = None) -> None:
    """Record several sources at once (one tag update); the last becomes the current one."""
    context = current_context()
    known = _known_sources(context)
    state = RUNS.of(context.run_id)
    new: list[str] = []
    for name in names:
        base = os.path.basename(os.fspath(name))
        if not base:
            raise PipelineError(f"set_source({name!r}): a source needs a file name")
        state.current_source = base
        if base not in known:
            known.append(base)
            new.append(os.fspath(name))
    added = bool(new)
    # One log line for all of them: an event per file is what a batch of small files cannot afford.
    if len(new) == 1:
        context.log.info(f"source: {new[0]}")
    elif new:
        context.log.info(f"sources ({len(new)}): " + ", ".join(new))
    if current is not None:
        state.current_source = os.path.basename(current)
    tags = {SOURCE_TAG: state.current_source or ""}
    if added:
        listing = json.dumps(known)
        if len(listing) > MAX_SOURCES_TAG_CHARS:
            shown = []
            for name in known:
                if len(json.dumps(shown + [name, "..."])) > MAX_SOURCES_TAG_CHARS:
                    break
                shown.append(name)
            listing = json.dumps(shown + ["..."])
        tags.update({SOURCES_TAG: listing, SOURCE_COUNT_TAG: str(len(known))})
    context.instance.add_run_tags(context.run_id, tags)


def set_source(name: str) -> None:
    """The input the job works on now: stamped as ``_src`` on writes and kept in the run's lineage."""
    set_sources([name])


def current_source() -> str:
    context = current_context()
    state = RUNS.get(context.run_id)
    source = state.current_source if state else None
    if not source:
        raise PipelineError(f"run {context.run_id}: no source set; call set_source(name) before writing")
    return source


def insert(mongo, collection: str, documents: Iterable[Mapping[str, Any]], **options: Any):
    """``mongo.insert_stamped`` with the current source and the run id (core4's stamped write)."""
    context = current_context()
    return mongo.insert_stamped(collection, documents, source=current_source(), job_id=context.run_id, **options)


def collection(mongo, name: str):
    """The running job's collection ``name`` in ``mongo``'s database, every write stamped.

    core4's job collections: inserts, replacements and updates (``bulk_write`` too)
    carry ``_src`` (the current source) and ``_job_id`` (the run id); a write before
    ``set_source`` is refused. ``mongo.collection(name)`` stays raw pymongo.
    """
    from core4_resources.mongo.stamped import StampedCollection

    context = current_context()
    run_id = context.run_id
    state = RUNS.of(run_id)
    return StampedCollection(mongo.collection(name), lambda: state.current_source, run_id)
