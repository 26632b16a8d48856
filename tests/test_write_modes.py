"""The write modes: upsert and merge on keys, replace by file name; each file whole or not at all."""

from __future__ import annotations

import os

import pytest
from support import deliver, archived

from core4_pipelines.ingest import modes
from core4_pipelines.ingest.job import import_job
from core4_pipelines.ingest.readers import read_csv

UPSERT = import_job("import_prices", read=read_csv, collection="prices", mode="upsert", keys=["sku", "day"])
MERGE = import_job("import_prices", read=read_csv, collection="prices", mode="merge", keys=["sku"])
REPLACE = import_job("import_prices", read=read_csv, collection="prices", mode="replace")




def prices(mongo, **match):
    return {(d["sku"], d.get("day")): d for d in mongo.collection("prices").find(match)}


def counts(metadata) -> tuple[int, int, int, int]:
    return tuple(metadata[name].value for name in ("inserted", "updated", "unchanged", "deleted"))


def test_upsert_inserts_then_updates_the_document_of_each_key_and_counts_what_did_not_change(folders, mongo):
    result, metadata = deliver(folders, mongo, UPSERT, {"prices-1.csv": "sku,day,price\na,1,10\nb,1,20\nc,1,30\n"})
    assert result.success and counts(metadata) == (3, 0, 0, 0)
    result, metadata = deliver(folders, mongo, UPSERT, {"prices-2.csv": "sku,day,price\na,1,11\nb,1,20\nd,1,40\n"})
    assert result.success and counts(metadata) == (1, 1, 1, 0)
    found = prices(mongo)
    assert {key: d["price"] for key, d in found.items()} == {("a", 1): 11, ("b", 1): 20, ("c", 1): 30, ("d", 1): 40}
    # Stamped by the file that last wrote it; an unchanged record keeps its earlier stamp.
    assert found[("a", 1)]["_src"] == "prices-2.csv" and found[("b", 1)]["_src"] == "prices-1.csv"
    assert found[("a", 1)]["_job_id"] == result.run_id
    index = mongo.collection("prices").index_information()[modes.key_index_name(["sku", "day"])]
    assert index["unique"] and index["key"] == [("sku", 1), ("day", 1)]
    assert {"prices-1.csv", "prices-2.csv"} == set(archived(folders))


def test_the_same_file_delivered_again_changes_nothing(folders, mongo):
    content = "sku,day,price\na,1,10\nb,1,20\n"
    deliver(folders, mongo, UPSERT, {"prices.csv": content})
    before = prices(mongo)
    result, metadata = deliver(folders, mongo, UPSERT, {"prices.csv": content})
    assert result.success and counts(metadata) == (0, 0, 2, 0)
    assert prices(mongo) == before


def test_a_snapshot_over_many_chunks_counts_each_record_once_whichever_way_it_is_written(folders, mongo):
    """New records are inserted, existing ones upserted: after a first chunk of mostly existing
    keys the rest of the file goes straight to the upsert; the counts and documents are the same."""
    rows = "".join(f"s{i},1,{i}\n" for i in range(2500))
    deliver(folders, mongo, UPSERT, {"day-1.csv": "sku,day,price\n" + rows})
    # Day 2: every 10th price changed, 700 new skus at the end (a chunk of mostly new keys).
    changed = "".join(f"s{i},1,{i + 1 if i % 10 == 0 else i}\n" for i in range(2500))
    added = "".join(f"n{i},1,{i}\n" for i in range(700))
    result, metadata = deliver(folders, mongo, UPSERT, {"day-2.csv": "sku,day,price\n" + changed + added})
    assert result.success and counts(metadata) == (700, 250, 2250, 0)
    found = prices(mongo)
    assert len(found) == 3200 and found[("s10", 1)]["price"] == 11 and found[("s11", 1)]["price"] == 11
    assert found[("s10", 1)]["_src"] == "day-2.csv" and found[("s11", 1)]["_src"] == "day-1.csv"
    assert found[("n699", 1)]["_src"] == "day-2.csv"


def test_a_key_repeated_in_one_file_takes_its_last_record(folders, mongo):
    result, metadata = deliver(folders, mongo, UPSERT, {"p.csv": "sku,day,price\na,1,10\na,1,12\n"})
    assert result.success and prices(mongo)[("a", 1)]["price"] == 12
    assert mongo.collection("prices").count_documents({}) == 1


def test_merge_sets_the_files_fields_and_keeps_the_documents_others(folders, mongo):
    deliver(folders, mongo, MERGE, {"names.csv": "sku,name\na,apple\nb,pear\n"})
    result, metadata = deliver(folders, mongo, MERGE, {"stock.csv": "sku,stock\na,5\nc,7\n"})
    assert result.success and counts(metadata) == (1, 1, 0, 0)
    found = {d["sku"]: d for d in mongo.collection("prices").find()}
    assert (found["a"]["name"], found["a"]["stock"]) == ("apple", 5)
    assert found["b"]["name"] == "pear" and "stock" not in found["b"]
    assert found["c"]["stock"] == 7 and "name" not in found["c"]


