"""Downloads: files fetched through transfer into proc, where an import's sensor claims them.

:func:`download_to_proc` writes one file safely (hidden temp in transfer, visible when
complete, then ``move_proc``). :func:`download_job` makes a download a producer of an
import's inbox asset, so the asset graph shows ``inbox -> collection`` with the
download as the inbox's job; each run's materialization lists the files it delivered.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import dagster as dg

from core4_pipelines.import_assets import (
    ImportAssets,
    assets_of,
    delivered_materialization,
    inbox_spec,
    register,
    resolve_asset_job,
)
from core4_pipelines.properties import with_declared
from core4_pipelines.runtime import core4_compute
from core4_resources.folders import FolderResource, safe_move
from core4_resources.moves import download_temp_name, open_new_file

PRODUCES_METADATA = "core4/produces"


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


def download_job(
    name: str,
    fetch: Callable[..., Any],
    *,
    produces: Any,
    description: str | None = None,
    retry_policy: dg.RetryPolicy | None = None,
    tags: Mapping[str, str] | None = None,
    properties: Mapping[str, Any] | None = None,
) -> dg.JobDefinition:
    """A job running ``fetch`` that materializes the inbox of the import job ``produces``.

    ``fetch`` takes what an op takes (``context``, a ``config: SomeConfig``, resources such
    as ``folders: FolderResource``) and returns the paths it delivered into proc (e.g.
    those :func:`download_to_proc` returned). Its failures are retried per the job's
    ``attempts``/``error_time``, and it may ``defer()``, as in a ``core4_op``.
    """
    key = _inbox_of(produces)
    project = key.path[0]

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
        )],
        retry_policy=retry_policy,
        description=description or fetch.__doc__ or f"Fetch files into <proc>/{project}/",
    )(core4_compute(deliver))
    job = resolve_asset_job(
        name, [download], [], [key],
        description=description or f"Download files into the inbox {key.to_user_string()}",
        executor_def=dg.in_process_executor,
        metadata={PRODUCES_METADATA: key.to_user_string()},
        tags=dict(tags or {}),
    )
    rebuild = functools.partial(
        download_job, name, fetch, description=description, retry_policy=retry_policy, tags=tags,
        properties=properties,
    )
    register(job, download.node_def, ImportAssets(
        project=project, collection=None, assets=[download], produces=key, rebuild=rebuild,
    ))
    return with_declared(job, properties) if properties else job
