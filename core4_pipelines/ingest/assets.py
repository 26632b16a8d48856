"""An import's place in Dagster's asset graph: inbox -> collection.

The **inbox** ``[project, <collection>_inbox]`` is the files matching the import's
pattern in ``<proc>/<project>/``: a download that delivers them materializes it, the
proc sensor observes its backlog. The **collection** ``[project, <collection>]``
(kind ``mongodb``) is materialized by the import once per batch, with a table of the
batch's files; its check ``no_rejected_files`` fails when a batch sent files to the
error folder. ``project_definitions`` adds these definitions to the project.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import dagster as dg

from core4_pipelines import _dagster
from core4_resources.files.names import printable_name

INBOX_SUFFIX = "_inbox"
REJECTED_CHECK = "no_rejected_files"
BAD_ROWS_CHECK = "no_bad_rows"
REJECTED_FILES_ACTIONS = ("fail", "warn")
# The UI renders the file table of a batch; beyond this many rows the rest is counted only.
MAX_TABLE_ROWS = 2000

FILE_TABLE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("file", "string", description="the file's name"),
        dg.TableColumn("outcome", "string", description="imported, rejected, returned, vanished or kept"),
        dg.TableColumn("records", "int", description="records written (and found from an earlier attempt)"),
        dg.TableColumn("bytes", "int"),
        dg.TableColumn("moved_to", "string", description="archive path, error folder path or proc"),
        dg.TableColumn("reason", "string", description="why it was not imported"),
    ]
)


def collection_key(project: str, collection: str) -> dg.AssetKey:
    return dg.AssetKey([project, collection])


def inbox_key(project: str, collection: str) -> dg.AssetKey:
    return dg.AssetKey([project, f"{collection}{INBOX_SUFFIX}"])


def inbox_spec(
    key: dg.AssetKey, *, waiting_for: str, metadata: dict[str, Any], deps: Iterable[dg.AssetKey] = ()
) -> dg.AssetSpec:
    """The inbox of an import: external (the import's own) or materialized by a download, then
    downstream of the download's source (``deps``). ``waiting_for`` is plain text, shown as written."""
    project = key.path[0]
    folder = f"<proc>/{project}/"
    return dg.AssetSpec(
        key,
        deps=list(deps),
        group_name=project,
        kinds={"folder"},
        description=md_text(
            f"Files waiting in {folder} {waiting_for}. The proc sensor observes the backlog: "
            "files, bytes, age of the oldest, claimed batches."
        ),
        metadata={"folder": folder, **metadata},
    )


# The UI renders descriptions as Markdown (GitHub's flavour, raw HTML dropped): "<proc>" would be
# taken for a tag and vanish, "\." lose its backslash, "*" or "~" start emphasis or strike-through.
_MD_PUNCTUATION = re.compile(r"[\\`*\[\]<>~|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|&(?=#?[A-Za-z0-9]+;)")
_MD_LINE_START = re.compile(r"^( {0,3})([#+=-]|\d+(?=[.)]))", re.MULTILINE)


def md_text(text: str) -> str:
    """Plain ``text`` as Markdown that renders as written: what Markdown would take for markup escaped."""
    escaped = _MD_PUNCTUATION.sub(lambda m: "\\" + m.group(0), text)
    # A line starting with "#", "-", "+", "=" or "1." would become a heading, list or rule.
    return _MD_LINE_START.sub(lambda m: m.group(1) + ("\\" + m.group(2) if not m.group(2).isdigit()
                                                      else m.group(2) + "\\"), escaped)


def md_code(text: str) -> str:
    """``text`` as a Markdown code span: shown as written, in a fixed font (a URL, a pattern)."""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def freshness_policy(freshness: timedelta | float | None) -> dg.FreshnessPolicy | None:
    if freshness is None:
        return None
    window = freshness if isinstance(freshness, timedelta) else timedelta(seconds=float(freshness))
    if window <= timedelta(0):
        raise ValueError(f"freshness must be a positive duration, got {freshness!r}")
    return dg.FreshnessPolicy.time_window(fail_window=window)


def collection_spec(
    project: str,
    collection: str,
    *,
    job_name: str,
    reader: str,
    pattern: str | None,
    model: type | None,
    freshness: timedelta | float | None,
    mode: str = "insert",
    keys: Sequence[str] = (),
) -> dg.AssetSpec:
    metadata: dict[str, Any] = {
        "collection": collection,
        "import": job_name,
        "reader": reader,
        "pattern": pattern or "any visible file",
        "mode": mode + (f" on {', '.join(keys)}" if keys else ""),
    }
    if model is not None:
        metadata["record_model"] = f"{model.__module__}.{model.__qualname__}"
    if freshness is not None:
        window = freshness if isinstance(freshness, timedelta) else timedelta(seconds=float(freshness))
        metadata["freshness"] = str(window)
    return dg.AssetSpec(
        collection_key(project, collection),
        deps=[inbox_key(project, collection)],
        group_name=project,
        kinds={"mongodb"},
        description=(
            f"The MongoDB collection {collection} of project {project}: the records of the files "
            f"{job_name} imports, each with _src (its file) and _job_id (the run). Materialized once "
            f"per batch; the materialization lists the batch's files."
        ),
        metadata=metadata,
        freshness_policy=freshness_policy(freshness),
    )


def bad_rows_check_spec(key: dg.AssetKey, action: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        BAD_ROWS_CHECK, asset=key,
        description=(f"Warns when the last batch had bad rows ("
                     f"{'diverted to the error folder' if action == 'divert' else 'skipped'}; each file's count and "
                     "first reasons in the metadata). A file past max_bad_rows is rejected whole."),
    )


def bad_rows_check_result(key: dg.AssetKey, batch_id: str, rows: Sequence[FileRow]) -> dg.AssetCheckResult:
    bad = [r for r in rows if r.bad_rows]
    total = sum(r.bad_rows for r in bad)
    return dg.AssetCheckResult(
        asset_key=key, check_name=BAD_ROWS_CHECK, passed=total == 0, severity=dg.AssetCheckSeverity.WARN,
        metadata={"batch": batch_id, "bad_rows": total,
                  "files": dg.MetadataValue.md("\n".join(f"- {md_code(r.name)}: {md_text(r.reason)}" for r in bad[:50])
                                               or "none")},
    )


def rejected_check_spec(key: dg.AssetKey, action: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        REJECTED_CHECK,
        asset=key,
        blocking=action == "fail",
        description=(
            "Fails while files of this import wait in the error folder (each file and its reason in the "
            "metadata), until they are put back into proc (`coco retry`) or removed; "
            + ("a batch that rejected files fails its run too." if action == "fail" else "a warning: the run succeeds.")
        ),
    )


def reader_name(read: Callable) -> str:
    target = getattr(read, "func", read)  # a functools.partial names its function
    name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
    return name if target is read else f"{name} (with {', '.join(f'{k}={v!r}' for k, v in read.keywords.items())})"


@dataclass
class FileRow:
    """One file of a batch, as its materialization and check show it."""

    name: str
    outcome: str
    records: int = 0
    bytes: int = 0
    moved_to: str = ""
    reason: str = ""
    bad_rows: int = 0


def _table(rows: Sequence[FileRow]) -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "file": printable_name(r.name),
                    "outcome": r.outcome,
                    "records": r.records,
                    "bytes": r.bytes,
                    "moved_to": printable_name(r.moved_to),
                    "reason": r.reason,
                }
            )
            for r in rows[:MAX_TABLE_ROWS]
        ],
        schema=FILE_TABLE_SCHEMA,
    )


