"""StampedCollection: a job's collection whose every write carries ``_src`` and ``_job_id``.

``core4_pipelines.supervise.runtime.collection(mongo, name)`` hands one to a running op;
``MongoResource.collection(name)`` stays raw pymongo.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import pymongo
from pymongo.collection import Collection

from core4_resources.errors import MongoError


class StampedCollection:
    """A pymongo Collection whose writes are stamped with ``_src`` and ``_job_id``, as core4's were.

    Inserted and replacement documents get both fields; an update gets them through
    ``$set`` (so an upserted document carries them, and a document a later source
    touches shows that source), exactly where core4 put them. This covers
    ``insert_one``, ``insert_many``, ``replace_one``, ``update_one``, ``update_many``,
    ``find_one_and_replace``/``find_one_and_update`` and every request of
    ``bulk_write``. ``source()`` is asked at each write, so the stamp follows
    ``set_source``; while it returns nothing a write is refused. Callers' documents
    are not changed. Every other attribute (reads, deletes, indexes) is the raw
    collection's.
    """

    def __init__(self, collection: Collection, source, job_id: str):
        self.raw = collection
        self._source = source
        self._job_id = job_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def stamp(self) -> dict[str, str]:
        source = self._source()
        src = os.path.basename(os.fspath(source)) if source else ""
        if not src or not self._job_id:
            raise MongoError(
                f"write to {self.raw.name!r} refused: no source set (_src and _job_id must not be "
                f"empty); call set_source(name) with the input you work on before writing"
            )
        return {"_src": src, "_job_id": self._job_id}

    def __repr__(self) -> str:
        return f"StampedCollection({self.raw.full_name!r}, job_id={self._job_id!r})"

    @staticmethod
    def _stamped_document(document: Mapping[str, Any], stamp: dict) -> dict:
        return {**document, **stamp}

    @staticmethod
    def _stamped_update(update, stamp: dict):
        if isinstance(update, list):  # an aggregation pipeline update
            return [*update, {"$set": stamp}]
        update = dict(update)
        update["$set"] = {**update.get("$set", {}), **stamp}
        return update

    def _stamped_request(self, request, stamp: dict):
        if isinstance(request, pymongo.InsertOne):
            return pymongo.InsertOne(self._stamped_document(request._doc, stamp))
        common = {"collation": getattr(request, "_collation", None), "hint": getattr(request, "_hint", None)}
        if isinstance(request, pymongo.ReplaceOne):
            return pymongo.ReplaceOne(
                request._filter, self._stamped_document(request._doc, stamp), upsert=request._upsert,
                sort=request._sort, **common,
            )
        if isinstance(request, (pymongo.UpdateOne, pymongo.UpdateMany)):
            extra = {"sort": request._sort} if isinstance(request, pymongo.UpdateOne) else {}
            return type(request)(
                request._filter, self._stamped_update(request._doc, stamp), upsert=request._upsert,
                array_filters=request._array_filters, **extra, **common,
            )
        return request  # deletes write no document

    def insert_one(self, document: Mapping[str, Any], *args, **kwargs):
        return self.raw.insert_one(self._stamped_document(document, self.stamp()), *args, **kwargs)

    def insert_many(self, documents: Iterable[Mapping[str, Any]], *args, **kwargs):
        stamp = self.stamp()
        return self.raw.insert_many((self._stamped_document(d, stamp) for d in documents), *args, **kwargs)

    def replace_one(self, filter, replacement, *args, **kwargs):
        return self.raw.replace_one(filter, self._stamped_document(replacement, self.stamp()), *args, **kwargs)

    def find_one_and_replace(self, filter, replacement, *args, **kwargs):
        stamped = self._stamped_document(replacement, self.stamp())
        return self.raw.find_one_and_replace(filter, stamped, *args, **kwargs)

    def update_one(self, filter, update, *args, **kwargs):
        return self.raw.update_one(filter, self._stamped_update(update, self.stamp()), *args, **kwargs)

    def update_many(self, filter, update, *args, **kwargs):
        return self.raw.update_many(filter, self._stamped_update(update, self.stamp()), *args, **kwargs)

    def find_one_and_update(self, filter, update, *args, **kwargs):
        return self.raw.find_one_and_update(filter, self._stamped_update(update, self.stamp()), *args, **kwargs)

    def bulk_write(self, requests, *args, **kwargs):
        stamp = self.stamp()
        return self.raw.bulk_write([self._stamped_request(r, stamp) for r in requests], *args, **kwargs)
