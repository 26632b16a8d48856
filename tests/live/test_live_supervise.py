"""`coco serve` supervises what it started: a taken UI port is refused up front, the embedded
MongoDB is restarted on the same port when it dies or hangs, a dead `dagster dev` makes coco
serve exit non-zero, and SIGTERM stops everything with exit 0. Real processes throughout.

One stack (a home with one `coco init` project) serves the MongoDB tests and, last, the SIGTERM
test, which ends it; the dagster-dev test starts its own.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pymongo
import pytest
import yaml
from livestack import BIN, LiveStack, base_env, coco_serve, descendants, wait_for
from pymongo.write_concern import WriteConcern

from core4_pipelines.coco.scaffold import init_project
from core4_resources.mongo.embedded.server import free_port, url_with_credentials


def make_tiny_home(home: Path, env: dict[str, str]) -> None:
    home.mkdir(parents=True)
    init_project("tiny", str(home))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with coco_serve(tmp_path_factory.mktemp("supervise"), make_tiny_home, ("tiny",)) as live:
        yield live


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped has stopped running)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            stat = handle.read()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _child(stack: LiveStack, marker: str) -> int:
    """The pid of coco serve's direct child whose command line contains ``marker``."""
    def find():
        found = [pid for pid in descendants(stack.process.pid)
                 if _cmdline(pid) and _parent(pid) == stack.process.pid and marker in _cmdline(pid)]
        return found[0] if len(found) == 1 else None
    return wait_for(find, 30, f"coco serve's {marker} child", stack.log_tail, interval=0.2)


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            stat = handle.read()
    except OSError:
        return -1
    return int(stat[stat.rfind(")") + 2:].split()[1])


def _mongo(stack: LiveStack) -> pymongo.MongoClient:
    url = url_with_credentials(stack.mongo_url, stack.root / "mongo.credentials")
    return pymongo.MongoClient(url, serverSelectionTimeoutMS=20000)


def _port(url: str) -> int:
    return int(re.search(r":(\d+)(?:/|$)", url).group(1))


def _log_after(stack: LiveStack, offset: int) -> str:
    return stack.log_path.read_text(errors="replace")[offset:]


def test_the_printed_url_is_masked_and_a_client_without_the_password_is_refused(stack):
    log = stack.log_path.read_text(errors="replace")
    password = url_with_credentials(stack.mongo_url, stack.root / "mongo.credentials").split(":")[2].split("@")[0]
    assert password not in log
    assert re.search(r"embedded MongoDB on mongodb://core4:\*\*\*@127\.0\.0\.1:\d+ ", log), log
    assert oct(os.stat(stack.root / "mongo.credentials").st_mode & 0o777) == "0o600"
    with pymongo.MongoClient("127.0.0.1", _port(stack.mongo_url), serverSelectionTimeoutMS=5000) as stranger:
        with pytest.raises(pymongo.errors.OperationFailure, match="requires authentication"):
            stranger.tiny.records.insert_one({"planted": True})


def test_a_killed_mongodb_is_restarted_on_the_same_port_with_its_data(stack):
    port = _port(stack.mongo_url)
    with _mongo(stack) as client:
        client.tiny.get_collection("kept", write_concern=WriteConcern(j=True)).insert_one({"_id": "before kill"})
    old = _child(stack, "secantusd-py")
    offset = len(stack.log_path.read_text(errors="replace"))

    os.kill(old, signal.SIGKILL)

    wait_for(lambda: "embedded MongoDB died (exit -9); restarted on the same port" in _log_after(stack, offset),
             30, "the restart message", stack.log_tail, interval=0.5)
    assert f"restarted on the same port {port} " in _log_after(stack, offset)
    new = _child(stack, "secantusd-py")
    assert new != old and not _alive(old)
    assert f"--port {port} " in _cmdline(new)
    with _mongo(stack) as client:
        assert client.tiny.kept.find_one() == {"_id": "before kill"}
    assert stack.process.poll() is None


