"""EmbeddedMongo: a real SecantusDB child process, started and stopped for real."""

from __future__ import annotations

import os

import pymongo
import pytest

from core4_resources.mongo.embedded import server as embedded
from core4_resources.mongo.embedded.server import EmbeddedMongo, find_server_executable, free_port
from core4_resources.errors import EmbeddedMongoError


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_data_persists_across_restarts_and_the_process_always_stops(tmp_path):
    storage = tmp_path / "data"

    with EmbeddedMongo(storage) as server:
        assert server.is_running()
        assert server.url.startswith("mongodb://core4:")
        assert server.url.endswith(f"@127.0.0.1:{server.port}")
        with pymongo.MongoClient(server.url) as client:
            client.demo.sales.insert_one({"_id": "kept", "v": 1})
        first_pid = server.pid
    assert not _process_exists(first_pid)
    assert not server.is_running()
    server.stop()  # idempotent
    assert (tmp_path / "data.log").read_text()  # the server's output went to the log

    with pytest.raises(RuntimeError, match="body failed"):
        with EmbeddedMongo(storage) as restarted:
            with pymongo.MongoClient(restarted.url) as client:
                assert client.demo.sales.find_one({"_id": "kept"}) == {"_id": "kept", "v": 1}
            raise RuntimeError("body failed")
    assert not _process_exists(restarted.pid)
    restarted.stop()


def test_unusable_storage_path_reports_command_and_log_tail(tmp_path):
    not_a_folder = tmp_path / "storage"
    not_a_folder.write_text("a file where the data folder should be")
    log_path = tmp_path / "logs" / "server.log"

    server = EmbeddedMongo(not_a_folder, log_path=log_path, startup_timeout=20)
    with pytest.raises(EmbeddedMongoError) as caught:
        server.start()

    message = str(caught.value)
    assert "exited with code" in message
    assert f"--storage-path {not_a_folder}" in message
    assert "FileExistsError" in message  # from the log tail
    assert str(log_path) in message and log_path.exists()
    assert not server.is_running()
    server.stop()


def test_a_given_port_in_use_is_an_error(tmp_path, mongo_server):
    server = EmbeddedMongo(tmp_path / "other", port=mongo_server.port)
    with pytest.raises(EmbeddedMongoError, match=f"port {mongo_server.port} .* already in use"):
        server.start()
    assert not server.is_running()
    assert mongo_server.is_running()  # the server holding the port is untouched


def test_a_port_taken_after_it_was_picked_is_replaced(tmp_path, monkeypatch, mongo_server):
    EmbeddedMongo(tmp_path / "race").start().stop()  # provisioned: the next start picks one port
    # The first pick is a port someone else took meanwhile (the session server's).
    picks = iter([mongo_server.port])
    monkeypatch.setattr(embedded, "free_port", lambda host="127.0.0.1": next(picks, None)
                        or free_port(host))

    with EmbeddedMongo(tmp_path / "race") as server:
        assert server.port != mongo_server.port
        with pymongo.MongoClient(server.url, serverSelectionTimeoutMS=3000) as client:
            assert client.admin.command("serverStatus")["pid"] == server.pid
    assert not _process_exists(server.pid)


def test_start_timeout_kills_the_server_and_says_so(tmp_path):
    EmbeddedMongo(tmp_path / "slow").start().stop()  # provisioned, so the timeout hits the real start
    server = EmbeddedMongo(tmp_path / "slow", startup_timeout=0)
    with pytest.raises(EmbeddedMongoError, match=r"did not answer ping within 0s"):
        server.start()
    assert not _process_exists(server.pid)


def test_free_port_is_bindable_and_executable_is_found():
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert os.access(find_server_executable(), os.X_OK)


def test_url_before_start_is_an_error(tmp_path):
    with pytest.raises(EmbeddedMongoError, match="call start"):
        EmbeddedMongo(tmp_path / "x").url  # noqa: B018 - the access itself must raise
