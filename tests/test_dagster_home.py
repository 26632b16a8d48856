"""One Dagster home for every entry point: `dg dev` in a project made by `coco init`, and
`dagster dev -w` on a workspace `coco workspace` wrote, keep their runs in the instance `coco
serve` uses (<folder.root>/dagster), not in a temporary home; nothing of theirs is left untracked
in the project; `coco runs` shows how long a run took and why it failed.

Every server here listens on 127.0.0.1 on a free port and is stopped, with the embedded MongoDB
an import starts, whether the test passes or not."""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest
from support import BIN, REPO, coco

from core4_pipelines.coco.dagster_api import RUNS, DagsterAPI
from core4_pipelines.coco.errors import OperateError
from core4_pipelines.coco.instance import DOTENV, write_dagster_env
from core4_pipelines.coco.operate import run_rows
from core4_pipelines.errors import PipelineError
from core4_resources.mongo.embedded.server import free_port

START_TIMEOUT = 240  # dagster dev loads its code locations in processes of their own, on 2 cores


def environment(tmp_path) -> dict[str, str]:
    """This environment with folder.root and folder.home under tmp_path and no DAGSTER_HOME:
    whatever instance the servers use, they find it themselves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORE4_OPTION_") and k != "DAGSTER_HOME"}
    env.update(CORE4_OPTION_folder__root=str(tmp_path / "root"), CORE4_OPTION_folder__home=str(tmp_path / "home"),
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


def git_status(folder) -> str:
    done = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=all"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextlib.contextmanager
def serving(command: list[str], cwd, env: dict[str, str], log_path) -> DagsterAPI:
    """``command`` (a dagster dev) in a process group of its own; Ctrl-C for the whole group on
    the way out, then SIGKILL for whatever still runs; the embedded MongoDB stopped too."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)], cwd=cwd, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    try:
        yield DagsterAPI(f"http://127.0.0.1:{port}", timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # children that outlived dagster dev
        process.wait(10)
        subprocess.run([sys.executable, "-m", "core4_resources.mongo.embedded.root", "stop"], env=env,
                       capture_output=True, timeout=60, check=False)


def wait_for(what: str, check, log_path, timeout: float = START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except OperateError:
            found = None
        if found:
            return found
        time.sleep(1)
    with open(log_path, errors="replace") as handle:
        tail = handle.read()[-3000:]
    pytest.fail(f"no {what} within {timeout} s; the server's log ends:\n{tail}")


def finished_runs(api: DagsterAPI) -> list[dict]:
    return [run for run in api.runs(limit=10) if run["status"] in ("SUCCESS", "FAILURE", "CANCELED")]


def kept_runs(tmp_path) -> list[dg.DagsterRun]:
    """The runs in the instance under folder.root, read after the servers are gone."""
    home = tmp_path / "root" / "dagster"
    assert (home / "dagster.yaml").is_file(), f"no instance at {home}"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return list(instance.get_runs())


def test_dg_dev_in_a_new_project_keeps_its_runs_with_coco_serve_and_leaves_git_clean(tmp_path):
    env = environment(tmp_path)
    done = coco("init", "sales", env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    project = tmp_path / "home" / "sales"
    assert git_status(project) == ""

    log = tmp_path / "dg-dev.log"
    with serving([os.path.join(BIN, "dg"), "dev"], project, env, log) as api:
        wait_for("webserver", lambda: api.runs(limit=1) is not None, log)
        with open(tmp_path / "root" / "proc" / "sales" / "cities.csv", "w") as handle:
            handle.write("city,celsius\nberlin,21.5\nkoeln,19\n")
        (run,) = wait_for("finished import run", lambda: finished_runs(api), log)
        assert run["status"] == "SUCCESS", run
        assert git_status(project) == ""  # while it runs, too: no temporary home in the project
        (row,) = run_rows([run])
        assert row[4] not in ("-", "0s", "0.0s"), row  # TIME: how long the import took, to a tenth of a second

    assert [(r.run_id, r.status) for r in kept_runs(tmp_path)] == [(run["runId"], dg.DagsterRunStatus.SUCCESS)]
    assert git_status(project) == ""
    assert not glob.glob(str(project / ".tmp_dagster_home_*"))


FAILING_JOB = '''
import time

import dagster as dg

from core4_pipelines import project_definitions


@dg.op
def check_header():
    time.sleep(1.5)
    raise ValueError("cities.csv has no header line\\nthe second line of the message")


@dg.job
def check_files():
    check_header()


defs = project_definitions("sales", jobs=[check_files])
'''


def test_dagster_dev_on_cocos_workspace_keeps_its_runs_and_coco_runs_says_time_and_failure(tmp_path):
    env = environment(tmp_path)
    assert coco("init", "sales", env=env, timeout=120).returncode == 0
    (tmp_path / "home" / "sales" / "sales" / "definitions.py").write_text(FAILING_JOB)
    workspace = tmp_path / "ops" / "workspace.yaml"
    done = coco("workspace", "-o", str(workspace), env=env)
    assert done.returncode == 0, done.stdout + done.stderr

    log = tmp_path / "dagster-dev.log"
    with serving([os.path.join(BIN, "dagster"), "dev", "-w", str(workspace)], workspace.parent, env, log) as api:
        wait_for("code location sales", lambda: api.job_op_fields("sales", "check_files"), log)
        run_id = api.launch("sales", "check_files", {}, {})
        (run,) = wait_for("finished run", lambda: finished_runs(api), log)
        assert run["runId"] == run_id and run["status"] == "FAILURE", run

        listed = coco("runs", "--url", api.url, env=env)
        assert listed.returncode == 0, listed.stderr
        (line,) = [line for line in listed.stdout.splitlines() if line.startswith(run_id[:8])]
        seconds = float(line.split()[5].removesuffix("s"))  # RUN JOB STATUS date time-of-day TIME INFO
        assert 1.5 <= seconds < 60, line
        assert "failed: ValueError: cities.csv has no header line" in line, line  # the op's own error

        # With its failure event, the run's INFO is the first line of the op's own error.
        result = api.query(RUNS, {"filter": {"runIds": [run_id]}, "limit": 1, "withFailures": True})
        (row,) = run_rows(result["runsOrError"]["results"])
        assert row[5] == "failed: ValueError: cities.csv has no header line", row

    assert [(r.run_id, r.status) for r in kept_runs(tmp_path)] == [(run_id, dg.DagsterRunStatus.FAILURE)]
    assert not glob.glob(str(workspace.parent / ".tmp_dagster_home_*"))


def test_the_env_file_sets_dagster_home_unless_one_is_exported_and_keeps_other_lines(tmp_path, monkeypatch):
    from dagster._core.secrets.env_file import get_env_var_dict  # what dagster dev reads

    (tmp_path / DOTENV).write_text("RECORDS_LIMIT=5\nexport DAGSTER_HOME=/old/home\n")
    write_dagster_env(str(tmp_path), "/srv/core4 root/dagster")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert get_env_var_dict(str(tmp_path)) == {"RECORDS_LIMIT": "5", "DAGSTER_HOME": "/srv/core4 root/dagster"}
    monkeypatch.setenv("DAGSTER_HOME", "/exported/home")
    assert get_env_var_dict(str(tmp_path))["DAGSTER_HOME"] == "/exported/home"

    with pytest.raises(PipelineError) as error:
        write_dagster_env(str(tmp_path), "/srv/$HOME/dagster")
    assert "'/srv/$HOME/dagster'" in str(error.value) and "dagster.home" in str(error.value)


def test_the_repositorys_env_points_its_workspace_at_the_default_dagster_home(monkeypatch):
    from dagster._core.secrets.env_file import get_env_var_dict

    from core4_pipelines.coco.instance import dagster_home
    from core4_resources.config.settings import load_config

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert os.path.isfile(os.path.join(REPO, "workspace.yaml"))
    assert get_env_var_dict(REPO) == {"DAGSTER_HOME": dagster_home(load_config())}
