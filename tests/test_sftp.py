"""sFTP downloads against a real SSH/SFTP server (asyncssh, its own process on 127.0.0.1): files
fetched once, a file still being uploaded left for later, the server killed mid-transfer, each
login and host key problem a clear error, and what happens on the server after pickup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import asyncssh
import pytest
from support import visible_files

from core4_pipelines.download import sftp
from core4_pipelines.download.http import DownloadError
from core4_pipelines.download.sftp import SftpSource, fetch_sftp_into_proc
from core4_resources.mongo.embedded.server import free_port

SERVER = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "sftp_server.py")
USER, PASSWORD = "partner", "s3cret-partner"
JOB = "demo.download_records"


class Server:
    def __init__(self, tmp_path):
        self.root = tmp_path / "remote"
        (self.root / "outgoing").mkdir(parents=True)
        keys = tmp_path / "keys"
        keys.mkdir()
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.host_key_file = str(keys / "host")
        self.host_key.write_private_key(self.host_key_file)
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key_file = str(keys / "client")
        self.client_key.write_private_key(self.client_key_file)
        self.authorized = str(keys / "authorized_keys")
        self.client_key.write_public_key(self.authorized)
        self.port = free_port()
        self.known_hosts = str(keys / "known_hosts")
        with open(self.known_hosts, "w") as out:
            out.write(f"[127.0.0.1]:{self.port} {self.host_key.export_public_key().decode().strip()}\n")
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, SERVER, str(self.port), str(self.root), self.host_key_file, self.authorized, USER,
             PASSWORD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        assert line.strip() == "ready", self.process.stderr.read()

    def kill(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def source(self, **options) -> SftpSource:
        settings = {"host": "127.0.0.1", "port": self.port, "user": USER, "remote_dir": "/outgoing",
                    "password": "PARTNER_SFTP_PASSWORD", "known_hosts": self.known_hosts, "min_age_seconds": 0,
                    "timeout": 10, **options}
        return SftpSource(**settings)

    def drop(self, name: str, content: bytes, folder: str = "outgoing") -> str:
        path = self.root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return str(path)


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTNER_SFTP_PASSWORD", PASSWORD)
    running = Server(tmp_path)
    try:
        yield running
    finally:
        running.kill()


def in_proc(folders) -> dict[str, bytes]:
    proc = folders.proc_folder()
    return {os.path.basename(p): open(p, "rb").read() for p in visible_files(proc)} if os.path.isdir(proc) else {}


def test_many_files_are_fetched_once_and_a_changed_one_again(server, folders, mongo):
    files = {f"records-{i:03d}.csv": f"id\n{i}\n".encode() for i in range(200)}
    for name, content in files.items():
        server.drop(name, content)
    server.drop("notes.txt", b"not matching")
    delivered = fetch_sftp_into_proc(folders, mongo, server.source(pattern=r"records-.*\.csv$"), JOB)
    assert len(delivered) == 200 and in_proc(folders) == files
    assert fetch_sftp_into_proc(folders, mongo, server.source(pattern=r"records-.*\.csv$"), JOB) == []
    server.drop("records-007.csv", b"id\n7\n77\n")  # re-delivered with new content: fetched again
    os.utime(server.root / "outgoing" / "records-007.csv", (time.time() + 5, time.time() + 5))
    (again,) = fetch_sftp_into_proc(folders, mongo, server.source(pattern=r"records-.*\.csv$"), JOB)
    assert open(again, "rb").read() == b"id\n7\n77\n"
    assert not [p for p in os.listdir(os.path.dirname(folders.make_transfer("x"))) if p.startswith(".")]


def test_a_file_still_growing_is_left_for_a_later_run(server, folders, mongo):
    path = server.drop("growing.csv", b"id\n")
    stop = threading.Event()

    def append():
        while not stop.is_set():
            with open(path, "ab") as out:
                out.write(b"1\n")
            time.sleep(0.05)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        assert fetch_sftp_into_proc(folders, mongo, server.source(min_age_seconds=0.5), JOB) == []
    finally:
        stop.set()
        writer.join()
    (done,) = fetch_sftp_into_proc(folders, mongo, server.source(min_age_seconds=0.5), JOB)
    assert open(done, "rb").read() == open(path, "rb").read()


def test_the_server_killed_mid_transfer_leaves_nothing_partial_and_the_next_run_completes(server, folders, mongo):
    big = os.urandom(64 << 20)
    server.drop("a-small.csv", b"id\n1\n")
    server.drop("b-big.bin", big)
    killer = threading.Timer(0.3, server.kill)
    killer.start()
    with pytest.raises(DownloadError, match=r"sftp://partner@127\.0\.0\.1"):
        fetch_sftp_into_proc(folders, mongo, server.source(), JOB)
    killer.join()
    assert in_proc(folders) == {}
    transfer = os.path.dirname(folders.make_transfer("x"))
    assert os.listdir(transfer) == []  # no hidden temp, no visible half
    server.start()
    delivered = fetch_sftp_into_proc(folders, mongo, server.source(), JOB)
    assert sorted(os.path.basename(p) for p in delivered) == ["a-small.csv", "b-big.bin"]
    assert in_proc(folders)["b-big.bin"] == big
    assert fetch_sftp_into_proc(folders, mongo, server.source(), JOB) == []


def test_a_private_key_from_the_environment_or_a_file_logs_in(server, folders, mongo, monkeypatch):
    server.drop("k.csv", b"id\n1\n")
    monkeypatch.setenv("PARTNER_SFTP_KEY", server.client_key.export_private_key().decode())
    (path,) = fetch_sftp_into_proc(folders, mongo, server.source(password=None, private_key="PARTNER_SFTP_KEY"), JOB)
    assert open(path, "rb").read() == b"id\n1\n"
    server.drop("l.csv", b"id\n2\n")
    assert len(fetch_sftp_into_proc(folders, mongo, server.source(password=None, private_key_file=server.client_key_file),
                                    JOB)) == 1


def test_a_configured_fingerprint_is_enough(server, folders, mongo):
    server.drop("f.csv", b"id\n1\n")
    fingerprint = server.host_key.get_fingerprint("sha256")
    assert len(fetch_sftp_into_proc(folders, mongo, server.source(known_hosts=None, host_key=fingerprint), JOB)) == 1


@pytest.mark.parametrize("case", ["password", "key", "unknown host", "changed host key", "fingerprint",
                                  "missing folder", "unset variable", "no verification"])
def test_each_login_or_host_problem_is_a_clear_error(server, folders, mongo, monkeypatch, tmp_path, case):
    server.drop("a.csv", b"id\n1\n")
    other = asyncssh.generate_private_key("ssh-ed25519")
    if case == "password":
        monkeypatch.setenv("PARTNER_SFTP_PASSWORD", "wrong")
        source, expected = server.source(), r"login refused \(tried password\)"
    elif case == "key":
        monkeypatch.setenv("OTHER_KEY", other.export_private_key().decode())
        source, expected = server.source(password=None, private_key="OTHER_KEY"), r"login refused \(tried private_key\)"
    elif case == "unknown host":
        empty = tmp_path / "empty_known_hosts"
        empty.write_text("")
        source, expected = server.source(known_hosts=str(empty)), r"host key SHA256:\S+ is not trusted: .* has no key for it"
    elif case == "changed host key":
        changed = tmp_path / "changed_known_hosts"
        changed.write_text(f"[127.0.0.1]:{server.port} {other.export_public_key().decode().strip()}\n")
        source, expected = server.source(known_hosts=str(changed)), r"has another key for it \(changed host key\?\)"
    elif case == "fingerprint":
        source = server.source(known_hosts=None, host_key=other.get_fingerprint("sha256"))
        expected = r"is not the configured host_key"
    elif case == "missing folder":
        source, expected = server.source(remote_dir="/nowhere"), r"/nowhere: cannot list it"
    elif case == "unset variable":
        monkeypatch.delenv("PARTNER_SFTP_PASSWORD")
        source, expected = server.source(), r"password: the environment variable PARTNER_SFTP_PASSWORD is not set"
    else:
        source, expected = server.source(known_hosts=None), r"known_hosts or host_key"
    with pytest.raises(DownloadError, match=expected) as caught:
        fetch_sftp_into_proc(folders, mongo, source, JOB)
    assert f"127.0.0.1:{server.port}" in str(caught.value) and PASSWORD not in str(caught.value)
    assert in_proc(folders) == {}


def test_a_file_without_read_permission_is_named(server, folders, mongo):
    if os.geteuid() == 0:
        pytest.skip("root reads every file: the server runs as root here")
    path = server.drop("locked.csv", b"id\n1\n")
    os.chmod(path, 0)
    with pytest.raises(DownloadError, match=r"/outgoing/locked\.csv: cannot fetch it"):
        fetch_sftp_into_proc(folders, mongo, server.source(), JOB)


@pytest.mark.parametrize("after", ["delete", "move:/outgoing/done"])
def test_delete_or_move_after_pickup_and_a_run_cut_off_in_between(server, folders, mongo, monkeypatch, after):
    (server.root / "outgoing" / "done").mkdir()
    server.drop("a.csv", b"id\n1\n")
    real_after = sftp._after

    async def cut_off(*args):
        raise asyncssh.ConnectionLost("cut off")

    monkeypatch.setattr(sftp, "_after", cut_off)
    with pytest.raises(DownloadError):
        fetch_sftp_into_proc(folders, mongo, server.source(after=after), JOB)
    assert list(in_proc(folders)) == ["a.csv"]  # safe in proc before anything happens on the server
    assert (server.root / "outgoing" / "a.csv").exists()
    monkeypatch.setattr(sftp, "_after", real_after)
    assert fetch_sftp_into_proc(folders, mongo, server.source(after=after), JOB) == []  # not fetched again
    assert not (server.root / "outgoing" / "a.csv").exists()
    assert (server.root / "outgoing" / "done" / "a.csv").exists() == (after != "delete")
    assert list(in_proc(folders)) == ["a.csv"]


# --- the SftpDownload component --------------------------------------------------------------------

from test_components import project  # noqa: E402,F401 - the component project fixture


def sftp_yaml(server, extra: str = "") -> str:
    return f"""
        type: core4_pipelines.SftpDownload
        attributes:
          collection: records
          host: 127.0.0.1
          port: {server.port}
          user: {USER}
          password: PARTNER_SFTP_PASSWORD
          known_hosts: {server.known_hosts}
          remote_dir: /outgoing
          pattern: 'records-.*\\.csv$'
          min_age_seconds: 0
          {extra}
    """


IMPORT_YAML = """
    type: core4_pipelines.FileImport
    attributes:
      collection: records
      pattern: 'records-.*\\.csv$'
      duplicates: skip
