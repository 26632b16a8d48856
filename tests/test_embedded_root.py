"""The embedded MongoDB of folder.root behind every entry point: started on demand by whichever
process needs it first, one per root however many race, its port kept, stale state recovered,
adopted by `coco serve`'s EmbeddedMongo. Real servers and processes; each test stops its own."""

from __future__ import annotations

import glob
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pymongo
import pytest

from core4_resources.mongo.embedded.root import embedded_status, ensure_embedded, root_server, stop_embedded
from core4_resources.mongo.embedded.state import ServerState, read_state, write_state
from support import BIN, REPO

DEMO = os.path.join(REPO, "projects", "demo")
SAMPLE = os.path.join(DEMO, "demo", "samples", "readings-berlin.csv")


def servers_of(root) -> list[int]:
    """Pids of every live server process whose data folder is <root>/mongo."""
    storage = os.path.join(str(root), "mongo")
    found = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as handle:
                arguments = handle.read().decode(errors="replace").split("\0")
            with open(cmdline.replace("cmdline", "stat")) as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if any(a == "--storage-path" and b == storage for a, b in zip(arguments, arguments[1:])):
            found.append(int(cmdline.split("/")[2]))
    return found


@pytest.fixture
def root(tmp_path):
    """A folder.root whose embedded server, if any test process started one, is stopped afterwards."""
    path = tmp_path / "root"
    yield path
    stop_embedded(path, grace=5)
    assert servers_of(path) == []


