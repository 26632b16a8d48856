"""Memory of `coco serve` with 1, 5, 10 projects, against a bare `dagster dev` with as many trivial locations.

Total PSS (proportional set size: shared pages split among the processes that
share them) of the server process and all its descendants, read from
/proc/<pid>/smaps_rollup once every location is loaded and the daemons are
healthy, after a settling pause; the median of a few samples. `coco serve`
is measured as a user runs it: with its embedded MongoDB; the figure without
it is in the context.
"""

from __future__ import annotations

import os
import statistics
import time

from bench import Row, at_most, scratch
from bench.live import (
    coco_serve,
    dagster_dev,
    memory_snapshot,
    write_project,
    write_trivial_locations,
)

NAME = "memory"
TITLE = "memory of coco serve (total PSS), vs bare dagster dev with as many locations"
COUNTS = (1, 5, 10)
SMOKE_COUNTS = (1,)
MONGO_ROLE = "embedded MongoDB"


def settle_and_sample(pid: int, settle: float, samples: int) -> dict:
    time.sleep(settle)
    snapshots = []
    for index in range(samples):
        if index:
            time.sleep(2)
        snapshots.append(memory_snapshot(pid))
    totals = [s["total"] for s in snapshots]
    middle = snapshots[totals.index(sorted(totals)[len(totals) // 2])]
    return {"total": statistics.median(totals), "by_role": middle["by_role"], "processes": len(middle["processes"])}


def measure(count: int, smoke: bool) -> Row:
    settle, samples = (2, 1) if smoke else (20, 5)
    timeout = 120 + 30 * count
    with scratch(f"{NAME}-{count}") as work:
        config = os.path.join(work, "local.yaml")
        open(config, "w").close()
        home, root = os.path.join(work, "home"), os.path.join(work, "root")
        os.makedirs(home)
        for index in range(count):
            write_project(home, f"project_{index:02d}")
        workspace = write_trivial_locations(os.path.join(work, "bare"), count)
        bare_home = os.path.join(work, "bare-home")
        if smoke:
            # Both at once: the smoke run proves the code, its figures mean nothing.
            with (
                coco_serve(home, root, config) as ours_server,
                dagster_dev(workspace, bare_home, config) as bare_server,
            ):
                ours_ready = ours_server.wait_ready(count, timeout)
                bare_ready = bare_server.wait_ready(count, timeout)
                ours = settle_and_sample(ours_server.process.pid, settle, samples)
                bare = settle_and_sample(bare_server.process.pid, 0, samples)
        else:
            with coco_serve(home, root, config) as server:
                ours_ready = server.wait_ready(count, timeout)
                ours = settle_and_sample(server.process.pid, settle, samples)
            with dagster_dev(workspace, bare_home, config) as server:
                bare_ready = server.wait_ready(count, timeout)
                bare = settle_and_sample(server.process.pid, settle, samples)
    without_mongo = ours["total"] - ours["by_role"].get(MONGO_ROLE, 0)
    return Row(
        f"{count} project{'s' if count > 1 else ''}",
        [],
        [],
        at_most(1.15),
        ratio_kind="memory",
        ours_value=ours["total"],
        baseline_value=bare["total"],
        context={
            "projects": count,
            "ours_by_role_bytes": ours["by_role"],
            "baseline_by_role_bytes": bare["by_role"],
            "ours_processes": ours["processes"],
            "baseline_processes": bare["processes"],
            "ours_without_embedded_mongo_bytes": without_mongo,
            "ratio_without_embedded_mongo": without_mongo / bare["total"],
            "ours_ready_s": ours_ready,
            "baseline_ready_s": bare_ready,
        },
    )


def run(smoke: bool) -> list[Row]:
    return [measure(count, smoke) for count in (SMOKE_COUNTS if smoke else COUNTS)]