"""


def test_an_sftp_download_in_yaml_feeds_its_import(server, project):  # noqa: F811
    import dagster as dg
    from support import claim_all, make_folders

    from core4_pipelines.ingest.job import import_run_config

    server.drop("records-1.csv", b"id,name\n1,a\n2,b\n")
    name, defs = project({"fetch": sftp_yaml(server, "after: delete"), "records": IMPORT_YAML})
    with dg.instance_for_test() as instance:
        download = defs.get_job_def("download_records")
        assert download.execute_in_process(instance=instance).success
        folders = make_folders(project.root, name)
        assert list(in_proc(folders)) == ["records-1.csv"]
        assert not (server.root / "outgoing" / "records-1.csv").exists()  # deleted once safe in proc
        (batch,) = claim_all(folders)
        job = defs.get_job_def("import_records")
        assert job.execute_in_process(run_config=import_run_config(job, batch), instance=instance).success
        assert download.execute_in_process(instance=instance).success  # nothing new: a quiet success


@pytest.mark.parametrize("extra, key", [
    ("host_key: md5:00", "attributes.host_key"),
    ("after: shred", "attributes.after"),
    ("password: s3cret-value", "attributes.password"),
])
def test_a_wrong_sftp_setting_names_the_file_and_key(server, project, extra, key):  # noqa: F811
    text = sftp_yaml(server, extra).replace("          password: PARTNER_SFTP_PASSWORD\n", "") if "password" in extra \
        else sftp_yaml(server, extra)
    with pytest.raises(Exception) as caught:
        project({"fetch": text})
    message = str(caught.value)
    error = caught.value
    while error is not None:
        message += str(error)
        error = error.__cause__ or error.__context__
    assert "defs.yaml" in message and key in message, message
    assert "s3cret-value" not in message


def test_the_listing_sensor_starts_a_run_for_new_files_only(server, project):  # noqa: F811
    import dagster as dg
    from support import make_folders

    from core4_resources.mongo.resource import MongoResource

    server.drop("records-1.csv", b"id\n1\n")
    name, defs = project({"fetch": sftp_yaml(server, "listing_interval: 30"), "records": IMPORT_YAML})
    sensor = defs.get_sensor_def("download_records_sftp_sensor")
    mongo = MongoResource(mongo_url=os.environ["CORE4_OPTION_DEFAULT__mongo_url"], database=project.database)
    with dg.instance_for_test() as instance:
        (request,) = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, resources={"mongo": mongo})).run_requests
        assert defs.get_job_def("download_records").execute_in_process(instance=instance).success
        assert list(in_proc(make_folders(project.root, name))) == ["records-1.csv"]
        quiet = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources={"mongo": mongo}))
        assert not quiet.run_requests and "nothing new on sftp://partner@127.0.0.1" in quiet.skip_message
        server.drop("records-2.csv", b"id\n2\n")
        (second,) = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, resources={"mongo": mongo})).run_requests
        assert second.run_key != request.run_key
        server.kill()
        down = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources={"mongo": mongo}))
        assert not down.run_requests and f"127.0.0.1:{server.port}: cannot connect" in down.skip_message
