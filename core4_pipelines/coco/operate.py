"""`coco enqueue`, `coco runs`, `coco kill`, `coco restart`: operating runs through Dagster's GraphQL API.

``coco enqueue PROJECT.JOB key=value ...`` launches a job with arguments (values are
JSON, as core4 had them; anything that is not JSON is a string). A bare ``key`` goes
to the config of the op that has that field, ``OP.key`` to that op, a full path such
as ``ops.OP.config.key`` or ``resources.R.config.key`` where it says; a core4 property
(``priority=5``, ``attempts=3``) becomes a launch-time run tag. The same job with the
same arguments is refused while one is queued or running, unless ``--force``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from core4_pipelines.coco.dagster_api import FINISHED, IN_PROGRESS, DagsterAPI
from core4_pipelines.coco.errors import OperateError, RunNotStoppedError
from core4_pipelines.coco.run_table import format_table, run_rows
from core4_pipelines.errors import JobSettingsError
from core4_pipelines.tags import ARGS_TAG, IN_PROGRESS_STATUSES, JOB_TAG, MAX_RUNTIME_TAG, PRIORITY_TAG

_TOP_LEVEL = ("ops", "resources", "execution", "loggers")
_PROPERTY_TAGS = {"priority": PRIORITY_TAG, "wall_time": MAX_RUNTIME_TAG}
_LAUNCH_PROPERTIES = ("attempts", "error_time", "defer_time", "defer_max", "progress_interval", "zombie_time",
                      "zombie_action", "priority", "wall_time", "chain")


def parse_assignments(items: Iterable[str]) -> list[tuple[str, Any]]:
    pairs = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise OperateError(f"argument {item!r}: expected key=value (the value as JSON, e.g. n=5 or s='\"x\"')")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        pairs.append((key, value))
    return pairs


def _put(tree: dict, path: list[str], value: Any, shown: str) -> None:
    for part in path[:-1]:
        node = tree.setdefault(part, {})
        if not isinstance(node, dict):
            raise OperateError(f"argument {shown}: {part} is already set to a value, not a mapping")
        tree = node
    tree[path[-1]] = value


def build_launch(
    assignments: list[tuple[str, Any]], op_fields: Mapping[str, list[str]], project: str
) -> tuple[dict, dict]:
    """(run_config, launch tags) from ``key=value`` pairs and the job's ops with their config fields."""
    from core4_pipelines.properties import check_property, qualified_chain  # Dagster: not at `coco` start

    run_config: dict = {}
    tags: dict[str, str] = {}
    for key, value in assignments:
        shown = f"{key}={json.dumps(value)}"
        parts = key.split(".")
        if parts[0] in _TOP_LEVEL and len(parts) > 1:
            _put(run_config, parts, value, shown)
        elif len(parts) > 1 and parts[0] in op_fields:
            _put(run_config, ["ops", parts[0], "config", *parts[1:]], value, shown)
        elif len(parts) > 1:
            raise OperateError(f"argument {shown}: {parts[0]!r} is no op of this job (ops: {', '.join(op_fields)})")
        else:
            owners = [op for op, fields in op_fields.items() if key in fields]
            if len(owners) == 1:
                _put(run_config, ["ops", owners[0], "config", key], value, shown)
            elif len(owners) > 1:
                raise OperateError(f"argument {shown}: ops {', '.join(owners)} all take {key!r}; write OP.{key}=...")
            elif key in _LAUNCH_PROPERTIES:
                try:
                    checked = check_property(key, value, f"argument {shown}")
                except JobSettingsError as exc:
                    raise OperateError(str(exc)) from None
                if key == "chain":
                    text = ",".join(qualified_chain(project, checked))
                else:
                    text = json.dumps(checked)
                tags[_PROPERTY_TAGS.get(key, f"core4/{key}")] = text
            else:
                known = sorted({f for fields in op_fields.values() for f in fields})
                raise OperateError(
                    f"argument {shown}: no op of this job takes {key!r} (op config fields: "
                    f"{', '.join(known) or 'none'}; core4 properties: {', '.join(_LAUNCH_PROPERTIES)})"
                )
    return run_config, tags


