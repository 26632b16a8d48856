"""Starting and talking to a live `coco serve` (Dagster webserver + daemon, embedded MongoDB).

``coco_serve`` starts it on 127.0.0.1 with a free port, a temporary folder.root
and a home filled by a callback (see liveprojects.py), waits until every code
location has loaded, and stops every process it started, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from core4_resources.mongo.embedded.server import free_port, url_with_credentials

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "projects" / "demo" / "demo" / "samples"
BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 240.0
STOP_GRACE = 30.0


WORKSPACE_QUERY = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        displayMetadata { key value }
        locationOrLoadError {
          __typename
          ... on RepositoryLocation {
            repositories {
              name
              jobs { name }
              sensors { name sensorState { status } }
              allTopLevelResourceDetails { name configuredValues { key value type } }
            }
          }
          ... on PythonError { message errorChain { error { message } } }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status startTime endTime tags { key value } }
  }
}
"""

LOGS_QUERY = """
query Logs($runId: ID!) {
  logsForRun(runId: $runId, limit: 5000) {
    __typename
    ... on EventConnection { events { __typename ... on MessageEvent { message level } } }
  }
}
"""

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


class GraphQLError(AssertionError):
    pass


@dataclass
class LiveStack:
    """A running `coco serve`; ``env`` holds the variables that point `coco` at it."""

    url: str
    graphql_url: str
    root: Path
    home: Path
    mongo_url: str
    dagster_home: Path
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    # -- GraphQL -------------------------------------------------------------

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        """POST /graphql; returns ``data`` or raises with the errors."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            self.graphql_url, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise GraphQLError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def client(self):
        from dagster_graphql import DagsterGraphQLClient

        return DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=120)

    def locations(self) -> dict[str, dict]:
        """Workspace location entries by name."""
        workspace = self.graphql(WORKSPACE_QUERY)["workspaceOrError"]
        assert workspace["__typename"] == "Workspace", workspace
        return {entry["name"]: entry for entry in workspace["locationEntries"]}

    def repository(self, location: str) -> dict:
        entry = self.locations()[location]
        loaded = entry["locationOrLoadError"]
        assert loaded and loaded["__typename"] == "RepositoryLocation", f"{location}: {loaded}"
        return loaded["repositories"][0]

    def run(self, run_id: str) -> dict:
        found = self.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
        assert found["__typename"] == "Run", found
        return found

    def wait_for_run(self, run_id: str, timeout: float = 120) -> dict:
        """The run once it has finished (SUCCESS, FAILURE or CANCELED)."""
        found = wait_for(lambda: (r := self.run(run_id))["status"] in FINISHED and r, timeout,
                         f"run {run_id} to finish", self.log_tail)
        return found

    def run_messages(self, run_id: str) -> list[str]:
        logs = self.graphql(LOGS_QUERY, {"runId": run_id})["logsForRun"]
        assert logs["__typename"] == "EventConnection", logs
        return [event["message"] for event in logs["events"] if "message" in event]

    # -- the command line ------------------------------------------------------

    def full_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORE4_OPTION_")}
        env.update(self.env)
        return env

    def coco(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run `coco ARGS` against this stack."""
        return subprocess.run([str(BIN / "coco"), *args], capture_output=True, text=True,
                              env=self.full_env(), timeout=timeout, check=False)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def wait_for(check: Callable[[], object], timeout: float, what: str,
             details: Callable[[], str] | None = None, interval: float = 1.0):
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (OSError, GraphQLError, AssertionError, KeyError, json.JSONDecodeError) as exc:
            last_error = exc  # not up yet, or not loaded yet
        if time.monotonic() > deadline:
            extra = f"\nlast error: {last_error!r}" if last_error else ""
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}{extra}\n"
                        + (details() if details else ""))
        time.sleep(interval)


# -- processes -------------------------------------------------------------------

def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, pgid) for every process (Linux /proc)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        table[int(entry)] = (int(fields[1]), int(fields[2]))
    return table


