"""A job's cookie in the real embedded MongoDB: survives runs, exact under concurrent increments."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import dagster as dg
import pytest

from core4_pipelines.job_cookie import Cookie
from core4_pipelines.errors import PipelineError
from core4_pipelines.project.definitions import project_definitions
from core4_pipelines.supervise.runtime import cookie
from core4_resources.mongo.resource import MongoResource


def test_get_set_inc_delete(mongo):
    jar = Cookie(mongo, "shop.crawl")
    assert jar.get("offset") is None and jar.get("offset", 0) == 0
    jar.set("offset", 120)
    jar.set("last", {"file": "a.csv", "rows": [1, 2]})
    assert jar.inc("offset", 30) == 150 and jar.inc("runs") == 1
    assert Cookie(mongo, "shop.crawl").all() == {"offset": 150, "last": {"file": "a.csv", "rows": [1, 2]}, "runs": 1}
    assert Cookie(mongo, "shop.other").get("offset") is None, "each job has its own cookie"
    assert jar.delete("last") is True and jar.delete("last") is False
    assert jar.get("last") is None
    with pytest.raises(PipelineError, match="not valid"):
        jar.set("a.b", 1)


@dg.op
def count_runs(mongo: MongoResource) -> int:
    return cookie(mongo).inc("runs")


@dg.job
def counting():
    count_runs()


def outputs_of_runs(mongo, project: str, job: dg.JobDefinition, node: str, runs: int = 2) -> list:
    """Run ``job`` of ``project`` ``runs`` times on one instance; the output of ``node`` per run."""
    resolved = project_definitions(project, jobs=[job]).resolve_job_def(job.name)
    with dg.instance_for_test() as instance:
        return [
            resolved.execute_in_process(instance=instance, resources={"mongo": mongo}).output_for_node(node)
            for _ in range(runs)
        ]


def test_the_running_job_keeps_its_cookie_between_runs(mongo):
    counts = outputs_of_runs(mongo, "shopk", counting, "count_runs")
    assert counts == [1, 2]
    assert Cookie(mongo, "shopk.counting").get("runs") == 2


INCREMENTER = textwrap.dedent(
    """
    import os, sys, time
    from core4_pipelines.job_cookie import Cookie
    from core4_resources.mongo.resource import MongoResource

    url, database, barrier, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    jar = Cookie(MongoResource(mongo_url=url, database=database), "shop.crawl")
    jar.get("warm")  # connected: report ready, then start together with the other worker
    open(os.path.join(barrier, f"ready-{os.getpid()}"), "w").close()
    while not os.path.exists(os.path.join(barrier, "go")):
        time.sleep(0.01)
    print(" ".join(str(jar.inc("offset")) for _ in range(n)))
    """
)


def test_two_processes_incrementing_at_once_lose_no_count(mongo, tmp_path):
    n = 60
    command = [sys.executable, "-c", INCREMENTER, mongo.mongo_url, mongo.database, str(tmp_path), str(n)]
    workers = [
        subprocess.Popen(command, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
            if any(w.poll() is not None for w in workers):
                break
            time.sleep(0.05)
        (tmp_path / "go").touch()
        outputs = [w.communicate(timeout=120) for w in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert [w.returncode for w in workers] == [0, 0], [err for _, err in outputs]
    assert Cookie(mongo, "shop.crawl").get("offset") == 2 * n
    seen = sorted(int(value) for out, _ in outputs for value in out.split())
    assert seen == list(range(1, 2 * n + 1)), "every inc returns its own new value"


def test_set_many_dec_max_min_has_key(mongo):
    jar = Cookie(mongo, "shop.marks")
    assert jar.has_key("offset") is False
    jar.set(offset=10, last="a.csv", empty=None)
    assert jar.all() == {"offset": 10, "last": "a.csv", "empty": None}
    assert jar.has_key("offset") and jar.has_key("empty"), "a key holding None is there"
    assert jar.dec("offset") == 9 and jar.dec("offset", 4) == 5 and jar.dec("fresh") == -1
    assert jar.max("offset", 3) == 5 and jar.max("offset", 8) == 8
    assert jar.min("offset", 9) == 8 and jar.min("offset", 2) == 2
    assert jar.max("high", 7) == 7 and jar.min("low", 7) == 7, "a missing key takes the value"
    assert jar.max("seen", "2024-03-05") == "2024-03-05" and jar.max("seen", "2024-01-01") == "2024-03-05"
    assert Cookie(mongo, "shop.marks").get("offset") == 2
    for bad in (lambda: jar.set("a", 1, b=2), lambda: jar.set(), lambda: jar.set("a")):
        with pytest.raises(PipelineError, match="set"):
            bad()
    with pytest.raises(PipelineError, match="expected a number"):
        jar.dec("offset", "1")
    with pytest.raises(PipelineError, match="not valid"):
        jar.set(**{"a.b": 1})


@dg.op
def mark_runs(mongo: MongoResource) -> tuple:
    jar = cookie(mongo)
    first = not jar.has_key("left")
    if first:
        jar.set(left=3, best=0)
    return first, jar.dec("left"), jar.max("best", 5 if first else 2)


@dg.job
def marking():
    mark_runs()


def test_the_running_job_counts_down_and_keeps_the_maximum(mongo):
    results = outputs_of_runs(mongo, "shopm", marking, "mark_runs")
    assert results == [(True, 2, 5), (False, 1, 5)]
    assert Cookie(mongo, "shopm.marking").all() == {"left": 1, "best": 5}
