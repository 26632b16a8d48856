"""A batch's files as one stream of inserts, and moved on together.

Per file, an import paid an ``insert_many`` round trip of its own (a 1 KB file
is one chunk of ~20 documents) and two fsyncs to archive it. Here one thread
reads and converts the batch's files, file after file, into chunks of
``INSERT_CHUNK`` documents that may span files, while this thread inserts the
previous chunk (the socket wait releases the GIL, so parsing and the database
overlap); the archive is one ``move_archive_many`` for the batch.

Each file keeps its own fate, as when it was written alone: a file whose content
fails (a reader error, a value BSON cannot hold) or that changed while it was
read has its documents dropped from the stream and whatever of it was already
inserted removed, and goes to the error folder (or back to proc); the others
carry on. A database failure fails the whole batch, whose files stay claimed.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import Counter
from collections.abc import Callable, Sequence

from bson.errors import InvalidDocument
from pymongo.errors import BulkWriteError, PyMongoError

from core4_pipelines.ingest.files import (
    FileOutcome,
    Reader,
    _records_with_ids,
    _remove_partial,
    change_after_read,
    file_bad_rows,
    keep_bad_rows,
    refuse_content,
    finish_file,
    not_archived,
)
from core4_pipelines.ingest.bad_rows import BadRowPolicy
from core4_pipelines.ingest.modes import write_file_keyed
from core4_pipelines.ingest.record_model import Converter
from core4_pipelines.ingest.ready import file_state
from core4_resources.files.folders import FolderResource, printable_name
from core4_resources.mongo.resource import DUPLICATE_KEY, INSERT_CHUNK, MongoResource

# Chunks read ahead of the insert in flight: enough to keep the database busy, little memory.
_READ_AHEAD = 2
_DONE = None


class _Stream:
    """The reading thread's side: files in, chunks of (documents, owning file index) out."""

    def __init__(self, paths, read, batch_id, run_id, convert, bad_rows: BadRowPolicy | None = None,
                 temp_folder: Callable[[], str] | None = None):
        self.paths, self.read, self.batch_id, self.run_id, self.convert = paths, read, batch_id, run_id, convert
        self.bad_rows, self.temp_folder = bad_rows, temp_folder
        self.outcomes: list[FileOutcome | None] = [None] * len(paths)
        self.chunks: queue.Queue = queue.Queue(maxsize=_READ_AHEAD)
        self.stop = threading.Event()
        self.failure: BaseException | None = None

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            self._read_all()
        except BaseException as exc:  # noqa: BLE001 -- handed to the inserting thread, raised there
            self.failure = exc
        finally:
            self._put(_DONE)

    def _read_all(self) -> None:
        documents: list[dict] = []
        owners: list[int] = []
        for index, path in enumerate(self.paths):
            if self.stop.is_set():
                return
            name = os.path.basename(path)
            shown = printable_name(name)
            try:
                before = file_state(os.stat(path))
            except FileNotFoundError:
                self.outcomes[index] = FileOutcome(name=name, bytes=0, vanished=True)
                continue
            outcome = self.outcomes[index] = FileOutcome(name=name, bytes=before[0])
            start = len(documents)  # this file's documents in the chunk not yet sent
            tally = file_bad_rows(self.bad_rows, shown, name, self.temp_folder)
            try:
                for document in _records_with_ids(self.read, path, self.batch_id, shown, self.convert, tally,
                                                  outcome.notes):
                    document["_job_id"] = self.run_id
                    documents.append(document)
                    owners.append(index)
                    if len(documents) >= INSERT_CHUNK:
                        if not self._put((documents, owners)):
                            return
                        documents, owners, start = [], [], 0
            except Exception as exc:  # the reader failed on this file's content (or the file went away)
                del documents[start:], owners[start:]
                refuse_content(outcome, exc, path, shown, tally)
                continue
            vanished, changed = change_after_read(path, before)
            if vanished or changed:
                del documents[start:], owners[start:]
                outcome.vanished, outcome.changed = vanished, changed
                if tally is not None:
                    tally.discard()
            elif tally is not None:
                keep_bad_rows(outcome, tally)
        if documents:
            self._put((documents, owners))


