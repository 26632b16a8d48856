"""The configuration cascade: layers, precedence, DEFAULT, typing, errors, sources, masking."""

from __future__ import annotations

import pickle
import textwrap

import pydantic
import pytest

from core4_resources.config import sources as config_sources
from core4_resources.config.settings import load_config, mask_url
from core4_resources.errors import ConfigError

PACKAGED = f"packaged defaults ({config_sources.PACKAGED_PATH})"


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def local(tmp_path, monkeypatch):
    """Write the local file and point CORE4_CONFIG at it."""
    def _local(text: str):
        path = write(tmp_path / "etc" / "local.yaml", text)
        monkeypatch.setenv("CORE4_CONFIG", str(path))
        return path
    return _local


@pytest.fixture
def home(tmp_path):
    """A folder.home with project 'demo' (its yaml) and another project folder 'other'."""
    root = tmp_path / "home"
    write(root / "demo" / "demo" / "demo.yaml", """\
        DEFAULT:
          mongo_database: demo_db
        jobs:
          import_csv:
            batch_size: 100
            pattern: '.*\\.csv'
        api_key_name: demo
        """)
    (root / "other").mkdir()
    return root


def error_of(**kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)
    return str(info.value)


# --- layers and precedence -------------------------------------------------------------------

def test_packaged_defaults_alone():
    settings = load_config()
    assert settings.folder.root == "/tmp/core4"
    assert settings.folder.transfer == "/tmp/core4/transfer"
    assert settings.job.attempts == 1 and settings.job.zombie_time == 1800
    assert settings.mongo_url is None and settings.mongo_database == "core4"
    assert settings.project is None
    assert settings.sources["job.attempts"] == PACKAGED


def test_global_key_precedence_packaged_local_env(local, monkeypatch):
    path = local("job:\n  priority: 5\n  attempts: 2\n")
    monkeypatch.setenv("CORE4_OPTION_job__priority", "7")
    settings = load_config()
    assert settings.job.priority == 7
    assert settings.sources["job.priority"] == "env CORE4_OPTION_job__priority"
    assert settings.job.attempts == 2
    assert settings.sources["job.attempts"] == str(path)
    assert settings.job.defer_time == 300
    assert settings.sources["job.defer_time"] == PACKAGED


@pytest.mark.parametrize("in_local, in_env, expected", [
    (False, False, 100), (True, False, 200), (True, True, 300), (False, True, 300)])
def test_project_key_precedence_project_local_env(home, local, monkeypatch, in_local, in_env, expected):
    text = f"folder:\n  home: {home}\n"
    if in_local:
        text += "demo:\n  jobs:\n    import_csv:\n      batch_size: 200\n"
    path = local(text)
    if in_env:
        monkeypatch.setenv("CORE4_OPTION_demo__jobs__import_csv__batch_size", "300")
    settings = load_config("demo")
    job = settings.project.jobs["import_csv"]
    assert job["batch_size"] == expected
    assert job["pattern"] == ".*\\.csv"  # untouched keys of the project yaml survive the merge
    source = settings.sources["demo.jobs.import_csv.batch_size"]
    assert source == {100: str(home / "demo" / "demo" / "demo.yaml"), 200: str(path),
                      300: "env CORE4_OPTION_demo__jobs__import_csv__batch_size"}[expected]


def test_project_yaml_given_explicitly(tmp_path):
    yaml_path = write(tmp_path / "p.yaml", "jobs:\n  load:\n    size: 3\nmode: fast\n")
    settings = load_config("demo", project_yaml=yaml_path)
    assert settings.project.name == "demo"
    assert settings.project.jobs == {"load": {"size": 3}}
    assert settings.project.options == {"mode": "fast"}
    assert settings.sources["demo.mode"] == str(yaml_path)


