"""`coco serve` (the Dagster UI and daemon over every project) and `coco demo` (the flow once, headless)."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Iterator

from core4_pipelines.claims import pending_batches, scan_ready
from core4_pipelines.errors import PipelineError
from core4_pipelines.instance import instance_environment, write_instance
from core4_pipelines.limits import collect_job_limits
from core4_pipelines.project import project_settings
from core4_pipelines.workspace import write_workspace
from core4_resources.config import Settings, mask_url
from core4_resources.embedded import EmbeddedMongo
from core4_resources.mongo import MongoResource

MONGO_URL_ENV = "CORE4_OPTION_DEFAULT__mongo_url"
DEMO_PATTERN = r"readings-.*\.csv$"


@contextlib.contextmanager
def mongo_for(settings: Settings, say: Callable[[str], None]) -> Iterator[str]:
    """The configured MongoDB URL, or an embedded server under folder.root for the duration."""
    if settings.mongo_url:
        yield settings.mongo_url
        return
    storage = os.path.join(settings.folder.root, "mongo")
    with EmbeddedMongo(storage, log_path=os.path.join(settings.folder.root, "mongo.log")) as server:
        say(f"embedded MongoDB on {mask_url(server.url)} (data in {storage}, "
            f"user and password in {server.credentials_path})")
        yield server.url


def _dagster_executable() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "dagster")
    found = beside if os.access(beside, os.X_OK) else shutil.which("dagster")
    if not found:
        raise PipelineError("the `dagster` command is not installed next to this Python; reinstall core4-pipelines")
    return found


def serve(settings: Settings, host: str, port: int, say: Callable[[str], None] = print) -> int:
    """Run ``dagster dev`` over the projects in folder.home until interrupted; returns its exit code."""
    home = settings.folder.home
    if not home:
        raise PipelineError("folder.home is not set: pass --home DIR or set folder.home in your config")
    with mongo_for(settings, say) as mongo_url:
        env = dict(os.environ)
        env[MONGO_URL_ENV] = mongo_url
        env["CORE4_OPTION_folder__home"] = home
        env["CORE4_OPTION_folder__root"] = settings.folder.root
        limits, problems = collect_job_limits(home, env=env)
        for problem in problems:
            say(f"max_parallel not applied for {problem}")
        dagster_home = write_instance(settings, job_limits=limits)
        env.update(instance_environment(settings))
        workspace = os.path.join(dagster_home, "workspace.yaml")
        projects, skipped = write_workspace(home, workspace)
        for reason in skipped:
            say(f"skipped: {reason}")
        say(f"{len(projects)} projects from {home}: {', '.join(p.name for p in projects) or '(none)'}")
        command = [_dagster_executable(), "dev", "-w", workspace, "-h", host, "-p", str(port)]
        process = subprocess.Popen(command, env=env, start_new_session=True)
        say(f"Dagster UI: http://{host}:{port}  (MongoDB {mask_url(mongo_url)}; Ctrl-C stops everything)")
        return _wait_and_stop(process)


def _wait_and_stop(process: subprocess.Popen, grace: float = 30.0) -> int:
    """Wait for ``process``; on Ctrl-C or SIGTERM stop its whole process group."""
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return process.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        # Children of dagster dev (code servers, run workers) share its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def run_demo(settings: Settings, say: Callable[[str], None] = print, timeout: float = 120.0) -> dict:
    """Download the demo's samples, claim them with its sensor and import every batch, in process."""
    import dagster as dg

    home = settings.folder.home
    if not home or not os.path.isdir(os.path.join(home, "demo")):
        raise PipelineError(f"no demo project in folder.home {home!r}: pass --home projects")
    with mongo_for(settings, say) as mongo_url:
        os.environ[MONGO_URL_ENV] = mongo_url
        os.environ["CORE4_OPTION_folder__root"] = settings.folder.root
        os.environ["CORE4_OPTION_folder__home"] = home
        dagster_home = write_instance(settings)
        os.environ.update(instance_environment(settings))
        sys.path.insert(0, os.path.join(home, "demo"))
        defs = importlib.import_module("demo.definitions").defs
        with dg.DagsterInstance.from_config(dagster_home) as instance:
            download = defs.resolve_job_def("download_samples").execute_in_process(instance=instance)
            fetched = download.output_for_node("fetch_samples")
            say(f"downloaded {len(fetched)} files into proc (run {download.run_id})")
            imports = _import_until_empty(defs, instance, timeout, say)
        folders = defs.resources["folders"]
        # Outside a run the bound resource holds an EnvVar; read the URL from the cascade.
        mongo = MongoResource.from_settings(project_settings("demo"))
        run_ids = [r["run_id"] for r in imports]
        records = mongo.collection("readings").count_documents({"_job_id": {"$in": run_ids}})
        summary = {
            "files": sum(len(r["archives"]) for r in imports),
            "records": records,
            "runs": run_ids,
            "archives": [path for r in imports for path in r["archives"]],
            "mongo": mask_url(mongo_url),
            "database": mongo.database,
            "proc_left": len(folders.list_proc()),
        }
        return summary


def _import_until_empty(defs, instance, timeout: float, say) -> list[dict]:
    import dagster as dg

    sensor = defs.resolve_sensor_def("import_readings_proc_sensor")
    job = defs.resolve_job_def("import_readings")
    proc = defs.resources["folders"].proc_folder()
    deadline = time.monotonic() + timeout
    done: list[dict] = []
    while True:
        context = dg.build_sensor_context(instance=instance, resources=defs.resources)
        requests = sensor.evaluate_tick(context).run_requests or []
        for request in requests:
            result = job.execute_in_process(run_config=request.run_config, instance=instance, tags=request.tags)
            archives = [
                str(event.materialization.metadata["archive"].value)
                for event in result.get_asset_materialization_events()
            ]
            say(f"batch {request.run_key}: {len(archives)} files imported (run {result.run_id})")
            done.append({"run_id": result.run_id, "archives": archives})
        left = scan_ready(proc, DEMO_PATTERN, 0).ready or pending_batches(proc)
        if not requests and not left:
            return done
        if time.monotonic() > deadline:
            raise PipelineError(f"demo: files still waiting in {proc} after {timeout:g}s")
        if not requests:
            time.sleep(0.5)  # files younger than the sensor's min_age_seconds
