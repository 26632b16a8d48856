"""Dagster Components: a project declared in YAML (``<project>/defs/<name>/defs.yaml``).

``FileImport`` is ``import_job`` plus its ``proc_folder_sensor``; ``HttpDownload`` is a
``download_job`` whose fetch streams HTTP(S) files into proc (``download/http.py``). Each builds
exactly what the Python API builds from the same values, so ``project_definitions`` treats
both alike (job properties, schedules, the asset graph). A wrong attribute is an error naming
the ``defs.yaml``, the key and what was expected. ``defs_folder_definitions`` loads a
project's ``defs/`` folder; ``dg check defs`` and ``dg list defs`` work on it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import dagster as dg
from pydantic import Field, ValidationError

from core4_pipelines.download.job import download_job
from core4_pipelines.errors import PipelineError
from core4_pipelines.download.http import HttpSource, fetch_into_proc, render, run_date
from core4_pipelines.ingest.assets import inbox_key, md_code
from core4_pipelines.ingest.bad_rows import check_bad_rows
from core4_pipelines.ingest.job import import_job
from core4_pipelines.ingest.modes import check_mode
from core4_pipelines.ingest.reappear import DEFAULT_REAPPEAR_WINDOW
from core4_pipelines.properties import check_property
from core4_pipelines.ingest.readers import READERS, check_reader_options
from core4_pipelines.ingest.sensor import DEFAULT_BATCH_SIZE, proc_folder_sensor
from core4_resources.config.settings import mask_url
from core4_resources.errors import Core4Error
from core4_resources.files.folders import FolderResource

PROPERTIES = ("attempts", "error_time", "wall_time", "max_parallel", "priority", "schedule")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


class ComponentDeclarationError(PipelineError):
    """A component's attributes in its defs.yaml are wrong: the message names file and key."""


def _where(context: dg.ComponentLoadContext) -> str:
    return str(Path(context.path) / "defs.yaml")


def _fail(context: dg.ComponentLoadContext, key: str, expected: str, got: Any) -> ComponentDeclarationError:
    return ComponentDeclarationError(f"{_where(context)}: attributes.{key}: expected {expected}, got {got!r}")


def _project(context: dg.ComponentLoadContext) -> str:
    """The project: the top-level package of the defs module (``sales`` for ``sales.defs``)."""
    return context.defs_module_name.split(".")[0]


def _dotted(context: dg.ComponentLoadContext, key: str, path: str, expected: str) -> Any:
    """The object ``module.name`` names; an error naming the file and key when it cannot be loaded."""
    if not _DOTTED.match(path):
        raise _fail(context, key, expected, path)
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ComponentDeclarationError(
            f"{_where(context)}: attributes.{key}: {path!r} cannot be loaded ({exc}); expected {expected}"
        ) from None


def _at_least(context: dg.ComponentLoadContext, component: Any, key: str, bound: float, inclusive: bool) -> None:
    """Bounds are checked here, not by pydantic: Dagster lets every YAML value be a template
    string first, and a pydantic bound on such a field fails with a TypeError naming nothing."""
    value = getattr(component, key)
    if value is not None and (value < bound if inclusive else value <= bound):
        raise _fail(context, key, f"a number {'>=' if inclusive else '>'} {bound:g}", value)


def _properties(context: dg.ComponentLoadContext, component: Any) -> dict[str, Any]:
    """The core4 job properties set in the YAML, each checked as a declaration in code is."""
    declared = {}
    for name in PROPERTIES:
        value = getattr(component, name)
        if value is not None:
            try:
                declared[name] = check_property(name, value, f"{_where(context)}: attributes.{name}")
            except Core4Error as exc:
                raise ComponentDeclarationError(str(exc)) from None
    return declared


