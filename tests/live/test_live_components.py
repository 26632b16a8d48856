"""A project declared in YAML only -- `coco init` plus a defs.yaml, no Python written -- under
`coco serve`: CSV files dropped into proc are imported and archived by the daemon, and an
HttpDownload launched through GraphQL fetches from a local http.server into proc, from where the
same import takes them."""

from __future__ import annotations

import gzip
import http.server
import subprocess
import threading
import uuid
from pathlib import Path

import pymongo
import pytest
from livestack import BIN, coco_serve, drop_into_proc, wait_for

PROJECT = "yamlonly"
TOKEN = uuid.uuid4().hex
CSV = b"city,celsius\nberlin,21.5\nkoeln,19\n"
# Dropped by hand: other bytes than the download's (the scaffold's import skips a content it had).
DROPPED = CSV + b"muenchen,17\n"


class _Files(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.headers.get("Authorization") != f"Bearer {TOKEN}" or self.path != "/cities.csv":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(CSV)))
        self.end_headers()
        self.wfile.write(CSV)


@pytest.fixture(scope="module")
def files_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, files_server):
    def make_projects(home: Path, env: dict) -> None:
        done = subprocess.run([str(BIN / "coco"), "init", PROJECT, "--home", str(home)],
                              capture_output=True, text=True, env=env, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        fetch = home / PROJECT / PROJECT / "defs" / "fetch"
        fetch.mkdir()
        (fetch / "defs.yaml").write_text(
            "type: core4_pipelines.HttpDownload\n"
            "attributes:\n"
            "  collection: records\n"
            f"  url: {files_server}/cities.csv\n"
            '  file_name: "cities-{date:%Y%m%d%H%M%S}.csv"\n'
            "  headers: {Authorization: YAMLONLY_TOKEN}\n"
        )

    base = tmp_path_factory.mktemp("live-components")
    with coco_serve(base, make_projects, (PROJECT,), extra_env={"YAMLONLY_TOKEN": f"Bearer {TOKEN}"}) as live:
        yield live


def _records(live):
    client = pymongo.MongoClient(live.mongo_url, serverSelectionTimeoutMS=5000)
    return client, client[PROJECT]["records"]


def test_csv_files_dropped_into_a_yaml_only_projects_proc_are_imported_and_archived(stack):
    # No Python of its own: only what coco init wrote (the package marker, the one-line definitions,
    # the record model its YAML leaves switched off, a test).
    written = sorted(p.relative_to(stack.home / PROJECT).as_posix() for p in (stack.home / PROJECT).rglob("*.py"))
    assert written == sorted([f"{PROJECT}/__init__.py", f"{PROJECT}/definitions.py", f"{PROJECT}/models.py",
                              "tests/test_definitions.py"])
    name = f"cities-{uuid.uuid4().hex[:8]}.csv"
    drop_into_proc(stack.root / "proc" / PROJECT, name, DROPPED)
    client, records = _records(stack)
    archive = stack.root / "archive" / PROJECT
    try:
        wait_for(lambda: records.count_documents({"_src": name}) == 3 and list(archive.rglob(f"{name}.gz")), 120,
                 f"{name} imported and archived", stack.log_tail)
        assert sorted((r["city"], r["celsius"]) for r in records.find({"_src": name})) == [
            ("berlin", 21.5), ("koeln", 19), ("muenchen", 17)]
        (archived,) = archive.rglob(f"{name}.gz")
        assert gzip.decompress(archived.read_bytes()) == DROPPED
    finally:
        client.close()


def test_an_http_download_launched_through_graphql_feeds_the_import(stack):
    run_id = stack.client().submit_job_execution("download_records", repository_location_name=PROJECT)
    run = stack.wait_for_run(run_id, 120)
    assert run["status"] == "SUCCESS", stack.run_messages(run_id)[-10:]
    client, records = _records(stack)
    try:
        fetched = wait_for(lambda: [r for r in records.find({"_src": {"$regex": r"^cities-\d{14}\.csv$"}})], 120,
                           "the downloaded file imported", stack.log_tail)
        assert sorted((r["city"], r["celsius"]) for r in fetched) == [("berlin", 21.5), ("koeln", 19)]
    finally:
        client.close()
    assert TOKEN not in "".join(stack.run_messages(run_id))