def args_hash(qualified: str, run_config: Mapping) -> str:
    canonical = json.dumps({"job": qualified, "run_config": run_config}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def split_job(name: str) -> tuple[str, str]:
    project, sep, job = name.partition(".")
    if not sep or not project or not job:
        raise OperateError(f"{name!r}: expected PROJECT.JOB, e.g. demo.download_samples")
    return project, job


def _duplicate_message(qualified: str, run_id: str, status: str) -> str:
    return (f"{qualified} with the same arguments is already {status.lower()} (run {run_id}); "
            f"wait for it, or pass --force to enqueue another")


def enqueue_remote(api: DagsterAPI, qualified: str, assignments, force: bool, extra_tags: Mapping[str, str]) -> str:
    project, job = split_job(qualified)
    run_config, tags = build_launch(assignments, api.job_op_fields(project, job), project)
    digest = args_hash(qualified, run_config)
    if not force:
        for run in api.runs(statuses=IN_PROGRESS, tags={ARGS_TAG: digest}, limit=1):
            raise OperateError(_duplicate_message(qualified, run["runId"], run["status"]))
    return api.launch(project, job, run_config, {**tags, **extra_tags, ARGS_TAG: digest})


def _local_op_fields(job) -> dict[str, list[str]]:
    fields = {}
    for node in job.graph.nodes:
        schema = getattr(node.definition, "config_schema", None)
        config_type = schema.config_type if schema is not None else None
        fields[node.name] = sorted(getattr(config_type, "fields", None) or {})
    return fields


def enqueue_local(settings, qualified: str, assignments, force: bool, extra_tags, say=print) -> tuple[str, bool]:
    """Run the job in this process, recorded in the instance under DAGSTER_HOME."""
    import os

    import dagster as dg

    from core4_pipelines.coco.instance import (
        dagster_home,
        instance_environment,
        write_instance,
    )
    from core4_pipelines.coco.discovery import load_definitions
    from core4_pipelines.coco.serve import MONGO_URL_ENV, mongo_for

    project, job_name = split_job(qualified)
    home = settings.folder.home
    if not home or not os.path.isdir(os.path.join(home, project)):
        raise OperateError(f"no project {project!r} in folder.home {home!r}: pass --home")
    with mongo_for(settings, say) as mongo_url:
        os.environ[MONGO_URL_ENV] = mongo_url
        os.environ.update(instance_environment(settings))
        defs = load_definitions(os.path.join(home, project), project)
        try:
            job = defs.resolve_job_def(job_name)
        except dg.DagsterInvariantViolationError:
            names = sorted(j.name for j in defs.get_repository_def().get_all_jobs() if not j.name.startswith("__"))
            raise OperateError(f"project {project} has no job {job_name!r} (jobs: {', '.join(names)})") from None
        run_config, tags = build_launch(assignments, _local_op_fields(job), project)
        digest = args_hash(qualified, run_config)
        if not os.path.isfile(os.path.join(dagster_home(settings), "dagster.yaml")):
            write_instance(settings)  # keep the one `coco serve` wrote (it holds the run queue's limits)
        with dg.DagsterInstance.from_config(dagster_home(settings)) as instance:
            if not force:
                statuses = [dg.DagsterRunStatus(s) for s in IN_PROGRESS_STATUSES]
                busy = instance.get_runs(filters=dg.RunsFilter(tags={ARGS_TAG: digest}, statuses=statuses), limit=1)
                if busy:
                    raise OperateError(_duplicate_message(qualified, busy[0].run_id, busy[0].status.value))
            result = job.execute_in_process(
                run_config=run_config, instance=instance, raise_on_error=False,
                tags={**tags, **extra_tags, ARGS_TAG: digest},
            )
    return result.run_id, result.success


# -- commands -------------------------------------------------------------------------------


def _api(args) -> DagsterAPI:
    """--url, else where the running `coco serve` recorded it serves, else dagster.host/port."""
    if args.url:
        return DagsterAPI(args.url)
    from core4_pipelines.coco.state import served_url
    from core4_resources.config.settings import load_config

    return DagsterAPI(served_url(load_config())[0])


def _tags(items: Iterable[str]) -> dict[str, str]:
    tags = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OperateError(f"--tag {item!r}: expected KEY=VALUE")
        tags[key] = value
    return tags


def _wait(api: DagsterAPI, run_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = api.status(run_id)
        if status in FINISHED or time.monotonic() > deadline:
            return status
        time.sleep(1)


def cmd_enqueue(args) -> int:
    assignments = parse_assignments(args.arguments)
    if args.local:
        from core4_resources.config.settings import load_config

        run_id, success = enqueue_local(load_config(), args.job, assignments, args.force, _tags(args.tag))
        print(f"{args.job}: run {run_id} {'succeeded' if success else 'failed'} (in-process)")
        return 0 if success else 1
    api = _api(args)
    run_id = enqueue_remote(api, args.job, assignments, args.force, _tags(args.tag))
    print(f"enqueued {args.job}: run {run_id}  ({api.url}/runs/{run_id})")
    if not args.wait:
        return 0
    status = _wait(api, run_id, args.timeout)
    print(f"run {run_id}: {status}")
    return 0 if status == "SUCCESS" else 1


def cmd_runs(args) -> int:
    api = _api(args)
    statuses = [s.upper() for s in args.state or ()]
    tags = {JOB_TAG: f"{args.project}.{args.job}"} if args.project and args.job else None
    scan = args.limit if tags or not args.project else max(args.limit, 500)
    runs = api.runs(statuses=statuses, tags=tags, limit=scan)
    if args.project and not tags:
        runs = [r for r in runs if (r.get("repositoryOrigin") or {}).get("repositoryLocationName") == args.project]
    runs = runs[: args.limit]
    # The failure events only of the failed runs shown: loading events costs per run.
    failed = [r["runId"] for r in runs if r.get("status") == "FAILURE"]
    if failed:
        with_events = {r["runId"]: r for r in api.runs(run_ids=failed, limit=len(failed), failures=True)}
        runs = [with_events.get(r["runId"], r) for r in runs]
    rows = run_rows(runs)
    print(format_table(["RUN", "JOB", "STATUS", "CREATED (UTC)", "TIME", "INFO"], rows) if rows else "no runs")
    return 0


URL_HELP = "the Dagster webserver (default: where `coco serve` serves, else http://127.0.0.1:<dagster.port>)"

# How long `coco kill` waits for a starting run to be running (then stoppable the safe way).
STARTING_WAIT_SECONDS = 30.0


def kill(api: DagsterAPI, run_id: str) -> str:
    """Stop the run; what happened, as `coco kill` prints it.

    A run whose worker is gone (its code server was restarted, its host went down) cannot be
    stopped the safe way, and Dagster would keep it STARTED. Such a run is marked canceled
    right away (Dagster's policy MARK_AS_CANCELED_IMMEDIATELY), and the line says so.
    """
    try:
        return f"run {run_id}: {api.terminate(run_id).lower()}"
    except RunNotStoppedError as exc:
        if exc.status == "STARTING" and _left_starting(api, run_id):
            # Dagster stops no run while its worker is being started; once it runs, it can.
            return kill(api, run_id)
        status = api.mark_canceled(run_id)
        return (f"run {run_id}: {status.lower()}: its worker did not answer; marked canceled without "
                f"stopping it (the terminate failed: {exc.reason})")


def _left_starting(api: DagsterAPI, run_id: str, timeout: float = STARTING_WAIT_SECONDS) -> bool:
    """Whether the run left STARTING within ``timeout`` (a live worker picks it up in seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if api.status(run_id) != "STARTING":
            return True
    return False


def _is_job(target: str) -> bool:
    return "." in target  # run ids are hex and dashes; PROJECT.JOB has its dot


def cmd_kill(args) -> int:
    api = _api(args)
    if not _is_job(args.run_id):
        print(kill(api, api.resolve_run_id(args.run_id)))
        return 0
    split_job(args.run_id)
    runs = api.runs(statuses=IN_PROGRESS, tags={JOB_TAG: args.run_id}, limit=10000)
    if not runs:
        print(f"{args.run_id}: no queued or running run")
    for run in runs:
        try:
            print(kill(api, run["runId"]))
        except OperateError as exc:  # it finished meanwhile
            print(exc)
    return 0


def last_failed_run(api: DagsterAPI, qualified: str) -> str:
    """The newest failed run of ``qualified`` that waits for an operator (not one that ended by
    defer(): the instance launches that again by itself)."""
    split_job(qualified)
    for run in api.runs(statuses=["FAILURE"], tags={JOB_TAG: qualified}, limit=50):
        tags = {t["key"]: t["value"] for t in run.get("tags", [])}
        if tags.get("core4/state") not in ("deferred", "relaunched"):
            return run["runId"]
    raise OperateError(f"{qualified}: no failed run to restart among its last 50 failed runs")


def rejected_files_advice(run: Mapping) -> str | None:
    """For a run that failed because files went to the error folder: that, and how to put them
    back (re-executing it imports nothing: its batch is gone). None for any other run."""
    tags = {t["key"]: t["value"] for t in run.get("tags", [])}
    if tags.get("core4/state") != "rejected":
        return None
    retry = tags.get("core4/retry") or f"coco retry {(tags.get(JOB_TAG) or 'PROJECT').split('.')[0]}"
    return (f"run {run['runId'][:8]} failed on content: {tags.get('core4/message', 'files moved to the error folder')}.\n"
            f"Re-executing it would import nothing (those files are in the error folder, not in its batch).\n"
            f"Fix them, then: {retry} NAME ...   ({retry} lists them with their reasons;"
            f" the proc sensor imports what is put back). --force re-executes the run all the same.")


def cmd_restart(args) -> int:
    api = _api(args)
    run_id = last_failed_run(api, args.run_id) if _is_job(args.run_id) else api.resolve_run_id(args.run_id)
    advice = rejected_files_advice(api.run(run_id))
    if advice and not args.force:
        print(advice)
        return 1
    new_id = api.reexecute(run_id, "FROM_FAILURE" if args.from_failure else "ALL_STEPS")
    print(f"run {run_id} re-executed as run {new_id}  ({api.url}/runs/{new_id})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands on the `coco` parser."""
    url_help = URL_HELP
    p = sub.add_parser("enqueue", help="launch PROJECT.JOB with key=value arguments (JSON values)")
    p.add_argument("job", metavar="PROJECT.JOB")
    p.add_argument("arguments", nargs="*", metavar="KEY=VALUE",
                   help="op config (key, OP.key or ops.OP.config.key) or a core4 property (priority=5)")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="an extra run tag (repeatable)")
    p.add_argument("--force", action="store_true", help="enqueue even if the same job and arguments are active")
    p.add_argument("--local", action="store_true", help="run in this process instead of through the webserver")
    p.add_argument("--wait", action="store_true", help="wait for the run to finish; exit 1 unless it succeeded")
    p.add_argument("--timeout", type=float, default=3600, help="seconds --wait waits (default 3600)")
    p.add_argument("--url", help=url_help)
    p.set_defaults(run=cmd_enqueue)
    p = sub.add_parser("runs", help="list recent runs")
    p.add_argument("--project", help="only this project's runs")
    p.add_argument("--job", help="only this job's runs (with --project)")
    p.add_argument("--state", action="append", metavar="STATE",
                   help="queued, started, success, failure, canceled ... (repeatable)")
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--url", help=url_help)
    p.set_defaults(run=cmd_runs)
    p = sub.add_parser("kill", help="stop a queued or running run, or every one of PROJECT.JOB")
    p.add_argument("run_id", metavar="RUN_ID|PROJECT.JOB", help="a run id or a unique prefix of one, or a job")
    p.add_argument("--url", help=url_help)
    p.set_defaults(run=cmd_kill)
    p = sub.add_parser("restart", help="re-execute a run, or the last failed run of PROJECT.JOB "
                                       "(all steps, or --from-failure)")
    p.add_argument("run_id", metavar="RUN_ID|PROJECT.JOB", help="a run id or a unique prefix of one, or a job")
    p.add_argument("--from-failure", action="store_true", help="only the failed steps and what follows them")
    p.add_argument("--force", action="store_true", help="re-execute a run that failed on content too "
                                                        "(its files are in the error folder: see coco retry)")
    p.add_argument("--url", help=url_help)
    p.set_defaults(run=cmd_restart)
