"""YAML components: a project declared in <project>/defs/ builds what the Python API builds, imports
its files, fetches over HTTP (a local http.server on 127.0.0.1) without anything partial reaching
proc, and says which file and key are wrong."""

from __future__ import annotations

import http.server
import importlib
import os
import re
import textwrap
import threading
import time
import uuid

import dagster as dg
from dagster._core.definitions.dependency import NodeHandle
import pymongo
import pytest
from support import archived, claim_all, event_log_text, make_folders, put, walk_files

from core4_resources.mongo.resource import MongoResource

CSV = "city;celsius\nberlin;21.5\nkoeln;19\n"
MODEL = """
from pydantic import BaseModel


class Reading(BaseModel):
    city: str
    celsius: float
"""


@pytest.fixture
def project(tmp_path, monkeypatch, mongo_url):
    """project(components={name: defs.yaml text}, definitions=None, files={}): a project package
    (a new name each time) on sys.path, its folders under tmp_path/root and its database fresh;
    returns (name, its loaded Definitions)."""
    root = tmp_path / "root"
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(root))
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_url", mongo_url)
    database = f"test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_database", database)

    def make(components: dict[str, str], definitions: str | None = None, files: dict[str, str] | None = None):
        name = f"p{uuid.uuid4().hex[:10]}"
        package = tmp_path / "home" / name / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text('__project__ = "core4"\n')
        (package / f"{name}.yaml").write_text("")
        (package / "definitions.py").write_text(textwrap.dedent(definitions or f"""
            from core4_pipelines import project_definitions

            defs = project_definitions("{name}")
        """).replace("PROJECT", name))
        for relative, text in (files or {}).items():
            (package / relative).write_text(textwrap.dedent(text))
        for folder, text in components.items():
            (package / "defs" / folder).mkdir(parents=True)
            (package / "defs" / folder / "defs.yaml").write_text(textwrap.dedent(text).replace("PROJECT", name))
        monkeypatch.syspath_prepend(str(package.parent))
        return name, importlib.import_module(f"{name}.definitions").defs

    make.root = root
    make.database = database
    yield make
    with pymongo.MongoClient(mongo_url) as client:
        client.drop_database(database)


DAGSTER_COMPONENT_METADATA = ("dagster/code_references", "dagster/component_origin")


def summary(defs: dg.Definitions, project: str) -> dict:
    """What a project defines, with its name replaced by PROJECT: jobs with tags, metadata and
    retry policies, sensors, schedules, and assets with their specs and checks."""
    repo = defs.get_repository_def()

    def plain(value) -> str:
        return repr(value).replace(project, "PROJECT")

    def own(metadata) -> list:
        # Dagster adds where a component's definitions come from (its defs.yaml, the component
        # instance); nothing else may differ.
        return sorted((k, plain(v)) for k, v in metadata.items() if k not in DAGSTER_COMPONENT_METADATA)

    def retries(job) -> list:
        return [(n.name, job.get_retry_policy_for_handle(NodeHandle(n.name, None))) for n in job.graph.node_dict.values()]

    jobs = {
        job.name: (plain(sorted(job.tags.items())), own(job.metadata), plain(retries(job)))
        for job in repo.get_all_jobs() if not job.name.startswith("__")
    }
    sensors = {s.name: (plain(sorted(t.job_name for t in s.targets)), s.minimum_interval_seconds, s.default_status)
               for s in repo.sensor_defs}
    schedules = {s.name: (s.cron_schedule, s.execution_timezone, s.job_name, s.default_status)
                 for s in repo.schedule_defs}
    assets = {}
    for key, assets_def in repo.assets_defs_by_key.items():
        spec = assets_def.specs_by_key[key] if key in assets_def.specs_by_key else None
        assets[plain(key)] = (
            spec and plain(spec.description), spec and sorted(spec.kinds), spec and own(spec.metadata),
            spec and plain(spec.freshness_policy), sorted(plain(c) for c in assets_def.check_keys),
        )
    return {"jobs": jobs, "sensors": sensors, "schedules": schedules, "assets": assets}


FULL_YAML = """
    type: core4_pipelines.FileImport
    attributes:
      collection: readings
      pattern: 'readings-.*\\.csv$'
      reader: csv
      reader_options: {delimiter: ";", encoding: latin-1}
      record_model: PROJECT.models.Reading
      batch_size: 7
      min_age_seconds: 2
      freshness: 3600
      rejected_files: warn
      attempts: 3
      error_time: 30
      wall_time: 600
      max_parallel: 2
      priority: 5
      schedule: "0 6 * * *"
"""

