"""FolderResource and MongoResource read like Dagster's integrations: every field has a
description (what the UI and the config schema show), and the docstrings' examples run."""

from __future__ import annotations

import inspect
import textwrap
import traceback

import pymongo
import pytest
from pymongo.errors import PyMongoError

from core4_resources.mongo.embedded.server import free_port
from core4_resources.errors import MongoError
from core4_resources.files.folders import FolderResource
from core4_resources.mongo.resource import MongoResource


def examples(obj) -> list[str]:
    """The code blocks of the ``Examples:`` section of ``obj``'s docstring."""
    lines = inspect.cleandoc(obj.__doc__ or "").splitlines()
    assert "Examples:" in lines, f"{obj.__qualname__} has no Examples: block"
    blocks: list[list[str]] = []
    inside = False
    for line in lines[lines.index("Examples:") + 1:]:
        indent = len(line) - len(line.lstrip())
        if line.strip() == ".. code-block:: python":
            blocks.append([])
            inside = True
        elif line.strip() and indent <= 4:
            inside = False
            if indent == 0:
                break  # the next section
        elif inside:
            blocks[-1].append(line)
    assert blocks, f"{obj.__qualname__}: Examples: holds no code block"
    return [textwrap.dedent("\n".join(block)).strip() + "\n" for block in blocks]


@pytest.mark.parametrize("resource", [FolderResource, MongoResource])
def test_every_field_has_a_description_in_the_config_schema(resource):
    fields = resource.to_config_schema().as_field().config_type.fields
    assert set(fields) == set(resource.model_fields)
    missing = [name for name, field in fields.items() if not (field.description or "").strip()]
    assert missing == []


def test_the_folder_resource_example_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path / "root"))
    (code,) = examples(FolderResource)
    code = code.replace('"/srv/core4"', repr(str(tmp_path / "elsewhere")))
    namespace: dict = {}
    exec(compile(code, "FolderResource example", "exec", dont_inherit=True), namespace)

    result = namespace["defs"].resolve_job_def("fetch_prices").execute_in_process()
    assert result.success
    (path,) = result.output_for_node("fetch")
    assert path == str(tmp_path / "root" / "proc" / "shop" / "prices.csv")
    assert open(path).read() == "day,price\n2024-03-05,7\n"
    assert namespace["folders"].proc_folder() == str(tmp_path / "elsewhere" / "proc" / "shop")


def test_the_mongo_resource_examples_run(mongo, monkeypatch):
    load_code, raise_code = examples(MongoResource) + examples(MongoResource.raise_error)
    monkeypatch.setenv("SHOP_MONGO_URL", mongo.mongo_url)
    namespace: dict = {}
    exec(compile(load_code, "MongoResource example", "exec", dont_inherit=True), namespace)
    shop = MongoResource(mongo_url=mongo.mongo_url, database="shop")
    try:
        first = namespace["load_prices"].execute_in_process()
        again = namespace["load_prices"].execute_in_process()
        assert (first.output_for_node("load"), again.output_for_node("load")) == (1, 0)
        assert shop.collection("prices").find_one()["_src"] == "prices.csv"
    finally:
        shop.client().drop_database("shop")

    # raise_error's example, against a server that does not answer: a masked MongoError
    unreachable = MongoResource(mongo_url=f"mongodb://u:s3cret@127.0.0.1:{free_port()}/admin", database="shop",
                                server_selection_timeout_ms=300)
    code = "try:\n" + textwrap.indent(raise_code, "    ") + "\nexcept MongoError as exc:\n    caught = exc\n"
    namespace = {"mongo": unreachable, "pymongo": pymongo, "MongoError": MongoError}
    exec(compile(code, "raise_error example", "exec", dont_inherit=True), namespace)
    caught = namespace["caught"]
    assert str(caught).startswith("indexing prices in shop at mongodb://u:***@127.0.0.1:")
    assert "s3cret" not in str(caught)


def test_raise_error_chains_the_cause_unless_it_held_the_password():
    resource = MongoResource(mongo_url="mongodb://u:s3cret@127.0.0.1:1/admin", database="db")
    for text, chained in [("no server", True), ("auth failed for u:s3cret", False)]:
        cause = PyMongoError(text)
        with pytest.raises(MongoError) as error:
            try:
                raise cause
            except PyMongoError as exc:
                resource.raise_error("reading db.c at " + resource.masked_url, exc)
        assert str(error.value) == "reading db.c at mongodb://u:***@127.0.0.1:1/admin: PyMongoError: " + \
            text.replace("s3cret", "***")
        assert (error.value.__cause__ is cause) is chained and error.value.__suppress_context__
        assert "s3cret" not in "".join(traceback.format_exception(error.value))


def test_the_moved_error_classes_live_in_the_errors_modules():
    from core4_pipelines.coco import errors as operator_errors
    from core4_resources import errors
    from core4_resources.files import folders, moves
    assert folders.SourceMissingError is moves.SourceMissingError is errors.SourceMissingError
    assert errors.SourceMissingError.__module__ == "core4_resources.errors"
    assert issubclass(errors.SourceMissingError, errors.FolderError)
    assert issubclass(errors.SourceMissingError, FileNotFoundError)
    assert operator_errors.OperateError.__module__ == "core4_pipelines.coco.errors"
    assert not hasattr(MongoResource, "_raise")
