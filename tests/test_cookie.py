"""A job's cookie in the real embedded MongoDB: survives runs, exact under concurrent increments."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import dagster as dg
import pytest

from core4_pipelines.cookie import Cookie
from core4_pipelines.errors import PipelineError
from core4_pipelines.project import project_definitions
from core4_pipelines.runtime import cookie
from core4_resources.mongo import MongoResource


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


def test_the_running_job_keeps_its_cookie_between_runs(mongo):
    job = project_definitions("shopk", jobs=[counting]).resolve_job_def("counting")
    with dg.instance_for_test() as instance:
        counts = [
            job.execute_in_process(instance=instance, resources={"mongo": mongo}).output_for_node("count_runs")
            for _ in range(2)
        ]
    assert counts == [1, 2]
    assert Cookie(mongo, "shopk.counting").get("runs") == 2


INCREMENTER = textwrap.dedent(
    """
    import os, sys, time
    from core4_pipelines.cookie import Cookie
    from core4_resources.mongo import MongoResource

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
