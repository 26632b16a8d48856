"""MongoResource against the real embedded server over TCP."""

from __future__ import annotations

import copy
import os
import time
import traceback

import pytest
from bson.errors import InvalidDocument

from core4_resources.mongo.embedded.server import free_port
from core4_resources.errors import MongoError
from core4_resources.config.settings import mask_url
from core4_resources.mongo.resource import MongoResource, StampedWriteResult


def _unreachable(timeout_ms: int = 500) -> MongoResource:
    # free_port() returns a port nobody listens on: connections are refused.
    url = f"mongodb://user:s3cret@127.0.0.1:{free_port()}/admin"
    return MongoResource(mongo_url=url, database="core4",
                         server_selection_timeout_ms=timeout_ms)


def test_stamped_documents_land_with_source_basename_and_job_id(mongo):
    documents = [{"_id": 1, "name": "a", "nested": {"v": [1, 2]}}, {"name": "b"}]
    before = copy.deepcopy(documents)

    result = mongo.insert_stamped("sales", documents, source="/data/proc/demo/sales-2024.csv",
                                  job_id="run-42")

    assert result == StampedWriteResult(inserted=2, duplicates=0)
    stored = list(mongo.collection("sales").find({}, {"_id": 0}).sort("name"))
    assert stored == [
        {"name": "a", "nested": {"v": [1, 2]}, "_src": "sales-2024.csv", "_job_id": "run-42"},
        {"name": "b", "_src": "sales-2024.csv", "_job_id": "run-42"},
    ]
    assert documents == before  # no stamps and no generated _id in the caller's dicts


def test_stamps_override_stale_stamps_in_the_input(mongo):
    mongo.insert_stamped("c", [{"_id": 1, "_src": "old.csv", "_job_id": "old"}],
                         source="new.csv", job_id="new")
    assert mongo.collection("c").find_one({"_id": 1}) == {
        "_id": 1, "_src": "new.csv", "_job_id": "new"}


def test_a_long_generator_is_written_completely(mongo):
    produced = 0

    def rows():
        nonlocal produced
        for i in range(5000):
            produced += 1
            yield {"_id": f"row-{i}", "i": i}

    result = mongo.insert_stamped("big", rows(), source="big.csv", job_id="j1")

    assert produced == 5000
    assert result.inserted == 5000
    big = mongo.collection("big")
    assert big.count_documents({"_src": "big.csv", "_job_id": "j1"}) == 5000
    assert big.find_one({"_id": "row-4999"})["i"] == 4999


def test_ignore_duplicates_makes_a_rerun_idempotent(mongo):
    documents = [{"_id": f"f.csv:{i}", "i": i} for i in range(1500)]
    first = mongo.insert_stamped("imp", documents[:700], source="f.csv", job_id="run-1",
                                 on_duplicate="ignore")
    # The re-run covers the first 700 again plus the rest, across chunk borders.
    rerun = mongo.insert_stamped("imp", documents, source="f.csv", job_id="run-2",
                                 on_duplicate="ignore")

    assert first == StampedWriteResult(inserted=700, duplicates=0)
    assert rerun == StampedWriteResult(inserted=800, duplicates=700)
    imp = mongo.collection("imp")
    assert imp.count_documents({}) == 1500
    # documents already there are kept as they were, not overwritten
    assert imp.find_one({"_id": "f.csv:0"})["_job_id"] == "run-1"
    assert imp.find_one({"_id": "f.csv:1499"})["_job_id"] == "run-2"


def test_duplicates_raise_naming_collection_and_ids(mongo):
    mongo.insert_stamped("dup", [{"_id": "a-1"}, {"_id": "b-2"}], source="x.csv", job_id="j")

    with pytest.raises(MongoError) as caught:
        mongo.insert_stamped("dup", [{"_id": "a-1"}, {"_id": "new"}, {"_id": "b-2"}],
                             source="x.csv", job_id="j")

    message = str(caught.value)
    assert f"{mongo.database}.dup" in message
    assert "'a-1'" in message and "'b-2'" in message
    assert "on_duplicate='ignore'" in message
    # unordered by default: the new document still landed
    assert mongo.collection("dup").count_documents({"_id": "new"}) == 1


def test_ordered_insert_stops_at_the_first_duplicate(mongo):
    mongo.insert_stamped("ord", [{"_id": 2}], source="x.csv", job_id="j")
    with pytest.raises(MongoError, match=r"_id 2\b"):
        mongo.insert_stamped("ord", [{"_id": 1}, {"_id": 2}, {"_id": 3}], source="x.csv",
                             job_id="j", ordered=True)
    assert sorted(d["_id"] for d in mongo.collection("ord").find()) == [1, 2]


def test_other_write_errors_raise_even_when_ignoring_duplicates(mongo):
    mongo.db().create_collection("checked", validator={"$jsonSchema": {"required": ["x"]}})

    with pytest.raises(MongoError) as caught:
        mongo.insert_stamped("checked", [{"_id": 1, "x": 1}, {"_id": 2}], source="v.csv",
                             job_id="j", on_duplicate="ignore")

    message = str(caught.value)
    assert f"{mongo.database}.checked" in message and "v.csv" in message
    assert "_id 2" in message and "Document failed validation" in message