def write_batch_records(
    paths: Sequence[str],
    *,
    read: Reader,
    collection: str,
    mongo: MongoResource,
    batch_id: str,
    run_id: str,
    convert: Converter | None = None,
    beat: Callable[[], object] | None = None,
    mode: str = "insert",
    keys: Sequence[str] = (),
    bad_rows: BadRowPolicy | None = None,
    temp_folder: Callable[[], str] | None = None,
) -> list[FileOutcome]:
    """Write every file's records as one stream of ``insert_many`` chunks; nothing moves yet.

    Each file keeps its own fate: imported, content error, changed while read, or vanished.
    ``beat`` is called once per chunk, in this thread (the run's heartbeat: see supervise/monitor.py).
    Another ``mode`` than insert writes file after file, each whole or not at all (modes.py).
    ``bad_rows``: the policy for a file's bad rows (bad_rows.py), diverted ones written into
    a folder ``temp_folder()`` makes.
    """
    if mode != "insert":
        return [write_file_keyed(path, mode=mode, keys=keys, read=read, collection=collection, mongo=mongo,
                                 batch_id=batch_id, run_id=run_id, convert=convert, beat=beat,
                                 bad_rows=bad_rows, temp_folder=temp_folder) for path in paths]
    stream = _Stream(list(paths), read, batch_id, run_id, convert, bad_rows, temp_folder)
    target = mongo.collection(collection)
    where = f"{mongo.database}.{collection}"
    inserted: Counter[int] = Counter()
    duplicates: Counter[int] = Counter()
    unstorable: dict[int, str] = {}
    reader = threading.Thread(target=stream.run, name=f"read {batch_id}", daemon=True)
    reader.start()
    try:
        while (item := stream.chunks.get()) is not _DONE:
            documents, owners = item
            if beat is not None:
                beat()
            try:
                _insert(target, where, mongo, documents, owners, inserted, duplicates, unstorable)
            except InvalidDocument as exc:  # a chunk of one file only
                unstorable[owners[0]] = (
                    f"insert into {where} from {documents[0]['_src']}: a document cannot be stored as BSON: {exc}"
                )
    finally:
        stream.stop.set()
        reader.join()
    if stream.failure is not None:
        raise stream.failure
    outcomes = [o for o in stream.outcomes if o is not None]
    for index, outcome in enumerate(stream.outcomes):
        if outcome is None:
            continue
        if index in unstorable and outcome.is_imported:
            outcome.error = unstorable[index]
        if not outcome.is_imported:
            _remove_partial(mongo, collection, batch_id, printable_name(outcome.name), run_id)
            continue
        outcome.duplicates = duplicates[index]
        outcome.inserted = inserted[index]
        outcome.records = inserted[index] + duplicates[index]
    return outcomes


def _insert(target, where, mongo, documents, owners, inserted, duplicates, unstorable) -> None:
    try:
        target.insert_many(documents, ordered=False)
        inserted.update(owners)
    except BulkWriteError as exc:
        errors = (exc.details or {}).get("writeErrors") or []
        others = [e for e in errors if e.get("code") != DUPLICATE_KEY]
        failures = others or (exc.details or {}).get("writeConcernErrors") or []
        if failures:
            first = failures[0]
            src = documents[first["index"]]["_src"] if "index" in first else "?"
            mongo.raise_error(
                f"insert into {where} from {src} failed at _id {first.get('op', {}).get('_id')!r}: "
                f"{first.get('errmsg')} (code {first.get('code')}); {len(failures)} such error(s) in this chunk",
                exc,
            )
        refused = Counter(owners[e["index"]] for e in errors)
        duplicates.update(refused)
        inserted.update(owners)
        inserted.subtract(refused)
    except InvalidDocument:
        files = list(dict.fromkeys(owners))
        if len(files) == 1:
            raise
        # A value BSON cannot hold: that file's content, not the others'. Each file's part of
        # the chunk alone finds which (a part sent before the error counts as duplicates).
        for index in files:
            part = [d for d, owner in zip(documents, owners) if owner == index]
            try:
                _insert(target, where, mongo, part, [index] * len(part), inserted, duplicates, unstorable)
            except InvalidDocument as exc:
                unstorable[index] = (
                    f"insert into {where} from {part[0]['_src']}: a document cannot be stored as BSON: {exc}"
                )
    except PyMongoError as exc:
        sources = ", ".join(dict.fromkeys(d["_src"] for d in documents))
        mongo.raise_error(f"insert into {where} from {sources} at {mongo.masked_url} failed", exc)


def finish_batch(outcomes: list[FileOutcome], folder: str, folders: FolderResource, base: str | None) -> None:
    """Move every file on, once the batch's writes are durable: the imported ones archived
    together (one durability point, ``move_archive_many``), the others one by one."""
    imported = [o for o in outcomes if o.is_imported]
    for outcome in outcomes:
        if not outcome.is_imported:
            finish_file(outcome, folder, folders, base)
    if not imported:
        return
    results = folders.move_archive_many([os.path.join(folder, o.name) for o in imported], base=base)
    for outcome, result in zip(imported, results):
        if isinstance(result, str):
            outcome.archive = result
        else:
            not_archived(outcome, result, folder, folders, base)
