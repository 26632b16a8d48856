"""Live processes for the benchmarks: a generated project home, `coco serve`, bare `dagster dev`.

Everything binds 127.0.0.1 on free ports, runs in its own session (process
group) and is stopped when the ``with`` block ends, also when it raises: the
group is signalled, then any descendant still alive is killed by its pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from core4_resources.mongo.embedded.server import free_port

BIN = os.path.dirname(sys.executable)
READY_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename } }
    }
  }
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
}
"""
NEEDED_DAEMONS = {"SENSOR", "QUEUED_RUN_COORDINATOR"}


def bench_environment(config_file: str, **extra: str) -> dict[str, str]:
    """This environment without CORE4_OPTION_* / DAGSTER_HOME, reading only ``config_file``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CORE4_OPTION_") and k != "DAGSTER_HOME"
    }
    env["CORE4_CONFIG"] = config_file
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def write_project(home: str, name: str, **sensor_options: int) -> str:
    """A project made by ``coco init`` (the scaffold: a FileImport of CSV files into ``records``).

    With ``sensor_options`` (for proc_folder_sensor: batch_size, max_batches_per_tick,
    minimum_interval_seconds, ...) its defs folder (the YAML import) is replaced by the
    same import in Python, whose sensor takes every option.
    """
    import shutil

    from core4_pipelines.coco.scaffold import init_project

    folder = init_project(name, home)
    if sensor_options:
        component = os.path.join(folder, name, "defs")
        if not os.path.isdir(component):
            raise RuntimeError(f"{component}: the scaffold changed; cannot replace its import with sensor options")
        shutil.rmtree(component)
        options = "".join(f", {key}={value!r}" for key, value in sorted(sensor_options.items()))
        with open(os.path.join(folder, name, "definitions.py"), "w", encoding="utf-8") as handle:
            handle.write(
                "from core4_pipelines import import_job, proc_folder_sensor, project_definitions, read_csv\n\n"
                f"import_records = import_job(\"import_records\", read=read_csv, collection=\"records\", "
                f"pattern=r\".*\\.csv$\", project={name!r})\n"
                f"defs = project_definitions({name!r}, jobs=[import_records], "
                f"sensors=[proc_folder_sensor(import_records{options})])\n"
            )
    return folder


def write_trivial_locations(folder: str, count: int) -> str:
    """``count`` code locations with one trivial job each, and the workspace.yaml naming them."""
    os.makedirs(folder, exist_ok=True)
    entries = []
    for index in range(count):
        module = os.path.join(folder, f"location_{index:02d}.py")
        with open(module, "w", encoding="utf-8") as handle:
            handle.write(
                "import dagster as dg\n\n\n@dg.op\ndef nothing():\n    pass\n\n\n"
                "@dg.job\ndef trivial():\n    nothing()\n\n\ndefs = dg.Definitions(jobs=[trivial])\n"
            )
        entries.append(f"  - python_file:\n      relative_path: {module}\n      location_name: location_{index:02d}\n")
    workspace = os.path.join(folder, "workspace.yaml")
    with open(workspace, "w", encoding="utf-8") as handle:
        handle.write("load_from:\n" + "".join(entries))
    return workspace


# -- processes -------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(name))
    return tree


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    tree = _children()
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(tree.get(current, []))
    return found


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def pss_bytes(pid: int) -> int | None:
    """Proportional set size of one process, from /proc/<pid>/smaps_rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def role(command: str) -> str:
    if "secantusd" in command:
        return "embedded MongoDB"
    if "dagster._daemon" in command or "dagster-daemon" in command:
        return "daemon"
    if "dagster_webserver" in command or "dagster-webserver" in command:
        return "webserver"
    if "code-server start" in command:
        return "code server proxy"
    if "api grpc" in command:
        return "code server"
    if "dagster dev" in command:
        return "dagster dev"
    if "coco" in command:
        return "coco serve"
    return "other"