def test_explicit_project_yaml_missing(tmp_path):
    message = error_of(project="demo", project_yaml=tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in message and "'demo'" in message


def test_only_one_local_file_user_before_system(tmp_path, monkeypatch):
    user = write(tmp_path / "user" / ".core4" / "local.yaml", "job:\n  priority: 1\n")
    system = write(tmp_path / "system.yaml", "job:\n  priority: 2\n  attempts: 4\n")
    monkeypatch.setattr(config_sources, "SYSTEM_CONFIG", system)
    settings = load_config(environ={"HOME": str(tmp_path / "user")})
    assert settings.job.priority == 1
    assert settings.job.attempts == 1  # the system file is not read when the user file exists
    assert settings.sources["job.priority"] == str(user)
    settings = load_config(environ={"HOME": str(tmp_path / "nobody")})
    assert (settings.job.priority, settings.job.attempts) == (2, 4)


def test_core4_config_pointing_at_missing_file(tmp_path, monkeypatch):
    missing = tmp_path / "missing.yaml"
    monkeypatch.setenv("CORE4_CONFIG", str(missing))
    message = error_of()
    assert "CORE4_CONFIG" in message and str(missing) in message


# --- DEFAULT propagation ---------------------------------------------------------------------

def test_global_default_fills_project_and_logging(local, tmp_path):
    path = local("DEFAULT:\n  mongo_url: mongodb://db.example:27017\n  mongo_database: shared\n")
    yaml_path = write(tmp_path / "p.yaml", "jobs: {}\n")
    settings = load_config("demo", project_yaml=yaml_path)
    assert settings.mongo_url == "mongodb://db.example:27017"
    assert settings.project.mongo_url == "mongodb://db.example:27017"
    assert settings.project.mongo_database == "shared"
    assert settings.logging.mongo_database == "shared"
    assert settings.sources["demo.mongo_database"] == f"DEFAULT in {path}"
    assert settings.sources["logging.mongo_url"] == f"DEFAULT in {path}"


def test_project_default_wins_inside_project_only(home, local, monkeypatch):
    local(f"folder:\n  home: {home}\nDEFAULT:\n  mongo_url: mongodb://db.example\n")
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_database", "global_db")
    settings = load_config("demo")
    assert settings.project.mongo_database == "demo_db"
    assert settings.sources["demo.mongo_database"] == \
        f"DEFAULT in {home / 'demo' / 'demo' / 'demo.yaml'}"
    assert settings.project.mongo_url == "mongodb://db.example"  # the project's DEFAULT lacks it
    assert settings.mongo_database == "global_db"
    assert settings.logging.mongo_database == "global_db"


def test_section_key_wins_over_default(home, local):
    local(f"folder:\n  home: {home}\ndemo:\n  mongo_database: direct\n"
          "logging:\n  mongo_database: logs\n")
    settings = load_config("demo")
    assert settings.project.mongo_database == "direct"
    assert settings.logging.mongo_database == "logs"
    assert "mongo_database" not in settings.project.options


# --- env typing ------------------------------------------------------------------------------

def test_env_values_are_yaml_typed(local, tmp_path, monkeypatch):
    local("job:\n  wall_time: 60\n")
    yaml_path = write(tmp_path / "p.yaml", "")
    monkeypatch.setenv("CORE4_OPTION_job__priority", "5")
    monkeypatch.setenv("CORE4_OPTION_job__wall_time", "~")
    monkeypatch.setenv("CORE4_OPTION_demo__code", "!!str 5")
    monkeypatch.setenv("CORE4_OPTION_demo__hosts", "[a, b]")
    monkeypatch.setenv("CORE4_OPTION_demo__dry_run", "true")
    settings = load_config("demo", project_yaml=yaml_path)
    assert settings.job.priority == 5
    assert settings.job.wall_time is None
    assert settings.sources["job.wall_time"] == "env CORE4_OPTION_job__wall_time"
    assert settings.project.options == {"code": "5", "hosts": ["a", "b"], "dry_run": True}


def test_environ_argument_replaces_os_environ(monkeypatch):
    monkeypatch.setenv("CORE4_OPTION_job__priority", "9")
    assert load_config(environ={"CORE4_OPTION_job__priority": "3"}).job.priority == 3


def test_int_accepted_for_float_but_not_string_or_bool(local):
    local("job:\n  error_time: 5\n")
    settings = load_config()
    assert settings.job.error_time == 5 and isinstance(settings.job.error_time, float)
    path = local("job:\n  error_time: '5'\n  priority: true\n")
    message = error_of()
    assert f"job.error_time in {path}: expected a number >= 0, got '5'" in message
    assert f"job.priority in {path}: expected an integer, got True" in message


# --- error messages --------------------------------------------------------------------------

def test_unknown_key_names_file_and_key_path(local):
    path = local("folder:\n  roott: /data\n")
    assert error_of() == (f"unknown key 'folder.roott' in {path}: "
                          "expected one of archive, error, home, min_free, proc, root, temp, transfer")


def test_unknown_key_from_env(monkeypatch):
    monkeypatch.setenv("CORE4_OPTION_job__atempts", "3")
    message = error_of()
    assert "unknown key 'job.atempts' from env CORE4_OPTION_job__atempts" in message
    assert "attempts" in message.split("expected one of")[1]


def test_wrong_type_from_env_names_variable_key_and_expectation(monkeypatch):
    monkeypatch.setenv("CORE4_OPTION_job__attempts", "five")
    assert error_of() == \
        "job.attempts from env CORE4_OPTION_job__attempts: expected an integer >= 1, got 'five'"


def test_wrong_type_in_file(local):
    path = local("dagster:\n  port: '3000'\n")
    assert error_of() == f"dagster.port in {path}: expected an integer from 1 to 65535, got '3000'"


def test_all_errors_of_one_load_reported_together(local, monkeypatch):
    path = local("folder:\n  root: data\njob:\n  compress_level: 12\nlogging:\n  level: LOUD\n")
    monkeypatch.setenv("CORE4_OPTION_job__wall_time", "-1")
    lines = error_of().splitlines()
    assert lines[0] == "4 configuration errors:"
    assert sorted(line.strip() for line in lines[1:]) == sorted([
        f"folder.root in {path}: expected an absolute path, got 'data'",
        f"job.compress_level in {path}: expected an integer from 0 to 9, got 12",
        "job.wall_time from env CORE4_OPTION_job__wall_time: expected a number > 0, "
        "or ~ (unset), got -1",
        f"logging.level in {path}: expected one of CRITICAL, DEBUG, ERROR, INFO, WARNING, "
        "got 'LOUD'",
    ])


def test_relative_root_rejected(monkeypatch):
    monkeypatch.setenv("CORE4_OPTION_folder__root", "data/core4")
    assert error_of() == ("folder.root from env CORE4_OPTION_folder__root: "
                          "expected an absolute path, got 'data/core4'")


def test_missing_home_rejected(local, tmp_path):
    path = local(f"folder:\n  home: {tmp_path / 'no-such-home'}\n")
    message = error_of()
    assert message.startswith(f"folder.home in {path}: expected an existing directory")
    assert str(tmp_path / "no-such-home") in message


def test_invalid_yaml_names_file_and_line(local):
    path = local("folder:\n  root: /data\n  temp: [unclosed\njob:\n  attempts: 2\n")
    message = error_of()
    assert message.startswith(f"invalid YAML in {path} line ")
    assert int(message.split(" line ")[1].split()[0]) in (3, 4)


def test_invalid_yaml_in_project_file(tmp_path):
    yaml_path = write(tmp_path / "p.yaml", "jobs:\n  a: {b: 1\n")
    assert error_of(project="demo", project_yaml=yaml_path).startswith(
        f"invalid YAML in {yaml_path} line ")


def test_duplicate_yaml_key_rejected(local):
    path = local("job:\n  attempts: 2\n  attempts: 3\n")
    message = error_of()
    assert message.startswith(f"invalid YAML in {path} line 3")
    assert "duplicate key 'attempts'" in message


def test_unknown_key_in_project_default(tmp_path):
    yaml_path = write(tmp_path / "p.yaml", "DEFAULT:\n  mongo_uri: mongodb://x\n")
    assert error_of(project="demo", project_yaml=yaml_path) == (
        f"unknown key 'demo.DEFAULT.mongo_uri' in {yaml_path}: "
        "expected one of mongo_database, mongo_url")


def test_job_section_must_be_a_mapping(tmp_path):
    yaml_path = write(tmp_path / "p.yaml", "jobs:\n  import_csv: 5\n")
    message = error_of(project="demo", project_yaml=yaml_path)
    assert message.startswith(f"demo.jobs.import_csv in {yaml_path}: expected a mapping")


# --- top-level keys --------------------------------------------------------------------------

def test_top_level_key_accepted_only_for_projects_in_home(home, local):
    local(f"folder:\n  home: {home}\nother:\n  batch: 5\n")
    assert load_config().project is None  # 'other' is a project folder in home: accepted
    path = local(f"folder:\n  home: {home}\nghost:\n  batch: 5\n")
    message = error_of()
    assert message.startswith(f"unknown key 'ghost' in {path}: expected one of DEFAULT, alerts, dagster, embedded, "
                              "folder, job, logging, or a project folder in folder.home")
    assert str(home) in message


def test_loaded_project_section_accepted_without_home(local, tmp_path):
    local("demo:\n  mode: slow\n")
    settings = load_config("demo", project_yaml=write(tmp_path / "p.yaml", "mode: fast\n"))
    assert settings.project.options == {"mode": "slow"}
    assert "unknown key 'demo'" in error_of()  # without loading project demo it is unknown


# --- folders ---------------------------------------------------------------------------------

def test_relative_folders_joined_onto_root(local, tmp_path, home):
    local(f"folder:\n  root: {tmp_path}/data/\n  proc: incoming/proc\n  archive: /srv/archive\n"
          f"  home: {home}/\n")
    folder = load_config().folder
    assert folder.root == f"{tmp_path}/data"
    assert folder.proc == f"{tmp_path}/data/incoming/proc"
    assert folder.transfer == f"{tmp_path}/data/transfer"
    assert folder.archive == "/srv/archive"
    assert folder.home == str(home)


def test_project_yaml_found_in_home(home, local):
    local(f"folder:\n  home: {home}\n")
    settings = load_config("demo")
    assert settings.project.jobs["import_csv"]["batch_size"] == 100
    assert settings.project.options == {"api_key_name": "demo"}


# --- sources, masking, immutability ----------------------------------------------------------

def test_sources_cover_every_flat_key(home, local, monkeypatch):
    path = local(f"folder:\n  home: {home}\n")
    monkeypatch.setenv("CORE4_OPTION_dagster__port", "3333")
    settings = load_config("demo")
    assert set(settings.sources) == set(settings.flat())
    assert settings.sources["folder.root"] == PACKAGED
    assert settings.sources["folder.home"] == str(path)
    assert settings.sources["dagster.port"] == "env CORE4_OPTION_dagster__port"
    assert settings.sources["demo.api_key_name"] == str(home / "demo" / "demo" / "demo.yaml")


def test_mask_url():
    assert mask_url("mongodb://u:secret@h/db") == "mongodb://u:***@h/db"
    assert mask_url("mongodb+srv://u:p%40ss@c.example.net/?w=1") == \
        "mongodb+srv://u:***@c.example.net/?w=1"
    assert mask_url("mongodb://u:sec/ret@h1:1,h2:2/db") == "mongodb://u:***@h1:1,h2:2/db"
    assert mask_url("mongodb://h:27017/db") == "mongodb://h:27017/db"
    assert mask_url(None) is None


def test_passwords_never_printed(local, tmp_path):
    local("DEFAULT:\n  mongo_url: mongodb://admin:s3cr3t@db:27017/core4\n"
          "dagster:\n  postgres_url: postgresql://dag:pgs3cr3t@pg/dagster\n")
    settings = load_config("demo", project_yaml=write(tmp_path / "p.yaml", ""))
    assert "s3cr3t" in str(settings.flat(masked=False))  # the real value is kept for use
    shown = str(settings.flat()) + repr(settings) + str(settings)
    assert "s3cr3t" not in shown and "pgs3cr3t" not in shown
    assert settings.flat()["demo.mongo_url"] == "mongodb://admin:***@db:27017/core4"


def test_password_masked_in_error_message(local):
    local("dagster:\n  port: postgresql://dag:pgs3cr3t@pg/dagster\n")
    message = error_of()
    assert "dagster.port" in message and "pgs3cr3t" not in message


def test_settings_are_read_only(tmp_path):
    settings = load_config("demo", project_yaml=write(tmp_path / "p.yaml", ""))
    with pytest.raises(pydantic.ValidationError):
        settings.job.attempts = 5
    with pytest.raises(pydantic.ValidationError):
        settings.folder = None
    with pytest.raises(pydantic.ValidationError):
        settings.project.mongo_database = "x"
    assert pickle.loads(pickle.dumps(settings)) == settings
