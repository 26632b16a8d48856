"""The write modes of an import besides ``insert``: ``upsert``, ``merge`` and ``replace``.

``insert`` (``ingest/write.py``) appends every record under a deterministic ``_id``. The
others write a file only once all of it was read without a fault (a record missing a key,
a field name or value MongoDB cannot take, the file changing while read): a file is applied
whole or not at all, and a retried batch leaves the collection as one clean run would.

- ``upsert`` with ``keys``: each record replaces the document with the same key values, or
  is inserted. ``merge`` with ``keys``: sets the record's fields on that document and keeps
  its other fields. A unique index on ``keys`` (created by the import) makes each key one
  document. Each written document carries ``_hash``, the hash of the record's content: a
  record whose document has it already is not written again but counted ``unchanged`` (its
  upsert meets the unique index) -- and so is every record of a batch run again.
- ``replace``: the file's records replace every document imported earlier from a file of
  the same name (``_src``): the records are inserted as ``insert`` does, then the others of
  that ``_src`` deleted. A crash in between is finished by the batch's next run.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson
from bson.errors import InvalidDocument
from pymongo import ReplaceOne, UpdateOne
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from core4_pipelines.ingest.bad_rows import BadRecord, BadRowPolicy
from core4_pipelines.ingest.files import (
    FileOutcome,
    Reader,
    _records_with_ids,
    source_pattern,
    change_after_read,
    file_bad_rows,
    keep_bad_rows,
    record_id,
    refuse_content,
)
from core4_pipelines.ingest.ready import file_state
from core4_pipelines.ingest.record_model import Converter
from core4_resources.files.folders import printable_name
from core4_resources.mongo.resource import DUPLICATE_KEY, INSERT_CHUNK, MongoResource

WRITE_MODES = ("insert", "upsert", "merge", "replace")
KEYED_MODES = ("upsert", "merge")
HASH_FIELD = "_hash"
STAMPS = ("_src", "_job_id", HASH_FIELD)
# A file of up to this many records is held in memory between reading and writing; a larger
# one is read twice (checked whole, then written), so a 2 GB file never sits in memory.
MAX_HELD_RECORDS = 50_000
_KEY_NAME = re.compile(r"^[^$.\x00][^.\x00]*$")


def check_mode(mode: str, keys: Sequence[str] | None, where: str) -> tuple[str, ...]:
    """The mode's keys, or ValueError naming ``where`` (e.g. ``import_job(import_prices)``)."""
    if mode not in WRITE_MODES:
        raise ValueError(f"{where}: mode must be one of {', '.join(WRITE_MODES)}, got {mode!r}")
    keys = tuple(keys or ())
    if mode in KEYED_MODES and not keys:
        raise ValueError(f"{where}: mode {mode} needs keys: the fields that name a document, e.g. keys=['sku', 'day']")
    if mode not in KEYED_MODES and keys:
        raise ValueError(f"{where}: keys are for the modes {' and '.join(KEYED_MODES)}, not {mode}")
    for key in keys:
        if not isinstance(key, str) or not _KEY_NAME.match(key) or key in STAMPS:
            raise ValueError(f"{where}: keys: {key!r} is not a field name a document can be found by")
    if len(set(keys)) != len(keys):
        raise ValueError(f"{where}: keys name a field twice: {list(keys)}")
    return keys


def key_index_name(keys: Sequence[str]) -> str:
    return "core4_keys_" + "_".join(keys)


def ensure_key_index(mongo: MongoResource, collection: str, keys: Sequence[str], log: Callable[[str], Any]) -> None:
    """The unique index on ``keys`` that makes each key one document; said in the log when made."""
    name = key_index_name(keys)
    target = mongo.collection(collection)
    where = f"{mongo.database}.{collection}"
    try:
        if name in target.index_information():
            return
        target.create_index([(key, 1) for key in keys], unique=True, name=name)
    except OperationFailure as exc:
        mongo.raise_error(
            f"the unique index {name} on {where} ({', '.join(keys)}) cannot be created -- documents "
            f"already there repeat a key (imported in another mode?); remove them or choose other keys", exc)
    except PyMongoError as exc:
        mongo.raise_error(f"creating the unique index {name} on {where}", exc)
    log(f"created the unique index {name} on {where} ({', '.join(keys)}): one document per key")


@dataclass
class Counts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    # Insert a chunk's records first, upsert only those whose key exists: a new record costs
    # an insert, not an upsert (2-3x more on the database). Off for the rest of a file once a
    # chunk was mostly existing keys (a daily snapshot again): those go straight to the upsert.
    insert_first: bool = True
    probed: bool = False  # the file's first PROBE_RECORDS tried alone: a snapshot wastes no more


