"""The `logging` section at work: the library's Python loggers, and a run's log in MongoDB."""

from __future__ import annotations

import logging
import time

import dagster as dg
import pytest
import yaml

from core4_pipelines.coco.instance import write_instance
from core4_pipelines.project.definitions import project_definitions
from core4_resources.config.settings import load_config
from core4_resources.errors import ConfigError
from core4_resources.logs import HANDLER_NAME, LIBRARY_LOGGERS, MongoLogHandler


@dg.op
def chatty(context) -> None:
    context.log.info("hello from core4")
    context.log.debug("too fine to keep")


@dg.job
def talks():
    chatty()


@pytest.fixture
def library_loggers():
    """The library loggers' level and handlers as they were, restored afterwards."""
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers)) for name in LIBRARY_LOGGERS}
    yield
    for name, (level, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers


def test_a_runs_log_goes_into_the_configured_collection(mongo, mongo_url, monkeypatch, tmp_path, library_loggers):
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path / "root"))
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_url", mongo_url)
    monkeypatch.setenv("CORE4_OPTION_logging__mongo_database", mongo.database)
    monkeypatch.setenv("CORE4_OPTION_logging__mongo_collection", "sys.log")
    home = write_instance(load_config())  # what `coco serve` writes: no URL in it
    written = (tmp_path / "root" / "dagster" / "dagster.yaml").read_text()
    assert "sys.log" in written and mongo_url not in written

    job = project_definitions("shoplog", jobs=[talks]).resolve_job_def("talks")
    with dg.DagsterInstance.from_config(home) as instance:
        result = job.execute_in_process(instance=instance)
    records = list(mongo.collection("sys.log").find({"run_id": result.run_id}))
    ours = [r for r in records if r["message"] == "hello from core4"]
    assert len(ours) == 1, [r["message"] for r in records]
    assert (ours[0]["job"], ours[0]["step"], ours[0]["level"]) == ("shoplog.talks", "chatty", "INFO")
    assert not any(r["message"] == "too fine to keep" for r in records)  # below logging.level
    assert {r["level"] for r in records} <= {"INFO", "WARNING", "ERROR", "CRITICAL"}


def test_without_mongo_collection_dagster_yaml_has_no_python_logs(monkeypatch, tmp_path):
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path / "root"))
    home = write_instance(load_config())
    assert "python_logs" not in yaml.safe_load((tmp_path / "root" / "dagster" / "dagster.yaml").read_text())
    assert home == str(tmp_path / "root" / "dagster")


def test_an_unreachable_log_database_never_fails_what_is_logged(capsys):
    handler = MongoLogHandler("sys.log", mongo_url="mongodb://127.0.0.1:1", database="logs")
    handler.TIMEOUT_MS = 200
    record = logging.makeLogRecord({"msg": "lost", "levelno": logging.INFO, "levelname": "INFO"})
    started = time.monotonic()
    handler.handle(record)
    handler.handle(record)  # paused: no second wait for the server
    assert time.monotonic() - started < handler.PAUSE
    err = capsys.readouterr().err
    assert err.count("core4 log: cannot write to collection 'sys.log'") == 1


def test_level_and_format_apply_to_the_library_loggers(monkeypatch, library_loggers):
    monkeypatch.setenv("CORE4_OPTION_logging__level", "warning")
    monkeypatch.setenv("CORE4_OPTION_logging__format", "'%(asctime)s|%(levelname)s|%(name)s|%(message)s'")
    project_definitions("shoplevel")
    logger = logging.getLogger("core4_resources")
    handler = next(h for h in logger.handlers if h.get_name() == HANDLER_NAME)
    assert logger.level == logging.WARNING
    record = logging.makeLogRecord({"name": "core4_resources.files.folders", "msg": "moved", "levelname": "WARNING",
                                    "created": 0.0, "msecs": 0.0})
    assert handler.format(record) == "1970-01-01 00:00:00,000|WARNING|core4_resources.files.folders|moved"  # UTC
    project_definitions("shoplevel")  # loading again replaces, never adds a handler
    assert [h.get_name() for h in logger.handlers].count(HANDLER_NAME) == 1


def test_an_unusable_format_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv("CORE4_OPTION_logging__format", "plain text")
    with pytest.raises(ConfigError) as error:
        load_config()
    assert str(error.value) == ("logging.format from env CORE4_OPTION_logging__format: expected a logging format "
                                "such as '%(asctime)s %(levelname)s %(message)s', got 'plain text'")


def test_without_any_mongo_url_the_log_goes_to_the_embedded_server_of_the_root(monkeypatch, tmp_path):
    import pymongo

    from core4_resources.mongo.embedded.root import ensure_embedded, stop_embedded

    root = tmp_path / "root"
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(root))
    monkeypatch.setenv("CORE4_OPTION_logging__mongo_database", "logs")
    handler = MongoLogHandler("sys.log")
    try:
        handler.emit(logging.LogRecord("core4", logging.WARNING, __file__, 1, "kept without a URL", None, None))
        with pymongo.MongoClient(ensure_embedded(root), serverSelectionTimeoutMS=5000) as client:
            assert client.logs["sys.log"].find_one({"message": "kept without a URL"})["level"] == "WARNING"
    finally:
        stop_embedded(root)
