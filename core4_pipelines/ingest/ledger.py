"""The ledger of imported files: what was imported from which file, by which run, archived where.

One document per file of a batch in the project's ``sys.files`` collection, ``_id``
``<batch>/<name>``: the import, the file's content hash (BLAKE2b), its size, the run, the
records, where the file went, and its state -- ``importing`` (written before its records,
so a crash between the records and the archive still knows the content arrived),
``imported``, ``rejected``, ``duplicate`` (the same bytes were imported before: archived,
no records). With ``duplicates="skip"`` a file whose content an earlier batch of the same
import imported is not imported again; ``coco reimport`` marks a content to be let through
once (state ``replay``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.errors import PyMongoError

from core4_pipelines.ingest.files import FileOutcome
from core4_resources.files.folders import printable_name
from core4_resources.mongo.resource import MongoResource

LEDGER_COLLECTION = "sys.files"
DUPLICATES_ACTIONS = ("import", "skip")
_HASH_BLOCK = 1 << 20
_INDEX = "import_hash"


def content_hash(path: str) -> str:
    """The file's BLAKE2b-128 hex digest (read in 1 MB blocks: any size, little memory)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def entry_id(batch_id: str, name: str) -> str:
    return f"{batch_id}/{printable_name(name)}"


class Ledger:
    """The ledger of one import job (``<project>.<job>``) in ``mongo``'s database."""

    def __init__(self, mongo: MongoResource, job: str, collection: str):
        self.mongo, self.job, self.collection = mongo, job, collection
        self.entries = mongo.collection(LEDGER_COLLECTION)

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PyMongoError as exc:
            self.mongo.raise_error(f"the file ledger {self.mongo.database}.{LEDGER_COLLECTION}: {what}", exc)

    def begin(self, batch_id: str, run_id: str, files: Sequence[tuple[str, str | None, int]],
              skip_duplicates: bool) -> dict[str, Mapping[str, Any]]:
        """Record the batch's files (name, hash, bytes) as importing; with ``skip_duplicates`` the
        earlier import of each content found (name -> that entry), which is not imported again.
        The names let through by a replay mark are in ``self.replayed`` afterwards."""
        self.replayed: list[str] = []
        self._call("index", self.entries.create_index, [("job", ASCENDING), ("hash", ASCENDING)], name=_INDEX)
        earlier: dict[str, Mapping[str, Any]] = {}
        if skip_duplicates and files:
            hashes = sorted({digest for _, digest, _ in files if digest is not None})
            found = self._call("look-up", self.entries.find, {
                "job": self.job, "hash": {"$in": hashes}, "batch": {"$ne": batch_id},
                "state": {"$in": ["importing", "imported", "replay"]}})
            by_hash: dict[str, list[Mapping[str, Any]]] = {}
            for entry in found:
                by_hash.setdefault(entry["hash"], []).append(entry)
            replays = []
            first_in_batch: dict[str, str] = {}
            for name, digest, _ in files:
                if digest is None:
                    continue
                entries = by_hash.get(digest, [])
                replay = next((e for e in entries if e["state"] == "replay"), None)
                if replay is not None:
                    replays.append(replay["_id"])  # let through once
                    self.replayed.append(printable_name(name))
                    by_hash[digest] = [e for e in entries if e is not replay]
                    continue
                imported = [e for e in entries if e["state"] != "replay"]
                if imported:
                    earlier[name] = min(imported, key=lambda e: e.get("at") or datetime.min.replace(tzinfo=UTC))
                elif digest in first_in_batch:  # twice in this batch: the first one is imported
                    earlier[name] = {"name": first_in_batch[digest], "batch": batch_id, "run": run_id,
                                     "archive": None}
                else:
                    first_in_batch[digest] = printable_name(name)
            if replays:
                self._call("replay", self.entries.delete_many, {"_id": {"$in": replays}})
        now = datetime.now(UTC)
        operations = [
            UpdateOne({"_id": entry_id(batch_id, name)}, {
                "$set": {"job": self.job, "collection": self.collection, "name": printable_name(name),
                         "hash": digest, "bytes": size, "batch": batch_id, "run": run_id, "at": now,
                         "state": "duplicate" if name in earlier else "importing",
                         "replay": printable_name(name) in self.replayed},
            }, upsert=True)
            for name, digest, size in files
        ]
        if operations:
            self._call("recording the batch", self.entries.bulk_write, operations, ordered=False)
        return earlier

    def finish(self, batch_id: str, outcomes: Iterable[FileOutcome]) -> None:
        """Each file's fate: imported (records, archive path), rejected, or back to proc/vanished."""
        operations = []
        for outcome in outcomes:
            if outcome.kept:
                continue  # the batch's next run finishes it
            if outcome.duplicate_of is not None:
                state = "duplicate"
            elif outcome.is_imported:
                state = "imported"
            elif outcome.error:
                state = "rejected"
            else:  # returned to proc or vanished: not this batch's import after all
                operations.append(UpdateOne({"_id": entry_id(batch_id, outcome.name)}, {"$set": {"state": "withdrawn"}}))
                continue
            operations.append(UpdateOne({"_id": entry_id(batch_id, outcome.name)}, {"$set": {
                "state": state, "records": outcome.records,
                "archive": outcome.archive and printable_name(outcome.archive),
                "reason": outcome.error and printable_name(outcome.error),
                "finished": datetime.now(UTC)}}))
        if operations:
            self._call("recording where the files went", self.entries.bulk_write, operations, ordered=False)

    def mark_replay(self, digest: str, archive: str) -> None:
        """Let the next file with this content through the duplicate check once."""
        self._call("marking a replay", self.entries.update_one, {"_id": f"replay/{self.job}/{digest}"}, {
            "$set": {"job": self.job, "collection": self.collection, "hash": digest, "state": "replay",
                     "archive": archive, "batch": None, "at": datetime.now(UTC)}}, upsert=True)


def batch_file_hashes(folder: str, names: Sequence[str]) -> list[tuple[str, str | None, int]]:
    """(name, content hash, bytes) of each file still in the batch folder; the hash is None for a
    file that cannot be read (its reader fails it with the reason, it is no duplicate)."""
    found = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            continue  # gone: the import finds it vanished
        try:
            found.append((name, content_hash(path), size))
        except FileNotFoundError:
            continue
        except OSError:
            found.append((name, None, size))
    return found


def duplicate_note(entry: Mapping[str, Any]) -> str:
    where = entry.get("archive") or f"batch {entry.get('batch')}"
    return f"same content as {entry.get('name')} ({printable_name(where)}) imported by run {entry.get('run')}"


def recent_claims(mongo: MongoResource, job: str, since: float) -> list[tuple[str, str]]:
    """(name, batch) of the files of ``job`` whose batch was claimed after ``since`` (and not put
    back into proc): the ``_id`` starts with the batch id, which starts with the claim time."""
    cutoff = datetime.fromtimestamp(since, tz=UTC).strftime("%Y%m%dT%H%M%S")
    try:
        found = mongo.collection(LEDGER_COLLECTION).find(
            {"_id": {"$gte": cutoff, "$lt": "a"}, "job": job, "state": {"$ne": "withdrawn"}},
            projection={"name": 1, "batch": 1})
        return [(e["name"], e["batch"]) for e in found if e.get("name") and e.get("batch")]
    except PyMongoError as exc:
        mongo.raise_error(f"the file ledger {mongo.database}.{LEDGER_COLLECTION}: recent claims", exc)
