"""`coco init NAME`: a new project that loads as a code location without edits."""

from __future__ import annotations

import keyword
import os
import re
import subprocess
import sys

from core4_pipelines.errors import ProjectError
from core4_resources.moves import make_dirs, open_new_file

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_NAME = 63  # also the project's MongoDB database: those names are shorter than 64 characters


def check_project_name(name: str) -> None:
    """ProjectError unless ``name`` can be a project: a short lower-case Python identifier that
    is no keyword, no configuration section, and hides no module (discovery skips those)."""
    if len(name) > MAX_NAME:
        raise ProjectError(f"project name {name[:20]!r}... is {len(name)} characters long; "
                           f"use at most {MAX_NAME} (it also names the project's MongoDB database)")
    if not _NAME.match(name):
        raise ProjectError(f"project name {name!r}: use lower-case letters, digits and _, "
                           "not starting with a digit (a Python identifier)")
    if keyword.iskeyword(name):
        raise ProjectError(f"project name {name!r} is a Python keyword; "
                           f"'import {name}' could never load it: choose another name")
    sections = _config_sections()
    if name in sections:
        raise ProjectError(f"project name {name!r} is a section of the configuration "
                           f"({', '.join(sections)}): choose another name")
    if name in sys.stdlib_module_names:
        raise ProjectError(f"project name {name!r} is a module of Python's standard library; "
                           "a project of that name would hide it: choose another name")
    from core4_pipelines.coco.discovery import _installed_module_origin  # the check discovery makes

    installed = _installed_module_origin(_Named(name))
    if installed:
        raise ProjectError(f"project name {name!r} is also an installed module ({installed}); "
                           "the project would hide it (and `coco projects` skips it): choose another name")


class _Named:
    """A project not created yet, as discovery's module check takes it."""

    def __init__(self, name: str):
        self.name = name
        self.folder = os.path.join(os.sep, "nonexistent-core4-project", name)


def _config_sections() -> list[str]:
    from core4_resources.config_sources import PACKAGED_PATH, read_yaml_file

    return list(read_yaml_file(PACKAGED_PATH, []) or ())


def _files(name: str) -> dict[str, str]:
    return {
        "README.md": f"""# {name}

A core4 pipelines project. Put files matching `.*\\.csv` into its proc
folder (`coco folders {name}`) and the sensor imports them into the
`{name}` database, collection `records`.

    source enter_env        # activates .venv, when the project has one
    pytest tests            # the project's tests
""",
        "pyproject.toml": f"""[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1.0"
dependencies = ["core4-pipelines"]

[tool.setuptools.packages.find]
include = ["{name}*"]

[tool.setuptools.package-data]
{name} = ["*.yaml"]
""",
        "enter_env": """# source this file to work inside the project's virtual environment
_here="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
if [ -f "$_here/.venv/bin/activate" ]; then
    . "$_here/.venv/bin/activate"
else
    echo "no .venv in $_here: create it with 'coco init --venv' or python -m venv .venv" >&2
fi
unset _here
""",
        f"{name}/__init__.py": f'''"""{name}: a core4 pipelines project."""

__project__ = "core4"
__version__ = "0.1.0"
title = "{name}"
description = ""
''',
        f"{name}/{name}.yaml": f"""# {name}'s configuration; nested under `{name}` in the cascade.
DEFAULT:
  mongo_database: {name}
""",
        f"{name}/definitions.py": f'''"""{name}'s Dagster definitions: CSV files in proc are imported into MongoDB."""

from core4_pipelines import import_job, proc_folder_sensor, project_definitions, read_csv

import_records = import_job("import_records", read=read_csv, collection="records")

defs = project_definitions(
    "{name}",
    jobs=[import_records],
    sensors=[proc_folder_sensor(import_records, pattern=r".*\\.csv$")],
)
''',
        "tests/test_definitions.py": f'''"""{name}'s pipeline end to end: a CSV file in proc is claimed by the proc sensor once it
stayed unchanged for 5 s (min_age_seconds), imported into MongoDB by the job the sensor starts,
and archived. A private embedded MongoDB and folders under pytest's tmp_path: nothing you
configured is touched. Write one like it for each job you add.
"""

import os
import time

import dagster as dg
import pytest

from core4_pipelines import FolderResource, MongoResource
from core4_resources.embedded import EmbeddedMongo

from {name}.definitions import defs


@pytest.fixture(scope="module")
def mongo(tmp_path_factory):
    with EmbeddedMongo(tmp_path_factory.mktemp("mongo") / "data") as server:
        yield MongoResource(mongo_url=server.url, database="{name}")


def write(path, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def visible(folder) -> list[str]:
    return sorted(n for _, _, names in os.walk(folder) for n in names if not n.startswith("."))


def test_a_csv_file_in_proc_is_imported_into_records_and_archived(tmp_path, mongo):
    folders = FolderResource.under_root(tmp_path / "root", "{name}")
    resources = {{"folders": folders, "mongo": mongo}}
    proc = folders.proc_folder()
    write(os.path.join(proc, "cities.csv"), "city,celsius\\nberlin,21.5\\nkoeln,19\\n")
    write(os.path.join(proc, "notes.txt"), "not a .csv file: the sensor leaves it\\n")
    sensor = defs.resolve_sensor_def("import_records_proc_sensor")
    assert sensor.job_name == "import_records"
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources)
        assert not sensor.evaluate_tick(context).run_requests  # first sight: not yet unchanged for 5 s
        time.sleep(5.5)
        (request,) = sensor.evaluate_tick(context).run_requests
        result = defs.resolve_job_def(sensor.job_name).execute_in_process(
            run_config=request.run_config, tags=request.tags, instance=instance, resources=resources
        )
        assert result.success

    records = mongo.collection("records").find({{"_src": "cities.csv"}})
    assert sorted((r["city"], r["celsius"]) for r in records) == [("berlin", 21.5), ("koeln", 19)]
    assert visible(folders.archive_folder()) == ["cities.csv.gz"]
    assert visible(proc) == ["notes.txt"]
''',
    }


def init_project(name: str, home: str, venv: bool = False, framework_source: str | None = None) -> str:
    """Create ``<home>/<name>``; refuses to overwrite anything. Returns the project folder."""
    check_project_name(name)
    if not os.path.isdir(home):
        raise ProjectError(f"home {home!r} is not a directory; create it or pass --home")
    folder = os.path.join(home, name)
    files = _files(name)
    existing = [rel for rel in files if os.path.exists(os.path.join(folder, rel))]
    if existing:
        raise ProjectError(f"{folder}: refusing to overwrite existing files: {', '.join(existing)}")
    for rel, text in files.items():
        path = os.path.join(folder, rel)
        make_dirs(os.path.dirname(path))
        with open_new_file(path) as handle:  # 0640 and 0750 exactly, whatever the umask
            handle.write(text.encode("utf-8"))
    if venv:
        make_venv(folder, framework_source)
    return folder


def make_venv(folder: str, framework_source: str | None = None) -> str:
    """``<folder>/.venv`` with this framework and the project installed (editable)."""
    target = os.path.join(folder, ".venv")
    subprocess.run([sys.executable, "-m", "venv", target], check=True)
    python = os.path.join(target, "bin", "python")
    framework = framework_source or _framework_source()
    subprocess.run([python, "-m", "pip", "install", "-q", "-e", framework], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "-e", folder], check=True)
    return python


def _framework_source() -> str:
    # The checkout this framework runs from, when installed editable; else the published name.
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return here if os.path.isfile(os.path.join(here, "pyproject.toml")) else "core4-pipelines"
