"""The README's first command, as a newcomer types it: `make run`, checked end to end.

Starts `make run PORT=<free port>` with folder.root in a fresh temporary folder (so nothing
of an earlier run is reused), waits until the Dagster UI answers with every example project
in projects/ loaded, launches the demo's download with `coco enqueue demo.download_samples`,
waits until the sensor and the import have put every sample row into MongoDB and archived
every file, then presses Ctrl-C (SIGINT to the process group, as a terminal does) and checks
that nothing it started is left running. Exit 0 when all of that held, 1 (with the reason and
the tail of the output) when not.

    make run-smoke            what .ci/run runs after make test
    python scripts/run_smoke.py [--timeout SECONDS] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECTS = os.path.join(REPO, "projects")
COCO = os.path.join(REPO, ".venv", "bin", "coco")
ROOT_ENV = "CORE4_OPTION_folder__root"
LOCATIONS_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


class SmokeFailed(Exception):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def example_projects() -> list[str]:
    """The projects in projects/ as coco discovers them: a folder with a package <name>/."""
    return sorted(name for name in os.listdir(PROJECTS)
                  if os.path.isfile(os.path.join(PROJECTS, name, name, "__init__.py")))


def sample_rows() -> int:
    samples = os.path.join(PROJECTS, "demo", "demo", "samples")
    rows = 0
    for name in os.listdir(samples):
        with open(os.path.join(samples, name), encoding="utf-8") as handle:
            rows += sum(1 for line in handle if line.strip()) - 1  # minus the header
    return rows


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["data"]


def wait_for(what: str, check, timeout: float, stack: subprocess.Popen) -> object:
    """Poll ``check`` until it returns something true; SmokeFailed when make run exits or time is up."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if stack.poll() is not None:
            raise SmokeFailed(f"make run exited ({stack.returncode}) while waiting for {what}")
        try:
            result = check()
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            result, last = None, exc
        if result:
            return result
        time.sleep(1)
    raise SmokeFailed(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last: {last})" if last else ""))


def locations_loaded(port: int, expected: list[str]) -> bool:
    entries = graphql(port, LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
    states = {entry["name"]: entry for entry in entries}
    for entry in entries:
        error = entry["locationOrLoadError"] or {}
        if error.get("__typename") == "PythonError":
            raise SmokeFailed(f"code location {entry['name']} failed to load: {error['message'].strip()}")
    return all(states.get(name, {}).get("loadStatus") == "LOADED" for name in expected)


def demo_imported(root: str, expected_rows: int) -> str | None:
    """'<n> documents, <k> files archived' once every sample row is in demo.readings and proc is empty."""
    import pymongo  # the .venv's: this script runs with .venv/bin/python

    state = json.load(open(os.path.join(root, "mongo.state"), encoding="utf-8"))
    credentials = json.load(open(os.path.join(root, "mongo.credentials"), encoding="utf-8"))
    user, password = credentials["user"], credentials["password"]
    client = pymongo.MongoClient("127.0.0.1", int(state["port"]), username=user, password=password,
                                 directConnection=True, serverSelectionTimeoutMS=3000)
    try:
        documents = client["demo"]["readings"].count_documents({})
    finally:
        client.close()
    proc = os.path.join(root, "proc", "demo")
    waiting = [name for name in os.listdir(proc) if not name.startswith(".")] if os.path.isdir(proc) else []
    batches = os.listdir(os.path.join(proc, ".batch")) if os.path.isdir(os.path.join(proc, ".batch")) else []
    archived = [name for _, _, names in os.walk(os.path.join(root, "archive", "demo")) for name in names]
    if documents > expected_rows:
        raise SmokeFailed(f"demo.readings holds {documents} documents, more than the {expected_rows} sample rows")
    if documents == expected_rows and not waiting and not batches and archived:
        return f"{documents} documents in demo.readings, {len(archived)} files archived, proc empty"
    return None


def processes_with(marker: str) -> list[str]:
    """'pid command' of every live process whose environment holds ``marker`` (all make run started)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if marker.encode() not in handle.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # exited, waiting to be reaped: not running
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found.append(f"{pid} {command[:160]}")
    return found


def smoke(timeout: float, keep: bool) -> int:
    root = tempfile.mkdtemp(prefix="core4-run-smoke-")
    port = free_port()
    marker = f"{ROOT_ENV}={root}"
    log_path = os.path.join(root, "make-run.log")
    env = dict(os.environ, **{ROOT_ENV: root})
    env.pop("DAGSTER_HOME", None)  # make run's own: under folder.root
    log = open(log_path, "wb")
    print(f"run-smoke: make run PORT={port}, folder.root {root}", flush=True)
    started = time.monotonic()
    stack = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=REPO, env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    ok = False
    try:
        projects = example_projects()
        wait_for(f"the UI on port {port} with every example project loaded ({', '.join(projects)})",
                 lambda: locations_loaded(port, projects), timeout, stack)
        print(f"run-smoke: UI up, {len(projects)} projects loaded after {time.monotonic() - started:.0f}s",
              flush=True)
        enqueue = subprocess.run([COCO, "enqueue", "demo.download_samples"], cwd=REPO, env=env,
                                 capture_output=True, text=True, timeout=120)
        if enqueue.returncode != 0:
            raise SmokeFailed(f"coco enqueue demo.download_samples failed ({enqueue.returncode}): "
                              f"{enqueue.stderr.strip() or enqueue.stdout.strip()}")
        print(f"run-smoke: {enqueue.stdout.strip()}", flush=True)
        done = wait_for("the demo's download and import (every sample row in demo.readings, proc empty)",
                        lambda: demo_imported(root, sample_rows()), timeout, stack)
        print(f"run-smoke: {done} after {time.monotonic() - started:.0f}s", flush=True)
        os.killpg(stack.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
        try:
            stack.wait(30)
        except subprocess.TimeoutExpired:
            raise SmokeFailed("make run still running 30 s after Ctrl-C") from None
        deadline = time.monotonic() + 10
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = processes_with(marker)
        if left:
            raise SmokeFailed("still running after Ctrl-C:\n  " + "\n  ".join(left))
        print(f"run-smoke: Ctrl-C stopped everything (make exited {stack.returncode}); "
              f"passed in {time.monotonic() - started:.0f}s", flush=True)
        ok = True
        return 0
    except SmokeFailed as exc:
        print(f"run-smoke: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGKILL)
            stack.wait()
        for line in processes_with(marker):  # whatever escaped the group: never left behind
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except OSError:
                pass
        log.close()
        if not ok:
            with open(log_path, "rb") as handle:
                tail = handle.read().decode(errors="replace").splitlines()[-60:]
            print("run-smoke: last lines of make run:\n" + "\n".join(tail), file=sys.stderr)
        if keep:
            print(f"run-smoke: kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for each wait (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder.root (with make run's log)")
    args = parser.parse_args()
    return smoke(args.timeout, args.keep)


if __name__ == "__main__":
    sys.exit(main())