class ReaderOptions(dg.Model):
    """Options of the reader; which reader takes which: docs/readers.md (checked at load)."""

    delimiter: str | None = Field(None, description="csv: the field delimiter (default ',').")
    encoding: str | None = Field(None, description="csv, json, jsonl: the text encoding (default utf-8; a byte "
                                                   "order mark names UTF-8/16/32).")
    skip_lines: int | None = Field(None, description="csv: lines before the header (a title, a report's head).")
    header: int | bool | str | None = Field(None, description="csv, xlsx: the header's row number (1), or none "
                                                              "with columns.")
    columns: list[str] | None = Field(None, description="csv, xlsx: the field names, replacing the header's.")
    null_values: list[str] | None = Field(None, description="csv, xlsx: texts read as null, e.g. ['', 'NA'].")
    empty_fields: str | None = Field(None, description="csv, xlsx: keep or drop empty fields (default keep).")
    types: str | None = Field(None, description="csv, xlsx: auto (numbers become numbers) or text.")
    dates: bool | None = Field(None, description="csv, xlsx: ISO dates and date-times become dates.")
    sheet: str | int | None = Field(None, description="xlsx: the sheet's name or position (1 = the first).")


class _JobProperties(dg.Model):
    attempts: int | None = Field(None, description="Runs of a batch before it waits for a human (core4 attempts).")
    error_time: int | float | None = Field(None, description="Seconds between a failure and the next attempt.")
    wall_time: int | float | None = Field(None, description="Seconds after which a run is stopped.")
    max_parallel: int | None = Field(None, description="Runs of this job at once.")
    priority: int | None = Field(None, description="Higher runs first.")
    schedule: str | None = Field(None, description="A cron expression (UTC) for a schedule of this job.")


class _Core4Component(dg.Component, _JobProperties, dg.Resolvable):
    """What FileImport and HttpDownload share: the job properties, and errors naming the file."""

    @classmethod
    def load(cls, attributes: Any, context: dg.ComponentLoadContext):
        """As Dagster loads a component, but a wrong attribute names the defs.yaml, the key,
        what was expected and what was found (Dagster's own message names only the key)."""
        try:
            return super().load(attributes, context)
        except ValidationError as exc:
            lines = [f"{_where(context)}: attributes.{'.'.join(str(p) for p in error['loc'])}: "
                     f"expected {error['msg'].removeprefix('Input should be ')}, got {error.get('input')!r}"
                     for error in exc.errors()]
            raise ComponentDeclarationError("\n".join(lines)) from None


class _FileImportScaffolder(dg.Scaffolder):
    """``dg scaffold defs core4_pipelines.FileImport NAME``: an import of NAME-*.csv into NAME."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = Path(request.target_path).name
        dg.scaffold_component(request, {"collection": name, "pattern": f"{re.escape(name)}.*\\.csv$", "reader": "csv"})


class _HttpDownloadScaffolder(dg.Scaffolder):
    """``dg scaffold defs core4_pipelines.HttpDownload NAME``: a download for the import of NAME."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = Path(request.target_path).name
        dg.scaffold_component(request, {
            "collection": name, "url": f"https://example.org/{name}/{{date:%Y-%m-%d}}.csv",
            "file_name": f"{name}-{{date:%Y%m%d}}.csv", "schedule": "0 6 * * *",
        })