def test_empty_input_writes_nothing(mongo):
    assert mongo.insert_stamped("none", iter([]), source="e.csv", job_id="j") == \
        StampedWriteResult(inserted=0, duplicates=0)


@pytest.mark.parametrize("kwargs, expected", [
    ({"source": "", "job_id": "j"}, "source is empty"),
    ({"source": "/a/b/", "job_id": "j"}, "source is empty"),
    ({"source": "a.csv", "job_id": ""}, "job_id is empty"),
    ({"source": "a.csv", "job_id": "j", "on_duplicate": "skip"}, "on_duplicate must be"),
])
def test_bad_arguments_are_refused_before_writing(mongo, kwargs, expected):
    with pytest.raises(MongoError, match=expected):
        mongo.insert_stamped("bad", [{"_id": 1}], **kwargs)
    assert mongo.collection("bad").count_documents({}) == 0


def test_bad_content_is_not_reported_as_a_database_failure(mongo):
    with pytest.raises(TypeError, match=r"from a.csv: document #1 is a list"):
        mongo.insert_stamped("bad", [{"_id": 1}, ["not", "a", "dict"]], source="a.csv",
                             job_id="j")
    with pytest.raises(InvalidDocument, match=rf"{mongo.database}.bad from b.csv"):
        mongo.insert_stamped("bad", [{"_id": 2, "v": object()}], source="b.csv", job_id="j")

    def failing_reader():
        yield {"_id": 3}
        raise ValueError("line 2: bad number")

    with pytest.raises(ValueError, match="line 2: bad number"):
        mongo.insert_stamped("bad", failing_reader(), source="c.csv", job_id="j")


@pytest.mark.parametrize("operation", ["ping", "insert_stamped"])
def test_unreachable_server_fails_fast_with_masked_url(operation):
    resource = _unreachable()
    started = time.monotonic()

    with pytest.raises(MongoError) as caught:
        if operation == "ping":
            resource.ping()
        else:
            resource.insert_stamped("c", [{"_id": 1}], source="a.csv", job_id="j")

    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert resource.masked_url in message
    assert "127.0.0.1" in message and "user" in message
    everything = "".join(traceback.format_exception(caught.value))
    assert "s3cret" not in everything


def test_malformed_url_error_hides_the_password():
    resource = MongoResource(mongo_url="mongodb://user:s3cret@127.0.0.1:99999/db",
                             database="core4")
    with pytest.raises(MongoError) as caught:
        resource.client()
    everything = "".join(traceback.format_exception(caught.value))
    assert "invalid mongo_url" in everything
    assert "s3cret" not in everything


def test_missing_url_gives_a_clear_error():
    resource = MongoResource(database="core4")
    for call in (resource.client, resource.ping, resource.db):
        with pytest.raises(MongoError, match="no mongo_url configured; set DEFAULT.mongo_url"):
            call()
    with pytest.raises(MongoError, match="embedded_root"):
        resource.insert_stamped("c", [{"_id": 1}], source="a.csv", job_id="j")


def test_client_is_shared_per_url_and_rebuilt_in_a_forked_process(mongo):
    twin = MongoResource(mongo_url=mongo.mongo_url, database=mongo.database)
    parent_client = mongo.client()
    assert twin.client() is parent_client

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must build its own client and still write
        status = 1
        try:
            own = mongo.client() is not parent_client
            mongo.insert_stamped("forked", [{"_id": "child"}], source="c.csv", job_id="j")
            status = 0 if own else 2
        finally:
            os.write(write_end, bytes([status]))
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    assert os.read(read_end, 1) == bytes([0])
    os.close(read_end)
    assert mongo.collection("forked").find_one({"_id": "child"})["_src"] == "c.csv"
    assert mongo.client() is parent_client


def test_ping_answers_on_a_live_server(mongo):
    mongo.ping()
    assert mongo.masked_url == mask_url(mongo.mongo_url)  # the embedded server's password masked
    assert ":***@" in mongo.masked_url


def test_from_settings_uses_the_project_database_and_the_global_url(tmp_path, isolated_config):
    from core4_resources.config.settings import load_config

    environ = {"CORE4_CONFIG": str(isolated_config),
               "CORE4_OPTION_DEFAULT__mongo_url": "mongodb://core:pw@db.example:27017",
               "CORE4_OPTION_DEFAULT__mongo_database": "shared"}
    project_yaml = tmp_path / "demo.yaml"
    project_yaml.write_text("DEFAULT:\n  mongo_database: demo_db\n")

    global_only = MongoResource.from_settings(load_config(environ=environ))
    assert (global_only.mongo_url, global_only.database) == (
        "mongodb://core:pw@db.example:27017", "shared")
    assert global_only.masked_url == "mongodb://core:***@db.example:27017"

    project = MongoResource.from_settings(
        load_config("demo", project_yaml=project_yaml, environ=environ))
    assert (project.mongo_url, project.database) == (
        "mongodb://core:pw@db.example:27017", "demo_db")
