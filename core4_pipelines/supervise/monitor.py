"""The project's monitor sensor: zombie runs, and deferred runs whose time has come.

- **Zombies.** A started run of the project whose last heartbeat (run tag
  ``core4/heartbeat``, written by ``runtime.heartbeat()`` and ``progress()``; its start
  when it has none) is older than its ``zombie_time`` is flagged once: run tags
  ``core4/state=zombie`` and ``core4/message``, and an error in its event log. With
  ``zombie_action: kill`` it is also stopped (marked failed when its worker does not
  answer). A flagged run that beats again stays flagged: the log says when it was silent.
- **Defer.** A run that called ``defer()`` ended tagged ``core4/state=deferred`` with
  ``core4/defer_at``; once that time has come, the sensor requests the same job with the
  same run config and tags (run key ``<first run id>.defer<N>``, so a run is launched
  again exactly once), and tags the deferred run ``core4/state=relaunched`` with
  ``core4/relaunched_as`` once the new run exists.

A sensor can launch only jobs of its own code location: each project has its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import dagster as dg

from core4_pipelines._dagster import report_engine_event
from core4_pipelines.properties import resolved_properties, tag_property
from core4_pipelines.tags import (
    DAGSTER_HIDDEN_TAG_PREFIX,
    DAGSTER_TAG_PREFIX,
    DEFER_AT_TAG,
    DEFER_COUNT_TAG,
    DEFER_ROOT_TAG,
    DEFERRED_FROM_TAG,
    HEARTBEAT_TAG,
    JOB_TAG,
    LAUNCH_TAG_PREFIX,
    MESSAGE_TAG,
    PROGRESS_AT_TAG,
    PROGRESS_MESSAGE_TAG,
    PROGRESS_TAG,
    RELAUNCHED_AS_TAG,
    RUN_KEY_TAG,
    SOURCE_COUNT_TAG,
    SOURCE_TAG,
    SOURCES_TAG,
    STATE_TAG,
)
from core4_resources.errors import Core4Error

MONITOR_INTERVAL = 5
MAX_RUNS_PER_TICK = 500
# Dagster's own tags a run launched again keeps: what it runs with, not where it came from.
_KEPT_SYSTEM_TAGS = ("dagster/priority", "dagster/max_runtime", "dagster/partition", "dagster/partition_set",
                     "dagster/concurrency_key")
# What a run reports about itself; the run launched again starts without them.
_RUN_STATE_TAGS = {STATE_TAG, MESSAGE_TAG, DEFER_AT_TAG, HEARTBEAT_TAG, RELAUNCHED_AS_TAG, PROGRESS_TAG,
                   PROGRESS_MESSAGE_TAG, PROGRESS_AT_TAG, SOURCE_TAG, SOURCES_TAG, SOURCE_COUNT_TAG}


def relaunch_tags(run: dg.DagsterRun) -> dict[str, str]:
    """The tags of the run that launches ``run`` again after its defer."""
    kept = {}
    for key, value in run.tags.items():
        if key.startswith(DAGSTER_HIDDEN_TAG_PREFIX) or key in _RUN_STATE_TAGS:
            continue
        if key.startswith(DAGSTER_TAG_PREFIX) and not key.startswith(_KEPT_SYSTEM_TAGS):
            continue
        kept[key] = value
    count = int(float(run.tags.get(DEFER_COUNT_TAG) or 0)) + 1
    kept.update({DEFER_COUNT_TAG: str(count), DEFERRED_FROM_TAG: run.run_id,
                 DEFER_ROOT_TAG: run.tags.get(DEFER_ROOT_TAG, run.run_id)})
    return kept


def relaunch_key(run: dg.DagsterRun) -> str:
    count = int(float(run.tags.get(DEFER_COUNT_TAG) or 0)) + 1
    return f"{run.tags.get(DEFER_ROOT_TAG, run.run_id)}.defer{count}"


def _property(run: dg.DagsterRun, job: dg.JobDefinition | None, name: str, default):
    tag = run.tags.get(f"{LAUNCH_TAG_PREFIX}{name}")
    if tag is not None:
        try:
            return tag_property(name, tag, f"run tag {LAUNCH_TAG_PREFIX}{name} of run {run.run_id}")
        except Core4Error:
            pass  # the run itself reports a bad launch tag; the monitor goes by the job's value
    values = resolved_properties(job) if job is not None else {}
    return values.get(name, default)


def last_sign_of_life(record: dg.RunRecord) -> float:
    beat = record.dagster_run.tags.get(HEARTBEAT_TAG)
    try:
        return float(beat)
    except (TypeError, ValueError):
        return record.start_time or record.create_timestamp.timestamp()


def flag_zombie(instance: dg.DagsterInstance, run: dg.DagsterRun, silent: float, zombie_time: float,
                action: str) -> str:
    """Tag, log and (``action`` kill) stop the run; what was done, for the sensor's log."""
    message = (f"zombie: no heartbeat for {silent:.0f}s (zombie_time {zombie_time:g}s); "
               + ("stopping it (zombie_action: kill)" if action == "kill"
                  else "left running (zombie_action: flag); stop it with coco kill"))
    instance.add_run_tags(run.run_id, {STATE_TAG: "zombie", MESSAGE_TAG: message})
    report_engine_event(instance, run, message, level=logging.ERROR,
                        metadata={"silent seconds": round(silent, 1), "zombie_time": float(zombie_time)})
    if action != "kill":
        return f"run {run.run_id}: {message}"
    if instance.run_coordinator.cancel_run(run.run_id):
        return f"run {run.run_id}: {message}; stopping"
    # Its worker does not answer: nothing left to stop, the run must not hold its slot.
    instance.report_run_failed(run, message=f"{message}; its worker did not answer, marked failed")
    return f"run {run.run_id}: {message}; its worker did not answer, marked failed"