@dg.scaffold_with(_FileImportScaffolder)
class FileImport(_Core4Component):
    """Import the files matching ``pattern`` in ``<proc>/<project>/`` into the MongoDB
    collection ``collection``: a proc sensor claims them in batches, each batch one run,
    records stamped and idempotent, files archived (or moved to error with the reason).

    Examples:
        .. code-block:: yaml

            type: core4_pipelines.FileImport
            attributes:
              collection: readings
              pattern: 'readings-.*\\.csv$'
              reader: csv
              reader_options: {delimiter: ";"}
              attempts: 3
    """

    collection: str = Field(description="The MongoDB collection (in the project's database).")
    pattern: str | None = Field(None, description="A regular expression matched at the start of file names.")
    name: str | None = Field(None, description="The job's name (default import_<collection>).")
    reader: str = Field("csv", description="csv, jsonl, json, xlsx, parquet, or a dotted path module.function(path, **options).")
    reader_options: ReaderOptions = Field(default_factory=ReaderOptions, description="Options for the reader.")
    record_model: str | None = Field(None, description="A pydantic model (dotted path) each record is validated with.")
    batch_size: int = Field(DEFAULT_BATCH_SIZE, description="Files per batch (one run each); at least 1.")
    min_age_seconds: int | float = Field(5.0, description="Seconds a file must stay unchanged before it is claimed; 0 or more.")
    reappear_window_seconds: int | float = Field(
        DEFAULT_REAPPEAR_WINDOW, description="A file appearing under a name claimed less than this many seconds "
                                             "before is held until `coco release` (a writer appending by path); "
                                             "0 imports it as a new file.")
    freshness: int | float | None = Field(
        None, description="Seconds within which the collection should have new data; more than 0.")
    rejected_files: Literal["fail", "warn"] = Field("fail", description="A batch with files moved to error: fail or warn.")
    mode: Literal["insert", "upsert", "merge", "replace"] = Field(
        "insert", description="How records are written: insert (append), upsert or merge on keys, replace the "
                              "records of the earlier file of the same name.")
    keys: list[str] | None = Field(None, description="upsert and merge: the fields that name a document.")
    duplicates: Literal["import", "skip"] = Field(
        "import", description="A file whose content this import imported before: import it again, or skip it "
                              "(archived with a note, no records).")
    bad_rows: Literal["fail", "skip", "divert"] = Field(
        "fail", description="A file's bad rows: fail the file, skip them (counted), or divert them to the error folder.")
    max_bad_rows: int | float | None = Field(
        None, description="skip or divert: more bad rows than this (a count, or a fraction below 1) reject the file.")
    description: str | None = Field(None, description="The job's description.")

    def job_name(self) -> str:
        return self.name or f"import_{self.collection}"

    def reader_function(self, context: dg.ComponentLoadContext) -> Callable[..., Any]:
        """The ``read`` argument import_job gets: the reader with the options set in the YAML."""
        read = READERS.get(self.reader)
        if read is None:
            read = _dotted(context, "reader", self.reader, "csv, jsonl, json, xlsx, parquet, or a dotted path module.function")
            if not callable(read):
                raise _fail(context, "reader", "a function read(path, **options) yielding records", self.reader)
        options = {k: v for k, v in self.reader_options.model_dump().items() if v is not None}
        if self.reader in READERS:
            wrong = check_reader_options(self.reader, options)
            if wrong is not None:
                key, problem = wrong
                raise ComponentDeclarationError(
                    f"{_where(context)}: attributes.reader_options{'.' + key if key else ''}: {problem}")
        return functools.partial(read, **options) if options else read

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        if not self.collection or "$" in self.collection or self.collection.startswith("system."):
            raise _fail(context, "collection", "a MongoDB collection name", self.collection)
        _at_least(context, self, "batch_size", 1, True)
        _at_least(context, self, "min_age_seconds", 0, True)
        _at_least(context, self, "reappear_window_seconds", 0, True)
        _at_least(context, self, "freshness", 0, False)
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise _fail(context, "pattern", f"a regular expression ({exc})", self.pattern) from None
        model = None
        if self.record_model is not None:
            model = _dotted(context, "record_model", self.record_model, "a pydantic model class as module.Class")
        properties = _properties(context, self)
        # The combinations import_job refuses (upsert without keys ...), named by the key to change.
        for key, check in (("keys", lambda where: check_mode(self.mode, self.keys, where)),
                           ("max_bad_rows", lambda where: check_bad_rows(self.bad_rows, self.max_bad_rows, where))):
            try:
                check(f"{_where(context)}: attributes.{key}")
            except ValueError as exc:
                raise ComponentDeclarationError(str(exc)) from None
        job = import_job(
            self.job_name(), read=self.reader_function(context), collection=self.collection,
            pattern=self.pattern, model=model, freshness=self.freshness, rejected_files=self.rejected_files,
            mode=self.mode, keys=self.keys, duplicates=self.duplicates, bad_rows=self.bad_rows,
            max_bad_rows=self.max_bad_rows, project=_project(context), description=self.description,
            properties=properties or None,
        )
        sensor = proc_folder_sensor(job, batch_size=self.batch_size, min_age_seconds=self.min_age_seconds,
                                    reappear_window_seconds=self.reappear_window_seconds)
        return dg.Definitions(jobs=[job], sensors=[sensor])


