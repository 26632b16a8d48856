"""`coco init NAME`: a new project that loads as a code location without edits."""

from __future__ import annotations

import keyword
import os
import re
import sys
from collections.abc import Callable, Mapping

from core4_pipelines.coco.instance import (
    DOTENV,
    dagster_home,
    dagster_home_assignment,
    ensure_instance,
    write_dagster_env,
)
from core4_pipelines.coco.project_setup import make_repository, make_venv
from core4_pipelines.errors import ProjectError
from core4_resources.config.settings import Settings
from core4_resources.files.moves import make_dirs, open_new_file

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
    from core4_resources.config.sources import PACKAGED_PATH, read_yaml_file

    return list(read_yaml_file(PACKAGED_PATH, []) or ())


def configured_home(environ: Mapping[str, str] | None = None) -> str | None:
    """folder.home as the configuration sets it (packaged, local file, CORE4_OPTION_ variables),
    whether or not that folder exists yet: loading the configuration insists that it does."""
    from core4_resources.config.sources import PACKAGED_PATH, env_layers, local_config_path, read_yaml_file

    environ = os.environ if environ is None else environ
    errors: list[str] = []  # the configuration's own problems are load_config's to report
    local = local_config_path(environ, errors)
    layers = [read_yaml_file(PACKAGED_PATH, errors), read_yaml_file(local, errors) if local else None,
              *(data for data, _ in env_layers(environ, errors))]
    sections = [layer["folder"] for layer in layers if isinstance(layer, Mapping) and isinstance(
        layer.get("folder"), Mapping) and "home" in layer["folder"]]
    home = sections[-1]["home"] if sections else None
    home = os.path.expanduser(home) if isinstance(home, str) else None
    return os.path.normpath(home) if home and os.path.isabs(home) else None


def make_home(home: str | None, say: Callable[[str], None] = print) -> str | None:
    """Create folder.home (0750, with all missing parents) when it is missing, saying so."""
    if home and os.path.isabs(home) and not os.path.isdir(home):
        make_dirs(home)  # a file of that name is a FolderError naming it
        say(f"created folder.home {home}")
    return home


