"""MongoResource: database access and source-stamped writes.

Every error that reaches the user names the server by its masked URL; the password
never appears in a message.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Optional

import dagster
import pymongo
from bson.errors import InvalidDocument
from pydantic import Field
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError
from pymongo.topology_description import TOPOLOGY_TYPE
from pymongo.write_concern import WriteConcern

from core4_resources.config.settings import mask_url
from core4_resources.errors import MongoError

if TYPE_CHECKING:
    from core4_resources.config.settings import Settings

NO_URL_MESSAGE = (
    "no mongo_url configured; set DEFAULT.mongo_url, or give the resource embedded_root (folder.root) "
    "to use the embedded server there (MongoResource.from_settings does)"
)
DUPLICATE_KEY = 11000
# The collection that holds the one document a durability point writes (see make_durable).
SYNC_COLLECTION = "_core4_sync"
# Documents per insert_many: bounds memory for iterables of any length.
INSERT_CHUNK = 1000
_SHOWN_IDS = 5

# embedded_root -> the URL of its embedded server, once resolved in this process (for messages).
_embedded_urls: dict[str, str] = {}
# One client per (process, URL, timeout): pymongo clients are not fork-safe, so a
# forked process builds its own instead of reusing its parent's sockets.
_clients: dict[tuple[int, str, int], pymongo.MongoClient] = {}
_clients_lock = threading.Lock()


@dataclass
class StampedWriteResult:
    inserted: int
    duplicates: int


class MongoResource(dagster.ConfigurableResource):
    """MongoDB access for one database: collections, and writes stamped with their source.

    One pymongo client per process and URL is shared by every resource on that URL.
    Every database failure raises :class:`~core4_resources.errors.MongoError` naming the server by
    its masked URL; the password never appears in a message (:meth:`raise_error` raises such
    an error for your own calls). ``project_definitions`` binds one as ``mongo`` on the
    project's database (:meth:`from_settings`).

    Examples:
        .. code-block:: python

            import dagster as dg
            from core4_resources.mongo.resource import MongoResource

            @dg.op
            def load(context: dg.OpExecutionContext, mongo: MongoResource) -> int:
                rows = [{"_id": "prices.csv#1", "day": "2024-03-05", "price": 7}]
                result = mongo.insert_stamped("prices", rows, source="/data/prices.csv",
                                              job_id=context.run_id, on_duplicate="ignore")
                context.log.info(f"{mongo.collection('prices').count_documents({})} prices")
                return result.inserted  # a re-run inserts 0: the _id exists already

            @dg.job(resource_defs={
                "mongo": MongoResource(mongo_url=dg.EnvVar("SHOP_MONGO_URL"), database="shop")
            })
            def load_prices():
                load()
    """

    mongo_url: Optional[str] = Field(
        default=None,
        description="The MongoDB connection string, e.g. mongodb://user:password@host:27017/admin; None "
        "means the embedded server of embedded_root (started on first use when it does not run). "
        "Messages show it masked.",
    )
    embedded_root: Optional[str] = Field(
        default=None,
        description="folder.root whose embedded server (data in <root>/mongo) is used when mongo_url is "
        "None; started on first use and left running for other processes. None with no mongo_url: "
        "every access fails saying so.",
    )
    embedded_port: Optional[int] = Field(
        default=None,
        description="The embedded server's port when it has to be started (embedded.port); None: the "
        "port it had last time, else a free one.",
    )
    database: str = Field(description="The database that db(), collection() and insert_stamped() use.")
    server_selection_timeout_ms: int = Field(
        default=3000,
        description="Milliseconds to wait for a server (to select one, and to connect) before an "
        "operation fails with MongoError: how fast an unreachable MongoDB is reported.",
    )

    @classmethod
    def from_settings(cls, settings: "Settings") -> "MongoResource":
        """The project's url and database when a project is loaded, else the global DEFAULT."""
        project = settings.project
        embedded = {"embedded_root": settings.folder.root, "embedded_port": settings.embedded.port}
        if project is not None:
            return cls(mongo_url=project.mongo_url or settings.mongo_url,
                       database=project.mongo_database, **embedded)
        return cls(mongo_url=settings.mongo_url, database=settings.mongo_database, **embedded)

    @property
    def masked_url(self) -> str:
        url = self._known_url()
        if url is None:
            if self.embedded_root:
                return f"(the embedded server of {self.embedded_root}, not started yet)"
            return "(no mongo_url configured)"
        return mask_url(url) or ""

    def url(self) -> str:
        """The URL this resource uses: mongo_url, else the embedded server's (started when it does
        not run; see core4_resources.mongo.embedded.root). Print it only through ``masked_url``."""
        if self.mongo_url:
            return self.mongo_url
        if not self.embedded_root:
            raise MongoError(NO_URL_MESSAGE)
        from core4_resources.mongo.embedded.root import ensure_embedded

        try:
            url = ensure_embedded(self.embedded_root, port=self.embedded_port)
        except OSError as exc:  # folder.root not writable, for one
            raise MongoError(f"starting the embedded server of {self.embedded_root} failed: {exc}") from exc
        _embedded_urls[self.embedded_root] = url
        return url

    def _known_url(self) -> str | None:
        """The URL without starting anything: for messages and masking."""
        if self.mongo_url:
            return self.mongo_url
        return _embedded_urls.get(self.embedded_root or "")

    # -- access ----------------------------------------------------------------

    def client(self) -> pymongo.MongoClient:
        """The client for this URL in this process (created on first use)."""
        url = self.url()
        pid = os.getpid()
        key = (pid, url, self.server_selection_timeout_ms)
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                # Clients inherited from a parent process are dropped, not closed:
                # closing would act on sockets the parent still uses.
                for stale in [k for k in _clients if k[0] != pid]:
                    del _clients[stale]
                try:
                    client = pymongo.MongoClient(
                        url,
                        serverSelectionTimeoutMS=self.server_selection_timeout_ms,
                        connectTimeoutMS=self.server_selection_timeout_ms,
                    )
                except (PyMongoError, ValueError) as exc:
                    self.raise_error(f"invalid mongo_url {self.masked_url}", exc)
                _clients[key] = client
            return client

    def db(self) -> Database:
        return self.client()[self.database]

    def collection(self, name: str) -> Collection:
        return self.db()[name]

    def ping(self) -> None:
        """Fails fast with MongoError naming the masked URL when the server does not answer."""
        try:
            self.client().admin.command("ping")
        except PyMongoError as exc:
            self.raise_error(f"MongoDB at {self.masked_url} does not answer", exc)

    def make_durable(self) -> None:
        """Return only once every write this client made before is durable.

        Imports write with the server's default write concern (w:1, unjournaled:
        fast, but a server killed right after its answer loses the last of them).
        This is the durability point of a batch, called once before any of its
        files is archived: one small write with ``j: true`` -- the journal is one
        sequence, so it is flushed up to and including every earlier write -- and
        on a replica set ``w: "majority"``, so the batch survives a failover too.
        Measured on the embedded server: 9-15 ms per call.
        """
        client = self.client()
        try:
            replicated = client.topology_description.topology_type in (
                TOPOLOGY_TYPE.ReplicaSetWithPrimary, TOPOLOGY_TYPE.Sharded,
            )
            concern = WriteConcern(w="majority" if replicated else 1, j=True)
            self.db().get_collection(SYNC_COLLECTION, write_concern=concern).update_one(
                {"_id": "journal"}, {"$inc": {"points": 1}}, upsert=True
            )
        except PyMongoError as exc:
            self.raise_error(f"making writes durable in {self.database} at {self.masked_url}", exc)

    # -- stamped writes --------------------------------------------------------

    def insert_stamped(
        self,
        collection: str,
        documents: Iterable[Mapping[str, Any]],
        *,
        source: str,
        job_id: str,
        ordered: bool = False,
        on_duplicate: str = "raise",
    ) -> StampedWriteResult:
        """Insert copies of ``documents`` stamped with ``_src`` and ``_job_id``.

        ``_src`` is the basename of ``source``. The documents are sent in chunks of
        INSERT_CHUNK, so an iterable of any length is streamed. ``on_duplicate``:
        "raise" -> MongoError naming the duplicate _ids (``ordered`` stops at the first
        one); "ignore" -> duplicate-key errors are counted, so re-running an import
        with deterministic _ids is idempotent; then the insert is always unordered,
        so one duplicate does not hold back the rest.

        Database failures raise MongoError. Bad content raises what it is, with the
        collection and source in the message: TypeError for a non-mapping document,
        bson InvalidDocument for a value BSON cannot hold; an exception raised by the
        ``documents`` iterable itself passes through unchanged.
        """
        if on_duplicate not in ("raise", "ignore"):
            raise MongoError(
                f"insert_stamped into {collection!r}: on_duplicate must be 'raise' or "
                f"'ignore', not {on_duplicate!r}"
            )
        src = os.path.basename(os.fspath(source)) if source else ""
        if not src:
            raise MongoError(
                f"insert_stamped into {collection!r}: source is empty ({source!r}); "
                f"pass the file the documents come from"
            )
        if not job_id:
            raise MongoError(
                f"insert_stamped into {collection!r} from {src}: job_id is empty; "
                f"pass the id of the run that writes"
            )
        target = self.collection(collection)
        where = f"{self.database}.{collection}"
        unordered = on_duplicate == "ignore" or not ordered
        inserted = duplicates = 0
        for chunk in _stamped_chunks(documents, src, job_id, where):
            try:
                inserted += len(target.insert_many(chunk, ordered=not unordered).inserted_ids)
            except BulkWriteError as exc:
                details = exc.details or {}
                inserted += details.get("nInserted", 0)
                dups, others = _split_write_errors(details)
                failures = others or details.get("writeConcernErrors") or []
                if failures:
                    first = failures[0]
                    raise MongoError(
                        f"insert into {where} from {src} failed at _id "
                        f"{first.get('op', {}).get('_id')!r}: {first.get('errmsg')} "
                        f"(code {first.get('code')}); {len(failures)} such error(s) in this "
                        f"chunk, {inserted} document(s) inserted so far"
                    ) from None
                if on_duplicate == "raise":
                    ids = [error.get("op", {}).get("_id") for error in dups]
                    shown = ", ".join(repr(i) for i in ids[:_SHOWN_IDS])
                    more = f" and {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else ""
                    raise MongoError(
                        f"insert into {where} from {src}: duplicate key for _id {shown}{more} "
                        f"({dups[0].get('errmsg')}); {inserted} document(s) inserted so far; "
                        f"use on_duplicate='ignore' to skip documents that exist already"
                    ) from None
                duplicates += len(dups)
            except InvalidDocument as exc:
                # bad content, not a database failure: keeps its type, gains the context
                raise type(exc)(
                    f"insert into {where} from {src}: a document cannot be stored as BSON: {exc}"
                ) from exc
            except PyMongoError as exc:
                self.raise_error(
                    f"insert into {where} from {src} at {self.masked_url} failed after "
                    f"{inserted} document(s)", exc,
                )
        return StampedWriteResult(inserted=inserted, duplicates=duplicates)

    # -- errors ----------------------------------------------------------------

    def raise_error(self, what: str, exc: BaseException) -> NoReturn:
        """Raise a MongoError for an operation on this server that failed with ``exc``.

        Its message is ``<what>: <exception type>: <reason>``, with this URL's password
        replaced by ``***``; a ``what`` that does not name the server gains ``at <masked URL>``.
        ``exc`` is chained as its cause unless its text held the password: then the chain is cut,
        so no traceback shows it. Call it in an
        ``except`` clause of your own database calls; name the server by
        :attr:`masked_url`, never by ``mongo_url``.

        Examples:
            .. code-block:: python

                try:
                    mongo.collection("prices").create_index("day")
                except pymongo.errors.PyMongoError as exc:
                    mongo.raise_error(f"indexing prices in {mongo.database} at {mongo.masked_url}", exc)
        """
        reason = _scrub(str(exc), self._known_url())
        if self.masked_url not in what:  # every database error names its server
            what = f"{what} at {self.masked_url}"
        error = MongoError(f"{what}: {type(exc).__name__}: {reason}")
        error.outage = _is_outage(exc)
        if reason != str(exc):  # the original text held the password: do not chain it
            raise error from None
        raise error from exc


