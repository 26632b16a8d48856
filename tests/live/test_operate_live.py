"""`coco enqueue`, `runs`, `kill`, `restart` and a cross-project chain against a running `coco serve`."""

from __future__ import annotations

import json
import re

import dagster as dg
import pytest
from dagster._core.storage.tags import GRPC_INFO_TAG
from livestack import wait_for

from core4_resources.mongo.embedded.server import free_port

RUN_ID = re.compile(r"run ([0-9a-f-]{36})")
RUNS_BY_TAG = """
query Runs($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) { ... on Runs { results { runId status jobName parentRunId } } }
}
"""


def enqueued(done) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return RUN_ID.search(done.stdout).group(1)


def tags_of(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


def test_enqueue_refuses_a_duplicate_then_kill_stops_both(live):
    # wall_time given at launch outranks the job's own 3 s: the run sleeps until killed.
    first = enqueued(live.coco("enqueue", "second.overruns_wall_time", "wall_time=600"))
    assert tags_of(live.run(first))["dagster/max_runtime"] == "600"

    refused = live.coco("enqueue", "second.overruns_wall_time", "wall_time=600")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert first in refused.stderr and "--force" in refused.stderr
    forced = enqueued(live.coco("enqueue", "second.overruns_wall_time", "wall_time=600", "--force"))

    listing = live.coco("runs", "--project", "second", "--limit", "10")
    assert listing.returncode == 0, listing.stderr
    lines = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert {first[:8], forced[:8]} <= set(lines)
    assert "second.overruns_wall_time" in lines[first[:8]]

    for run_id in (first, forced):
        killed = live.coco("kill", run_id[:8])
        assert killed.returncode == 0, killed.stdout + killed.stderr
    for run_id in (first, forced):
        assert live.wait_for_run(run_id, 120)["status"] == "CANCELED"
    assert not any("woke up" in m for m in live.run_messages(first))


def test_enqueue_with_arguments_then_restart(live):
    done = live.coco("enqueue", "demo.download_samples", "copies=2", "--wait", "--timeout", "180")
    run_id = enqueued(done)
    assert f"run {run_id}: SUCCESS" in done.stdout, done.stdout
    fetched = [m for m in live.run_messages(run_id) if m.startswith("fetched ")]
    assert len(fetched) == 8, fetched  # copies=2 reached the op's config

    restarted = live.coco("restart", run_id)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    new_id = RUN_ID.findall(restarted.stdout)[-1]
    assert new_id != run_id and live.wait_for_run(new_id, 180)["status"] == "SUCCESS"
    assert len([m for m in live.run_messages(new_id) if m.startswith("fetched ")]) == 8

    succeeded = live.coco("runs", "--project", "demo", "--state", "success")
    assert new_id[:8] in succeeded.stdout and f"re-run of {run_id[:8]}" in succeeded.stdout


def test_chain_starts_a_job_of_another_project(live):
    # ownvenv's job chains (given at launch) into demo: demo's chain sensor picks it up.
    source = enqueued(live.coco("enqueue", "ownvenv.which_python", "chain=demo.download_samples",
                                "--wait", "--timeout", "180"))

    def chained():
        found = live.graphql(RUNS_BY_TAG, {"tags": [{"key": "core4/chained_from", "value": source}]})
        return found["runsOrError"]["results"]

    (run,) = wait_for(chained, 120, f"a run chained from {source}", live.log_tail)
    assert run["jobName"] == "download_samples"
    assert live.wait_for_run(run["runId"], 180)["status"] == "SUCCESS"


@pytest.mark.parametrize("worker", ["unknown to its code server", "on a code server that is gone"])
def test_kill_marks_a_run_whose_worker_is_gone_canceled(live, worker):
    # A zombie: STARTED in the instance's storage while no process runs it (its host crashed,
    # or `coco serve` was restarted under it). Dagster cannot stop it the safe way.
    tags = {}
    if worker == "on a code server that is gone":
        tags[GRPC_INFO_TAG] = json.dumps({"host": "127.0.0.1", "port": free_port(), "socket": None})
    zombie = dg.DagsterRun(job_name="overruns_wall_time", status=dg.DagsterRunStatus.STARTED, tags=tags)
    with dg.DagsterInstance.from_config(str(live.dagster_home)) as instance:
        instance.add_run(zombie)

    killed = live.coco("kill", zombie.run_id[:8])
    assert killed.returncode == 0, killed.stdout + killed.stderr
    assert f"run {zombie.run_id}: canceled: its worker did not answer; marked canceled" in killed.stdout, \
        killed.stdout
    assert live.run(zombie.run_id)["status"] == "CANCELED"

    again = live.coco("kill", zombie.run_id)
    assert again.returncode == 2 and "it has finished already (CANCELED)" in again.stderr, again.stderr
