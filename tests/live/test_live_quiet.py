"""What `coco serve` prints while the demo runs: the services starting, each run launched and
what it logs at INFO -- not the sensor ticks that claimed nothing, the runs' DEBUG events, or
Dagster's warnings about itself; and Ctrl-C still stops everything within 10 s."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

from liveprojects import copy_demo
from livestack import coco_serve, descendants, sensor_to_archive

# Sensor ticks every 10 s (proc sensor) and 5 s (core4_monitor, core4_chain): this long idle
# gives each at least one tick that claimed nothing (the monitor and chain two).
IDLE_SECONDS = 12


def demo_only(home: Path, env: dict) -> None:
    home.mkdir(parents=True)
    copy_demo(home)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_coco_serve_shows_the_runs_but_not_the_ticks_that_did_nothing(tmp_path):
    with coco_serve(tmp_path, demo_only, ("demo",)) as stack:
        time.sleep(IDLE_SECONDS)  # idle ticks before any file
        flow = sensor_to_archive(stack, timeout=120)
        assert flow["run_ids"], flow
        time.sleep(IDLE_SECONDS)  # and after
        children = descendants(stack.process.pid)

        started = time.monotonic()
        stack.process.send_signal(signal.SIGINT)  # Ctrl-C
        code = stack.process.wait(30)
        stopped_after = time.monotonic() - started
        left = [pid for pid in children if _alive(pid)]
        log = stack.log_path.read_text(errors="replace")

    assert code == 0, log
    assert stopped_after < 10, f"Ctrl-C took {stopped_after:.1f}s"
    assert left == [], left
    plain = re.sub(r"\x1b\[[0-9;]*m", "", log)
    lines = plain.splitlines()
    # What happened is shown: the run launched for the files, and what the run logged at INFO.
    assert "Launching run for import_readings_proc_sensor" in plain, log
    assert any(f"import_readings - {run_id} - import_readings_batch - sources (4)" in plain
               for run_id in flow["run_ids"]), log
    assert "Shutting down Dagster services" in plain, log  # dagster dev's last words, passed on
    # What says nothing happened is not.
    assert not [line for line in lines if "Checking for new runs for sensor" in line]
    assert not [line for line in lines if re.search(r"Sensor \S+ skipped: nothing to claim in [^:]*$", line)]
    assert not [line for line in lines if "none newly silent" in line or "returned an empty result" in line]
    assert not [line for line in lines if " - DEBUG - " in line]
    assert not [line for line in lines if "BetaWarning" in line or "SupersessionWarning" in line], log
    assert "Traceback" not in plain, log