FULL_PYTHON = """
    import functools

    from core4_pipelines import import_job, proc_folder_sensor, project_definitions, read_csv
    from PROJECT.models import Reading

    imports = import_job(
        "import_readings", read=functools.partial(read_csv, delimiter=";", encoding="latin-1"),
        collection="readings", pattern=r"readings-.*\\.csv$", model=Reading, freshness=3600,
        rejected_files="warn",
        properties={"attempts": 3, "error_time": 30, "wall_time": 600, "max_parallel": 2, "priority": 5,
                    "schedule": "0 6 * * *"},
    )
    defs = project_definitions("PROJECT", jobs=[imports],
                               sensors=[proc_folder_sensor(imports, batch_size=7, min_age_seconds=2)])
"""


def test_a_file_import_in_yaml_builds_what_the_python_api_builds(project):
    declared, yaml_defs = project({"readings": FULL_YAML}, files={"models.py": MODEL})
    written, python_defs = project({}, definitions=FULL_PYTHON, files={"models.py": MODEL})
    from_yaml, from_python = summary(yaml_defs, declared), summary(python_defs, written)
    for part in from_yaml:
        for name in from_yaml[part]:
            for a, b in zip(from_yaml[part][name], from_python[part].get(name, ())):
                assert a == b, f"{part} {name}:\n{a}\n{b}"
    assert from_yaml == from_python
    # And it is the whole graph: the import, its sensor and schedule, inbox -> collection with the check.
    assert set(from_yaml["jobs"]) == {"import_readings"}
    assert {"import_readings_proc_sensor"} <= set(from_yaml["sensors"])
    assert from_yaml["schedules"]["import_readings_schedule"][0] == "0 6 * * *"
    assert set(from_yaml["assets"]) == {"AssetKey(['PROJECT', 'readings'])", "AssetKey(['PROJECT', 'readings_inbox'])"}


def test_a_yaml_only_project_imports_its_files_into_mongodb_and_archives_them(project, instance):
    name, defs = project({"readings": """
        type: core4_pipelines.FileImport
        attributes:
          collection: readings
          pattern: 'readings-.*\\.csv$'
          reader_options: {delimiter: ";"}
          min_age_seconds: 0
    """})
    folders = make_folders(project.root, name)
    put(folders.proc_folder(), "readings-1.csv", CSV)
    put(folders.proc_folder(), "notes.txt", "not matching: stays\n")
    sensor = defs.get_sensor_def("import_readings_proc_sensor")
    mongo = MongoResource(mongo_url=os.environ["CORE4_OPTION_DEFAULT__mongo_url"], database=project.database)
    context = dg.build_sensor_context(instance=instance, resources={"folders": folders, "mongo": mongo})
    requests = sensor(context).run_requests
    assert len(requests) == 1
    result = defs.get_job_def("import_readings").execute_in_process(
        run_config=requests[0].run_config, instance=instance, tags=requests[0].tags)
    assert result.success
    readings = mongo.collection("readings")
    assert sorted((d["city"], d["celsius"], d["_src"]) for d in readings.find()) == [
        ("berlin", 21.5, "readings-1.csv"), ("koeln", 19, "readings-1.csv")]
    assert [os.path.basename(p) for paths in archived(folders).values() for p in paths] == ["readings-1.csv.gz"]
    assert os.listdir(folders.proc_folder()) == ["notes.txt"] or sorted(os.listdir(folders.proc_folder())) == [
        ".batch", "notes.txt"]


def test_python_jobs_and_yaml_components_load_together(project):
    name, defs = project({"readings": "type: core4_pipelines.FileImport\nattributes:\n  collection: readings\n"},
                         definitions="""
        import dagster as dg
        from core4_pipelines import project_definitions

        @dg.op
        def hello():
            pass

        @dg.job
        def greet():
            hello()

        defs = project_definitions("PROJECT", jobs=[greet])
    """)
    jobs = {j.name for j in defs.get_repository_def().get_all_jobs()}
    assert {"greet", "import_readings"} <= jobs


