"""Collect every project's max_parallel for the instance's run queue.

A job's max_parallel is only known once its project is loaded (code declaration,
project yaml, cascade defaults), and each project loads in its own interpreter:
``python -m core4_pipelines.limits FOLDER NAME`` prints the project's resolved
limits as JSON. ``collect_job_limits`` runs that for every project in home, side by
side, and returns ``{"<project>.<job>": N}`` for ``write_instance(job_limits=...)``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
import traceback

from core4_pipelines.project import discover_projects


def project_limits(folder: str, name: str) -> dict[str, int]:
    """Load ``<name>.definitions`` from ``folder`` and read each job's resolved max_parallel."""
    from core4_pipelines.properties import JOB_TAG, resolved_properties

    sys.path.insert(0, folder)
    defs = importlib.import_module(f"{name}.definitions").defs
    limits = {}
    for job in defs.get_repository_def().get_all_jobs():
        limit = resolved_properties(job).get("max_parallel")
        if limit:
            limits[job.tags.get(JOB_TAG, f"{name}.{job.name}")] = int(limit)
    return limits


def collect_job_limits(home: str, env: dict | None = None, timeout: float = 120) -> tuple[dict[str, int], list[str]]:
    """``({"<project>.<job>": max_parallel}, problems)`` over the projects in ``home``.

    A project that fails to load contributes a problem line, not an exception: its
    code location will show the error in the UI anyway.
    """
    projects, _ = discover_projects(home)
    running = []
    for project in projects:
        python = project.venv_python or sys.executable
        command = [python, "-m", "core4_pipelines.limits", project.folder, project.name]
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


if __name__ == "__main__":
    try:
        print(json.dumps({"limits": project_limits(sys.argv[1], sys.argv[2])}))
    except Exception as exc:  # noqa: BLE001 - the project's failure is the answer
        print(json.dumps({"error": "".join(traceback.format_exception_only(type(exc), exc)).strip()}))
