"""Where the library reaches into Dagster's private API, each use with its reason.

Dagster's internals change between minor releases: a use belongs here only where its
public API has no way to do the thing, so that an upgrade has one file to check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def failure_without_stack(message: str, kind: str = "RejectedFiles") -> Exception:
    """An exception that fails the step with ``message`` alone: no stack trace in the run page.

    For a data error (a file's content refused) the stack is the framework's and ours, of no
    use to the operator, who needs the file, the line and what to do. ``dg.Failure`` always
    carries the stack of where it was raised (the UI shows any non-empty stack), and there is
    no public way to leave it out. Dagster serializes a ``DagsterUserCodeProcessError`` with a
    single error info as that info itself (``serializable_error_info_from_exc_info``), so an
    info with an empty stack is shown as the message only. Being a ``DagsterError``, it also
    passes the op's retry policy by, as ``Failure(allow_retries=False)`` does: a bad file
    does not get better by retrying.
    """
    from dagster._core.errors import DagsterUserCodeProcessError
    from dagster._utils.error import SerializableErrorInfo

    info = SerializableErrorInfo(message=message if message.endswith("\n") else message + "\n", stack=[],
                                 cls_name=kind)
    return DagsterUserCodeProcessError(message, user_code_process_error_infos=[info])


def report_engine_event(
    instance: Any, run: Any, message: str, *, level: int, metadata: Mapping[str, float | int | str]
) -> None:
    """An engine event in ``run``'s log at ``level``, with ``metadata`` shown beside it.

    ``DagsterInstance.report_engine_event`` logs at INFO only; a zombie flagged by the monitor
    is an ERROR in the run's log, where the operator filters for errors. Read from Dagster
    1.13.27: ``report_dagster_event(event, run_id, log_level)`` with an ``EngineEventData``.
    """
    import dagster as dg
    from dagster._core.events import EngineEventData

    data = EngineEventData({key: dg.MetadataValue.text(value) if isinstance(value, str)
                            else dg.MetadataValue.float(float(value)) for key, value in metadata.items()})
    event = dg.DagsterEvent(event_type_value=dg.DagsterEventType.ENGINE_EVENT.value, job_name=run.job_name,
                            message=message, event_specific_data=data)
    instance.report_dagster_event(event, run_id=run.run_id, log_level=level)


def derive_job(job: Any, **changes: Any) -> Any:
    """A copy of ``job`` with ``changes`` (tags, run_tags, metadata, op_retry_policy, resource_defs ...).

    Dagster 1.13.27 has no public way to give a built job more tags or a retry policy:
    ``JobDefinition`` offers ``with_hooks``, ``with_metadata``, ``with_top_level_resources``,
    each a call of its private ``_copy``, and none for tags. Rebuilding through the public
    ``graph.to_job(...)`` would lose what ``_copy`` keeps: an asset job's asset layer and
    selection, the author's original config argument, whether resources were given
    explicitly. So the properties of a job (its tags, retries) go through ``_copy`` here,
    and ``tests/test_dagster_private.py`` checks that a derived job keeps all of that.
    """
    return job._copy(**changes)


def explicit_run_tags(job: Any) -> Mapping[str, str] | None:
    """The run tags ``job`` was built with (``run_tags=``), None where its tags are its run tags.

    The public ``job.run_tags`` cannot tell the two apart, and a derived job needs to: with
    explicit run tags, Dagster puts those on runs instead of ``tags``.
    """
    return job._run_tags


def resolve_asset_job(job: Any, assets: Sequence[Any], resource_defs: Mapping[str, Any]) -> Any:
    """``define_asset_job``'s job resolved against ``assets`` alone, without its resources.

    The public way (``Definitions(...).resolve_job_def``) demands every resource now; an
    import job's resources are bound later by ``project_definitions`` (or a test's
    ``execute_in_process``). Resolved on the job's own asset graph with placeholder
    resources, which are dropped again, as for an op job declared without resources.
    Read from Dagster 1.13.27 (``AssetGraph.from_assets``, ``UnresolvedAssetJobDefinition.resolve``).
    """
    from dagster._core.definitions.assets.graph.asset_graph import AssetGraph

    resolved = job.resolve(asset_graph=AssetGraph.from_assets(list(assets)), resource_defs=dict(resource_defs))
    return resolved._copy(resource_defs={}, _was_explicitly_provided_resources=False)


def run_worker_health(status: str, message: str | None = None) -> Any:
    """A run launcher's answer to ``check_run_worker_health``: ``status`` one of ``RUNNING``,
    ``SUCCESS``, ``FAILED``, ``UNKNOWN`` (Dagster's ``WorkerStatus``).

    A launcher (here the Celery one's subclass, core4_pipelines/engine/launcher.py) answers in
    Dagster's types, which only ``dagster._core.launcher`` exports. Read from Dagster 1.13.27.
    """
    from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

    return CheckRunHealthResult(WorkerStatus[status], message)


def worker_status(result: Any) -> str:
    """The ``WorkerStatus`` name of a health check's result (see :func:`run_worker_health`)."""
    return result.status.name


def execute_run_args(packed: Any) -> Any:
    """The ``ExecuteRunArgs`` a Celery run task receives from Dagster's Celery run launcher
    (packed with ``pack_value``), unpacked. Dagster's run execution entry points and their
    argument types are in ``dagster._cli.api`` and ``dagster._grpc.types`` only; dagster_celery's
    own task uses the same. Read from Dagster 1.13.27."""
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import unpack_value

    return unpack_value(packed, as_type=ExecuteRunArgs)


def execute_run_here(args: Any) -> int:
    """Execute the run of ``args`` in this process, as dagster_celery's task does: its exit code."""
    from dagster import DagsterInstance
    from dagster._cli.api import _execute_run_command_body

    with DagsterInstance.get() as instance:
        return _execute_run_command_body(
            instance=instance, run_id=args.run_id, write_stream_fn=lambda _event: None,
            set_exit_code_on_failure=True if args.set_exit_code_on_failure is None else args.set_exit_code_on_failure)


def execute_run_environment(args: Any) -> dict[str, str]:
    """The environment that makes ``python -m dagster api execute_run`` (Dagster's run worker
    command, the one its default launcher starts) execute the run of ``args``: it reads them,
    serialized, from DAGSTER_EXECUTE_RUN_ARGS (kept out of the command line, which every user
    of the machine can read)."""
    from dagster._serdes import serialize_value

    return {"DAGSTER_EXECUTE_RUN_ARGS": serialize_value(args)}
