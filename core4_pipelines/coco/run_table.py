"""The tables `coco runs` and `coco info` print: a run's times, duration and first failure line."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from core4_pipelines.coco.dagster_api import FINISHED, IN_PROGRESS
from core4_pipelines.tags import JOB_TAG


def _time(stamp: float | None) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S") if stamp else "-"


def _duration(run: Mapping, now: float | None = None) -> str:
    """How long the run ran: start to end, or to ``now`` while it runs; "-" when it never started.

    Dagster answers a finished run that never started (its launch failed, it was canceled
    while queued) with its end time as start time: that is no run time of 0 s.
    """
    start, end = run.get("startTime"), run.get("endTime")
    if not start or (end is not None and start >= end and run.get("status") in FINISHED):
        return "-"
    seconds = max(0.0, (end or (time.time() if now is None else now)) - start)
    if seconds < 10:
        return f"{seconds:.1f}s"  # an import of a few files takes a fraction of a second
    if seconds < 120:
        return f"{seconds:.0f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


# Dagster's dagster/failure_reason tag, in words: what `coco runs` says of a failed run whose
# failure event the listing does not carry.
_FAILURE_REASONS = {
    "STEP_FAILURE": "a step failed",
    "RUN_EXCEPTION": "the run failed outside its steps",
    "JOB_INITIALIZATION_FAILURE": "its resources could not be set up",
    "UNEXPECTED_TERMINATION": "its worker process ended unexpectedly",
    "START_TIMEOUT": "it did not start in time",
    "RUN_WORKER_RESTART": "its worker was restarted",
}


_MAX_INFO_LINE = 160  # a table row stays readable; the UI's run page has the whole error


def _first_line(text: str | None) -> str | None:
    line = next((line.strip() for line in (text or "").splitlines() if line.strip()), None)
    return line if line is None or len(line) <= _MAX_INFO_LINE else line[: _MAX_INFO_LINE - 3] + "..."


def _failure_line(run: Mapping) -> str | None:
    """Why a failed run failed, in one line; None for a run that did not fail.

    From the run's failure event when the listing carries its events (``eventConnection``):
    the innermost cause of its error (for a failed step, the op's own exception rather than
    Dagster's wrapper around it), else the error, else the event's message. Otherwise the
    reason Dagster tagged the run with, in words.
    """
    if run.get("status") != "FAILURE":
        return None
    events = (run.get("eventConnection") or {}).get("events") or ()
    # A failed step's own error says more than the run's "Steps failed: [...]".
    steps = [e for e in events if e.get("__typename") == "ExecutionStepFailureEvent"]
    for event in [*steps, *reversed(events)]:
        error = event.get("error") or {}
        causes = [cause for cause in error.get("causes") or () if cause.get("message")]
        line = _first_line(causes[-1]["message"] if causes else error.get("message")) or _first_line(
            event.get("message"))
        if line:
            return line
    tags = {t["key"]: t["value"] for t in run.get("tags", [])}
    reason = tags.get("dagster/failure_reason")
    return _FAILURE_REASONS.get(reason, f"reason {reason}" if reason and reason != "UNKNOWN" else "reason unknown")


def run_rows(runs: Iterable[Mapping], now: float | None = None) -> list[list[str]]:
    """The rows of `coco runs`: RUN, JOB, STATUS, CREATED (UTC), TIME, INFO."""
    rows = []
    for run in runs:
        tags = {t["key"]: t["value"] for t in run.get("tags", [])}
        location = (run.get("repositoryOrigin") or {}).get("repositoryLocationName", "?")
        info = []
        if tags.get("core4/state"):
            info.append(f"{tags['core4/state']}: {tags.get('core4/message', '')}".strip())
        elif run.get("status") == "FAILURE":  # core4's own state says why already
            info.append(f"failed: {_failure_line(run)}")
        if tags.get("core4/progress") and run["status"] in IN_PROGRESS:
            info.append(f"{tags['core4/progress']} {tags.get('core4/progress_message', '')}".strip())
        if run.get("parentRunId"):
            info.append(f"re-run of {run['parentRunId'][:8]}")
        rows.append([run["runId"][:8], tags.get(JOB_TAG) or f"{location}.{run['jobName']}", run["status"],
                     _time(run.get("creationTime")), _duration(run, now), "; ".join(info)])
    return rows


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(v)) for v in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)
