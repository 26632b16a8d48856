"""The embedded server's access control: a user and a random password per storage folder,
provisioned once, and every later start with --auth. Real servers, real clients."""

from __future__ import annotations

import json
import os
import stat

import pymongo
import pytest
from pymongo.errors import OperationFailure

from core4_resources.config.settings import mask_url
from core4_resources.mongo.embedded.server import (
    Credentials,
    EmbeddedMongo,
    read_credentials,
    url_with_credentials,
    write_credentials,
)
from core4_resources.errors import EmbeddedMongoError


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _anonymous(server: EmbeddedMongo) -> pymongo.MongoClient:
    return pymongo.MongoClient(server.host, server.port, directConnection=True, serverSelectionTimeoutMS=3000)


@pytest.fixture
def loose_umask():
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_a_client_without_credentials_can_neither_read_nor_insert(mongo_server):
    with pymongo.MongoClient(mongo_server.url) as owner:
        owner.authtest.things.insert_one({"_id": "secret"})
    with _anonymous(mongo_server) as stranger:
        assert stranger.admin.command("ping")["ok"] == 1  # the handshake is all it gets
        with pytest.raises(OperationFailure, match="requires authentication"):
            stranger.authtest.things.find_one()
        with pytest.raises(OperationFailure, match="requires authentication"):
            stranger.authtest.things.insert_one({"_id": "planted"})
        with pytest.raises(OperationFailure, match="requires authentication"):
            stranger.list_database_names()
    wrong = mongo_server.url.replace(mongo_server.url.split("@")[0].split(":")[-1], "guessed")
    with pymongo.MongoClient(wrong, serverSelectionTimeoutMS=3000) as guesser:
        with pytest.raises(OperationFailure, match="authentication failed"):
            guesser.authtest.things.find_one()
    with pymongo.MongoClient(mongo_server.url) as owner:
        assert list(owner.authtest.things.find()) == [{"_id": "secret"}]
        owner.drop_database("authtest")


def test_credentials_are_private_provisioned_once_and_the_url_masked(tmp_path, loose_umask):
    storage = tmp_path / "data" / "mongo"
    with EmbeddedMongo(storage) as server:
        credentials = read_credentials(server.credentials_path)
        assert server.credentials_path == str(tmp_path / "data" / "mongo.credentials")
        assert credentials.provisioned and credentials.user == "core4" and len(credentials.password) >= 32
        assert server.url == f"mongodb://core4:{credentials.password}@127.0.0.1:{server.port}"
        assert mask_url(server.url) == f"mongodb://core4:***@127.0.0.1:{server.port}"
        assert "--auth" in server._command
        with pymongo.MongoClient(server.url) as client:
            client.demo.kept.insert_one({"_id": 1})
    # Whatever the umask: folders 0750, the credentials and the log 0600, the server's files 0600.
    assert _mode(tmp_path / "data") == _mode(storage) == 0o750
    assert _mode(server.credentials_path) == _mode(server.log_path) == 0o600
    assert {_mode(p) & 0o077 for p in storage.iterdir()} == {0}
    assert credentials.password not in (tmp_path / "data" / "mongo.log").read_text()

    # The second start reuses the password and does not provision again.
    before = os.stat(server.credentials_path).st_mtime_ns
    with EmbeddedMongo(storage) as again, pymongo.MongoClient(again.url) as client:
        assert client.demo.kept.find_one() == {"_id": 1}
    assert os.stat(server.credentials_path).st_mtime_ns == before
    assert read_credentials(server.credentials_path) == credentials


def test_an_interrupted_provisioning_is_completed_and_strangers_are_dropped(tmp_path):
    storage = tmp_path / "mongo"
    credentials_path = tmp_path / "mongo.credentials"
    # The state a crash after createUser leaves: the user exists, the file is not marked.
    # Someone also slipped in a user of their own while the server ran without --auth.
    credentials = Credentials.generate()
    write_credentials(credentials_path, credentials)
    with EmbeddedMongo(storage, auth=False) as bare, pymongo.MongoClient(bare.url) as client:
        client.admin.command("createUser", "core4", pwd="an-older-password", roles=["root"])
        client.admin.command("createUser", "intruder", pwd="intruder-pw", roles=["root"])
        client.demo.kept.insert_one({"_id": "before"})

    with EmbeddedMongo(storage) as server:
        assert read_credentials(credentials_path) == Credentials("core4", credentials.password, True)
        with pymongo.MongoClient(server.url) as client:
            assert client.demo.kept.find_one() == {"_id": "before"}
            assert [u["user"] for u in client.admin["system.users"].find()] == ["core4"]
        intruder = f"mongodb://intruder:intruder-pw@127.0.0.1:{server.port}"
        with pymongo.MongoClient(intruder, serverSelectionTimeoutMS=3000) as client:
            with pytest.raises(OperationFailure, match="authentication failed"):
                client.demo.kept.find_one()
        assert url_with_credentials(mask_url(server.url), credentials_path) == server.url


def test_a_crash_before_the_user_exists_is_completed_by_the_next_start(tmp_path):
    storage = tmp_path / "mongo"
    write_credentials(tmp_path / "mongo.credentials", Credentials.generate())  # nothing else happened
    with EmbeddedMongo(storage) as server, pymongo.MongoClient(server.url) as client:
        assert client.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"] == [
            {"user": "core4", "db": "admin"}]


def test_credentials_the_server_refuses_are_a_clear_error(tmp_path):
    storage = tmp_path / "mongo"
    EmbeddedMongo(storage).start().stop()
    path = tmp_path / "mongo.credentials"
    edited = json.loads(path.read_text())
    edited["password"] = "not-the-one"
    path.write_text(json.dumps(edited))
    os.chmod(path, 0o644)

    server = EmbeddedMongo(storage)
    with pytest.raises(EmbeddedMongoError, match=r"refused the credentials in .*mongo\.credentials"):
        server.start()
    assert not server.is_running()
    assert _mode(path) == 0o600  # narrowed when read


def test_a_credentials_file_that_is_not_ours_is_explained(tmp_path):
    (tmp_path / "mongo.credentials").write_text("user=core4\n")
    with pytest.raises(EmbeddedMongoError, match="is not what the embedded server wrote"):
        EmbeddedMongo(tmp_path / "mongo").start()