def batch_materialization(
    key: dg.AssetKey, batch_id: str, rows: Sequence[FileRow], *, duplicates: int,
    counts: Mapping[str, int] | None = None,
) -> dg.MaterializeResult:
    """The collection after one batch: its files, records, and (a mode other than insert) what
    became of them: ``inserted``, ``updated``, ``unchanged``, ``deleted`` documents."""
    imported = [r for r in rows if r.outcome == "imported"]
    metadata: dict[str, Any] = {
        "batch": batch_id,
        "files": len(rows),
        "files_imported": len(imported),
        "files_rejected": sum(1 for r in rows if r.outcome == "rejected"),
        "files_duplicate": sum(1 for r in rows if r.outcome == "duplicate"),
        "bad_rows": sum(r.bad_rows for r in imported),
        "records": sum(r.records for r in imported),
        "duplicates_skipped": duplicates,
        "bytes": sum(r.bytes for r in imported),
        **(counts or {}),
        "file_table": _table(rows),
    }
    if len(rows) > MAX_TABLE_ROWS:
        metadata["file_table_note"] = f"the first {MAX_TABLE_ROWS} of {len(rows)} files are listed"
    return dg.MaterializeResult(asset_key=key, metadata=metadata, tags={"core4/batch": batch_id})


@dataclass
class InError:
    """The files of an import waiting in the error folder: what ``no_rejected_files`` reflects."""

    total: int = 0
    files: list[tuple[str, str]] = field(default_factory=list)  # (name, reason), the first few
    folder: str = ""
    retry: str = ""  # the command that puts fixed files back, e.g. "coco retry demo"


# Reasons read for the check's listing; the rest of a large error folder is counted only.
MAX_LISTED_IN_ERROR = 50