@dg.scaffold_with(_HttpDownloadScaffolder)
class HttpDownload(_Core4Component):
    """Fetch files over HTTP(S) into ``<proc>/<project>/``, for the import of ``collection``:
    streamed into transfer, moved into proc only when every file of the run is complete;
    retried per ``attempts``; on ``schedule`` (UTC) or launched by hand.

    Examples:
        .. code-block:: yaml

            type: core4_pipelines.HttpDownload
            attributes:
              collection: readings            # whose import reads these files
              url: "https://example.org/readings/{date:%Y-%m-%d}.csv"
              file_name: "readings-{date:%Y%m%d}.csv"
              headers: {Authorization: READINGS_TOKEN}   # the value comes from this environment variable
              schedule: "0 6 * * *"
    """

    collection: str = Field(description="The collection whose FileImport reads the files (its inbox is produced).")
    url: str | None = Field(None, description="A URL template: {date} is the run's date (UTC), e.g. {date:%Y-%m-%d}.")
    urls: list[str] | None = Field(None, description="Several URLs (templates), fetched as one set.")
    file_name: str = Field("{name}", description="The file name in proc: {date}, {name} (the URL's last segment), {index}.")
    headers: dict[str, str] = Field(default_factory=dict,
                                    description="Header name -> the environment variable holding its value.")
    timeout: int | float = Field(60.0, description="Seconds to wait for the server, per request; more than 0.")
    name: str | None = Field(None, description="The job's name (default download_<collection>).")
    description: str | None = Field(None, description="The job's description.")

    def source_urls(self, context: dg.ComponentLoadContext) -> list[str]:
        keyed = ([("url", self.url)] if self.url else []) + [(f"urls[{i}]", u) for i, u in enumerate(self.urls or [])]
        if not keyed:
            raise _fail(context, "url", "a URL (or urls: a list of them)", None)
        for key, url in keyed:
            if urlsplit(url).scheme.lower() not in ("http", "https"):
                raise _fail(context, key, "an http:// or https:// URL", url)
        return [url for _, url in keyed]

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        _at_least(context, self, "timeout", 0, False)
        source = HttpSource(urls=self.source_urls(context), file_name=self.file_name,
                            headers=dict(self.headers), timeout=self.timeout)
        for header, variable in source.headers.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", variable):
                raise _fail(context, f"headers.{header}", "the name of an environment variable (its value is "
                            "the header's; never the value itself)", variable)
        for key, template in [("file_name", self.file_name)] + [("url", u) for u in source.urls]:
            try:
                render(template, date=run_date({}), url="http://x/name")
            except Core4Error as exc:
                raise ComponentDeclarationError(f"{_where(context)}: attributes.{key}: {exc}") from None
        properties = _properties(context, self)

        def fetch(context, folders: FolderResource) -> list[str]:
            return fetch_into_proc(folders, source, run_date(context.run.tags), log=context.log)

        shown = [mask_url(url) for url in source.urls]
        fetch.__doc__ = f"Fetch {', '.join(md_code(url) for url in shown)} into proc"
        job = download_job(
            self.name or f"download_{self.collection}", fetch,
            produces=inbox_key(_project(context), self.collection),
            description=self.description, properties=properties or None,
            source=source.urls,  # the URL patterns only: header values never leave the environment
        )
        return dg.Definitions(jobs=[job])


# -- a project's defs/ folder ---------------------------------------------------------------------


def defs_folder(project: str) -> str | None:
    """``<package>/defs`` of the importable package ``project`` when it exists."""
    spec = importlib.util.find_spec(project)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "defs")
    return folder if os.path.isdir(folder) else None


def defs_folder_definitions(project: str) -> dg.Definitions | None:
    """The Definitions of the components (and Python modules) in ``<project>/defs/``; None without one."""
    folder = defs_folder(project)
    if folder is None:
        return None
    from dagster.components.core.component_tree import ComponentTree

    module = importlib.import_module(f"{project}.defs")
    tree = ComponentTree.from_module(defs_module=module, project_root=Path(folder).parent.parent)
    return tree.build_defs()


def definitions_parts(defs: dg.Definitions | None) -> Mapping[str, list[Any]]:
    """jobs, sensors, schedules and assets of ``defs`` (empty lists for None)."""
    if defs is None:
        return {"jobs": [], "sensors": [], "schedules": [], "assets": []}
    return {"jobs": list(defs.jobs or []), "sensors": list(defs.sensors or []),
            "schedules": list(defs.schedules or []), "assets": list(defs.assets or [])}
