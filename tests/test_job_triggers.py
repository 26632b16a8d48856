"""schedule and chain: what starts a core4 job besides a user."""

from __future__ import annotations

import datetime

import dagster as dg
import pytest
from support import declared_job

from core4_pipelines.errors import JobSettingsError
from core4_pipelines.project.definitions import project_definitions


def test_schedule_runs_in_utc_by_default_and_never_overlaps(instance):
    defs = project_definitions(
        "shops",
        jobs=[declared_job("hourly", schedule="5 * * * *"), declared_job("local", schedule="0 6 * * *",
                                                                         timezone="Europe/Berlin",
                                                                         schedule_status="stopped")],
    )
    hourly = defs.resolve_schedule_def("hourly_schedule")
    assert (hourly.cron_schedule, hourly.execution_timezone) == ("5 * * * *", "UTC")
    assert hourly.default_status == dg.DefaultScheduleStatus.RUNNING
    local = defs.resolve_schedule_def("local_schedule")
    assert (local.execution_timezone, local.default_status) == ("Europe/Berlin", dg.DefaultScheduleStatus.STOPPED)

    def tick():
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime.datetime(2030, 1, 1, 10, 5, tzinfo=datetime.UTC)
        )
        return hourly.evaluate_tick(context)

    assert len(tick().run_requests) == 1
    job = defs.resolve_job_def("hourly")
    running = instance.create_run_for_job(job, tags=job.run_tags, status=dg.DagsterRunStatus.STARTED)
    skipped = tick()
    assert not skipped.run_requests and running.run_id in skipped.skip_message
    instance.report_run_failed(instance.get_run_by_id(running.run_id))
    assert len(tick().run_requests) == 1


def chain_sensor_of(defs: dg.Definitions) -> dg.RunStatusSensorDefinition:
    return defs.resolve_sensor_def("core4_chain")


def requests_after(defs, job_name, instance, **kwargs):
    """Run ``job_name`` and evaluate ``defs``' chain sensor on its success."""
    result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, **kwargs)
    success = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_SUCCESS)
    return result, success


def evaluate(defs, success, instance, run_id):
    context = dg.build_run_status_sensor_context(
        sensor_name="core4_chain",
        dagster_event=success,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id),
    )
    return chain_sensor_of(defs)(context)


def test_chain_requests_jobs_within_and_across_projects(instance):
    shop = project_definitions(
        "shopc", jobs=[declared_job("load", chain=["report", "depot.restock"]), declared_job("report")]
    )
    depot = project_definitions("depot", jobs=[declared_job("restock"), declared_job("audit")])
    other = project_definitions("other", jobs=[declared_job("restock")])

    result, success = requests_after(shop, "load", instance)
    within = evaluate(shop, success, instance, result.run_id)
    across = evaluate(depot, success, instance, result.run_id)
    assert [(r.job_name, r.tags["core4/chained_from"]) for r in within] == [("report", result.run_id)]
    assert [r.job_name for r in across] == ["restock"]
    assert evaluate(other, success, instance, result.run_id) is None

    plain, plain_success = requests_after(shop, "report", instance)
    assert evaluate(shop, plain_success, instance, plain.run_id) is None
    launched, launched_success = requests_after(shop, "report", instance, tags={"core4/chain": "depot.audit"})
    assert [r.job_name for r in evaluate(depot, launched_success, instance, launched.run_id)] == ["audit"]


def test_chain_to_a_missing_job_of_the_project_fails_the_load():
    with pytest.raises(JobSettingsError, match=r"shopm\.load: property chain names 'nothere'"):
        project_definitions("shopm", jobs=[declared_job("load", chain="nothere")])