def descendants(pid: int) -> dict[int, int]:
    """pid -> pgid of every live descendant of ``pid``."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = table[child][1]
            todo.append(child)
    return found


class ProcessTree:
    """Remembers every process group under a root process, to end them all."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.groups: set[int] = {process.pid}  # started with start_new_session: pgid == pid
        self.pids: set[int] = set()

    def remember(self) -> None:
        found = descendants(self.process.pid)
        self.pids.update(found)
        own = os.getpgid(0)
        self.groups.update(g for g in found.values() if g != own)

    def stop(self) -> None:
        # A second Ctrl-C while stopping must not leave servers behind.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            self.remember()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)  # coco stops dagster dev and MongoDB itself
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_GRACE)
            for group in self.groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGKILL)
            for pid in self.pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CORE4_") and k != "DAGSTER_HOME"}
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@contextlib.contextmanager
def coco_serve(base: Path, make_projects: Callable[[Path, dict], None], expected: tuple[str, ...],
               dagster: dict | None = None, extra_env: dict[str, str] | None = None,
               mongo_url: str | None = None) -> Iterator[LiveStack]:
    """Start `coco serve` over a fresh home under ``base``; wait until every location has loaded.
    ``mongo_url``: a MongoDB of the test's own (configured as mongo_url: no embedded server)."""
    root, home = base / "root", base / "home"
    port = free_port()
    config_path = base / "local.yaml"
    config = {"folder": {"root": str(root), "home": str(home)},
              # no dagster.host: the packaged default (127.0.0.1) is what the security test checks
              "dagster": {"port": port, **(dagster or {})}}
    if mongo_url:
        config["DEFAULT"] = {"mongo_url": mongo_url}
    config_path.write_text(yaml.safe_dump(config))
    env = base_env()
    env["CORE4_CONFIG"] = str(config_path)
    env.update(extra_env or {})
    make_projects(home, env)
    log_path = base / "coco-serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(BIN / "coco"), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(base))
    tree = ProcessTree(process)
    try:
        def details() -> str:
            return "coco serve output:\n" + stack_log_tail(log_path)

        def mongo_line():
            if process.poll() is not None:
                pytest.fail(f"coco serve exited with {process.returncode}\n{details()}")
            found = re.search(r"embedded MongoDB on (mongodb://\S+)", log_path.read_text(errors="replace"))
            return found and found.group(1)

        if not mongo_url:
            printed = wait_for(mongo_line, 60, "the embedded MongoDB", details, interval=0.2)
            # coco serve prints the URL with its password masked; a client takes it from the
            # credentials file beside the data (0600, readable by this user).
            mongo_url = url_with_credentials(printed, root / "mongo.credentials")
        url = f"http://127.0.0.1:{port}"
        stack = LiveStack(
            url=url, graphql_url=f"{url}/graphql", root=root, home=home, mongo_url=mongo_url,
            dagster_home=root / "dagster",
            env={"CORE4_CONFIG": str(config_path), "CORE4_OPTION_DEFAULT__mongo_url": mongo_url,
                 "DAGSTER_HOME": str(root / "dagster"), **(extra_env or {})},
            port=port, log_path=log_path, process=process,
        )

        def all_loaded():
            if process.poll() is not None:
                pytest.fail(f"coco serve exited with {process.returncode}\n{details()}")
            locations = stack.locations()
            return set(locations) == set(expected) and all(
                entry["loadStatus"] == "LOADED" for entry in locations.values())

        wait_for(all_loaded, STARTUP_TIMEOUT, f"the workspace to load {', '.join(expected)}", details)
        tree.remember()
        yield stack
    finally:
        tree.stop()


def stack_log_tail(path: Path, lines: int = 80) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def drop_into_proc(folder: Path, name: str, data: bytes) -> Path:
    """Write a file into a proc folder the way a well-behaved writer does: hidden, then renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    hidden = folder / f".{name}.part"
    hidden.write_bytes(data)
    target = folder / name
    os.rename(hidden, target)
    return target


def python_error_text(error: dict) -> str:
    """A GraphQL PythonError with the messages of its causes."""
    chain = [link["error"]["message"] for link in error.get("errorChain") or []]
    return "\n".join([error.get("message", ""), *chain])


def visible_entries(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if not e.name.startswith(".")) if folder.is_dir() else []


def sensor_to_archive(stack: LiveStack, timeout: float = 120) -> dict:
    """Drop the demo's samples into demo's proc folder under fresh names and wait until the
    running daemon has claimed, imported and archived each one; no other step is taken.

    Returns ``names`` (file -> bytes), ``archives`` (file -> archive path), ``rows``
    (file -> records expected) and ``run_ids`` (the import runs that wrote them).
    """
    import pymongo

    tag = uuid.uuid4().hex[:8]
    proc = stack.root / "proc" / "demo"
    names: dict[str, bytes] = {}
    for sample in sorted(SAMPLES.glob("readings-*.csv")):
        name = f"readings-{tag}-{sample.name[len('readings-'):]}"
        names[name] = sample.read_bytes()
        drop_into_proc(proc, name, names[name])
    rows = {name: len(data.decode().strip().splitlines()) - 1 for name, data in names.items()}
    readings = pymongo.MongoClient(stack.mongo_url, serverSelectionTimeoutMS=5000)["demo"]["readings"]
    archive = stack.root / "archive" / "demo"

    def imported_and_archived():
        archived = {path.name[: -len(".gz")]: path for path in archive.rglob(f"readings-{tag}-*.csv.gz")}
        counts = {name: readings.count_documents({"_src": name}) for name in names}
        return set(archived) == set(names) and counts == rows and archived

    def state() -> str:
        batches = proc / ".batch"
        return (f"proc: {visible_entries(proc)}; batches: {visible_entries(batches)}; "
                f"archived: {sorted(p.name for p in archive.rglob(f'*{tag}*'))}\n" + stack.log_tail())

    archives = wait_for(imported_and_archived, timeout, f"the daemon to import and archive {len(names)} files",
                        state)
    run_ids = sorted(readings.distinct("_job_id", {"_src": {"$in": list(names)}}))
    readings.database.client.close()
    return {"names": names, "archives": archives, "rows": rows, "run_ids": run_ids, "proc": proc}