def test_a_mongodb_that_stops_answering_is_killed_and_restarted(stack):
    port = _port(stack.mongo_url)
    old = _child(stack, "secantusd-py")
    offset = len(stack.log_path.read_text(errors="replace"))

    os.kill(old, signal.SIGSTOP)  # alive, holding its port, answering nothing
    try:
        wait_for(lambda: "restarted on the same port" in _log_after(stack, offset),
                 60, "the restart of the hung server", stack.log_tail, interval=0.5)
    finally:
        if _alive(old):
            os.kill(old, signal.SIGCONT)
    said = _log_after(stack, offset)
    assert re.search(rf"embedded MongoDB \(pid {old}\) answered no ping 3 times in a row .*; killed it; "
                     rf"restarted on the same port {port} ", said), said
    assert not _alive(old)
    with _mongo(stack) as client:
        assert client.tiny.kept.find_one() == {"_id": "before kill"}


def test_sigterm_stops_everything_and_exits_0(stack):
    children = descendants(stack.process.pid)
    assert any("secantusd" in _cmdline(pid) for pid in children)
    assert any("dagster" in _cmdline(pid) for pid in children)

    stack.process.send_signal(signal.SIGTERM)

    assert stack.process.wait(60) == 0, stack.log_tail()
    left = {pid: _cmdline(pid) for pid in children if _alive(pid)}
    assert left == {}, left
    assert "Traceback" not in stack.log_path.read_text(errors="replace")


def test_a_dead_dagster_dev_is_started_again_then_coco_serve_gives_up_non_zero(tmp_path):
    import urllib.request

    with coco_serve(tmp_path, make_tiny_home, ("tiny",)) as live:
        dagster = _child(live, "dagster dev ")
        mongo = _child(live, "secantusd-py")

        os.killpg(dagster, signal.SIGKILL)  # dagster dev and everything it started
        wait_for(lambda: f"dagster dev (pid {dagster}) died (exit -9, killed by SIGKILL); started it again"
                 in live.log_path.read_text(errors="replace"), 60, "dagster dev started again", live.log_tail)
        again = _next_dagster(live, dagster)
        wait_for(lambda: urllib.request.urlopen(f"{live.url}/server_info", timeout=5).status == 200, 180,
                 "the UI back", live.log_tail, interval=1)
        assert _alive(mongo)  # the database was not touched
        # Killed again and again: after 3 restarts within 10 minutes coco serve gives up, non-zero.
        for kill in range(3):
            os.killpg(again, signal.SIGKILL)
            if kill < 2:  # restarts 2 and 3; the third kill is the fourth death: no more
                again = _next_dagster(live, again)
        code = live.process.wait(60)
        log = live.log_path.read_text(errors="replace")
        assert code == 128 + signal.SIGKILL, log
        assert "it was restarted 3 times within 10 minutes already: giving up" in log
        assert not _alive(mongo)


def _next_dagster(live, previous: int) -> int:
    """The pid of the dagster dev coco serve started after ``previous`` died."""
    return wait_for(lambda: (lambda pid: pid if pid != previous else None)(_child(live, "dagster dev ")), 30,
                    "the next dagster dev", live.log_tail)


def test_a_taken_ui_port_is_refused_before_anything_starts(tmp_path):
    port = free_port()
    config = tmp_path / "local.yaml"
    config.write_text(yaml.safe_dump({"folder": {"root": str(tmp_path / "root"), "home": str(tmp_path)},
                                      "dagster": {"port": port}}))
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        result = subprocess.run([str(BIN / "coco"), "serve"], capture_output=True, text=True, timeout=120,
                                env={**base_env(), "CORE4_CONFIG": str(config)}, check=False)
    assert result.returncode != 0
    assert f"cannot serve the Dagster UI on 127.0.0.1:{port}: the port is in use" in result.stderr
    assert "coco serve --port" in result.stderr and "dagster.port" in result.stderr
    assert "embedded MongoDB" not in result.stdout
    assert not (tmp_path / "root" / "mongo").exists()  # nothing was started
