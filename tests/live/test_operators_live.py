"""Operators at home, against one `coco serve` (restarted once, by Ctrl-C, in the last test).

Zombies flagged and killed, defers that free their run slot while imports flow, `coco info`
found through the state file `coco serve` writes, and pause/resume surviving a restart.
The instance runs at most 2 runs at once (dagster.max_concurrent_runs), as many as the
deferring jobs launched.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from liveprojects import copy_demo
from livestack import BIN, FINISHED, coco_serve, descendants, drop_into_proc, sensor_to_archive, wait_for

from core4_resources.mongo.embedded.server import free_port

RUN_ID = re.compile(r"run ([0-9a-f-]{36})")
SLOTS = 2
PROJECTS = ("demo", "ops")

OPS_DEFINITIONS = '''"""ops: jobs that sleep, beat, defer and fail, for the operator tests."""

import time

import dagster as dg

from core4_pipelines import core4_op, defer, job_properties, progress, project_definitions


@dg.op
def sleep_silently():
    time.sleep(600)


@job_properties(zombie_time=6)
@dg.job(executor_def=dg.in_process_executor)
def sleeper():
    sleep_silently()


@dg.op
def beat_a_while():
    for step in range(12):
        progress(step / 12, f"step {step}")
        time.sleep(1)


@job_properties(zombie_time=6)
@dg.job(executor_def=dg.in_process_executor)
def beater():
    beat_a_while()


@core4_op
def wait_for_upstream():
    defer("upstream not ready")


@job_properties(defer_time=2, defer_max=3600)
@dg.job(executor_def=dg.in_process_executor)
def deferrer():
    wait_for_upstream()


@dg.op
def fail_on_purpose():
    raise RuntimeError("fails on purpose")


@dg.job(executor_def=dg.in_process_executor)
def fails():
    fail_on_purpose()


defs = project_definitions("ops", jobs=[sleeper, beater, deferrer, fails])
'''

RUNS = """
query Runs($tags: [ExecutionTag!], $statuses: [RunStatus!]) {
  runsOrError(filter: {tags: $tags, statuses: $statuses}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""


def make_home(home: Path, env: dict[str, str]) -> None:
    if home.exists():
        return  # a restart: the same projects
    home.mkdir(parents=True)
    copy_demo(home)
    package = home / "ops" / "ops"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('__project__ = "core4"\n__version__ = "0.1.0"\n')
    (package / "ops.yaml").write_text("")
    (package / "definitions.py").write_text(OPS_DEFINITIONS)


class Served:
    """The module's `coco serve`; ``restart_by_ctrl_c`` replaces it by a new one on the same root."""

    def __init__(self, base: Path):
        self.base = base
        self.exits = contextlib.ExitStack()
        self.live = self._start()

    def _start(self):
        return self.exits.enter_context(
            coco_serve(self.base, make_home, PROJECTS, dagster={"max_concurrent_runs": SLOTS}))

    def restart_by_ctrl_c(self) -> float:
        """Ctrl-C on `coco serve`; the seconds until it and every process it started were gone."""
        process = self.live.process
        started = set(descendants(process.pid))
        assert started, "coco serve started no processes"
        began = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)  # what a terminal sends to its foreground group
        deadline = began + 30
        while time.monotonic() < deadline and (process.poll() is None or any(map(_alive, started))):
            time.sleep(0.1)
        took = time.monotonic() - began
        left = sorted(pid for pid in started if _alive(pid))
        self.exits.close()  # stops whatever was left (nothing, if Ctrl-C did its job)
        assert process.returncode == 0 and not left, f"after {took:.1f}s: exit {process.returncode}, left {left}"
        self.exits = contextlib.ExitStack()
        self.live = self._start()
        return took


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    holder = Served(tmp_path_factory.mktemp("operators"))
    try:
        yield holder
    finally:
        holder.exits.close()


def enqueued(done) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return RUN_ID.search(done.stdout).group(1)


def tags_of(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


def runs_with(live, statuses=None, **tags) -> list[dict]:
    variables = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
    if statuses:
        variables["statuses"] = statuses
    return live.graphql(RUNS, variables)["runsOrError"]["results"]


def test_a_silent_run_is_flagged_a_zombie_and_with_kill_stopped(served):
    live = served.live
    flagged = enqueued(live.coco("enqueue", "ops.sleeper"))
    killed = enqueued(live.coco("enqueue", "ops.sleeper", "zombie_action=kill", "--force"))
    beating = enqueued(live.coco("enqueue", "ops.beater"))

    assert live.wait_for_run(killed, 120)["status"] in ("CANCELED", "FAILURE")
    assert tags_of(live.run(killed))["core4/state"] == "zombie"
    assert any("zombie: no heartbeat" in m for m in live.run_messages(killed))
    run = wait_for(lambda: (r := live.run(flagged)) and tags_of(r).get("core4/state") == "zombie" and r,
                   60, "the silent run to be flagged", live.log_tail)
    assert run["status"] == "STARTED"  # zombie_action flag: it keeps running
    assert "no heartbeat for" in tags_of(run)["core4/message"]
    beat = live.wait_for_run(beating, 120)
    assert beat["status"] == "SUCCESS" and "core4/state" not in tags_of(beat)

    stopped = live.coco("kill", "ops.sleeper")  # every queued or running run of the job
    assert stopped.returncode == 0 and flagged in stopped.stdout, stopped.stdout + stopped.stderr
    assert live.wait_for_run(flagged, 120)["status"] == "CANCELED"


def test_deferring_runs_free_their_slots_and_imports_flow(served):
    live = served.live
    deferring = [enqueued(live.coco("enqueue", "ops.deferrer", *(["--force"] if n else [])))
                 for n in range(SLOTS)]
    # With a defer that held its slot until defer_max, no import would run from here on.
    imported = sensor_to_archive(live, timeout=180)
    assert imported["run_ids"]

    def relaunched():
        again = runs_with(live, **{"core4/defer_count": "2"})
        return len({tags_of(r)["core4/defer_root"] for r in again}) == SLOTS and again

    wait_for(relaunched, 120, "each deferring run to be launched again twice", live.log_tail)
    for run_id in deferring:
        run = live.run(run_id)
        assert run["status"] == "FAILURE" and tags_of(run)["core4/state"] == "relaunched"
    paused = live.coco("pause", "ops")  # stop the relaunching; the last deferred runs wait
    assert paused.returncode == 0, paused.stdout + paused.stderr
    restart = live.coco("restart", "ops.deferrer")
    assert restart.returncode == 2 and "no failed run to restart" in restart.stderr, restart.stdout + restart.stderr


def test_info_finds_the_served_instance_and_tells_the_state_of_each_project(served):
    live = served.live
    proc = live.root / "proc" / "ops"
    drop_into_proc(proc, "waiting-1.csv", b"a\n1\n")
    drop_into_proc(proc, "waiting-2.csv", b"a\n1\n")
    drop_into_proc(proc / ".batch" / "b-failed", "claimed.csv", b"a\n1\n")
    (live.root / "error" / "ops").mkdir(parents=True, exist_ok=True)
    (live.root / "error" / "ops" / "bad.csv").write_text("?")
    (live.root / "error" / "ops" / "bad.csv.reason.txt").write_text("why")
    done = live.coco("enqueue", "ops.fails", "--tag", "core4/batch=b-failed", "--wait")
    assert done.returncode == 1 and "FAILURE" in done.stdout, done.stdout + done.stderr
    failed = RUN_ID.search(done.stdout).group(1)

    # The configuration names another port: the state file of `coco serve` wins.
    env = {**live.full_env(), "CORE4_OPTION_dagster__port": str(free_port())}
    done = subprocess.run([str(BIN / "coco"), "info"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    text = done.stdout
    assert f"webserver  {live.url}\n" in text
    assert re.search(r"daemon     last heartbeat \d+s ago", text), text
    assert re.search(r"mongodb    mongodb://[^:\s]+:\*\*\*@127\.0\.0\.1:\d+", text), text
    ops = text[text.index("project    ops"):]
    assert "ops  (paused)" in text  # the previous test paused it
    assert "proc     2 files waiting" in ops and "batches  1 claimed (1 wait on a failed run)" in ops
    assert "error    1 files" in ops
    assert re.search(r"runs 24h 0 queued, 0 running, 1 failed, [1-9]\d* deferred", ops), ops
    assert re.search(r"project    demo  \(\d+ of \d+ sensors/schedules running\)", text), text

    restarted = live.coco("restart", "ops.fails")
    assert restarted.returncode == 0 and f"run {failed} re-executed" in restarted.stdout, restarted.stderr


def sensor_states(live, project: str) -> dict[str, str]:
    return {s["name"]: s["sensorState"]["status"] for s in live.repository(project)["sensors"]}


def test_pause_survives_a_restart_by_ctrl_c_and_resume_brings_the_imports_back(served):
    live = served.live
    paused = live.coco("pause", "demo")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    assert set(sensor_states(live, "demo").values()) == {"STOPPED"}
    waiting = drop_into_proc(live.root / "proc" / "demo", "readings-paused.csv",
                             b"sensor,value\nA,1\nB,2\n")

    # A run in progress: its worker is among what Ctrl-C must stop.
    running = enqueued(live.coco("enqueue", "ops.sleeper", "--force"))
    wait_for(lambda: live.run(running)["status"] == "STARTED", 120, "the sleeper to start", live.log_tail)
    took = served.restart_by_ctrl_c()
    print(f"Ctrl-C stopped coco serve and everything it started in {took:.1f}s")
    assert took <= 10, f"Ctrl-C took {took:.1f}s to stop everything"
    live = served.live
    assert set(sensor_states(live, "demo").values()) == {"STOPPED"}, "paused state lost in the restart"
    assert set(sensor_states(live, "ops").values()) == {"STOPPED"}
    assert waiting.exists(), "a paused project's file was claimed"

    resumed = live.coco("resume", "demo")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert set(sensor_states(live, "demo").values()) == {"RUNNING"}
    archive = live.root / "archive" / "demo"
    wait_for(lambda: list(archive.rglob("readings-paused.csv.gz")), 120, "the file to be imported after resume",
             live.log_tail)

    sleeping = enqueued(live.coco("enqueue", "ops.sleeper", "--force"))
    wait_for(lambda: live.run(sleeping)["status"] == "STARTED", 120, "the sleeper to start", live.log_tail)
    halted = live.coco("halt", "--kill")
    assert halted.returncode == 0, halted.stdout + halted.stderr
    assert set(sensor_states(live, "demo").values()) == {"STOPPED"}
    assert live.wait_for_run(sleeping, 120)["status"] in FINISHED - {"SUCCESS"}
