"""Load one project's definitions in its own interpreter and print what it defines, as JSON.

Run as ``python -m core4_pipelines.inspect_project FOLDER NAME`` with the
project's interpreter: a project that fails to import fails here, in a
child process, and is reported instead of stopping the caller.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import traceback


def describe(folder: str, name: str) -> dict:
    sys.path.insert(0, folder)
    try:
        module = importlib.import_module(f"{name}.definitions")
        defs = getattr(module, "defs", None)
        if defs is None:
            return {"ok": False, "error": f"{name}/definitions.py defines no `defs`"}
        repo = defs.get_repository_def()
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
    except Exception as exc:  # any failure of the project's code is the answer
        lines = traceback.format_exception_only(type(exc), exc)
        # One line, so `coco projects` stays a table (a SyntaxError spans several lines).
        text = " | ".join(line.strip() for line in "".join(lines).splitlines() if line.strip())
        return {"ok": False, "error": text}


def inspect_in_subprocess(python: str, folder: str, name: str, env: dict | None = None, timeout: float = 120) -> dict:
    """``describe`` run by ``python`` in a child process."""
    try:
        done = subprocess.run(
            [python, "-m", "core4_pipelines.inspect_project", folder, name],
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


if __name__ == "__main__":
    print(json.dumps(describe(sys.argv[1], sys.argv[2])))
