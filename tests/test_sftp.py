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


def test_coco_init_source_sftp_writes_a_download_that_fetches_and_imports(server, tmp_path, mongo_server):
    """`coco init --source sftp`: the project loads as written (no trigger, the password named by a
    variable); with host, port, user and known_hosts filled in and the variable set, `coco enqueue
    --local` fetches the server's files into proc and `coco drain` imports them."""
    from support import coco

    from core4_resources.mongo.resource import MongoResource

    home, root = tmp_path / "home", tmp_path / "root"
    env = dict(os.environ, CORE4_OPTION_DEFAULT__mongo_url=mongo_server.url)
    common = ("--root", str(root), "--home", str(home))
    done = coco(*common, "init", "partnerdrop", "--source", "sftp", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    project_dir = home / "partnerdrop"
    readme = (project_dir / "README.md").read_text()
    assert "export PARTNERDROP_SFTP_PASSWORD=" in readme and "known_hosts" in readme
    path = project_dir / "partnerdrop" / "defs" / "records" / "defs.yaml"
    text = path.read_text()
    assert "type: core4_pipelines.SftpDownload" in text and "password: PARTNERDROP_SFTP_PASSWORD" in text
    listed = coco(*common, "jobs", env=env)
    assert "download_records" in listed.stdout, listed.stdout + listed.stderr

    text = (text.replace("host: sftp.example.org", "host: 127.0.0.1").replace("port: 22", f"port: {server.port}")
            .replace("user: partnerdrop", f"user: {USER}").replace("known_hosts: /etc/core4/known_hosts",
                                                                     f"known_hosts: {server.known_hosts}"))
    path.write_text(text.replace("after: keep ", "min_age_seconds: 0\n  after: keep "))
    server.drop("cities.csv", b"city,celsius\nberlin,21.5\nkoeln,19\n")
    server.drop("notes.txt", b"not a csv file: left on the server\n")

    unset = coco(*common, "enqueue", "--local", "partnerdrop.download_records", env=env)
    assert unset.returncode != 0 and "PARTNERDROP_SFTP_PASSWORD" in unset.stdout + unset.stderr
    env["PARTNERDROP_SFTP_PASSWORD"] = PASSWORD
    fetched = coco(*common, "enqueue", "--local", "partnerdrop.download_records", env=env)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert PASSWORD not in fetched.stdout + fetched.stderr
    drained = coco(*common, "drain", "partnerdrop", "--timeout", "120", env=env)
    assert drained.returncode == 0, drained.stdout + drained.stderr
    records = MongoResource(mongo_url=mongo_server.url, database="partnerdrop").collection("records")
    assert sorted((r["city"], r["celsius"]) for r in records.find({"_src": "cities.csv"})) == [
        ("berlin", 21.5), ("koeln", 19)]
    assert (server.root / "outgoing" / "cities.csv").exists()  # after: keep


def _openssh() -> tuple[str | None, str | None]:
    """OpenSSH's sshd and sftp-server, where this machine has them."""
    import shutil

    sshd = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.path.exists(p)), None)
    helper = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                               "/usr/lib/ssh/sftp-server", "/usr/libexec/sftp-server") if os.path.exists(p)), None)
    return sshd, helper


@pytest.mark.skipif(None in _openssh(), reason="no OpenSSH server here (sshd and sftp-server): only asyncssh's ran")
def test_openssh_sftp_server_files_are_fetched_once_with_a_key(tmp_path, folders, mongo):
    """The same download against OpenSSH's sshd and sftp-server (a private sshd on a free port,
    key login as the user running the tests, the host key from a known_hosts file)."""
    import getpass
    import socket

    sshd, helper = _openssh()
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    host_key, client_key = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    host_key.write_private_key(str(keys / "host"))
    client_key.write_private_key(str(keys / "client"))
    client_key.write_public_key(str(keys / "authorized_keys"))
    for name in ("host", "client"):
        os.chmod(keys / name, 0o600)
    port = free_port()
    (keys / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode().strip()}\n")
    (keys / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\nPidFile {keys / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PubkeyAuthentication yes\nStrictModes no\nUsePAM no\nSubsystem sftp {helper}\n")
    remote = tmp_path / "remote" / "outgoing"
    remote.mkdir(parents=True)
    files = {f"records-{i:02d}.csv": f"id\n{i}\n".encode() for i in range(20)}
    for name, content in files.items():
        (remote / name).write_bytes(content)
    process = subprocess.Popen([sshd, "-D", "-e", "-f", str(keys / "sshd_config")], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
                time.sleep(0.1)
        source = SftpSource(host="127.0.0.1", port=port, user=getpass.getuser(), remote_dir=str(remote),
                            private_key_file=str(keys / "client"), known_hosts=str(keys / "known_hosts"),
                            min_age_seconds=0, timeout=10)
        assert len(fetch_sftp_into_proc(folders, mongo, source, JOB)) == 20
        assert in_proc(folders) == files
        assert fetch_sftp_into_proc(folders, mongo, source, JOB) == []
    finally:
        process.terminate()
        process.wait(10)
