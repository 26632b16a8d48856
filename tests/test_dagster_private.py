"""Every use of Dagster's private API (core4_pipelines/_dagster.py, coco's dagster.yaml) and every
Dagster constant the library repeats: each test breaks when a Dagster upgrade changes it."""

from __future__ import annotations

import importlib
import logging
import pathlib
import re

import dagster as dg

from core4_pipelines import _dagster, tags

LIBRARY = pathlib.Path(__file__).resolve().parents[1]


def test_dagster_private_api_is_used_in_one_module_only():
    uses = []
    for package in ("core4_pipelines", "core4_resources"):
        for path in sorted((LIBRARY / package).rglob("*.py")):
            if path.name == "_dagster.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"\b(from|import) dagster\._", line):
                    uses.append(f"{path.relative_to(LIBRARY)}:{number}: {line.strip()}")
    assert uses == []


def test_the_dagster_tags_and_statuses_we_name_are_dagsters_own():
    from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
    from dagster._core.storage.tags import (
        HIDDEN_TAG_PREFIX,
        MAX_RUNTIME_SECONDS_TAG,
        PRIORITY_TAG,
        RUN_KEY_TAG,
        SCHEDULED_EXECUTION_TIME_TAG,
        SYSTEM_TAG_PREFIX,
    )

    assert (tags.DAGSTER_TAG_PREFIX, tags.DAGSTER_HIDDEN_TAG_PREFIX) == (SYSTEM_TAG_PREFIX, HIDDEN_TAG_PREFIX)
    assert tags.RUN_KEY_TAG == RUN_KEY_TAG and tags.PRIORITY_TAG == PRIORITY_TAG
    assert tags.MAX_RUNTIME_TAG == MAX_RUNTIME_SECONDS_TAG
    assert tags.SCHEDULED_TIME_TAG == SCHEDULED_EXECUTION_TIME_TAG
    every = {status.value for status in dg.DagsterRunStatus}
    named = {*tags.IN_PROGRESS_STATUSES, *tags.EXECUTING_STATUSES, *tags.FINISHED_STATUSES}
    assert named <= every
    # Dagster's "in progress" runs are executing ones (and SUSPENDED); ours add the queued ones.
    assert set(tags.EXECUTING_STATUSES) <= {s.value for s in IN_PROGRESS_RUN_STATUSES}
    assert set(tags.IN_PROGRESS_STATUSES) - set(tags.EXECUTING_STATUSES) == {"QUEUED", "NOT_STARTED"}


def test_a_failure_without_stack_fails_the_step_with_the_message_alone():
    @dg.op
    def refuse():
        raise _dagster.failure_without_stack("a.csv: line 3 has 2 fields, the header 3")

    result = dg.GraphDefinition(name="g", node_defs=[refuse]).to_job().execute_in_process(raise_on_error=False)
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = failure.step_failure_data.error
    assert error.message.strip() == "a.csv: line 3 has 2 fields, the header 3"
    assert error.stack == [] and error.cls_name == "RejectedFiles"


def test_an_engine_event_is_stored_at_its_level_with_its_metadata():
    @dg.op
    def noop():
        pass

    with dg.DagsterInstance.ephemeral() as instance:
        job = dg.GraphDefinition(name="g", node_defs=[noop]).to_job()
        run = job.execute_in_process(instance=instance).dagster_run
        _dagster.report_engine_event(instance, run, "zombie: silent", level=logging.ERROR,
                                     metadata={"silent seconds": 12.5, "why": "no heartbeat"})
        (entry,) = [r.event_log_entry for r in instance.get_records_for_run(run.run_id).records
                    if r.event_log_entry.message == "zombie: silent"]
    assert entry.level == logging.ERROR
    metadata = entry.dagster_event.engine_event_data.metadata
    assert metadata["silent seconds"].value == 12.5 and metadata["why"].value == "no heartbeat"