def _ensure_in_subprocess(root, count: int) -> list[str]:
    """``count`` processes calling ensure_embedded(root) at the same moment; their URLs."""
    script = textwrap.dedent("""
        import sys, time
        from core4_resources.mongo.embedded.root import ensure_embedded
        while time.time() < float(sys.argv[2]):  # one start line for all
            time.sleep(0.005)
        print(ensure_embedded(sys.argv[1]))
    """)
    import time

    start_at = str(time.time() + 3)
    processes = [subprocess.Popen([sys.executable, "-c", script, str(root), start_at],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(count)]
    urls = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
        urls.append(out.strip())
    return urls


def test_processes_racing_to_start_the_server_end_with_one_server_that_outlives_them(root):
    urls = _ensure_in_subprocess(root, 3)
    assert len(set(urls)) == 1, urls
    # The processes are gone; the one server they share runs on, with its data and password.
    pids = servers_of(root)
    assert len(pids) == 1, pids
    assert read_state(str(root / "mongo.state")).pid == pids[0]
    with pymongo.MongoClient(urls[0], serverSelectionTimeoutMS=5000) as client:
        client.shop.prices.insert_one({"_id": "kept"})
        assert client.admin.command("serverStatus")["pid"] == pids[0]
    assert ensure_embedded(root) == urls[0]  # this process finds it too
    assert stop_embedded(root) is True
    assert servers_of(root) == []
    # Started again: the same port, the same data, the same credentials.
    assert ensure_embedded(root) == urls[0]
    with pymongo.MongoClient(urls[0], serverSelectionTimeoutMS=5000) as client:
        assert client.shop.prices.find_one() == {"_id": "kept"}


def test_a_stale_state_file_is_recovered_from(root):
    url = ensure_embedded(root)
    port = read_state(str(root / "mongo.state")).port
    stop_embedded(root)
    # A pid that is alive but no server of this root (this test's own), and one that is gone.
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    for pid in (os.getpid(), int(finished.stdout)):
        write_state(str(root / "mongo.state"), ServerState(pid=pid, port=port))
        assert ensure_embedded(root) == url  # the kept port, a new server
        (server,) = servers_of(root)
        assert read_state(str(root / "mongo.state")) == ServerState(pid=server, port=port)
        stop_embedded(root)
    # A state file that is garbage is stale too.
    (root / "mongo.state").write_text("{not json")
    ensure_embedded(root)
    assert len(servers_of(root)) == 1


def test_a_kept_port_someone_else_took_is_replaced_and_a_configured_one_is_used(root, tmp_path):
    ensure_embedded(root)
    port = read_state(str(root / "mongo.state")).port
    stop_embedded(root)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past our own TIME_WAITs
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        url = ensure_embedded(root)
    assert not url.endswith(f":{port}")
    assert read_state(str(root / "mongo.state")).port == int(url.rsplit(":", 1)[1])
    stop_embedded(root)

    other = tmp_path / "other-root"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        configured = probe.getsockname()[1]
    try:
        assert ensure_embedded(other, port=configured).endswith(f"@127.0.0.1:{configured}")
        assert embedded_status(other)[0] == f"mongodb://core4:***@127.0.0.1:{configured}"
    finally:
        stop_embedded(other)


def test_coco_serves_server_adopts_the_running_one_and_leaves_it_running(root):
    url = ensure_embedded(root)
    (pid,) = servers_of(root)
    server = root_server(root)  # what coco serve starts
    with server:
        assert server.adopted and server.pid == pid and server.url == url and server.is_running()
        server.restart(grace=5)  # its supervisor replacing a hung server: same port, same data
        assert not server.adopted and server.pid != pid and server.url == url
        assert servers_of(root) == [server.pid]
    # A server it started itself stops with it (as before); one it adopted would have run on.
    assert servers_of(root) == []
    assert ensure_embedded(root) == url


def test_dagster_job_execute_imports_into_the_embedded_default(root, tmp_path):
    """`dagster job execute -m demo.definitions -d projects/demo -j import_readings`, no mongo_url:
    the run starts the embedded server of folder.root and the records land there."""
    proc = root / "proc" / "demo"
    proc.mkdir(parents=True)
    shutil.copy(SAMPLE, proc / "readings-berlin.csv")
    batch = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import json, sys
            sys.path.insert(0, sys.argv[2])
            from support import claim_all, make_folders
            from demo.definitions import defs
            from core4_pipelines.ingest.job import import_run_config
            (batch_id,) = claim_all(make_folders(sys.argv[1]))
            print(json.dumps(import_run_config(defs.resolve_job_def("import_readings"), batch_id)))
        """), str(root), os.path.join(REPO, "tests")],
        capture_output=True, text=True, cwd=DEMO, env=_env(root, tmp_path), check=False)
    assert batch.returncode == 0, batch.stderr
    config = tmp_path / "run_config.json"  # JSON is YAML
    config.write_text(batch.stdout)
    done = subprocess.run(
        [os.path.join(BIN, "dagster"), "job", "execute", "-m", "demo.definitions", "-d", DEMO,
         "-j", "import_readings", "-c", str(config)],
        capture_output=True, text=True, cwd=REPO, env=_env(root, tmp_path), timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with pymongo.MongoClient(ensure_embedded(root), serverSelectionTimeoutMS=5000) as client:
        readings = client.demo.readings
        assert readings.count_documents({"_src": "readings-berlin.csv"}) == 24
    (archived,) = glob.glob(str(root / "archive" / "demo" / "**" / "readings-berlin.csv.gz"), recursive=True)
    with gzip.open(archived) as handle, open(SAMPLE, "rb") as original:
        assert handle.read() == original.read()
    assert len(servers_of(root)) == 1  # left running for the next process, until stopped


def _env(root, tmp_path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORE4_OPTION_")}
    env.update(CORE4_OPTION_folder__root=str(root), DAGSTER_HOME=str(home))
    return env


def test_a_resource_from_settings_without_mongo_url_uses_the_embedded_server(root, monkeypatch):
    from core4_resources.config.settings import load_config
    from core4_resources.mongo.resource import MongoResource

    monkeypatch.setenv("CORE4_OPTION_folder__root", str(root))
    mongo = MongoResource.from_settings(load_config())
    assert mongo.mongo_url is None and mongo.masked_url.startswith("(the embedded server of ")
    mongo.insert_stamped("prices", [{"_id": "p1", "price": 7}], source="/x/prices.csv", job_id="run1")
    port = read_state(str(root / "mongo.state")).port
    assert mongo.masked_url == f"mongodb://core4:***@127.0.0.1:{port}"
    with pymongo.MongoClient(ensure_embedded(root)) as client:
        assert client.core4.prices.find_one() == {"_id": "p1", "price": 7, "_src": "prices.csv", "_job_id": "run1"}


def test_status_says_no_port_before_the_first_start(tmp_path):
    assert embedded_status(tmp_path / "fresh") == (None, None)
    assert embedded_status(tmp_path / "fresh", port=27999) == ("mongodb://core4:***@127.0.0.1:27999", None)
    assert not os.path.exists(tmp_path / "fresh")  # asking starts nothing, makes nothing


def test_state_file_holds_pid_and_port_only(root):
    ensure_embedded(root)
    data = json.loads((root / "mongo.state").read_text())
    assert set(data) == {"pid", "port", "host"}
    assert oct(os.stat(root / "mongo.state").st_mode & 0o777) == "0o600"


def test_coco_config_prints_the_embedded_url_masked(root):
    from support import coco

    url = ensure_embedded(root)
    pid = read_state(str(root / "mongo.state")).pid
    done = coco("--root", str(root), "config")
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("embedded.url")]
    assert f"mongodb://core4:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in line and f"running, pid {pid}" in line
    password = url.split(":")[2].split("@")[0]
    assert password not in done.stdout


def test_coco_serve_starts_the_root_server_on_the_configured_port(tmp_path, monkeypatch):
    from core4_pipelines.coco.serve import embedded_mongo_for
    from core4_resources.config.settings import load_config
    from core4_resources.mongo.embedded.server import free_port

    port = free_port()
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path / "root"))
    monkeypatch.setenv("CORE4_OPTION_embedded__port", str(port))
    with embedded_mongo_for(load_config(), say=lambda _: None) as server:
        assert server.port == port
        assert read_state(str(tmp_path / "root" / "mongo.state")).port == port  # the root's own server
        with pymongo.MongoClient(server.url, serverSelectionTimeoutMS=5000) as client:
            client.core4.things.insert_one({"_id": 1})
    assert embedded_status(tmp_path / "root")[1] is None  # coco serve's own server stops with it
