"""Downloads: files fetched through transfer into proc, where an import's sensor claims them.

:func:`download_to_proc` writes one file safely (hidden temp in transfer, visible when
complete, then ``move_proc``). :func:`download_job` makes a download a producer of an
import's inbox asset, downstream of the download's source (an external asset: where the
files come from), so the asset graph shows ``source -> inbox -> collection`` with the
download as the inbox's job; each run's materialization lists the files it delivered.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import dagster as dg

from core4_pipelines.ingest.assets import (
    INBOX_SUFFIX,
    ImportAssets,
    assets_of,
    delivered_materialization,
    inbox_spec,
    md_code,
    md_text,
    register,
    resolve_asset_job,
)
from core4_pipelines.properties import with_declared
from core4_pipelines.supervise.runtime import core4_compute
from core4_resources.config.settings import mask_url
from core4_resources.files.folders import FolderResource, safe_move
from core4_resources.files.moves import download_temp_name, open_new_file

PRODUCES_METADATA = "core4/produces"
SOURCE_SUFFIX = "_source"
# What a download's ``source=`` may be: its URL (pattern), several, or an asset of its own.
Source = str | Sequence[str] | dg.AssetSpec | None


def download_to_proc(
    folders: FolderResource,
    filename: str,
    write: Callable[[BinaryIO], None],
    *,
    base: str | None = None,
    on_conflict: str = "rename",
) -> str:
    """Download through transfer into proc: ``write(handle)`` fills the file.

    The bytes land under a hidden name in transfer, become visible there only
    when complete, and then move into proc (``move_proc``) where the sensor
    will claim them. Returns the path in proc.
    """
    target = folders.make_transfer(filename, base=base)
    folder, final_name = os.path.split(target)
    partial = os.path.join(folder, download_temp_name(final_name))
    try:
        with open_new_file(partial) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        in_transfer = safe_move(partial, folder, name=final_name, on_conflict=on_conflict)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return folders.move_proc(in_transfer, base=base, on_conflict=on_conflict)


def _inbox_of(produces: Any) -> dg.AssetKey:
    if isinstance(produces, dg.AssetKey):
        return produces
    found = assets_of(produces)
    if found is None or found.inbox is None:
        raise TypeError(
            f"download_job(produces=...) takes an import job built by import_job() (or the inbox's "
            f"AssetKey), got {produces!r}"
        )
    return found.inbox.key


def _sizes(paths: list[str]) -> Mapping[str, int]:
    sizes = {}
    for path in paths:
        try:
            sizes[path] = os.stat(path).st_size
        except OSError:  # claimed by the sensor already (moved into a batch): size unknown here
            sizes[path] = 0
    return sizes


def source_key(inbox: dg.AssetKey) -> dg.AssetKey:
    """The source of the download into ``inbox``: ``[project, <collection>_source]``."""
    *prefix, last = inbox.path
    return dg.AssetKey([*prefix, last.removesuffix(INBOX_SUFFIX) + SOURCE_SUFFIX])


def _first_paragraph(text: str | None) -> str:
    return inspect.cleandoc(text).split("\n\n")[0].replace("\n", " ") if text else ""


def source_spec(source: Source, *, download: str, fetch: Callable[..., Any], inbox: dg.AssetKey) -> dg.AssetSpec:
    """The external asset a download fetches from, upstream of its inbox. ``source`` is the
    remote's URL or URL pattern (or several; a password in one is masked), or the
    ``AssetSpec`` itself; without one it is the download's Python ``fetch`` function."""
    if isinstance(source, dg.AssetSpec):
        return source
    key, project = source_key(inbox), inbox.path[0]
    if source is None:
        function = getattr(fetch, "func", fetch)  # a functools.partial names its function
        where = f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', type(function).__name__)}"
        doc = _first_paragraph(getattr(function, "__doc__", None))
        return dg.AssetSpec(
            key, group_name=project, kinds={"python"},
            description=(f"Where {md_text(download)} fetches its files from, in Python ({md_code(where)})"
                         + (f": {md_text(doc)}" if doc else "")),
            metadata={"download": download, "fetch": where},
        )
    given = [source] if isinstance(source, str) else list(source) if isinstance(source, (list, tuple)) else []
    if not given or not all(isinstance(p, str) and p for p in given):
        raise TypeError(f"download_job({download}): source takes a URL (pattern), a list of them or an AssetSpec, "
                        f"got {source!r}")
    patterns = [mask_url(p) for p in given]
    schemes = {urlsplit(p).scheme.lower() for p in patterns}
    kinds = {"http" if s == "https" else s for s in schemes if s}
    return dg.AssetSpec(
        key, group_name=project, kinds=kinds or None,
        description=f"Where {md_text(download)} fetches its files from: {', '.join(md_code(p) for p in patterns)}",
        metadata={"download": download,
                  **({"source": patterns[0]} if len(patterns) == 1 else {"sources": dg.MetadataValue.json(patterns)})},
    )