def _stamped_chunks(
    documents: Iterable[Mapping[str, Any]], src: str, job_id: str, where: str
) -> Iterator[list[dict[str, Any]]]:
    """Stamped shallow copies in lists of INSERT_CHUNK; the caller's dicts stay untouched."""
    position = itertools.count()
    iterator = iter(documents)
    while True:
        chunk = []
        for document in itertools.islice(iterator, INSERT_CHUNK):
            index = next(position)
            if not isinstance(document, Mapping):
                raise TypeError(
                    f"insert into {where} from {src}: document #{index} is a "
                    f"{type(document).__name__}, expected a dict"
                )
            chunk.append({**document, "_src": src, "_job_id": job_id})
        if not chunk:
            return
        yield chunk


def _split_write_errors(details: Mapping[str, Any]) -> tuple[list[dict], list[dict]]:
    errors = details.get("writeErrors") or []
    dups = [e for e in errors if e.get("code") == DUPLICATE_KEY]
    others = [e for e in errors if e.get("code") != DUPLICATE_KEY]
    return dups, others


def _password_of(url: str | None) -> str | None:
    if not url or "://" not in url:
        return None
    userinfo, at, _ = url.split("://", 1)[1].rpartition("@")
    if not at:
        return None
    _, colon, password = userinfo.partition(":")
    return password or None


def _scrub(text: str, url: str | None) -> str:
    """text with the URL's password (raw or percent-decoded) replaced by ***."""
    from urllib.parse import unquote

    password = _password_of(url)
    if not password:
        return text
    for variant in {password, unquote(password)}:
        if variant:
            text = text.replace(variant, "***")
    return text


# The server's own codes for "out of disk" (OutOfDiskSpace) and a host it cannot reach.
_OUTAGE_CODES = frozenset({14031, 6, 7, 89, 91, 189, 9001, 10107, 11600, 11602, 13435, 13436})


def _is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` is the database out of reach (or out of disk), not an operation it refused:
    MongoError.outage, which a run's failure kind is read from (core4_pipelines.supervise.failures)."""
    if isinstance(exc, pymongo.errors.ConnectionFailure):
        return True
    code = getattr(exc, "code", None)
    return code in _OUTAGE_CODES or "No space left on device" in str(exc)