# A file's first records inserted alone, to learn cheaply whether its keys are new.
PROBE_RECORDS = 100


def write_file_keyed(
    path: str, *, mode: str, keys: Sequence[str], read: Reader, collection: str, mongo: MongoResource,
    batch_id: str, run_id: str, convert: Converter | None, beat: Callable[[], object] | None,
    bad_rows: BadRowPolicy | None = None, temp_folder: Callable[[], str] | None = None,
) -> FileOutcome:
    """One file in ``mode`` (upsert, merge or replace): read whole, then written."""
    name = os.path.basename(path)
    shown = printable_name(name)
    try:
        before = file_state(os.stat(path))
    except FileNotFoundError:
        return FileOutcome(name=name, bytes=0, vanished=True)
    outcome = FileOutcome(name=name, bytes=before[0])

    tally = file_bad_rows(bad_rows, shown, name, temp_folder)

    def records(bad):
        generated = record_id(batch_id, shown, 0)[:-1]  # the _ids import gives records: dropped here
        for document in _records_with_ids(read, path, batch_id, shown, convert, bad, outcome.notes):
            try:
                yield _prepared(document, mode, keys, shown, run_id, generated)
            except BadRecord as exc:
                if bad is None:
                    raise
                bad.refuse(exc.where, exc.reason, document)

    try:
        held: list[dict] | None = []
        total = 0
        for document in records(tally):  # the whole file checked before anything is written
            total += 1
            if held is not None:
                held.append(document)
                if len(held) > MAX_HELD_RECORDS:
                    held = None
    except Exception as exc:  # noqa: BLE001 -- the reader failed on this file's content (or it went away)
        refuse_content(outcome, exc, path, shown, tally)
        return outcome
    outcome.vanished, outcome.changed = change_after_read(path, before)
    if not outcome.is_imported:
        if tally is not None:
            tally.discard()
        return outcome
    if tally is not None:
        keep_bad_rows(outcome, tally)
    # Read again (a large file): its bad rows were counted already, now only left out.
    again = BadRowPolicy("skip").for_file(shown, None) if tally is not None else None
    counts = Counts()
    target = mongo.collection(collection)
    where = f"{mongo.database}.{collection}"
    chunk: list[dict] = []
    for document in held if held is not None else records(again):
        chunk.append(document)
        if len(chunk) >= INSERT_CHUNK:
            _write(target, where, mongo, mode, keys, chunk, counts)
            chunk = []
            if beat is not None:
                beat()
    if chunk:
        _write(target, where, mongo, mode, keys, chunk, counts)
    if mode == "replace":
        counts.deleted = _delete_earlier(target, where, mongo, batch_id, shown)
    outcome.records = total
    outcome.inserted, outcome.updated, outcome.unchanged, outcome.deleted = (
        counts.inserted, counts.updated, counts.unchanged, counts.deleted)
    return outcome


def _prepared(document: dict, mode: str, keys: Sequence[str], shown: str, run_id: str, generated: str) -> dict:
    own_id = document["_id"]
    position = own_id[len(generated):] if isinstance(own_id, str) and own_id.startswith(generated) else None
    where = f"record {position}" if position is not None else f"record _id {own_id!r}"
    if mode == "replace":
        document = {**document, "_job_id": run_id}
        _encoded(document, shown, where)  # a value BSON cannot hold is this file's content error, found now
        return document
    if position is not None:
        del document["_id"]  # a document is found by its keys; the database names a new one
    elif "_id" not in keys:
        raise BadRecord(shown, where, f"with mode {mode} a record's own _id must be one of the keys "
                                      f"(keys: {', '.join(keys)}), or left out")
    missing = [key for key in keys if key not in document]
    if missing:
        raise BadRecord(shown, where, f"no {', '.join(missing)} (keys: {', '.join(keys)}): "
                                      "it cannot be matched to a document")
    source = document.pop("_src")  # the content alone: the same record from another file is unchanged
    digest = hashlib.blake2b(_encoded(document, shown, where), digest_size=16).hexdigest()
    return {**document, "_src": source, "_job_id": run_id, HASH_FIELD: digest}


def _encoded(document: Mapping[str, Any], shown: str, where: str) -> bytes:
    try:
        return bson.encode(document)
    except InvalidDocument as exc:
        raise BadRecord(shown, where, f"cannot be stored as BSON: {exc}") from None