def download_job(
    name: str,
    fetch: Callable[..., Any],
    *,
    produces: Any,
    description: str | None = None,
    retry_policy: dg.RetryPolicy | None = None,
    tags: Mapping[str, str] | None = None,
    properties: Mapping[str, Any] | None = None,
    source: Source = None,
) -> dg.JobDefinition:
    """A job running ``fetch`` that materializes the inbox of the import job ``produces``.

    ``fetch`` takes what an op takes (``context``, a ``config: SomeConfig``, resources such
    as ``folders: FolderResource``) and returns the paths it delivered into proc (e.g.
    those :func:`download_to_proc` returned). Its failures are retried per the job's
    ``attempts``/``error_time``, and it may ``defer()``, as in a ``core4_op``.

    ``source`` is where the files come from, an external asset upstream of the inbox
    (``[project, <collection>_source]``): the remote's URL or URL pattern, e.g.
    ``"https://example.org/sales/{date:%Y-%m-%d}.csv"`` or ``"sftp://host/out/*.csv"`` (or a
    list of them), shown in its metadata; or an ``AssetSpec`` of your own. Without it the
    source is described by ``fetch`` (its name and docstring). Never put a secret in it.
    """
    key = _inbox_of(produces)
    project = key.path[0]
    origin = source_spec(source, download=name, fetch=fetch, inbox=key)

    @functools.wraps(fetch)  # Dagster reads fetch's parameters: config and resources
    def deliver(*args, **kwargs):
        delivered = [str(p) for p in (fetch(*args, **kwargs) or [])]
        return delivered_materialization(key, delivered, _sizes(delivered))

    op_name = f"{name}_fetch"
    download = dg.multi_asset(
        name=op_name,
        specs=[inbox_spec(
            key,
            waiting_for=f"for their import, delivered by {name}" + (f": {description}" if description else ""),
            metadata={"download": name},
            deps=[origin.key],
        )],
        retry_policy=retry_policy,
        # A description given (or fetch's docstring) is the user's Markdown; ours is escaped.
        description=description or fetch.__doc__ or md_text(f"Fetch files into <proc>/{project}/"),
    )(core4_compute(deliver))
    job = resolve_asset_job(
        name, [download], [], [key],
        description=description or md_text(f"Download files into the inbox {key.to_user_string()}"),
        executor_def=dg.in_process_executor,
        metadata={PRODUCES_METADATA: key.to_user_string()},
        tags=dict(tags or {}),
    )
    rebuild = functools.partial(
        download_job, name, fetch, description=description, retry_policy=retry_policy, tags=tags,
        properties=properties, source=source,
    )
    register(job, download.node_def, ImportAssets(
        project=project, collection=None, assets=[download, origin], produces=key, rebuild=rebuild,
    ))
    return with_declared(job, properties) if properties else job
