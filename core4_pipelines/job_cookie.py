"""A job's cookie: a persistent key/value store in the project's MongoDB that survives runs.

One document per job in the project's ``sys.cookie`` collection,
``{_id: "<project>.<job>", values: {key: value}}``. Every operation is a single
atomic MongoDB update, so two runs incrementing the same key never lose a count.
"""

from __future__ import annotations

from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from core4_pipelines.errors import PipelineError
from core4_resources.mongo.resource import MongoResource

COOKIE_COLLECTION = "sys.cookie"


class Cookie:
    """``get``/``set``/``inc``/``dec``/``max``/``min``/``has_key``/``delete`` for the job ``job``
    (its qualified name)."""

    def __init__(self, mongo: MongoResource, job: str, collection: str = COOKIE_COLLECTION):
        if not job:
            raise PipelineError("a cookie needs the job's name")
        self.mongo = mongo
        self.job = job
        self.collection_name = collection
        self._created = False

    def __repr__(self) -> str:
        return f"Cookie({self.job!r} in {self.mongo.database}.{self.collection_name})"

    def _path(self, key: str) -> str:
        if not isinstance(key, str) or not key or "." in key or key.startswith("$") or "\0" in key:
            raise PipelineError(
                f"cookie of {self.job}: key {key!r} is not valid; use a non-empty string "
                f"without '.' that does not start with '$'"
            )
        return f"values.{key}"

    def _ensure_document(self) -> None:
        """Create the job's document once. Creating it inside the first update would be one
        round trip less, but the embedded server answers one of two racing upserts with no
        document (the update itself is applied), and inc must return its value."""
        if self._created:
            return
        try:
            self.mongo.collection(self.collection_name).update_one(
                {"_id": self.job}, {"$setOnInsert": {"values": {}}}, upsert=True
            )
        except DuplicateKeyError:
            pass  # another process created it a moment ago
        except PyMongoError as exc:
            self.mongo.raise_error(f"cookie of {self.job}: creating its document failed", exc)
        self._created = True

    def _update(self, update: dict, what: str) -> dict:
        collection = self.mongo.collection(self.collection_name)
        for _ in range(3):  # the document may be removed by hand between two calls
            self._ensure_document()
            try:
                document = collection.find_one_and_update(
                    {"_id": self.job}, update, return_document=ReturnDocument.AFTER
                )
            except PyMongoError as exc:
                self.mongo.raise_error(f"cookie of {self.job}: {what} failed", exc)
            if document is not None:
                return document
            self._created = False
        raise PipelineError(f"cookie of {self.job}: {what} found no document after creating it three times")

    def get(self, key: str, default: Any = None) -> Any:
        path = self._path(key)
        try:
            document = self.mongo.collection(self.collection_name).find_one({"_id": self.job}, {path: 1})
        except PyMongoError as exc:
            self.mongo.raise_error(f"cookie of {self.job}: get {key!r} failed", exc)
        return ((document or {}).get("values") or {}).get(key, default)

    def all(self) -> dict[str, Any]:
        try:
            document = self.mongo.collection(self.collection_name).find_one({"_id": self.job})
        except PyMongoError as exc:
            self.mongo.raise_error(f"cookie of {self.job}: read failed", exc)
        return dict((document or {}).get("values") or {})

    def set(self, *args: Any, **values: Any) -> None:
        """``set(key, value)`` or ``set(key=value, other=value)``: one atomic update either way."""
        if args:
            if len(args) != 2 or values:
                raise PipelineError(
                    f"cookie of {self.job}: set takes (key, value) or key=value arguments, not both"
                )
            values = {args[0]: args[1]}
        if not values:
            raise PipelineError(f"cookie of {self.job}: set needs a key and a value")
        update = {self._path(key): value for key, value in values.items()}
        self._update({"$set": update}, f"set {', '.join(map(repr, values))}")

    def has_key(self, key: str) -> bool:
        """Whether ``key`` is stored (also when its value is None)."""
        path = self._path(key)
        try:
            found = self.mongo.collection(self.collection_name).count_documents(
                {"_id": self.job, path: {"$exists": True}}, limit=1
            )
        except PyMongoError as exc:
            self.mongo.raise_error(f"cookie of {self.job}: has_key {key!r} failed", exc)
        return found == 1

    def inc(self, key: str, by: float = 1) -> int | float:
        """Add ``by`` to ``key`` (a missing key counts as 0) and return the new value, atomically."""
        if isinstance(by, bool) or not isinstance(by, (int, float)):
            raise PipelineError(f"cookie of {self.job}: inc {key!r} by {by!r}: expected a number")
        document = self._update({"$inc": {self._path(key): by}}, f"inc {key!r}")
        return document["values"][key]

    def dec(self, key: str, by: float = 1) -> int | float:
        """Subtract ``by`` from ``key`` (a missing key counts as 0) and return the new value."""
        if isinstance(by, bool) or not isinstance(by, (int, float)):
            raise PipelineError(f"cookie of {self.job}: dec {key!r} by {by!r}: expected a number")
        return self.inc(key, -by)

    def max(self, key: str, value: Any) -> Any:
        """Keep the greater of the stored value and ``value`` (a missing key takes ``value``); returns it."""
        document = self._update({"$max": {self._path(key): value}}, f"max {key!r}")
        return document["values"][key]

    def min(self, key: str, value: Any) -> Any:
        """Keep the lesser of the stored value and ``value`` (a missing key takes ``value``); returns it."""
        document = self._update({"$min": {self._path(key): value}}, f"min {key!r}")
        return document["values"][key]

    def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it was there."""
        path = self._path(key)
        try:
            result = self.mongo.collection(self.collection_name).update_one(
                {"_id": self.job, path: {"$exists": True}}, {"$unset": {path: ""}}
            )
        except PyMongoError as exc:
            self.mongo.raise_error(f"cookie of {self.job}: delete {key!r} failed", exc)
        return result.modified_count == 1
