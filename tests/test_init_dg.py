"""`coco init` makes a dg project: `dg check defs`, `dg list defs` and `dg scaffold defs
core4_pipelines.FileImport NAME` work inside it, and a mistake in a defs.yaml is reported with its
file and key."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from support import BIN, coco


@pytest.fixture
def sales(tmp_path):
    """A `coco init sales` project and the environment dg runs in (folders under tmp_path)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORE4_OPTION_")}
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env.update(CORE4_OPTION_folder__root=str(tmp_path / "root"), DAGSTER_HOME=str(dagster_home),
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    done = coco("init", "sales", "--home", str(tmp_path / "home"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp_path / "home" / "sales", env


def dg(project, env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(BIN, "dg"), *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def listed(project, env) -> dict:
    done = dg(project, env, "list", "defs", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_dg_checks_lists_and_scaffolds_the_definitions_of_a_new_project(sales):
    project, env = sales
    done = dg(project, env, "check", "defs")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All definitions loaded successfully" in done.stdout + done.stderr

    defs = listed(project, env)
    assert {a["asset_key"] for a in defs["assets"]} == {"sales/records", "sales/records_inbox"}
    assert {j["name"] for j in defs["jobs"]} >= {"import_records"}
    assert {s["name"] for s in defs["sensors"]} >= {"import_records_proc_sensor"}

    done = dg(project, env, "scaffold", "defs", "core4_pipelines.FileImport", "prices")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (project / "sales" / "defs" / "prices" / "defs.yaml").is_file()
    assert dg(project, env, "check", "defs").returncode == 0
    defs = listed(project, env)
    assert {a["asset_key"] for a in defs["assets"]} >= {"sales/prices", "sales/prices_inbox"}
    assert {j["name"] for j in defs["jobs"]} >= {"import_records", "import_prices"}

    # An sFTP download into that import: its password named by a variable, nothing to connect to at load.
    done = dg(project, env, "scaffold", "defs", "core4_pipelines.SftpDownload", "prices_sftp")
    assert done.returncode == 0, done.stdout + done.stderr
    text = (project / "sales" / "defs" / "prices_sftp" / "defs.yaml").read_text()
    assert "password: PRICES_SFTP_SFTP_PASSWORD" in text and "known_hosts:" in text
    path = project / "sales" / "defs" / "prices_sftp" / "defs.yaml"
    path.write_text(text.replace("collection: prices_sftp", "collection: prices"))
    assert dg(project, env, "check", "defs").returncode == 0
    assert {j["name"] for j in listed(project, env)["jobs"]} >= {"download_prices"}


def test_dg_check_names_the_file_and_the_key_of_a_mistake(sales):
    project, env = sales
    path = project / "sales" / "defs" / "records" / "defs.yaml"
    path.write_text(path.read_text().replace("  collection: records\n", "  collection: records\n  batch_size: many\n"))
    done = dg(project, env, "check", "defs")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert str(path) in output and "batch_size" in output, output
