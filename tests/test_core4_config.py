"""An existing core4 configuration loads: folder.process, !connect; core4 job sections and
typos in jobs.<job> are errors naming the place and the fix."""

from __future__ import annotations

import pytest
import test_config
from test_config import error_of, write

from core4_pipelines.coco.cli import main
from core4_resources.config.settings import load_config

local = test_config.local  # the fixture: write the local file, point CORE4_CONFIG at it


def test_folder_process_is_core4s_name_for_proc(local, capsys):
    path = local("folder:\n  root: /srv/core4\n  process: incoming\n")
    settings = load_config()
    assert settings.folder.proc == "/srv/core4/incoming"
    assert settings.sources["folder.proc"] == f"as core4's folder.process from {path}"
    assert main(["config"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("folder.proc"))
    assert "/srv/core4/incoming" in line and f"as core4's folder.process from {path}" in line


def test_folder_process_from_env(monkeypatch):
    monkeypatch.setenv("CORE4_OPTION_folder__process", "/data/proc")
    settings = load_config()
    assert settings.folder.proc == "/data/proc"
    assert settings.sources["folder.proc"] == "as core4's folder.process from env CORE4_OPTION_folder__process"


def test_folder_process_invalid_names_core4s_key(local):
    path = local("folder:\n  process: 5\n")
    message = error_of()
    assert f"folder.proc (core4's folder.process) in {path}" in message


@pytest.mark.parametrize("env", [False, True])
def test_folder_proc_and_process_both_set(local, monkeypatch, env):
    if env:
        path = local("folder:\n  process: incoming\n")
        monkeypatch.setenv("CORE4_OPTION_folder__proc", "proc2")
        own = "from env CORE4_OPTION_folder__proc"
    else:
        path = local("folder:\n  process: incoming\n  proc: proc2\n")
        own = f"in {path}"
    message = error_of()
    assert f"folder.proc {own}" in message
    assert f"folder.process in {path} are both set" in message
    assert "core4's name for folder.proc; keep one of them" in message


def test_archive_default_is_ours_not_core4s():
    assert load_config().folder.archive == "/tmp/core4/archive"  # core4's packaged default was arch


def test_connect_tag_is_a_mongodb_url(local):
    local("DEFAULT:\n  mongo_url: !connect mongodb://core:secret@db.example:27017\n"
          "logging:\n  mongo_url: !connect 'mongodb+srv://cluster.example'\n")
    settings = load_config()
    assert settings.mongo_url == "mongodb://core:secret@db.example:27017"
    assert settings.logging.mongo_url == "mongodb+srv://cluster.example"


@pytest.mark.parametrize("value", ["localhost:27017", "{host: x}"])
def test_connect_tag_without_a_url(local, value):
    path = local(f"DEFAULT:\n  mongo_url: !connect {value}\n")
    message = error_of()
    assert f"invalid YAML in {path} line 2" in message
    assert "!connect (core4's connection tag) expects a MongoDB URL" in message


@pytest.fixture
def home(tmp_path):
    root = tmp_path / "home"
    (root / "demo" / "demo").mkdir(parents=True)
    return root


def test_core4_job_section_in_project_yaml(home, local):
    yaml_path = write(home / "demo" / "demo" / "demo.yaml", """\
        job:
          DemoJob:
            attempts: 3
            batch_size: 10
        """)
    local(f"folder:\n  home: {home}\n")
    message = error_of(project="demo")
    assert f"'demo.job.DemoJob' in {yaml_path} is a core4 job section (project.module.Class)" in message
    assert "demo.jobs.<job>" in message and "move its keys there" in message


def test_core4_job_section_dotted_in_local_file(home, local):
    path = local(f"folder:\n  home: {home}\ndemo.jobs_mod.ImportJob:\n  schedule: '0 6 * * *'\n")
    message = error_of()
    assert f"'demo.jobs_mod.ImportJob' in {path} is a core4 job section" in message
    assert "demo.jobs.<job>" in message


def test_class_named_options_without_job_properties_stay(home, local):
    local(f"folder:\n  home: {home}\ndemo:\n  mapping:\n    Germany:\n      code: DE\n")
    assert load_config("demo").project.options == {"mapping": {"Germany": {"code": "DE"}}}


def test_jobs_section_typo_is_an_error(home, local):
    path = local(f"folder:\n  home: {home}\ndemo:\n  jobs:\n    import_csv:\n      atempts: 4\n      batch_size: 5\n")
    message = error_of(project="demo")
    assert f"unknown key 'demo.jobs.import_csv.atempts' in {path}" in message
    assert "did you mean attempts?" in message


def test_jobs_section_typo_from_env(monkeypatch):
    monkeypatch.setenv("CORE4_OPTION_demo__jobs__load__zombie_tme", "60")
    message = error_of(project="demo")
    assert "unknown key 'demo.jobs.load.zombie_tme' from env CORE4_OPTION_demo__jobs__load__zombie_tme" in message
    assert "did you mean zombie_time?" in message


def test_jobs_section_own_settings_and_properties_load(home, local):
    local(f"folder:\n  home: {home}\ndemo:\n  jobs:\n    import_csv:\n      attempts: 4\n"
          f"      batch_size: 5\n      pattern: x\n")
    assert load_config("demo").project.jobs == {"import_csv": {"attempts": 4, "batch_size": 5, "pattern": "x"}}