def rejected_check_result(
    key: dg.AssetKey, batch_id: str, rows: Sequence[FileRow], action: str, in_error: InError | None = None
) -> dg.AssetCheckResult:
    """``no_rejected_files`` after a batch: failed while files of this import wait in the error
    folder -- this batch's, or earlier ones' not yet put back -- each named with its reason.
    ERROR (with ``action="fail"``) when this batch rejected files, else a warning: a good batch
    is not failed for an old file, and the check still does not turn green while one waits."""
    in_error = in_error or InError()
    rejected = [r for r in rows if r.outcome == "rejected"]
    moved = {os.path.basename(r.moved_to) for r in rejected}
    earlier = [(name, reason) for name, reason in in_error.files if name not in moved]
    earlier_total = max(in_error.total - len(rejected), len(earlier))
    waiting = len(rejected) + earlier_total
    metadata: dict[str, Any] = {"batch": batch_id, "rejected": len(rejected), "files": len(rows),
                                "waiting_in_error": waiting}
    if rejected:
        metadata["rejected_files"] = _table(rejected)
    if waiting:
        listed = [(printable_name(os.path.basename(r.moved_to) or r.name), r.reason) for r in rejected] + [
            (printable_name(name), reason) for name, reason in earlier]
        lines = [f"- `{name}`: {reason.removeprefix(name + ': ')}" for name, reason in listed[:MAX_LISTED_IN_ERROR]]
        if waiting > len(lines):
            lines.append(f"- ... and {waiting - len(lines)} more")
        if in_error.retry:
            lines.append(f"\nFixed? Put them back into proc: `{in_error.retry} NAME...` (or `--all`)")
        # Also as plain text: the check's list view shows text, the detail view the table.
        metadata["reasons"] = dg.MetadataValue.md("\n".join(lines))
    if rejected:
        description = f"{len(rejected)} of {len(rows)} files of batch {batch_id} were moved to the error folder"
        if earlier_total:
            description += f"; {earlier_total} more from earlier batches wait there"
    elif earlier_total:
        description = (f"{earlier_total} files of this import wait in the error folder {in_error.folder}: "
                       f"{', '.join(printable_name(name) for name, _ in earlier[:5])}"
                       + (", ..." if earlier_total > 5 else ""))
    else:
        description = f"no file of batch {batch_id} was rejected" if rows else "no file to import"
        description += "; none waits in the error folder"
    return dg.AssetCheckResult(
        check_name=REJECTED_CHECK,
        asset_key=key,
        passed=not waiting,
        severity=dg.AssetCheckSeverity.ERROR if rejected and action == "fail" else dg.AssetCheckSeverity.WARN,
        description=description,
        metadata=metadata,
    )


def delivered_materialization(key: dg.AssetKey, paths: Iterable[str], sizes: Mapping[str, int]) -> dg.MaterializeResult:
    """What a download delivered into the inbox: the files, their bytes."""
    paths = list(paths)
    rows = [dg.TableRecord({"file": printable_name(p), "bytes": sizes.get(p, 0)}) for p in paths[:MAX_TABLE_ROWS]]
    return dg.MaterializeResult(
        asset_key=key,
        metadata={
            "files": len(paths),
            "bytes": sum(sizes.values()),
            "delivered": dg.MetadataValue.table(
                records=rows,
                schema=dg.TableSchema(columns=[dg.TableColumn("file", "string"), dg.TableColumn("bytes", "int")]),
            ),
        },
    )


# -- what project_definitions adds to a project -------------------------------------------


@dataclass
class ImportAssets:
    """The definitions behind one import (or download) job, and how to build it again for
    another project or freshness (``project_definitions`` does, from the configuration)."""

    project: str
    collection: str | None
    assets: list[Any] = field(default_factory=list)  # AssetsDefinitions, AssetSpecs, checks
    inbox: dg.AssetSpec | None = None  # the external inbox, unless a download materializes it
    produces: dg.AssetKey | None = None  # the inbox a download materializes
    rebuild: Callable[..., dg.JobDefinition] | None = None
    freshness: timedelta | float | None = None


# Carried by the job's asset op itself: every copy of the job (properties applied, retargeted)
# has the same op, and nothing is kept beside the definitions.
_IMPORT_ASSETS_ATTRIBUTE = "core4_import_assets"


def register(job: dg.JobDefinition, op: Any, assets: ImportAssets) -> dg.JobDefinition:
    setattr(op, _IMPORT_ASSETS_ATTRIBUTE, assets)
    return job


def assets_of(job: Any) -> ImportAssets | None:
    """What :func:`register` put on ``job``'s op (None for a job not built by import_job/download_job)."""
    if not isinstance(job, dg.JobDefinition):
        return None
    for node_def in job.graph.node_defs:
        found = getattr(node_def, _IMPORT_ASSETS_ATTRIBUTE, None)
        if isinstance(found, ImportAssets):
            return found
    return None


def resolve_asset_job(
    name: str, assets: list[Any], checks: Sequence[Any], selection: Sequence[dg.AssetKey], **job_kwargs: Any
) -> dg.JobDefinition:
    """An asset job resolved now: a plain ``JobDefinition`` that runs, is targeted by sensors
    and takes job properties like any op job (``project_definitions`` adds its assets)."""
    job = dg.define_asset_job(name, selection=list(selection), **job_kwargs)
    # Specs (the external inbox) stay out: the job's graph only needs what it executes.
    defined = [a for a in assets if not isinstance(a, dg.AssetSpec)]
    needed = {key for a in [*defined, *checks] for key in a.required_resource_keys} - {"io_manager"}
    placeholders = {key: dg.ResourceDefinition.none_resource() for key in needed}
    # The placeholders go again: the job's resources come from project_definitions (or a
    # test's execute_in_process), as for an op job declared without resources.
    return _dagster.resolve_asset_job(job, [*defined, *checks], placeholders)
