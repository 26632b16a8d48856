"""Defer ends the run and the project's monitor launches it again; zombies are flagged; heartbeats.

Dagster-level: real runs in a throwaway instance, the monitor sensor evaluated against it.
"""

from __future__ import annotations

import logging
import time

import dagster as dg
import pytest
from core4_pipelines.tags import RUN_KEY_TAG
from support import declared_job

from core4_pipelines.project.definitions import project_definitions
from core4_pipelines.supervise.runtime import (
    DEFER_AT_TAG,
    DEFER_COUNT_TAG,
    DEFER_SINCE_TAG,
    DEFERRED_FROM_TAG,
    HEARTBEAT_TAG,
    MESSAGE_TAG,
    RELAUNCHED_AS_TAG,
    STATE_TAG,
    core4_op,
    defer,
    heartbeat,
    progress,
)
from core4_pipelines.tags import JOB_TAG



calls: dict[str, int] = {}


@core4_op(config_schema={"label": dg.Field(str, default_value="x")})
def waits_for_upstream(context) -> None:
    label = context.op_config["label"]
    calls[label] = calls.get(label, 0) + 1
    defer(f"upstream of {label} not ready")


def monitor_of(defs: dg.Definitions) -> dg.SensorDefinition:
    return defs.resolve_sensor_def("core4_monitor")


def tick(defs: dg.Definitions, instance: dg.DagsterInstance):
    context = dg.build_sensor_context(instance=instance, definitions=defs)
    result = monitor_of(defs)(context)
    return result if isinstance(result, list) else []


def launch(defs, request: dg.RunRequest, instance) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(request.job_name)
    return job.execute_in_process(run_config=request.run_config, instance=instance, raise_on_error=False,
                                  tags={**request.tags, RUN_KEY_TAG: request.run_key})


def test_a_deferred_run_ends_at_once_and_is_launched_again_with_its_config_and_tags(project, instance):
    name = project("defers1")
    defs = project_definitions(name, jobs=[declared_job("waits", waits_for_upstream, attempts=3, defer_time=0.2,
                                                        defer_max=600)])
    started = time.time()
    first = defs.resolve_job_def("waits").execute_in_process(
        run_config={"ops": {"waits_for_upstream": {"config": {"label": "a1"}}}}, instance=instance,
        raise_on_error=False, tags={"owner": "ops-team"})
    # It ended after one try (no retry held the run, no attempt used) and says when it runs again.
    assert not first.success and calls["a1"] == 1
    tags = instance.get_run_by_id(first.run_id).tags
    assert tags[STATE_TAG] == "deferred" and tags[MESSAGE_TAG] == "upstream of a1 not ready"
    assert started + 0.2 <= float(tags[DEFER_AT_TAG]) <= time.time() + 0.2
    assert not [e for e in instance.all_logs(first.run_id)
                if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]

    time.sleep(0.3)
    (request,) = tick(defs, instance)
    assert request.run_key == f"{first.run_id}.defer1"
    assert request.run_config == {"ops": {"waits_for_upstream": {"config": {"label": "a1"}}}}
    assert request.tags["owner"] == "ops-team" and request.tags[DEFER_COUNT_TAG] == "1"
    assert request.tags[DEFERRED_FROM_TAG] == first.run_id and STATE_TAG not in request.tags

    second = launch(defs, request, instance)
    assert calls["a1"] == 2
    second_tags = instance.get_run_by_id(second.run_id).tags
    assert second_tags[STATE_TAG] == "deferred" and second_tags[DEFER_SINCE_TAG] == tags[DEFER_SINCE_TAG]
    time.sleep(0.3)
    (again,) = tick(defs, instance)  # the second one's turn; the first is marked as taken over
    assert again.run_key == f"{first.run_id}.defer2" and again.tags[DEFER_COUNT_TAG] == "2"
    first_tags = instance.get_run_by_id(first.run_id).tags
    assert first_tags[STATE_TAG] == "relaunched" and first_tags[RELAUNCHED_AS_TAG] == second.run_id


