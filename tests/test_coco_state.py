"""`coco` finds the running instance (coco-serve.json), info's counting, the run queue's size
as configuration, and the GraphQL documents of pause/resume/info against this Dagster's schema."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from core4_pipelines.coco import control, info
from core4_pipelines.coco.state import ServeState, read_state, remove_state, served_url, write_state
from core4_resources.config.settings import load_config
from core4_resources.errors import ConfigError


def test_graphql_documents_are_valid_for_this_dagster():
    import graphql
    from dagster_graphql.schema import create_schema

    schema = graphql.build_schema(str(create_schema()))
    problems = {name: [e.message for e in graphql.validate(schema, graphql.parse(getattr(module, name)))]
                for module in (control, info) for name in module.DOCUMENTS}
    assert problems == {name: [] for name in problems}


def test_info_names_what_the_library_names():
    from core4_pipelines.ingest.claim import BATCH_DIR
    from core4_pipelines.ingest.job import BATCH_TAG
    from core4_pipelines.supervise.runtime import STATE_TAG
    from core4_resources.files.folders import REASON_SUFFIX

    assert (info.BATCH_DIR, info.BATCH_TAG, info.STATE_TAG, info.REASON_SUFFIX) == (
        BATCH_DIR, BATCH_TAG, STATE_TAG, REASON_SUFFIX)


def test_the_state_of_a_running_serve_is_found_and_a_dead_ones_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path))
    monkeypatch.setenv("CORE4_OPTION_dagster__port", "3999")
    settings = load_config()
    home = str(tmp_path / "dagster")
    os.makedirs(home)
    assert served_url(settings) == ("http://127.0.0.1:3999", None)  # nothing recorded: the configuration

    serving = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "coco", "serve"])
    other = subprocess.Popen(["sleep", "60"])  # a pid reused by another program
    try:
        write_state(home, ServeState("http://127.0.0.1:4123", serving.pid, "mongodb://core4:***@127.0.0.1:5/"))
        url, state = served_url(settings)
        assert url == "http://127.0.0.1:4123" and state.mongo_url == "mongodb://core4:***@127.0.0.1:5/"
        write_state(home, ServeState("http://127.0.0.1:4125", other.pid, "-"))
        assert read_state(home) is None
    finally:
        for process in (serving, other):
            process.kill()
            process.wait()

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    write_state(home, ServeState("http://127.0.0.1:4124", int(gone.stdout), "-"))
    assert read_state(home) is None and served_url(settings)[0] == "http://127.0.0.1:3999"

    remove_state(home, serving.pid)  # not the writer of the file now: it stays
    assert read_state(home, only_running=False).url == "http://127.0.0.1:4124"
    remove_state(home, int(gone.stdout))
    assert read_state(home, only_running=False) is None


def test_info_counts_deferred_runs_apart_from_failures():
    def run(project, status, **tags):
        return {"status": status, "repositoryOrigin": {"repositoryLocationName": project},
                "tags": [{"key": k, "value": v} for k, v in tags.items()]}

    runs = [run("a", "QUEUED"), run("a", "STARTED"), run("a", "FAILURE"),
            run("a", "FAILURE", **{"core4/state": "deferred"}),
            run("a", "FAILURE", **{"core4/state": "relaunched"}), run("b", "SUCCESS"), run("b", "CANCELING")]
    counts = info.count_runs(runs)
    assert dict(counts["a"]) == {"queued": 1, "running": 1, "failed": 1, "deferred": 1}
    assert dict(counts["b"]) == {"running": 1}


def test_info_counts_proc_batches_and_errors_without_a_webserver(tmp_path, monkeypatch):
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path))
    settings = load_config()
    proc = tmp_path / "proc" / "sales"
    (proc / ".batch" / "b1").mkdir(parents=True)
    (proc / ".batch" / "b1" / "x.csv").write_text("a\n")
    (proc / ".batch" / "b2").mkdir()  # imported: empty
    for name in ("1.csv", "2.csv", ".3.csv.part"):
        (proc / name).write_text("a\n")
    errors = tmp_path / "error" / "sales"
    errors.mkdir(parents=True)
    (errors / "bad.csv").write_text("?")
    (errors / "bad.csv.reason.txt").write_text("why")

    lines = info.info_lines(settings, None, None, ["sales"])
    text = "\n".join(lines)
    assert "proc     2 files waiting" in text and "batches  1 claimed" in text and "error    1 files" in text
    assert "embedded (started by coco serve; not running)" in text
    assert "disk       enough free under root, archive and error (folder.min_free 1%)" in text
    monkeypatch.setenv("CORE4_OPTION_folder__min_free", "100%")
    text = "\n".join(info.info_lines(load_config(), None, None, ["sales"]))
    assert f"disk       claims paused: {tmp_path} has " in text and "below folder.min_free 100%" in text


def test_max_concurrent_runs_is_configured_and_checked(tmp_path, monkeypatch):
    from core4_pipelines.coco.instance import write_instance

    monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path))
    monkeypatch.setenv("CORE4_OPTION_dagster__max_concurrent_runs", "2")
    home = write_instance(load_config())
    with open(os.path.join(home, "dagster.yaml")) as handle:
        written = yaml.safe_load(handle)
    assert written["run_coordinator"]["config"]["max_concurrent_runs"] == 2

    monkeypatch.setenv("CORE4_OPTION_dagster__max_concurrent_runs", "0")
    with pytest.raises(ConfigError, match="dagster.max_concurrent_runs.*expected an integer from 1 to 1000"):
        load_config()
