"""`coco serve` end to end: GraphQL, the daemon's sensors, run monitoring, reloads, per-project venvs."""

from __future__ import annotations

import gzip
import sys

import pymongo
from liveprojects import OWNVENV_MONGO_PASSWORD, PROJECTS
from livestack import (
    WORKSPACE_QUERY,
    python_error_text,
    sensor_to_archive,
    visible_entries,
    wait_for,
)

LOADED = ("demo", "ownvenv", "second")


def sensors_of(repository: dict) -> dict[str, str]:
    return {sensor["name"]: sensor["sensorState"]["status"] for sensor in repository["sensors"]}


def jobs_of(repository: dict) -> set[str]:
    return {job["name"] for job in repository["jobs"]}


def test_workspace_lists_every_project_and_isolates_the_broken_one(live):
    from dagster_graphql import ReloadRepositoryLocationStatus

    locations = live.locations()
    assert sorted(locations) == sorted(PROJECTS)
    for name in LOADED:
        assert locations[name]["locationOrLoadError"]["__typename"] == "RepositoryLocation", name
    broken = locations["broken"]["locationOrLoadError"]
    assert broken["__typename"] == "PythonError"
    assert "this project is broken on purpose" in python_error_text(broken)

    demo = live.repository("demo")
    assert {"download_samples", "import_readings"} <= jobs_of(demo)
    assert sensors_of(demo)["import_readings_proc_sensor"] == "RUNNING"
    second = live.repository("second")
    assert "import_records" in jobs_of(second)
    assert sensors_of(second)["import_records_proc_sensor"] == "RUNNING"

    # The same through Dagster's Python client: the broken location reports its error on reload.
    client = live.client()
    failed = client.reload_repository_location("broken")
    assert failed.status == ReloadRepositoryLocationStatus.FAILURE
    assert failed.failure_type == "PythonError" and "broken.definitions" in failed.message
    assert client.reload_repository_location("demo").status == ReloadRepositoryLocationStatus.SUCCESS


def test_files_dropped_into_proc_are_imported_and_archived_by_the_daemon(live):
    flow = sensor_to_archive(live, timeout=120)

    for name, data in flow["names"].items():
        assert gzip.decompress(flow["archives"][name].read_bytes()) == data, name
    assert visible_entries(flow["proc"]) == []
    assert visible_entries(flow["proc"] / ".batch") == []
    assert flow["run_ids"], "no import run stamped the records"
    for run_id in flow["run_ids"]:
        run = live.wait_for_run(run_id, 60)
        tags = {tag["key"]: tag["value"] for tag in run["tags"]}
        assert run["status"] == "SUCCESS", run
        assert tags.get("dagster/sensor_name") == "import_readings_proc_sensor", tags
        assert tags.get("core4/batch"), tags


def test_job_submitted_through_graphql_with_run_config_succeeds(live):
    client = live.client()
    run_id = client.submit_job_execution(
        "download_samples",
        repository_location_name="demo",
        run_config={"ops": {"download_samples_fetch": {"config": {"copies": 2}}}},
    )
    run = live.wait_for_run(run_id, 120)
    assert run["status"] == "SUCCESS", live.run_messages(run_id)[-10:]
    assert client.get_run_status(run_id).value == "SUCCESS"
    fetched = [m for m in live.run_messages(run_id) if m.startswith("fetched ")]
    assert len(fetched) == 2 * 4, fetched  # copies=2 of the four samples: the run config was used

    # The downloaded files land in proc, and the running sensor imports them too.
    readings = pymongo.MongoClient(live.mongo_url, serverSelectionTimeoutMS=5000)["demo"]["readings"]
    marker = {"_src": {"$regex": f"-{run_id[:8]}-"}}
    wait_for(lambda: readings.count_documents(marker) == 8 * 24, 120,
             "the sensor to import the downloaded files", live.log_tail)
    readings.database.client.close()


