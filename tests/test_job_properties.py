"""core4 job properties carried out by Dagster: precedence, validation, retries, defer, tags, progress, sources."""

from __future__ import annotations

import itertools
import json
import time

import dagster as dg
import pytest
import yaml
from pydantic import BaseModel
from support import declared_job

from core4_pipelines.errors import JobSettingsError, PipelineError
from core4_pipelines.project.definitions import project_definitions
from core4_pipelines.properties import resolved_properties
from core4_pipelines.supervise.runtime import (
    SOURCES_TAG,
    defer,
    insert,
    job_config,
    progress,
    run_property,
    set_source,
)



def run(job: dg.JobDefinition, instance: dg.DagsterInstance, **kwargs):
    return job.execute_in_process(instance=instance, raise_on_error=False, **kwargs)


def step_events(instance, run_id, kind):
    return [e for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.event_type == kind]


# -- precedence and validation -------------------------------------------------------------


@dg.op
def read_attempts() -> int:
    return run_property("attempts")


def test_precedence_launch_over_config_over_code_over_defaults(project, monkeypatch, instance):
    monkeypatch.setenv("CORE4_OPTION_job__defer_time", "42")  # the cascade's job.* default
    name = project("shop1", "jobs:\n  nightly:\n    attempts: 4\n")
    declared = declared_job("nightly", read_attempts, attempts=2, priority=5, error_time=1, defer_time=7)
    defs = project_definitions(name, jobs=[declared, declared_job("other")])
    job = defs.resolve_job_def("nightly")

    values = resolved_properties(job)
    assert (values["attempts"], values["priority"], values["defer_time"], values["defer_max"]) == (4, 5, 7, 3600)
    assert job.op_retry_policy == dg.RetryPolicy(max_retries=3, delay=1)
    assert job.tags["dagster/priority"] == "5" and job.tags["core4/job"] == "shop1.nightly"

    assert resolved_properties(defs.resolve_job_def("other"))["defer_time"] == 42
    assert run(job, instance).output_for_node("read_attempts") == 4
    launched = run(job, instance, tags={"core4/attempts": "6"})
    assert launched.output_for_node("read_attempts") == 6


@pytest.mark.parametrize(
    "declared, yaml_text, words",
    [
        ({"attempts": 0}, "", ["nightly", "attempts", "integer >= 1"]),
        ({}, "jobs:\n  nightly:\n    schedule: '61 * * * *'\n", ["shop2.nightly", "schedule", "cron", "shop2.yaml"]),
        ({}, "jobs:\n  nightly:\n    error_time: -5\n", ["shop2.nightly", "error_time", ">= 0"]),
        ({"chain": ["missing"]}, "", ["shop2.nightly", "chain", "missing"]),
        ({}, "jobs:\n  nighlty:\n    attempts: 2\n", ["nighlty", "no job"]),
    ],
)
def test_invalid_properties_fail_the_load_naming_job_and_property(project, declared, yaml_text, words):
    name = project("shop2", yaml_text)
    with pytest.raises(JobSettingsError) as error:
        project_definitions(name, jobs=[declared_job("nightly", **declared)])
    assert all(word in str(error.value) for word in words), str(error.value)


# -- attempts, defer ------------------------------------------------------------------------

calls: dict[str, list[float]] = {}


@dg.op
def flaky_plain(context) -> None:
    calls.setdefault(context.run_id, []).append(time.monotonic())
    if len(calls[context.run_id]) < 3:
        raise RuntimeError("not yet")


@pytest.mark.parametrize("attempts, succeeds", [(3, True), (2, False)])
def test_attempts_are_retries_spaced_by_error_time(project, attempts, succeeds, instance):
    name = project(f"shop3_{attempts}")
    declared = declared_job("flaky", flaky_plain, attempts=attempts, error_time=0.3)
    job = project_definitions(name, jobs=[declared]).resolve_job_def("flaky")
    result = run(job, instance)
    assert result.success is succeeds
    starts = calls[result.run_id]
    assert len(starts) == min(attempts, 3)
    assert all(later - earlier >= 0.3 for earlier, later in itertools.pairwise(starts))


# defer() ends the run and the project's monitor launches it again: tests/test_monitor.py.


@dg.op
def plain_defer() -> None:
    defer("x")


def test_defer_in_a_plain_op_is_refused_with_the_fix(project, instance):
    result = run(project_definitions(project("shop6"), jobs=[declared_job("p", plain_defer)]).resolve_job_def("p"), instance)
    failure = step_events(instance, result.run_id, dg.DagsterEventType.STEP_FAILURE)[0]
    assert "@core4_op" in failure.dagster_event.event_specific_data.error.cause.message


# -- run tags: wall_time, priority, tag, zombie_time ----------------------------------------


def test_wall_time_priority_and_tags_are_run_tags(project, instance):
    name = project("shop7", "jobs:\n  timed:\n    wall_time: 90\n")
    job = project_definitions(name, jobs=[declared_job("timed", priority=3, tag=["daily"])]).resolve_job_def("timed")
    tags = instance.get_run_by_id(run(job, instance).run_id).tags
    assert tags["dagster/max_runtime"] == "90" and tags["dagster/priority"] == "3"
    assert tags["core4/job"] == "shop7.timed" and "core4/tag.daily" in tags


# -- progress, sources, per-job configuration -----------------------------------------------


@dg.op
def reports() -> list:
    return [progress(0.1, "started"), progress(0.5, "half"), progress(1.0, "done")]


