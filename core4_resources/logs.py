"""The cascade's ``logging`` section at work.

- ``logging.level`` and ``logging.format``: the Python loggers of this framework
  (``core4_pipelines.*``, ``core4_resources.*``) write to stderr at that level, in that
  format, with UTC timestamps, in every process that loads a project's definitions (code
  servers, run workers): ``project_definitions`` calls :func:`configure_library_logging`.
- ``logging.mongo_collection``: every record of a run's log (what ``context.log`` and
  Dagster write for the run) at ``logging.level`` or above is also written into that
  collection, with the run id, the job (``<project>.<job>``) and the step, as core4 wrote
  its ``sys.log``. ``coco`` writes :func:`python_logs_config` into dagster.yaml, so every
  run's log manager hands its records to a :class:`MongoLogHandler` too. Its server and
  database are ``logging.mongo_url`` / ``logging.mongo_database`` (DEFAULT fills them), read
  by the process that runs: dagster.yaml holds no URL and no password.

No Dagster and no MongoDB client at import time: ``coco serve`` writes dagster.yaml with it.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core4_resources.config.settings import LoggingSettings

LIBRARY_LOGGERS = ("core4_pipelines", "core4_resources")
HANDLER_NAME = "core4"
JOB_TAG = "core4/job"  # core4_pipelines.tags.JOB_TAG: this layer does not import the library
MONGO_HANDLER = "core4_mongo"


def configure_library_logging(settings: LoggingSettings) -> None:
    """Level and format of the library's Python loggers: one stderr handler each (replaced
    in place when called again), records passed on to the root logger as before."""
    formatter = logging.Formatter(settings.format)
    formatter.converter = time.gmtime
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        handler = next((h for h in logger.handlers if h.get_name() == HANDLER_NAME), None)
        if handler is None:
            handler = logging.StreamHandler()
            handler.set_name(HANDLER_NAME)
            logger.addHandler(handler)
        handler.setFormatter(formatter)
        logger.setLevel(settings.level)


def python_logs_config(settings: LoggingSettings) -> dict[str, Any]:
    """The ``python_logs`` section of dagster.yaml ({} without ``logging.mongo_collection``)."""
    if not settings.mongo_collection:
        return {}
    handler = {"class": f"{__name__}.MongoLogHandler", "level": settings.level,
               "collection": settings.mongo_collection}
    return {"dagster_handler_config": {"handlers": {MONGO_HANDLER: handler}}}


def log_document(record: logging.LogRecord) -> dict[str, Any]:
    """One log record as stored: time (UTC), level, message, and the run it belongs to."""
    meta = getattr(record, "dagster_meta", None) or {}  # what Dagster's log manager adds
    event = meta.get("dagster_event")
    return {
        "created": datetime.fromtimestamp(record.created, UTC),
        "level": record.levelname,
        "message": meta.get("orig_message") or record.getMessage(),
        "run_id": meta.get("run_id"),
        "job": (meta.get("job_tags") or {}).get(JOB_TAG) or meta.get("job_name"),
        "step": meta.get("step_key"),
        "event": getattr(event, "event_type_value", None),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
    }


class MongoLogHandler(logging.Handler):
    """Writes each record (:func:`log_document`) into the MongoDB collection ``collection``.

    ``mongo_url`` and ``database`` default to the cascade's ``logging.mongo_url`` and
    ``logging.mongo_database``. A log write never fails the run: when MongoDB does not
    answer, a line on stderr says so and records are dropped for ``PAUSE`` seconds.
    """

    PAUSE = 30.0
    TIMEOUT_MS = 2000

    def __init__(self, collection: str, mongo_url: str | None = None, database: str | None = None,
                 level: int | str = logging.NOTSET):
        super().__init__(level)
        self.collection = collection
        self.mongo_url, self.database = mongo_url, database
        self._target = None
        self._paused_until = 0.0

    def _open(self):
        from core4_resources.mongo.resource import NO_URL_MESSAGE, MongoResource

        url, database, embedded = self.mongo_url, self.database, {}
        if database is None:
            from core4_resources.config.settings import load_config

            config = load_config()
            url, database = config.logging.mongo_url, config.logging.mongo_database
            # No URL anywhere: the embedded server of folder.root, as for every other entry point.
            embedded = {"embedded_root": config.folder.root, "embedded_port": config.embedded.port}
        if not url and not embedded:
            raise ValueError(f"logging.mongo_url: {NO_URL_MESSAGE}")
        return MongoResource(mongo_url=url or None, database=database,
                             server_selection_timeout_ms=self.TIMEOUT_MS, **embedded).collection(self.collection)

    def emit(self, record: logging.LogRecord) -> None:
        if time.monotonic() < self._paused_until:
            return
        try:
            if self._target is None:
                self._target = self._open()
            self._target.insert_one(log_document(record))
        except Exception as exc:  # noqa: BLE001 - logging must not fail what it logs
            self._paused_until = time.monotonic() + self.PAUSE
            first = (str(exc).splitlines() or [""])[0][:300]
            sys.stderr.write(f"core4 log: cannot write to collection {self.collection!r} "
                             f"({type(exc).__name__}: {first}); records dropped for {self.PAUSE:g}s\n")