@pytest.mark.parametrize("attributes, expected", [
    ("collection: readings\nreader: nosuch.module.read", r"attributes\.reader: 'nosuch\.module\.read' cannot be loaded"),
    ("collection: readings\nreader: xml", r"attributes\.reader: expected csv, jsonl, json, xlsx, parquet, or a dotted path"),
    ("collection: readings\nrecord_model: os.NoSuchModel", r"attributes\.record_model: 'os\.NoSuchModel' cannot be loaded"),
    ("collection: readings\nschedule: every day", r"attributes\.schedule: property schedule .*cron"),
    ("collection: readings\npattern: 'a(['", r"attributes\.pattern: expected a regular expression"),
    ("collection: readings\nreader: jsonl\nreader_options: {delimiter: ';'}", r"attributes\.reader_options\.delimiter"),
    ("collection: readings\nreader_options: {skip_lines: -2}", r"reader_options\.skip_lines: skip_lines must be a count"),
    ("collection: readings\nreader_options: {header: none}", r"attributes\.reader_options\.header: header none needs columns"),
    ("collection: readings\nreader_options: {empty_fields: ignore}", r"attributes\.reader_options\.empty_fields: .*keep or drop"),
    ("collection: readings\nreader: xlsx\nreader_options: {sheet: 0}", r"reader_options\.sheet: .*position \(1 = the first\)"),
    ("collection: readings\nreader: parquet\nreader_options: {encoding: utf-8}",
     r"reader_options\.encoding: parquet takes no options"),
    ("collection: readings\nreader: csv\nreader_options: {sheet: data}", r"reader_options\.sheet: csv takes delimiter"),
])
def test_a_wrong_attribute_names_the_file_and_the_key(project, attributes, expected):
    text = "type: core4_pipelines.FileImport\nattributes:\n" + textwrap.indent(attributes, "  ") + "\n"
    with pytest.raises(Exception) as caught:
        project({"readings": text})
    message = "".join(str(e) for e in _chain(caught.value))
    assert "defs.yaml" in message and "readings" in message
    assert re.search(expected, message), message


@pytest.mark.parametrize("attributes, key, expected", [
    ("colection: readings", "colection", ""),
    ("collection: readings\nattempts: three", "attempts", "int"),
    ("collection: readings\nbatch_size: 0", "attributes.batch_size", "expected a number >= 1, got 0"),
    ("collection: readings\nbatch_size: many", "batch_size", "int"),
])
def test_a_mistyped_or_unknown_key_names_the_file_and_the_key(project, attributes, key, expected):
    text = "type: core4_pipelines.FileImport\nattributes:\n" + textwrap.indent(attributes, "  ") + "\n"
    with pytest.raises(Exception) as caught:
        project({"readings": text})
    message = "".join(str(e) for e in _chain(caught.value))
    assert "defs.yaml" in message and key in message and expected in message, message


def _chain(error: BaseException):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


# -- HttpDownload against a local server -----------------------------------------------------------