def test_replace_swaps_the_records_of_a_file_of_the_same_name_and_leaves_other_files_alone(folders, mongo):
    deliver(folders, mongo, REPLACE, {"snapshot.csv": "sku,price\na,1\nb,2\nc,3\n", "other.csv": "sku,price\nz,9\n"})
    result, metadata = deliver(folders, mongo, REPLACE, {"snapshot.csv": "sku,price\na,1\nd,4\n"})
    assert result.success and counts(metadata) == (2, 0, 0, 3)
    assert sorted(d["sku"] for d in mongo.collection("prices").find({"_src": "snapshot.csv"})) == ["a", "d"]
    assert [d["sku"] for d in mongo.collection("prices").find({"_src": "other.csv"})] == ["z"]
    assert len(archived(folders)["snapshot.csv"]) == 2  # each delivery archived


@pytest.mark.parametrize("held", [modes.MAX_HELD_RECORDS, 2])
def test_a_file_with_a_record_missing_a_key_writes_nothing_and_goes_to_error(folders, mongo, monkeypatch, held):
    monkeypatch.setattr(modes, "MAX_HELD_RECORDS", held)  # 2: the file is read twice, checked first
    deliver(folders, mongo, UPSERT, {"prices-1.csv": "sku,day,price\na,1,10\nb,1,20\n"})
    before = prices(mongo)
    bad = "sku,price\na,99\nb,98\nc,97\nd,96\n"  # no day: not one record can be matched
    result, _ = deliver(folders, mongo, UPSERT, {"prices-2.csv": bad})
    assert not result.success
    assert prices(mongo) == before  # not one record of it written
    (reason_file,) = [n for n in os.listdir(folders.error_folder()) if n.endswith(".reason.txt")]
    reason = open(os.path.join(folders.error_folder(), reason_file)).read()
    assert "prices-2.csv: record 0: no day (keys: sku, day)" in reason


@pytest.mark.parametrize("held", [modes.MAX_HELD_RECORDS, 2])
def test_a_bad_record_late_in_a_file_leaves_every_document_as_it_was(folders, mongo, monkeypatch, held):
    monkeypatch.setattr(modes, "MAX_HELD_RECORDS", held)
    deliver(folders, mongo, UPSERT, {"prices-1.csv": "sku,day,price\na,1,10\nb,1,20\nc,1,30\n"})
    before = prices(mongo)
    result, _ = deliver(folders, mongo, UPSERT, {"prices-2.csv": "sku,day,price\na,1,1\nb,1,2\nc,1,3\n,,\nd\n"})
    assert not result.success and prices(mongo) == before
    result, metadata = deliver(folders, mongo, UPSERT, {"prices-3.csv": "sku,day,price\na,1,1\nb,1,2\nc,1,3\nd,1,4\ne,1,5\n"})
    assert result.success and counts(metadata) == (2, 3, 0, 0)  # a good file read twice is written whole


def test_a_readers_own_id_must_be_a_key(folders, mongo):
    job = import_job("import_prices", read=lambda path: [{"_id": 7, "sku": "a", "day": 1}], collection="prices",
                     mode="upsert", keys=["sku", "day"])
    result, _ = deliver(folders, mongo, job, {"p.json": "{}"})
    assert not result.success
    reason = next(open(os.path.join(folders.error_folder(), n)).read()
                  for n in os.listdir(folders.error_folder()) if n.endswith(".reason.txt"))
    assert "own _id must be one of the keys" in reason
    by_id = import_job("import_prices", read=lambda path: [{"_id": 7, "price": 3}], collection="prices",
                       mode="upsert", keys=["_id"])
    assert deliver(folders, mongo, by_id, {"q.json": "{}"})[0].success
    assert mongo.collection("prices").find_one({"_id": 7})["price"] == 3


@pytest.mark.parametrize(("mode", "keys", "message"), [
    ("upsert", None, "mode upsert needs keys"),
    ("append", None, "mode must be one of insert, upsert, merge, replace, got 'append'"),
    ("insert", ["sku"], "keys are for the modes upsert and merge, not insert"),
    ("merge", ["sku", "sku"], "keys name a field twice"),
    ("merge", ["a.b"], "'a.b' is not a field name"),
])
def test_a_wrong_mode_or_keys_is_refused_when_the_job_is_built(mode, keys, message):
    with pytest.raises(ValueError, match=rf"import_job\(import_prices\): .*{message}"):
        import_job("import_prices", read=read_csv, collection="prices", mode=mode, keys=keys)


def test_keys_that_existing_documents_repeat_fail_the_run_saying_so(folders, mongo):
    insert = import_job("import_prices", read=read_csv, collection="prices")
    deliver(folders, mongo, insert, {"p.csv": "sku,day,price\na,1,1\na,1,2\n"})
    result, _ = deliver(folders, mongo, UPSERT, {"q.csv": "sku,day,price\na,1,3\n"})
    assert not result.success
    failure = result.failure_data_for_node("import_prices_batch")
    assert "core4_keys_sku_day" in str(failure.error) and "repeat a key" in str(failure.error)
    assert not os.path.exists(folders.error_folder())  # not the file's fault: it stays claimed for a retry
    assert mongo.collection("prices").count_documents({"price": 3}) == 0
