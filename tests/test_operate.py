"""`coco enqueue` arguments, duplicate refusal and the runs table, without a webserver (see tests/live)."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from core4_pipelines.coco.dagster_api import OperateError
from core4_pipelines.coco.operate import (
    ARGS_TAG,
    args_hash,
    build_launch,
    format_table,
    parse_assignments,
    run_rows,
)

BIN = os.path.dirname(sys.executable)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = {"fetch": ["copies", "source"], "load": ["source", "batch"], "noop": []}


def launch(*items):
    return build_launch(parse_assignments(items), OPS, "shop")


def test_arguments_become_op_config_and_launch_tags():
    run_config, tags = launch(
        'copies=3', 'fetch.source="s3"', 'load.source={"path": "/x"}', "batch=[1, 2]",
        "ops.noop.config.flag=true", "priority=7", "attempts=2", "chain=report", "wall_time=90",
    )
    assert run_config == {
        "ops": {
            "fetch": {"config": {"copies": 3, "source": "s3"}},
            "load": {"config": {"source": {"path": "/x"}, "batch": [1, 2]}},
            "noop": {"config": {"flag": True}},
        }
    }
    assert tags == {"dagster/priority": "7", "core4/attempts": "2", "core4/chain": "shop.report",
                    "dagster/max_runtime": "90"}


@pytest.mark.parametrize(
    "item, words",
    [
        ("source=x", ["fetch, load", "OP.source"]),
        ("bogus=1", ["no op of this job takes 'bogus'", "copies"]),
        ("nop.flag=1", ["'nop' is no op"]),
        ("attempts=0", ["attempts", "integer >= 1"]),
        ("novalue", ["expected key=value"]),
    ],
)
def test_bad_arguments_say_what_to_write(item, words):
    with pytest.raises(OperateError) as error:
        launch(item)
    assert all(word in str(error.value) for word in words), str(error.value)


def test_plain_words_are_strings_and_the_hash_ignores_order():
    assert parse_assignments(["a=abc", "b=1", 'c="1"']) == [("a", "abc"), ("b", 1), ("c", "1")]
    first = args_hash("shop.load", {"ops": {"a": {"config": {"x": 1, "y": 2}}}})
    assert first == args_hash("shop.load", {"ops": {"a": {"config": {"y": 2, "x": 1}}}})
    assert first != args_hash("shop.load", {"ops": {"a": {"config": {"x": 1, "y": 3}}}})
    assert first != args_hash("shop.other", {"ops": {"a": {"config": {"x": 1, "y": 2}}}})


def test_runs_table_is_readable():
    runs = [
        {"runId": "0123456789abcdef0123456789abcdef0123", "jobName": "load", "status": "STARTED",
         "creationTime": 1_800_000_000.0, "startTime": 1_800_000_001.0, "endTime": None, "parentRunId": None,
         "tags": [{"key": "core4/job", "value": "shop.load"}, {"key": "core4/progress", "value": "40%"},
                  {"key": "core4/progress_message", "value": "file 4 of 10"}],
         "repositoryOrigin": {"repositoryLocationName": "shop"}},
        {"runId": "fedcba9876543210fedcba9876543210fedc", "jobName": "crawl", "status": "FAILURE",
         "creationTime": 1_800_000_100.0, "startTime": 1_800_000_100.0, "endTime": 1_800_000_160.0,
         "parentRunId": "0123456789abcdef0123456789abcdef0123",
         "tags": [{"key": "core4/state", "value": "inactive"}, {"key": "core4/message", "value": "no data"}],
         "repositoryOrigin": {"repositoryLocationName": "depot"}},
    ]
    table = format_table(["RUN", "JOB", "STATUS", "CREATED (UTC)", "TIME", "INFO"], run_rows(runs)).splitlines()
    assert table[1].split()[:5] == ["01234567", "shop.load", "STARTED", "2027-01-15", "08:00:00"]
    assert "40% file 4 of 10" in table[1]
    assert table[2].split()[:3] == ["fedcba98", "depot.crawl", "FAILURE"] and " 60s " in table[2]
    assert "inactive: no data; re-run of 01234567" in table[2]


def coco(*args, env):
    return subprocess.run(
        [os.path.join(BIN, "coco"), *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_local_enqueue_runs_the_job_and_refuses_a_duplicate(tmp_path, mongo_url):
    env = dict(os.environ, CORE4_OPTION_DEFAULT__mongo_url=mongo_url)
    common = ["--home", os.path.join(REPO, "projects"), "--root", str(tmp_path / "root")]
    done = coco(*common, "enqueue", "demo.download_samples", "copies=2", "--local", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(os.listdir(tmp_path / "root" / "proc" / "demo")) == 8

    digest = args_hash("demo.download_samples", {"ops": {"fetch_samples": {"config": {"copies": 1}}}})
    with dg.DagsterInstance.from_config(str(tmp_path / "root" / "dagster")) as instance:
        (finished,) = instance.get_runs()
        assert finished.status == dg.DagsterRunStatus.SUCCESS and ARGS_TAG in finished.tags
        busy = dg.DagsterRun(job_name="download_samples", status=dg.DagsterRunStatus.STARTED, tags={ARGS_TAG: digest})
        instance.add_run(busy)
    refused = coco(*common, "enqueue", "demo.download_samples", "copies=1", "--local", env=env)
    assert refused.returncode == 2 and busy.run_id in refused.stderr and "--force" in refused.stderr


def test_graphql_documents_are_valid_for_this_dagster():
    import graphql
    from dagster_graphql.schema import create_schema

    from core4_pipelines.coco import dagster_api

    schema = graphql.build_schema(str(create_schema()))
    problems = {
        name: [e.message for e in graphql.validate(schema, graphql.parse(getattr(dagster_api, name)))]
        for name in ("JOB_OPS", "LAUNCH", "REEXECUTE", "TERMINATE", "RUNS", "RUN")
    }
    assert problems == {name: [] for name in problems}
