"""Probe a project in its own interpreter: what it defines, and its jobs' max_parallel.

Each project loads in its own interpreter (its ``.venv`` if it has one), in a child
process: a project that fails to import fails there and is reported instead of
stopping the caller. The child is ``python -m core4_pipelines.coco.probe WHAT FOLDER
NAME`` and prints one JSON line:

- ``describe``: the jobs, sensors and schedules it defines (``coco projects``, ``coco
  jobs``), run by ``inspect_in_subprocess``;
- ``limits``: each job's resolved max_parallel (code declaration, project yaml,
  cascade defaults). ``collect_job_limits`` runs it for every project in home, side by
  side, and returns ``{"<project>.<job>": N}`` for ``write_instance(job_limits=...)``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import traceback

from core4_pipelines.coco.discovery import discover_projects, load_definitions
from core4_pipelines.errors import ProjectError

PROBE = "core4_pipelines.coco.probe"


def _one_line(exc: BaseException) -> str:
    """The exception as one line, so `coco projects` stays a table (a SyntaxError spans several lines)."""
    lines = traceback.format_exception_only(type(exc), exc)
    return " | ".join(line.strip() for line in "".join(lines).splitlines() if line.strip())


# -- in the project's interpreter ----------------------------------------------------------


def describe(folder: str, name: str) -> dict:
    try:
        repo = load_definitions(folder, name).get_repository_def()
        return {
            "ok": True,
            "jobs": sorted(job.name for job in repo.get_all_jobs() if not job.name.startswith("__")),
            "sensors": sorted(
                f"{s.name} ({s.default_status.value.lower()}, every {s.minimum_interval_seconds}s)"
                for s in repo.sensor_defs
            ),
            "schedules": sorted(
                f"{s.name} ({s.cron_schedule} {s.execution_timezone or 'UTC'})" for s in repo.schedule_defs
            ),
        }
    except ProjectError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # any failure of the project's code is the answer
        return {"ok": False, "error": _one_line(exc)}


def project_limits(folder: str, name: str) -> dict[str, int]:
    """Load ``<name>.definitions`` from ``folder`` and read each job's resolved max_parallel."""
    from core4_pipelines.properties import JOB_TAG, resolved_properties

    limits = {}
    for job in load_definitions(folder, name).get_repository_def().get_all_jobs():
        limit = resolved_properties(job).get("max_parallel")
        if limit:
            limits[job.tags.get(JOB_TAG, f"{name}.{job.name}")] = int(limit)
    return limits


def _limits_answer(folder: str, name: str) -> dict:
    try:
        return {"limits": project_limits(folder, name)}
    except Exception as exc:  # noqa: BLE001 - the project's failure is the answer
        return {"error": "".join(traceback.format_exception_only(type(exc), exc)).strip()}


# -- in the caller -------------------------------------------------------------------------


def inspect_in_subprocess(python: str, folder: str, name: str, env: dict | None = None, timeout: float = 120) -> dict:
    """``describe`` run by ``python`` in a child process."""
    try:
        done = subprocess.run(
            [python, "-m", PROBE, "describe", folder, name],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=folder,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "error": f"cannot run {python}: {exc}"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
    return {"ok": False, "error": f"{python} exited {done.returncode}: " + " | ".join(tail)}


def collect_job_limits(home: str, env: dict | None = None, timeout: float = 120) -> tuple[dict[str, int], list[str]]:
    """``({"<project>.<job>": max_parallel}, problems)`` over the projects in ``home``.

    A project that fails to load contributes a problem line, not an exception: its
    code location will show the error in the UI anyway.
    """
    projects, _ = discover_projects(home)
    running = []
    for project in projects:
        python = project.venv_python or sys.executable
        command = [python, "-m", PROBE, "limits", project.folder, project.name]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=project.folder
        )
        running.append((project.name, process))
    limits: dict[str, int] = {}
    problems: list[str] = []
    deadline = time.monotonic() + timeout
    for name, process in running:
        try:
            out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            problems.append(f"{name}: loading took longer than {timeout:g}s; its max_parallel limits are not applied")
            continue
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if lines:
            result = json.loads(lines[-1])
        else:
            tail = (err or out).strip().splitlines()
            result = {"error": f"exited {process.returncode}: {tail[-1] if tail else 'no output'}"}
        if "limits" in result:
            limits.update(result["limits"])
        else:
            problems.append(f"{name}: {result['error']}; its max_parallel limits are not applied")
    return limits, problems


_PROBES = {"describe": describe, "limits": _limits_answer}

if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in _PROBES:
        print(f"usage: python -m {PROBE} {{{'|'.join(_PROBES)}}} FOLDER NAME", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(_PROBES[sys.argv[1]](sys.argv[2], sys.argv[3])))
