"""A job's stamped collection (core4's job collections) against the real embedded MongoDB."""

from __future__ import annotations

import dagster as dg
import pytest
from pymongo import DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne

from core4_pipelines import collection as exported_collection
from core4_pipelines.project.definitions import project_definitions
from core4_pipelines.supervise.runtime import collection, set_source
from core4_resources.errors import MongoError
from core4_resources.mongo.resource import MongoResource
from core4_resources.mongo.stamped import StampedCollection


@dg.op
def write_like_core4(mongo: MongoResource) -> str:
    things = collection(mongo, "things")
    try:
        things.insert_one({"n": 0})
    except MongoError as exc:
        refused = str(exc)
    else:  # pragma: no cover - the assertion below reports it
        refused = ""
    set_source("incoming/2024/a.csv")
    things.insert_one({"n": 1})
    things.bulk_write([
        InsertOne({"n": 2}),
        DeleteOne({"n": 99}),
        ReplaceOne({"n": 3}, {"n": 3, "replaced": True}, upsert=True),
        UpdateOne({"n": 4}, {"$set": {"x": 1}}, upsert=True),
        UpdateMany({"n": 5}, {"$inc": {"count": 1}}, upsert=True),
    ])
    things.update_one({"n": 6}, {"$setOnInsert": {"y": 1}}, upsert=True)
    things.update_many({"n": 7}, {"$set": {"z": 1}}, upsert=True)
    mongo.collection("things").insert_one({"n": "raw"})  # raw pymongo stays raw
    return refused


@dg.job
def stamping():
    write_like_core4()


def test_every_write_of_a_job_is_stamped_and_a_write_before_set_source_is_refused(mongo):
    job = project_definitions("stampk", jobs=[stamping]).resolve_job_def("stamping")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, resources={"mongo": mongo})
    refused = result.output_for_node("write_like_core4")
    assert "'things'" in refused and "set_source" in refused, refused
    stamped = list(mongo.collection("things").find({"n": {"$ne": "raw"}}, {"_id": 0}).sort("n"))
    assert [d["n"] for d in stamped] == [1, 2, 3, 4, 5, 6, 7], "core4's test: 7 documents"
    assert all(d["_src"] == "a.csv" and d["_job_id"] == result.run_id for d in stamped), stamped
    assert stamped[2]["replaced"] and stamped[4]["count"] == 1 and stamped[5]["y"] == 1
    raw = mongo.collection("things").find_one({"n": "raw"})
    assert "_src" not in raw and "_job_id" not in raw


def test_the_stamp_follows_the_current_source_and_leaves_callers_documents_alone(mongo):
    source = {"now": None}
    things = StampedCollection(mongo.collection("things"), lambda: source["now"], "run-1")
    document = {"n": 1}
    with pytest.raises(MongoError, match=r"write to 'things' refused: no source set.*call set_source"):
        things.insert_one(document)
    with pytest.raises(MongoError, match="refused"):
        things.bulk_write([UpdateOne({"n": 1}, {"$set": {"a": 1}}, upsert=True)])
    assert mongo.collection("things").count_documents({}) == 0
    source["now"] = "/data/a.csv"
    things.insert_one(document)
    assert document == {"n": 1}, "the caller's document is not changed"
    things.insert_many([{"n": 2}, {"n": 3}])
    assert things.count_documents({"_src": "a.csv", "_job_id": "run-1"}) == 3
    source["now"] = "b.csv"
    things.update_one({"n": 1}, [{"$set": {"a": 2}}])  # a pipeline update
    things.find_one_and_update({"n": 1}, {"$inc": {"a": 1}})
    stored = things.find_one({"n": 1}, {"_id": 0})  # reads pass through
    assert stored == {"n": 1, "_src": "b.csv", "_job_id": "run-1", "a": 3}
    things.replace_one({"n": 1}, {"n": 1, "b": 1})
    assert things.find_one({"n": 1}, {"_id": 0}) == {"n": 1, "b": 1, "_src": "b.csv", "_job_id": "run-1"}
    assert things.delete_many({}).deleted_count == 3 and things.name == "things"
    assert exported_collection is collection


def test_collection_outside_an_op_is_an_error(mongo):
    with pytest.raises(Exception, match="(?i)op|context"):
        collection(mongo, "things")
