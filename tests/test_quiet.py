"""Quiet by default: what our processes print is what a user acts on.

- Dagster's beta warnings about its own calls are not printed where a project loads; a
  project's own use of a beta API still warns.
- `coco demo` / `coco drain` print a line per run and a summary with each rejected file's
  reason; no Dagster event lines, no stack trace -- unless -v.
- `coco serve` passes dagster dev's output on without the lines that say nothing happened
  (DagsterOutputFilter, checked against the skip reasons our sensors really give), and
  dagster dev never waits for coco serve's output to be read (OutputForwarder).
The whole `coco serve` is checked in tests/live/test_live_quiet.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time

import dagster as dg
from support import COCO, REPO, tick

from core4_pipelines.coco.serve_output import DagsterOutputFilter, OutputForwarder
from core4_pipelines.ingest.job import import_job
from core4_pipelines.supervise.monitor import monitor_sensor
from core4_pipelines.ingest.readers import read_csv
from core4_pipelines.ingest.sensor import proc_folder_sensor

BROKEN = b"station,hour,temperature,humidity\nberlin,0,2.1\n"  # line 2: 3 fields of 4


# -- warnings ------------------------------------------------------------------------------------


def test_dagsters_warnings_about_itself_are_ignored_a_projects_own_are_not(tmp_path):
    """A project of YAML components loads: Dagster's component loader and sensor decorator use
    beta APIs internally (BetaWarning x3 without the filter). The project's own module then uses a
    beta class itself: that warning stays, attributed to the project's file."""
    package = tmp_path / "home" / "quietproject" / "quietproject"
    (package / "defs" / "records").mkdir(parents=True)
    (package / "__init__.py").write_text('__project__ = "core4"\n')
    (package / "quietproject.yaml").write_text("")
    (package / "defs" / "records" / "defs.yaml").write_text(
        "type: core4_pipelines.FileImport\nattributes:\n  collection: records\n")
    (package / "definitions.py").write_text(textwrap.dedent("""
        import dagster as dg
        from core4_pipelines import project_definitions

        defs = project_definitions("quietproject")
        assert defs.resolve_job_def("import_records") is not None
        own = dg.LocalFileCodeReference(file_path=__file__, line_number=1)  # the project's own beta use
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORE4_OPTION_", "PYTHONWARNINGS"))}
    env.update(CORE4_CONFIG=str(tmp_path / "none.yaml"), CORE4_OPTION_folder__root=str(tmp_path / "root"),
               PYTHONPATH=str(package.parent))
    (tmp_path / "none.yaml").write_text("")
    done = subprocess.run([sys.executable, "-c", "import quietproject.definitions"], capture_output=True,
                          text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "Warning:" in line]
    assert len(warned) == 1, done.stderr
    assert warned[0].startswith(f"{package / 'definitions.py'}:7: BetaWarning: Class `LocalFileCodeReference`")


# -- coco demo and coco drain ------------------------------------------------------------------


def test_coco_demo_prints_a_summary_and_the_reason_of_a_rejected_file_and_v_shows_dagsters_log(tmp_path):
    root = tmp_path / "root"
    proc = root / "proc" / "demo"
    proc.mkdir(parents=True)
    (proc / "readings-broken.csv").write_bytes(BROKEN)  # claimed with the download's four files
    common = ("--root", str(root), "--home", os.path.join(REPO, "projects"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORE4_OPTION_")}

    done = subprocess.run([COCO, *common, "demo"], capture_output=True, text=True, env=env, timeout=300)
    printed = done.stdout + done.stderr
    assert done.returncode == 1, printed  # a file in error is not a clean drain
    assert "demo.download_samples: run " in done.stdout and " succeeded (in-process)" in done.stdout
    # The broken file, older, may be claimed a tick before the download's files: one or two runs.
    assert re.search(r"^import_readings: 5 files, 96 records into demo\.readings, [12] runs?, 1 files in error, "
                     r"4 archived, 0 left in proc$", done.stdout, re.MULTILINE), printed
    assert "  in error: readings-broken.csv: line 2: expected 4 fields, got 3\n" in done.stdout, printed
    assert "coco retry demo NAME" in done.stdout
    for noise in (" - DEBUG - ", "Traceback", "STEP_FAILURE", "Warning:"):
        assert noise not in printed, f"{noise!r} in:\n{printed}"
    assert len(printed.splitlines()) <= 10, printed

    (proc / "readings-broken-again.csv").write_bytes(BROKEN)
    verbose = subprocess.run([COCO, *common, "drain", "demo", "-v"], capture_output=True, text=True, env=env,
                             timeout=300)
    printed = verbose.stdout + verbose.stderr
    assert verbose.returncode == 1, printed
    assert " - DEBUG - " in printed and "STEP_FAILURE" in printed, printed  # Dagster's log of the run
    assert "  in error: readings-broken-again.csv: line 2: expected 4 fields, got 3" in verbose.stdout, printed


# -- coco serve: which lines of dagster dev's output it shows ----------------------------------


def daemon_line(message: str, level: str = "INFO", logger: str = "dagster.daemon.SensorDaemon") -> str:
    """A line as dagster dev's daemon prints it (colored, as it is even into a pipe)."""
    return (f"\x1b[32m2026-01-31 12:00:00 +0000\x1b[0m - {logger} - \x1b[34m{level}\x1b[0m - {message}\n")


def test_serve_drops_ticks_that_did_nothing_with_the_reasons_our_sensors_give(folders, mongo, instance):
    shown = DagsterOutputFilter(repeat_after=600, clock=lambda: now)
    now = 0.0
    job = import_job("import_things", read=read_csv, collection="things", project="demo")
    sensor = proc_folder_sensor(job, min_age_seconds=5)
    idle = tick(sensor, folders, mongo, instance).skip_message
    assert idle.startswith("nothing to claim in ")
    monitor = monitor_sensor("demo", [job], {"zombie_time": 600, "zombie_action": "flag"})
    monitor_idle = monitor(dg.build_sensor_context(instance=instance)).skip_message
    for message in (f"Checking for new runs for sensor: {sensor.name}", f"Sensor {sensor.name} skipped: {idle}",
                    f"Sensor core4_monitor skipped: {monitor_idle}",
                    "Sensor core4_chain skipped: Sensor function returned an empty result",
                    "No run requests returned for core4_chain, skipping"):
        assert not shown.keep(daemon_line(message)), message
    assert not shown.keep("2026-01-31 12:00:00 +0000 - dagster - DEBUG - import_things - 1b2c - 42 - "
                          "STEP_START - Started execution of step \"import_things_batch\".\n")

    # A tick that found something to say: shown once, not at every tick while it holds.
    os.makedirs(folders.proc_folder(), exist_ok=True)
    with open(os.path.join(folders.proc_folder(), "things-1.csv"), "w") as handle:
        handle.write("a,b\n1,2\n")  # new: not yet unchanged for min_age_seconds
    busy = tick(sensor, folders, mongo, instance).skip_message
    assert "1 files not yet unchanged for 5s" in busy
    assert shown.keep(daemon_line(f"Sensor {sensor.name} skipped: {busy}"))
    assert not shown.keep(daemon_line(f"Sensor {sensor.name} skipped: {busy}"))
    now = 601.0  # still so ten minutes later: shown again, as a reminder
    assert shown.keep(daemon_line(f"Sensor {sensor.name} skipped: {busy}"))
    # What happened is always shown: runs launched, errors, warnings, a traceback, a run's INFO.
    for line in (daemon_line(f"Launching run for {sensor.name}"),
                 daemon_line("Launched 1 runs.", logger="dagster.daemon.QueuedRunCoordinatorDaemon"),
                 daemon_line(f"Error occurred during the execution of evaluation_fn for sensor {sensor.name}",
                             level="ERROR"),
                 "Traceback (most recent call last):\n",
                 "2026-01-31 12:00:00 +0000 - dagster - INFO - import_things - 1b2c - import_things_batch - "
                 "sources (1): things-1.csv\n"):
        assert shown.keep(line), line


def test_serve_never_makes_dagster_dev_wait_for_its_output_to_be_read(tmp_path):
    """coco serve's own output is a pipe nobody reads (a paused terminal): dagster dev still
    writes all it has to say and goes on; coco serve drops what it cannot pass on, and says so."""
    unread_out, blocked_out = os.pipe()
    unread_err, blocked_err = os.pipe()
    forwarder = OutputForwarder(lambda line: True, stdout=os.fdopen(blocked_out, "w"),
                                stderr=os.fdopen(blocked_err, "w"), max_lines=1000)
    talker = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfor i in range(40000):\n    print('x' * 99)\n"
                               "    print('y' * 99, file=sys.stderr)\n"],
        **forwarder.popen_arguments())
    forwarder.start(talker)
    try:
        assert talker.wait(60) == 0  # 8 MB written through pipes of 64 KB nobody reads
        assert forwarder.dropped > 0
    finally:
        if talker.poll() is None:
            talker.kill()
        os.close(unread_out)  # now the writer's writes fail: it drops the rest and ends
        os.close(unread_err)
        started = time.monotonic()
        forwarder.close(5)
        assert time.monotonic() - started < 5


def test_serve_passes_on_what_it_keeps_in_order(tmp_path):
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        forwarder = OutputForwarder(DagsterOutputFilter().keep, stdout=stdout, stderr=stderr)
        script = textwrap.dedent(f"""
            import sys
            print("first")
            print({daemon_line("Checking for new runs for sensor: s")!r}, end="", file=sys.stderr)
            print({daemon_line("Launching run for s")!r}, end="", file=sys.stderr)
            print("last")
        """)
        talker = subprocess.Popen([sys.executable, "-c", script], **forwarder.popen_arguments())
        forwarder.start(talker)
        assert talker.wait(60) == 0
        forwarder.close(5)
    assert out.read_text() == "first\nlast\n"
    assert err.read_text() == daemon_line("Launching run for s")