def monitor_sensor(project: str, jobs: Sequence[dg.JobDefinition], zombie_defaults: Mapping[str, object]
                   ) -> dg.SensorDefinition:
    """The monitor of ``project``'s runs (see the module). ``zombie_defaults``: zombie_time and
    zombie_action for a run whose job is not among ``jobs``."""
    by_name = {job.name: job for job in jobs}
    qualified = [f"{project}.{name}" for name in by_name]

    @dg.sensor(
        name="core4_monitor",
        jobs=list(jobs),
        minimum_interval_seconds=MONITOR_INTERVAL,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Flags runs of {project} without a heartbeat for zombie_time (zombie_action: kill stops "
                    f"them), and launches deferred runs again after defer_time",
    )
    def core4_monitor(context: dg.SensorEvaluationContext):
        instance = context.instance
        now = time.time()
        done: list[str] = []
        started = instance.get_run_records(
            filters=dg.RunsFilter(tags={JOB_TAG: qualified}, statuses=[dg.DagsterRunStatus.STARTED]),
            limit=MAX_RUNS_PER_TICK,
        )
        for record in started:
            run = record.dagster_run
            if run.tags.get(STATE_TAG) == "zombie":
                continue  # flagged once
            job = by_name.get(run.job_name)
            zombie_time = float(_property(run, job, "zombie_time", zombie_defaults["zombie_time"]))
            silent = now - last_sign_of_life(record)
            if silent > zombie_time:
                action = _property(run, job, "zombie_action", zombie_defaults["zombie_action"])
                done.append(flag_zombie(instance, run, silent, zombie_time, action))

        requests = []
        deferred = instance.get_runs(
            filters=dg.RunsFilter(tags={JOB_TAG: qualified, STATE_TAG: "deferred"},
                                  statuses=[dg.DagsterRunStatus.FAILURE]),
            limit=MAX_RUNS_PER_TICK,
        )
        for run in deferred:
            key = relaunch_key(run)
            launched = instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: key}), limit=1)
            if launched:
                instance.add_run_tags(run.run_id, {STATE_TAG: "relaunched", RELAUNCHED_AS_TAG: launched[0].run_id})
                continue
            try:
                due = float(run.tags.get(DEFER_AT_TAG, 0))
            except ValueError:
                due = 0.0
            if due > now or run.job_name not in by_name:
                continue
            done.append(f"run {run.run_id} deferred ({run.tags.get(MESSAGE_TAG, '')}): launching it again ({key})")
            requests.append(dg.RunRequest(run_key=key, job_name=run.job_name, run_config=run.run_config,
                                          tags=relaunch_tags(run)))
        for line in done:
            context.log.info(line)
        if requests:
            return requests
        if done:
            return dg.SkipReason("; ".join(done))
        return dg.SkipReason(f"{len(started)} runs of {project} running, none newly silent for its zombie_time; "
                             f"no deferred run due")

    return core4_monitor