def test_progress_is_logged_and_tagged_throttled(project, instance):
    defs = project_definitions(project("shop8"), jobs=[declared_job("long", reports, progress_interval=60)])
    job = defs.resolve_job_def("long")
    result = run(job, instance)
    assert result.output_for_node("reports") == [True, False, True]
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    tags = instance.get_run_by_id(result.run_id).tags
    assert "progress 10%: started" in messages and "progress 100%: done" in messages
    assert not any("50%" in m for m in messages)
    assert tags["core4/progress"] == "100%" and tags["core4/progress_message"] == "done"


@dg.op
def writes(mongo: dg.ResourceParam[dg.ConfigurableResource]) -> None:
    try:
        insert(mongo, "things", [{"n": 0}])
    except PipelineError:
        pass
    else:
        raise AssertionError("a write before set_source must be refused")
    set_source("/data/in/a.csv")
    insert(mongo, "things", [{"n": 1}, {"n": 2}])
    set_source("b.csv")
    insert(mongo, "things", [{"n": 3}])
    set_source("a.csv")


def test_sources_stamp_writes_and_the_run_lists_them(project, mongo, instance):
    job = project_definitions(project("shop9"), jobs=[declared_job("load", writes)]).resolve_job_def("load")
    result = run(job, instance, resources={"mongo": mongo})
    assert result.success
    tags = instance.get_run_by_id(result.run_id).tags
    docs = list(mongo.collection("things").find({}, {"_id": 0}).sort("n"))
    assert [(d["_src"], d["_job_id"]) for d in docs] == [("a.csv", result.run_id)] * 2 + [("b.csv", result.run_id)]
    assert json.loads(tags[SOURCES_TAG]) == ["a.csv", "b.csv"] and tags["core4/source"] == "a.csv"


class NightlySettings(BaseModel):
    batch: int
    mode: str = "full"


@dg.op
def reads_own_config() -> dict:
    return job_config(NightlySettings).model_dump()


def test_job_reads_its_own_section_typed(project, instance):
    name = project("shop10", "jobs:\n  nightly:\n    attempts: 2\n    batch: 7\n")
    job = project_definitions(name, jobs=[declared_job("nightly", reads_own_config)]).resolve_job_def("nightly")
    assert run(job, instance).output_for_node("reads_own_config") == {"batch": 7, "mode": "full"}


def test_import_job_properties_reach_the_job_its_sensor_starts(project):
    from core4_pipelines.ingest.job import import_job
    from core4_pipelines.ingest.readers import read_csv
    from core4_pipelines.ingest.sensor import proc_folder_sensor

    job = import_job("load_csv", read=read_csv, collection="rows", properties={"attempts": 3, "max_parallel": 2})
    defs = project_definitions(project("shop11"), sensors=[proc_folder_sensor(job)])
    resolved = defs.resolve_job_def("load_csv")
    assert resolved_properties(resolved)["max_parallel"] == 2
    assert resolved.op_retry_policy == dg.RetryPolicy(max_retries=2, delay=600)
    assert defs.resolve_sensor_def("load_csv_proc_sensor").job is resolved


# -- one model for every source ---------------------------------------------------------------


def test_one_model_checks_every_source_with_the_same_words(project, monkeypatch):
    from core4_pipelines.properties import tag_property
    from core4_resources.config.settings import load_config
    from core4_resources.errors import ConfigError

    words = "attempts expected an integer >= 1, got 0"
    with pytest.raises(JobSettingsError, match=f"declared in code\\): property {words}"):
        declared_job("nightly", attempts=0)
    with pytest.raises(JobSettingsError, match=f"shop12.jobs.nightly.attempts in .*shop12.yaml: property {words}"):
        project_definitions(project("shop12", "jobs:\n  nightly:\n    attempts: 0\n"), jobs=[declared_job("nightly")])
    with pytest.raises(JobSettingsError, match=f"run tag core4/attempts: property {words}"):
        tag_property("attempts", "0", "run tag core4/attempts")
    monkeypatch.setenv("CORE4_OPTION_job__attempts", "0")
    with pytest.raises(ConfigError, match="job.attempts from env CORE4_OPTION_job__attempts: expected an integer >= 1, got 0"):
        load_config()


def test_each_default_is_written_once():
    """The cascade's job.* values (packaged core4.yaml) are the defaults of exactly the properties
    the model leaves without one; the model holds the rest."""
    from core4_resources.config.settings import JobSection
    from core4_resources.config.sources import PACKAGED_PATH
    from core4_resources.config.job_properties import JobProperties

    packaged = set(yaml.safe_load(PACKAGED_PATH.read_text())["job"])
    required = {name for name, field in JobProperties.model_fields.items() if field.is_required()}
    assert required == packaged - (set(JobSection.model_fields) - set(JobProperties.model_fields))
    assert all(not JobSection.model_fields[name].is_required() for name in set(JobProperties.model_fields) - required)


def test_launch_tags_are_read_through_the_model(project, instance):
    @dg.op
    def reads() -> list:
        return [run_property("chain"), run_property("wall_time"), run_property("timezone")]

    job = project_definitions(project("shop13"), jobs=[declared_job("reader", reads)]).resolve_job_def("reader")
    result = run(job, instance, tags={"core4/chain": "a", "core4/wall_time": "90"})
    assert result.output_for_node("reads") == [("a",), 90, "UTC"]