BODY = b"city;celsius\nberlin;21.5\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    token = ""
    flaky_failures = 0

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        if self.headers.get("X-Token") != self.token:
            self.send_error(403)
        elif self.path.startswith("/files/"):
            self._send(BODY)
        elif self.path == "/slow.csv":
            time.sleep(3)
            self._send(BODY)
        elif self.path == "/cut.csv":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(BODY)  # then the connection closes: 1000 bytes were promised
            self.close_connection = True
        elif self.path == "/flaky.csv":
            type(self).flaky_failures += 1
            if type(self).flaky_failures == 1:
                self.send_error(503)
            else:
                self._send(BODY)
        else:
            self.send_error(404)

    def _send(self, body: bytes):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(monkeypatch):
    token = uuid.uuid4().hex
    monkeypatch.setenv("READINGS_TOKEN", token)
    handler = type("Handler", (_Handler,), {"token": token, "flaky_failures": 0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.token = token
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _download_project(project, server, urls: list[str], extra: str = ""):
    fetch = "\n".join([
        "type: core4_pipelines.HttpDownload",
        "attributes:",
        "  collection: readings",
        "  urls:",
        *[f"    - {server.base}{u}" for u in urls],
        '  file_name: "readings-{date:%Y%m%d}-{index}-{name}"',
        "  headers: {X-Token: READINGS_TOKEN}",
        "  timeout: 1",
        "  attempts: 1",
        *[f"  {line}" for line in extra.splitlines()],
    ]) + "\n"
    return project({
        "readings": "type: core4_pipelines.FileImport\nattributes:\n  collection: readings\n"
                    "  pattern: 'readings-.*'\n  reader_options: {delimiter: ';'}\n",
        "fetch": fetch,
    })


def test_a_download_streams_every_file_into_proc_and_produces_the_inbox(project, server, instance):
    name, defs = _download_project(project, server, ["/files/a.csv", "/files/b.csv"])
    result = defs.get_job_def("download_readings").execute_in_process(instance=instance)
    assert result.success
    folders = make_folders(project.root, name)
    day = time.strftime("%Y%m%d", time.gmtime())
    assert sorted(os.listdir(folders.proc_folder())) == [f"readings-{day}-0-a.csv", f"readings-{day}-1-b.csv"]
    for path in walk_files(folders.proc_folder()):
        assert open(path, "rb").read() == BODY
    assert walk_files(folders.transfer_folder()) == []  # nothing left behind, hidden or not
    materialized = result.asset_materializations_for_node("download_readings_fetch")
    assert [m.asset_key for m in materialized] == [dg.AssetKey([name, "readings_inbox"])]
    # The token came from the environment; it is in no file and not in the run's log.
    assert server.token not in event_log_text(instance, result.run_id)
    for path in walk_files(project.root):
        assert server.token.encode() not in open(path, "rb").read()
    # The import reads what the download delivered.
    (batch,) = claim_all(folders)
    from core4_pipelines.ingest.job import import_run_config

    job = defs.get_job_def("import_readings")
    assert job.execute_in_process(run_config=import_run_config(job, batch), instance=instance).success


@pytest.mark.parametrize("bad, reason", [
    ("/missing.csv", "HTTP 404"),
    ("/slow.csv", "no answer within 1s"),
    ("/cut.csv", "body cut off"),
])
def test_a_failed_download_leaves_nothing_in_proc_or_transfer(project, server, instance, bad, reason):
    name, defs = _download_project(project, server, ["/files/a.csv", bad])
    result = defs.get_job_def("download_readings").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert reason in event_log_text(instance, result.run_id)
    folders = make_folders(project.root, name)
    assert walk_files(folders.proc_folder()) == []  # not even the file that came complete
    assert walk_files(folders.transfer_folder()) == []


def test_a_download_is_retried_per_attempts(project, server, instance):
    name, defs = _download_project(project, server, ["/flaky.csv"], extra="error_time: 0\n")
    result = defs.get_job_def("download_readings").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success  # attempts: 1 -- the 503 is final
    name, defs = project({
        "fetch": f"""
            type: core4_pipelines.HttpDownload
            attributes:
              collection: readings
              url: {server.base}/flaky.csv
              headers: {{X-Token: READINGS_TOKEN}}
              attempts: 2
              error_time: 0
        """,
        "readings": "type: core4_pipelines.FileImport\nattributes:\n  collection: readings\n",
    })
    server.RequestHandlerClass.flaky_failures = 0
    result = defs.get_job_def("download_readings").execute_in_process(instance=instance)
    assert result.success
    assert os.listdir(make_folders(project.root, name).proc_folder()) == ["flaky.csv"]


def test_a_header_value_written_into_the_yaml_is_refused(project, server):
    with pytest.raises(Exception) as caught:
        project({"fetch": f"""
            type: core4_pipelines.HttpDownload
            attributes:
              collection: readings
              url: {server.base}/files/a.csv
              headers: {{X-Token: "secret value"}}
        """})
    message = "".join(str(e) for e in _chain(caught.value))
    assert "defs.yaml" in message and "attributes.headers.X-Token" in message and "environment variable" in message


def test_a_missing_environment_variable_fails_the_run_naming_it(project, server, instance, monkeypatch):
    name, defs = _download_project(project, server, ["/files/a.csv"])
    monkeypatch.delenv("READINGS_TOKEN")
    result = defs.get_job_def("download_readings").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert "READINGS_TOKEN is not set" in event_log_text(instance, result.run_id)


def test_templates_take_the_runs_date_and_the_urls_name():
    from datetime import datetime, timezone

    from core4_pipelines.download.http import DownloadError, render, run_date
    from core4_pipelines.tags import SCHEDULED_TIME_TAG

    due = run_date({SCHEDULED_TIME_TAG: "2024-03-05T06:00:00+00:00"})  # as the daemon tags a scheduled run
    assert due == datetime(2024, 3, 5, 6, tzinfo=timezone.utc)
    assert render("https://x.org/r/{date:%Y-%m-%d}.csv", date=due) == "https://x.org/r/2024-03-05.csv"
    assert render("{date:%Y%m%d}-{index}-{name}", date=due, url="https://x.org/r/a.csv?k=1", index=2) == \
        "20240305-2-a.csv"
    with pytest.raises(DownloadError, match=r"\{date\}.*\{name\}.*\{index\}"):
        render("{day}", date=due)
    assert abs((run_date({}) - datetime.now(timezone.utc)).total_seconds()) < 5  # launched by hand: now


def test_a_url_that_is_not_http_names_its_place(project):
    with pytest.raises(Exception) as caught:
        project({"fetch": "type: core4_pipelines.HttpDownload\nattributes:\n  collection: readings\n"
                          "  urls: [https://127.0.0.1/a.csv, file:///etc/passwd]\n"})
    message = "".join(str(e) for e in _chain(caught.value))
    assert "defs.yaml: attributes.urls[1]: expected an http:// or https:// URL, got 'file:///etc/passwd'" in message