def test_a_derived_job_keeps_what_its_author_built_and_carries_the_new_tags():
    @dg.op(config_schema={"n": int})
    def counted(context):
        return context.op_config["n"]

    partitions = dg.StaticPartitionsDefinition(["a", "b"])
    job = dg.GraphDefinition(name="g", node_defs=[counted]).to_job(
        name="counted", config={"ops": {"counted": {"config": {"n": 3}}}}, tags={"mine": "1"},
        run_tags={"run": "1"}, executor_def=dg.in_process_executor, partitions_def=partitions)
    assert _dagster.explicit_run_tags(job) == {"run": "1"}
    derived = _dagster.derive_job(job, tags={**job.tags, "core4/job": "p.counted"},
                                  run_tags={"run": "1", "core4/job": "p.counted"},
                                  op_retry_policy=dg.RetryPolicy(max_retries=2))
    assert derived.graph is job.graph and derived.executor_def is job.executor_def
    assert derived.partitions_def == partitions and derived.tags["core4/job"] == "p.counted"
    assert derived.op_retry_policy.max_retries == 2
    result = derived.execute_in_process(partition_key="a")  # the author's config still applies
    assert result.output_for_node("counted") == 3
    assert result.dagster_run.tags["core4/job"] == "p.counted" and result.dagster_run.tags["run"] == "1"
    assert _dagster.explicit_run_tags(dg.GraphDefinition(name="h", node_defs=[counted]).to_job()) is None


class Box(dg.ConfigurableResource):
    value: int


def test_an_asset_job_resolved_without_its_resources_takes_them_at_execution():
    @dg.asset
    def boxed(box: Box) -> int:
        return box.value

    unresolved = dg.define_asset_job("boxed_job", selection=[boxed.key])
    job = _dagster.resolve_asset_job(unresolved, [boxed], {"box": dg.ResourceDefinition.none_resource()})
    assert isinstance(job, dg.JobDefinition) and job.asset_layer.selected_asset_keys == {boxed.key}
    result = job.execute_in_process(resources={"box": Box(value=7)})
    assert result.output_for_node("boxed") == 7
    # Bound by Definitions like an op job declared without resources.
    defs = dg.Definitions(assets=[boxed], jobs=[job], resources={"box": Box(value=8)})
    assert defs.resolve_job_def("boxed_job").execute_in_process().output_for_node("boxed") == 8


def test_the_classes_coco_names_in_dagster_yaml_load(tmp_path):
    from core4_pipelines.coco.instance import instance_config

    named = list(_module_classes(instance_config(str(tmp_path))))
    assert {cls for _, cls in named} >= {"SqliteRunStorage", "QueuedRunCoordinator"}
    for module, cls in named:
        assert hasattr(importlib.import_module(module), cls), f"{module}.{cls}"


def _module_classes(config):
    if isinstance(config, dict):
        if "module" in config and "class" in config:
            yield config["module"], config["class"]
        for value in config.values():
            yield from _module_classes(value)


def test_a_launchers_health_answer_is_dagsters_own_type():
    from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

    answer = _dagster.run_worker_health("FAILED", "the worker does not answer")
    assert isinstance(answer, CheckRunHealthResult) and answer.status is WorkerStatus.FAILED
    assert answer.msg == "the worker does not answer"
    assert {_dagster.worker_status(_dagster.run_worker_health(s)) for s in ("RUNNING", "UNKNOWN")} == {"RUNNING", "UNKNOWN"}


def test_the_run_args_a_celery_task_gets_are_what_dagsters_run_worker_command_reads(tmp_path):
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import deserialize_value, pack_value

    origin = JobPythonOrigin("rows", RepositoryPythonOrigin(
        executable_path="/srv/home/prices/.venv/bin/python",
        code_pointer=ModuleCodePointer("prices.definitions", "defs", str(tmp_path))))
    sent = ExecuteRunArgs(job_origin=origin, run_id="r1", instance_ref=None, set_exit_code_on_failure=True)
    got = _dagster.execute_run_args(pack_value(sent))  # as dagster_celery's launcher packs it
    assert got.run_id == "r1" and got.job_origin.executable_path == "/srv/home/prices/.venv/bin/python"
    # `dagster api execute_run` reads its input from this variable (its click argument's envvar).
    (name, text), = _dagster.execute_run_environment(got).items()
    assert name == "DAGSTER_EXECUTE_RUN_ARGS" and deserialize_value(text, ExecuteRunArgs) == sent