def memory_snapshot(pid: int) -> dict:
    """Total PSS of ``pid`` and its descendants, and the share of each role."""
    processes = []
    for child in descendants(pid):
        pss = pss_bytes(child)
        if pss is None:
            continue
        command = command_line(child)
        processes.append({"pid": child, "role": role(command), "pss": pss, "command": command[:160]})
    by_role: dict[str, int] = {}
    for process in processes:
        by_role[process["role"]] = by_role.get(process["role"], 0) + process["pss"]
    return {"total": sum(p["pss"] for p in processes), "by_role": by_role, "processes": processes}


def _stop(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the whole tree at once (not the slow cascade), SIGKILL after ``grace``."""
    tracked = set(descendants(process.pid))
    for pid in tracked:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if process.poll() is None:
            tracked |= set(descendants(process.pid))  # a process started while stopping
        if process.poll() is not None and not any(_alive(pid) for pid in tracked - {process.pid}):
            break
        time.sleep(0.2)
    for pid in sorted(tracked):
        if pid != process.pid and _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str], log_path: str, cwd: str, grace: float = 30) -> Iterator[subprocess.Popen]:
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        _stop(process, grace)


def graphql(port: int, query: str, timeout: float = 10) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_ready(process: subprocess.Popen, port: int, locations: int, log_path: str, timeout: float) -> float:
    """Wait until every code location is loaded and the needed daemons are healthy; returns seconds waited."""
    started_at = time.monotonic()
    last = "no answer yet"
    while time.monotonic() - started_at < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}; see {log_path}:\n{tail(log_path)}")
        try:
            data = graphql(port, READY_QUERY).get("data") or {}
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            entries = (data.get("workspaceOrError") or {}).get("locationEntries") or []
            loaded = [e for e in entries if e["loadStatus"] == "LOADED"]
            failed = [e["name"] for e in loaded if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"]
            if failed:
                raise RuntimeError(f"code locations failed to load: {failed}; see {log_path}")
            statuses = ((data.get("instance") or {}).get("daemonHealth") or {}).get("allDaemonStatuses") or []
            healthy = {s["daemonType"] for s in statuses if s["healthy"]}
            if len(loaded) == locations and NEEDED_DAEMONS <= healthy:
                return time.monotonic() - started_at
            last = f"{len(loaded)}/{locations} locations loaded, healthy daemons: {sorted(healthy)}"
        time.sleep(1)
    raise TimeoutError(f"not ready after {timeout:g}s ({last}); see {log_path}:\n{tail(log_path)}")


def tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as handle:
            return "\n".join(handle.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Stack:
    """A started server: wait for it with :meth:`wait_ready`."""

    process: subprocess.Popen
    port: int
    log_path: str

    def wait_ready(self, locations: int, timeout: float) -> float:
        return wait_ready(self.process, self.port, locations, self.log_path, timeout)


@contextlib.contextmanager
def coco_serve(home: str, root: str, config_file: str, **env: str) -> Iterator[Stack]:
    """`coco serve` over ``home`` with folder.root ``root``, on a free port; stopped afterwards."""
    port = free_port()
    log_path = os.path.join(root, "coco-serve.log")
    os.makedirs(root, exist_ok=True)
    command = [os.path.join(BIN, "coco"), "--home", home, "--root", root, "serve", "--port", str(port)]
    with started(command, bench_environment(config_file, **env), log_path, cwd=root) as process:
        yield Stack(process, port, log_path)


@contextlib.contextmanager
def dagster_dev(workspace: str, dagster_home: str, config_file: str) -> Iterator[Stack]:
    """A bare `dagster dev` over ``workspace`` on a free port; stopped afterwards."""
    port = free_port()
    os.makedirs(dagster_home, exist_ok=True)
    with open(os.path.join(dagster_home, "dagster.yaml"), "w", encoding="utf-8") as handle:
        handle.write("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    log_path = os.path.join(dagster_home, "dagster-dev.log")
    command = [os.path.join(BIN, "dagster"), "dev", "-w", workspace, "-h", "127.0.0.1", "-p", str(port)]
    env = bench_environment(config_file, DAGSTER_HOME=dagster_home)
    with started(command, env, log_path, cwd=os.path.dirname(workspace)) as process:
        yield Stack(process, port, log_path)