def _write(target, where, mongo, mode, keys, chunk, counts: Counts) -> None:
    if mode == "replace":
        _insert_ignoring_duplicates(target, where, mongo, chunk, counts)
        return
    latest: dict[tuple, dict] = {}
    for document in chunk:  # a key repeated within the chunk: the last record wins, as in order
        latest[tuple(repr(document[key]) for key in keys)] = document
    counts.unchanged += len(chunk) - len(latest)  # replaced by a later record of the file
    documents = list(latest.values())
    existing: list[dict] = []
    if counts.insert_first and not counts.probed:
        counts.probed = True
        existing = _insert_new(target, where, mongo, mode, documents[:PROBE_RECORDS], counts)
        documents = documents[PROBE_RECORDS:]
    if counts.insert_first and documents:
        documents = _insert_new(target, where, mongo, mode, documents, counts)
    documents = existing + documents  # distinct keys (deduplicated above): their order is free
    if documents:
        _upsert(target, where, mongo, mode, keys, documents, counts)


def _insert_new(target, where, mongo, mode, documents: list[dict], counts: Counts) -> list[dict]:
    """Insert ``documents``; those whose keys (or other unique fields) exist already are
    returned, as they were, for the upsert. What a new record's upsert would have written is
    exactly the document: its keys and its fields."""
    try:
        target.insert_many(documents, ordered=False)
        counts.inserted += len(documents)
        return []
    except BulkWriteError as exc:
        existing = [documents[e["index"]] for e in _duplicates(exc, mongo, f"{mode} into {where} from {documents[0]['_src']}")]
    except PyMongoError as exc:
        mongo.raise_error(f"{mode} into {where} from {documents[0]['_src']} at {mongo.masked_url} failed", exc)
    for document in existing:
        document.pop("_id", None)  # the one insert_many gave it: the upsert keeps the stored one
    counts.inserted += len(documents) - len(existing)
    counts.insert_first = len(existing) * 2 < len(documents)
    return existing


def _duplicates(exc: BulkWriteError, mongo, what: str) -> list[dict]:
    """The duplicate-key errors of a bulk write; any other error is raised, naming ``what``."""
    details = exc.details or {}
    errors = details.get("writeErrors") or []
    others = [e for e in errors if e.get("code") != DUPLICATE_KEY] or details.get("writeConcernErrors")
    if others:
        mongo.raise_error(f"{what} failed: {others[0].get('errmsg')} (code {others[0].get('code')})", exc)
    return errors


def _upsert(target, where, mongo, mode, keys, documents: list[dict], counts: Counts) -> None:
    operations = []
    for document in documents:
        found = {key: document[key] for key in keys}
        match = {**found, HASH_FIELD: {"$ne": document[HASH_FIELD]}}
        if mode == "upsert":
            operations.append(ReplaceOne(match, document, upsert=True))
        else:
            fields = {k: v for k, v in document.items() if k not in keys and k != "_id"}
            operations.append(UpdateOne(match, {"$set": fields}, upsert=True))
    try:
        result = target.bulk_write(operations, ordered=False)
        details = result.bulk_api_result
    except BulkWriteError as exc:
        details = exc.details or {}
        # A duplicate key: the upsert found no document without this content, so one has it.
        counts.unchanged += len(_duplicates(exc, mongo, f"{mode} into {where} from {documents[0]['_src']}"))
    except PyMongoError as exc:
        mongo.raise_error(f"{mode} into {where} from {documents[0]['_src']} at {mongo.masked_url} failed", exc)
    counts.inserted += details.get("nUpserted", 0)
    counts.updated += details.get("nModified", 0)
    counts.unchanged += details.get("nMatched", 0) - details.get("nModified", 0)


def _insert_ignoring_duplicates(target, where, mongo, chunk, counts: Counts) -> None:
    try:
        target.insert_many(chunk, ordered=False)
        counts.inserted += len(chunk)
    except BulkWriteError as exc:
        errors = _duplicates(exc, mongo, f"replace into {where} from {chunk[0]['_src']}")
        counts.inserted += len(chunk) - len(errors)
        counts.unchanged += len(errors)  # written by an earlier run of this batch
    except PyMongoError as exc:
        mongo.raise_error(f"replace into {where} from {chunk[0]['_src']} at {mongo.masked_url} failed", exc)


def _delete_earlier(target, where, mongo, batch_id: str, shown: str) -> int:
    """Every document of ``_src`` ``shown`` but this import's: what the new file replaces."""
    mine = re.compile("^" + re.escape(record_id(batch_id, shown, 0)[:-1]))
    try:
        return target.delete_many({"_src": source_pattern(shown), "_id": {"$not": mine}}).deleted_count
    except PyMongoError as exc:
        mongo.raise_error(f"replace into {where}: deleting the documents of the earlier {shown}", exc)


def mode_counts(outcomes: Sequence[FileOutcome]) -> Mapping[str, int]:
    imported = [o for o in outcomes if o.is_imported]
    return {name: sum(getattr(o, name) for o in imported) for name in ("inserted", "updated", "unchanged", "deleted")}