def test_deferring_past_defer_max_ends_inactive_and_is_not_launched_again(project, instance):
    name = project("defers2")
    defs = project_definitions(name, jobs=[declared_job("stuck", waits_for_upstream, defer_time=0, defer_max=30)])
    # The chain of defers began 40 s ago (the tag a relaunched run carries).
    result = defs.resolve_job_def("stuck").execute_in_process(
        instance=instance, raise_on_error=False, tags={DEFER_SINCE_TAG: f"{time.time() - 40:.3f}"})
    tags = instance.get_run_by_id(result.run_id).tags
    assert not result.success and tags[STATE_TAG] == "inactive" and tags[MESSAGE_TAG] == "upstream of x not ready"
    assert tick(defs, instance) == []


@dg.op
def silent() -> None:
    pass


def started_run(instance, qualified: str, job: str, **tags) -> dg.DagsterRun:
    run = instance.add_run(dg.DagsterRun(job_name=job, status=dg.DagsterRunStatus.STARTED,
                                         tags={JOB_TAG: qualified, **tags}))
    return run


@pytest.mark.parametrize("action", ["flag", "kill"])
def test_a_run_silent_for_its_zombie_time_is_flagged_and_with_kill_stopped(project, instance, action):
    name = project(f"zombies_{action}", f"jobs:\n  sleepy:\n    zombie_time: 60\n    zombie_action: {action}\n")
    defs = project_definitions(name, jobs=[declared_job("sleepy", silent), declared_job("beats", silent)])
    silent_run = started_run(instance, f"{name}.sleepy", "sleepy", **{HEARTBEAT_TAG: f"{time.time() - 61:.3f}"})
    alive = started_run(instance, f"{name}.sleepy", "sleepy", **{HEARTBEAT_TAG: f"{time.time() - 5:.3f}"})
    # zombie_time given at launch outranks the configuration's 60 s.
    launched_short = started_run(instance, f"{name}.beats", "beats", **{
        HEARTBEAT_TAG: f"{time.time() - 12:.3f}", "core4/zombie_time": "10"})

    assert tick(defs, instance) == []
    flagged = {run.run_id: instance.get_run_by_id(run.run_id) for run in (silent_run, alive, launched_short)}
    assert flagged[silent_run.run_id].tags[STATE_TAG] == "zombie"
    assert "no heartbeat for 61s (zombie_time 60s)" in flagged[silent_run.run_id].tags[MESSAGE_TAG]
    assert flagged[launched_short.run_id].tags[STATE_TAG] == "zombie"
    assert STATE_TAG not in flagged[alive.run_id].tags
    errors = [e for e in instance.all_logs(silent_run.run_id) if e.level == logging.ERROR]
    assert len(errors) == 1 + (action == "kill")  # kill: and the run's failure
    assert "zombie: no heartbeat" in errors[0].dagster_event.message
    # The test instance's launcher cannot stop the run: kill marks it failed so it frees its slot.
    expected = dg.DagsterRunStatus.FAILURE if action == "kill" else dg.DagsterRunStatus.STARTED
    assert flagged[silent_run.run_id].status == expected
    assert flagged[launched_short.run_id].status == dg.DagsterRunStatus.STARTED  # the default action: flag

    tick(defs, instance)  # flagged once: no second error
    assert len([e for e in instance.all_logs(silent_run.run_id) if e.level == logging.ERROR]) == 1 + (action == "kill")


@dg.op
def beats(context) -> None:
    assert heartbeat() is True
    assert heartbeat() is False  # throttled
    stored = context.instance.get_run_by_id(context.run_id).tags[HEARTBEAT_TAG]
    assert abs(float(stored) - time.time()) < 5
    progress(0.5, "half")  # progress beats too (throttled as well)


def test_heartbeat_is_a_throttled_run_tag_and_a_no_op_outside_a_run(project, instance):
    name = project("beating")
    defs = project_definitions(name, jobs=[declared_job("beating", beats)])
    assert defs.resolve_job_def("beating").execute_in_process(instance=instance).success
    assert heartbeat() is False