def _files(name: str, places: Mapping[str, str], source: str = "http") -> dict[str, str]:
    """The project's files; ``places`` (project_places) are the paths its README names;
    ``source`` the download below the import (SOURCES)."""
    ui = places["ui"]
    return {
        # .env: DAGSTER_HOME of this machine, and where Dagster's users keep their tokens.
        # .tmp_dagster_home_*: what dagster dev leaves while it runs without DAGSTER_HOME.
        ".gitignore": """.venv/
__pycache__/
*.egg-info/
.env
.tmp_dagster_home_*/
""",
        "README.md": f"""# {name}

A core4 pipelines project: CSV files put into its proc folder are imported into
the collection `records` of the MongoDB database `{name}`, then archived.

What it does is declared in `{name}/defs/` (Dagster components, YAML):
`{name}/defs/records/defs.yaml` is the import (a commented download is below
it). Add one with `dg scaffold defs core4_pipelines.FileImport NAME`; check
them with `dg check defs`, list them with `dg list defs`. Python jobs go into
`{name}/definitions.py` (`jobs=[...]`), beside the components.

## Start it

- With every project of its folder.home, the embedded MongoDB (unless
  `mongo_url` is configured) and the Dagster UI on {ui}:
  `coco serve --home {places["home"]}` (Ctrl-C stops it all).
- This project alone: `dg dev` (or `dagster dev`) in this folder. Its `.env`
  (written by `coco init`, kept out of git) sets DAGSTER_HOME to
  `{places["dagster_home"]}`, the instance of `coco serve`: the runs are kept
  there. It reads the configuration as `coco` does (CORE4_CONFIG,
  CORE4_OPTION_... variables).
- Without the UI: `coco drain {name}` imports what is in proc, in one process.

## Put files in

Copy CSV files (names matching `.*\\.csv`) into the proc folder:

    cp *.csv {places["proc"]}/

`coco folders {name}` prints it, and the other folders, for your
configuration. The sensor `import_records_proc_sensor` claims a file once it
has stayed unchanged for 5 seconds and no program holds it open for writing.

## Read the result

- The records: collection `records` in the database `{name}`, each with `_src`
  (its file's name) and `_job_id`. `coco config` prints the MongoDB in use.
- `coco info`: per project the files waiting in proc, the claimed batches, the
  files in error and the runs of the last 24 hours; `coco runs --project {name}`
  lists the runs, with their time and why a run failed.
- Imported files are gzipped into the archive folder
  `{places["archive"]}/`, one dated folder per run.
- A file that cannot be imported moves to the error folder
  `{places["error"]}/`, beside it `<file>.reason.txt` saying why; once fixed,
  `coco retry {name} <file>` puts it back into proc.
- In the UI, the asset `{name}/records` ({ui}/assets/{name}/records) lists each
  import with its files and record counts.

{_download_readme(name, source)}## Test it

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
{name} = ["*.yaml", "defs/**/*.yaml"]

# A dg project: dg check defs, dg list defs, dg scaffold defs, dg dev.
[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "{name}"
code_location_target_module = "{name}.definitions"
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

# Who hears when files of {name} go to error, a batch fails for good, a run turns zombie or
# data stops coming (docs/alerts.md); the URLs are read from these environment variables.
# `coco alerts test {name}` sends a test message to each channel.
# alerts:
#   - events: [file_rejected, batch_failed, zombie, freshness]
#     email: {{to: [ops@example.org], smtp: SMTP_URL}}      # SMTP_URL=smtp://user:password@host:587?starttls=1
#   - events: [batch_failed]
#     webhook: {{url: ALERT_WEBHOOK_URL, format: slack}}    # slack | teams | json
""",
        f"{name}/definitions.py": f'''"""{name}'s Dagster definitions: the components in {name}/defs/ (YAML), and any Python
jobs given here (jobs=[...], sensors=[...], schedules=[...]), with the project's resources bound."""

from core4_pipelines import project_definitions

defs = project_definitions("{name}")
''',
        f"{name}/models.py": f'''"""{name}'s record models (pydantic): a record model validates and converts every record
of an import; a record it refuses sends its file to the error folder, naming the record, its
line, the field and why. Switch it on with `record_model: {name}.models.Record` in
defs/records/defs.yaml (or `import_job(..., model=Record)` in Python)."""

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    """One row of a records CSV file: the fields you expect, with their types and bounds."""

    model_config = ConfigDict(extra="allow")  # columns not named here are kept as they are

    city: str = Field(min_length=1)
    celsius: float = Field(ge=-90, le=60)
''',
        f"{name}/defs/records/defs.yaml": f"""# CSV files in <proc>/{name}/ (coco folders {name}) are imported into the collection
# records of the {name} database, then archived. Attributes: see the README of core4 pipelines.
type: core4_pipelines.FileImport
attributes:
  collection: records
  pattern: '.*\\.csv$'
  reader: csv                     # csv | jsonl | json | xlsx | parquet | module.function (docs/readers.md)
  # reader_options: {{delimiter: ";", encoding: utf-8, skip_lines: 0, null_values: ["", "NA"]}}
  #                               # xlsx: {{sheet: data, header: 1}}; gzip/bzip2/xz/zip are read as they come
  duplicates: skip                # a file whose bytes were imported before: archived with a note, no records
  # mode: upsert                  # insert (default) | upsert | merge | replace (docs/write-modes.md)
  # keys: [city]                  # upsert and merge: the fields that name a document
  # bad_rows: skip                # fail (default) | skip | divert: rows that cannot be records
  # max_bad_rows: 0.1             # skip/divert: more than this (a count, or a fraction) rejects the file
  # record_model: {name}.models.Record   # a pydantic model each record is validated with ({name}/models.py)
  # attempts: 3                   # core4 job properties: attempts, error_time, wall_time,
  # max_parallel: 1               #   max_parallel, priority, schedule
  # freshness: 86400              # seconds within which new records are expected
{_download_yaml(name, source)}""",
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
from core4_resources.mongo.embedded.server import EmbeddedMongo

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


SOURCES = ("http", "sftp")  # coco init --source: the download written below the import


def _download_yaml(name: str, source: str) -> str:
    """The second document of defs/records/defs.yaml: a commented HTTP download, or an sFTP
    download that loads as it is (no trigger until host, user and host key are filled in)."""
    if source == "sftp":
        return f"""
# The sFTP download into this import (docs/sftp.md). Fill in host, user, known_hosts (or
# host_key) and remote_dir, set the password's variable in the environment of coco serve,
# then start it by hand (coco enqueue {name}.download_records) or switch on a trigger below.
---
type: core4_pipelines.SftpDownload
attributes:
  collection: records             # the import that reads the files
  host: sftp.example.org
  port: 22
  user: {name}
  password: {name.upper()}_SFTP_PASSWORD   # the environment variable holding it; or
  # private_key: {name.upper()}_SFTP_KEY   #   the variable holding a key's text (private_key_file: a path)
  known_hosts: /etc/core4/known_hosts   # or host_key: "SHA256:..." (ssh-keygen -lf prints it)
  remote_dir: /outgoing
  pattern: '.*\\.csv$'
  after: keep                     # keep | delete | move:/outgoing/done
  # listing_interval: 60          # a sensor lists remote_dir every 60 s and starts the download for new files
  # schedule: "*/15 * * * *"      # or a schedule (UTC)
"""
    return HTTP_DOWNLOAD_YAML


HTTP_DOWNLOAD_YAML = """
# A download into this import: remove the leading "# " of the lines below.
# ---
# type: core4_pipelines.HttpDownload
# attributes:
#   collection: records           # the import that reads the files
#   url: "https://example.org/records/{date:%Y-%m-%d}.csv"   # {date}: the run's date (UTC)
#   file_name: "records-{date:%Y%m%d}.csv"
#   headers: {Authorization: RECORDS_TOKEN}   # the value comes from this environment variable
#   schedule: "0 6 * * *"         # UTC
#   attempts: 3
"""


def _download_readme(name: str, source: str) -> str:
    if source != "sftp":
        return ""
    variable = f"{name.upper()}_SFTP_PASSWORD"
    return f"""## Fetch files from the sFTP server

`{name}/defs/records/defs.yaml` has an sFTP download (`SftpDownload`) into the
import. Fill in `host`, `user`, `remote_dir` and the server's host key: a
`known_hosts` file holding it (`ssh-keyscan -p PORT HOST > known_hosts`,
checked by hand), or its fingerprint as `host_key: "SHA256:..."`. An unknown
or changed host key is refused.

The password is never in the YAML: `password: {variable}` names the
environment variable holding it. Set it where the runs start:

    export {variable}='...'        # before coco serve
    echo "{variable}='...'" >> .env   # for dg dev in this folder (.env stays out of git)

(a key instead: `private_key: VARIABLE` holding the key's text, or
`private_key_file: PATH`). Then `coco enqueue {name}.download_records` fetches
the new files once; `listing_interval: 60` (a sensor) or `schedule:` does it
by itself. Each file reaches proc whole and once; what was fetched is kept in
`sys.downloads`.

"""


def init_project(name: str, home: str, venv: bool = False, framework_source: str | None = None,
                 say: Callable[[str], None] = print, git: bool = True,
                 settings: Settings | None = None, source: str = "http") -> str:
    """Create ``<home>/<name>`` (and ``home`` when missing); refuses to overwrite anything.

    The project's transfer, proc, archive and error folders are created too (0750), and its
    ``.env`` points `dg dev` and `dagster dev` in it at DAGSTER_HOME, which gets its
    dagster.yaml when it has none: all from ``settings`` (default: the configuration, with
    this project's section). With ``git`` and git on PATH the project becomes its own
    repository with a first commit of the files written here (``.env`` stays out of it).
    ``source`` picks the download below the import: a commented HTTP one, or an sFTP one.
    ``say`` gets what an operator should read. Returns the project folder."""
    check_project_name(name)
    home = make_home(os.path.abspath(home), say)
    folder = os.path.join(home, name)
    if settings is None:
        from core4_resources.config.settings import load_config

        settings = load_config(name)
    places = {**project_places(settings, name), "home": home}
    if source not in SOURCES:
        raise ProjectError(f"--source {source!r}: one of {', '.join(SOURCES)}")
    files = _files(name, places, source)
    existing = [rel for rel in files if os.path.exists(os.path.join(folder, rel))]
    if existing:
        raise ProjectError(f"{folder}: refusing to overwrite existing files: {', '.join(existing)}")
    # The folders first: a folder.root that cannot be written stops here, before any file is.
    dagster_home_assignment(places["dagster_home"])  # a DAGSTER_HOME no .env can set, too
    for kind in DATA_FOLDERS:
        make_dirs(places[kind])
    instance, written = ensure_instance(settings)
    for rel, text in files.items():
        path = os.path.join(folder, rel)
        make_dirs(os.path.dirname(path))
        with open_new_file(path) as handle:  # 0640 and 0750 exactly, whatever the umask
            handle.write(text.encode("utf-8"))
    say(f"created {folder}")
    say(f"proc folder {places['proc']}: put the files to import here")
    say(f"  transfer {places['transfer']}, archive {places['archive']}, error {places['error']}")
    write_dagster_env(folder, instance)
    say(f"DAGSTER_HOME {instance}{' (dagster.yaml written)' if written else ''}: "
        f"dg dev in {folder} keeps its runs there, as coco serve does (set in {DOTENV})")
    if git:
        make_repository(folder, list(files), f"coco init {name}", say)
    if venv:
        make_venv(folder, framework_source)
    return folder


DATA_FOLDERS = ("transfer", "proc", "archive", "error")


def project_places(settings: Settings, name: str) -> dict[str, str]:
    """Where the project's files go (its folders as `coco folders NAME` prints them),
    DAGSTER_HOME and the UI's address: what its README tells."""
    from core4_resources.files.folders import FolderResource

    folders = FolderResource.from_settings(settings, name)
    return {"transfer": folders.transfer_folder(), "proc": folders.proc_folder(),
            "archive": folders.archive_folder(), "error": folders.error_folder(),
            "dagster_home": dagster_home(settings),
            "ui": f"http://{settings.dagster.host}:{settings.dagster.port}"}