RELOAD_EDIT = '''

# Added while the stack runs: a reload must pick this job up.
@_dg.op
def added_while_running():
    return 1


@_dg.job
def added_by_edit():
    added_while_running()


defs = _dg.Definitions.merge(defs, _dg.Definitions(jobs=[added_by_edit]))
'''


def test_reloading_a_location_picks_up_an_edit(live):
    from dagster_graphql import ReloadRepositoryLocationStatus

    assert "added_by_edit" not in jobs_of(live.repository("second"))
    with open(live.home / "second" / "second" / "definitions.py", "a", encoding="utf-8") as handle:
        handle.write(RELOAD_EDIT)
    info = live.client().reload_repository_location("second")
    assert info.status == ReloadRepositoryLocationStatus.SUCCESS, info.message
    jobs = jobs_of(live.repository("second"))
    assert {"added_by_edit", "import_records", "overruns_wall_time"} <= jobs


def test_wall_time_stops_an_overrunning_run(live):
    run_id = live.client().submit_job_execution("overruns_wall_time", repository_location_name="second")
    run = live.wait_for_run(run_id, 120)
    messages = live.run_messages(run_id)
    # Run monitoring cancels the run and marks it failed; the run worker, told to stop,
    # may record the cancellation first: either way the run was stopped for its wall_time.
    assert run["status"] in ("FAILURE", "CANCELED"), run
    assert any("maximum runtime of 3 seconds" in m for m in messages), messages[-10:]
    assert not any("woke up" in m for m in messages)
    assert run["endTime"] - run["startTime"] < 60  # the op sleeps 300 s


def test_project_with_its_own_venv_loads_and_runs_with_that_interpreter(live):
    venv = live.home / "ownvenv" / ".venv"
    python = str(venv / "bin" / "python")
    assert python != sys.executable
    entry = live.locations()["ownvenv"]
    metadata = {item["key"]: item["value"] for item in entry["displayMetadata"]}
    assert metadata["executable_path"] == python
    workspace = (live.dagster_home / "workspace.yaml").read_text()
    assert f"executable_path: {python}" in workspace

    run_id = live.client().submit_job_execution("which_python", repository_location_name="ownvenv")
    run = live.wait_for_run(run_id, 120)
    messages = live.run_messages(run_id)
    assert run["status"] == "SUCCESS", messages[-10:]
    assert f"sys.executable={python}" in messages
    assert f"sys.prefix={venv}" in messages
    # ownvenv_only is installed in the project's .venv and nowhere else
    assert any(m.startswith(f"ownvenv_only={venv}/lib/") for m in messages), messages


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":  # LISTEN
                found.add(address)
    return found


def test_webserver_binds_loopback_and_secrets_stay_hidden(live):
    # The stack's config sets no dagster.host: the packaged default applies.
    assert listening_addresses(live.port) == {"0100007F"}, "the webserver must listen on 127.0.0.1 only"
    log = live.log_path.read_text(errors="replace")
    assert f"Dagster UI: http://127.0.0.1:{live.port}" in log

    # ownvenv's yaml has a MongoDB URL with a password: the UI's resource config shows an env var.
    resources = {r["name"]: r for r in live.repository("ownvenv")["allTopLevelResourceDetails"]}
    shown = {v["key"]: v for v in resources["mongo"]["configuredValues"]}
    assert shown["mongo_url"]["type"] == "ENV_VAR", shown["mongo_url"]
    assert OWNVENV_MONGO_PASSWORD not in str(live.graphql(WORKSPACE_QUERY))

    config = live.coco("config", "--project", "ownvenv")
    assert config.returncode == 0, config.stderr
    assert "reader:***@" in config.stdout and OWNVENV_MONGO_PASSWORD not in config.stdout + config.stderr
    assert OWNVENV_MONGO_PASSWORD not in live.log_path.read_text(errors="replace")
    for path in live.dagster_home.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".log", ".txt", ".out", ".err"):
            assert OWNVENV_MONGO_PASSWORD not in path.read_text(errors="replace"), path
