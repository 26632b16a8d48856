"""The project's alerts sensor: what went wrong, told once, to the channels of its rules.

Each tick reads what happened since the last one from Dagster's own records, turns each
event into one message and sends it to every channel of every rule that asks for the event:

- ``file_rejected``: a materialization of a collection whose batch moved files to the error
  folder -- one message per batch, its files and their reasons listed;
- ``batch_failed``: an import run that failed (or was canceled) with no run of its batch to
  come: the batch waits for a human;
- ``zombie``: a run the monitor flagged for having no heartbeat for its zombie_time;
- ``freshness``: a collection with a freshness whose last import is older than it (once per
  quiet spell; told again only after new records came and stopped again).

The cursor holds what was read and what is still to be delivered: an event is never sent
twice, and a delivery that failed is tried again on later ticks with a growing wait (logged,
never failing the sensor) until MAX_TRIES.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg

from core4_pipelines.alerts.channels import MAX_LISTED_FILES, Alert, DeliveryError, channel_label, deliver
from core4_pipelines.tags import (
    BATCH_TAG,
    JOB_TAG,
    MESSAGE_TAG,
    RECOVERED_TAG,
    REJECTED_STATE,
    STATE_TAG,
)
from core4_resources.config.alerts import AlertRule

ALERTS_INTERVAL = 15
MAX_RUNS_PER_TICK = 200
MAX_TRIES = 10
FIRST_RETRY_SECONDS = 30.0
MAX_RETRY_SECONDS = 3600.0
# Run ids remembered as told (a zombie, a failed batch): the newest so many.
MAX_REMEMBERED = 1000
# Failed runs are read back this far before the last tick: a run's update and its tick may cross.
OVERLAP_SECONDS = 120.0

log = logging.getLogger(__name__)


def _now() -> float:
    return time.time()  # a function of its own: a test moves the clock


@dataclass(frozen=True)
class WatchedImport:
    """An import job of the project, its collection asset, and that collection's freshness."""

    job: dg.JobDefinition
    collection: dg.AssetKey
    freshness_seconds: float | None = None


def alerts_sensor(project: str, rules: Sequence[AlertRule], imports: Sequence[WatchedImport],
                  jobs: Sequence[str], ui_url: str | None) -> dg.SensorDefinition:
    """The alerts sensor of ``project`` (see the module). ``jobs``: the project's job names
    (zombies of any of them are told); ``ui_url``: the Dagster UI's address, for links."""
    events = sorted({event for rule in rules for event in rule.events})
    qualified_imports = [f"{project}.{w.job.name}" for w in imports]
    qualified_jobs = [f"{project}.{name}" for name in jobs]

    @dg.sensor(
        name="core4_alerts",
        minimum_interval_seconds=ALERTS_INTERVAL,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Tells the channels of {project}'s alerts rules of {', '.join(events)}: one message per event, "
                    f"never twice; a failed delivery is tried again",
    )
    def core4_alerts(context: dg.SensorEvaluationContext):
        instance = context.instance
        now = _now()
        state = _load(context.cursor)
        if state is None:  # the first tick: from now on (no alerts for what happened before)
            state = _fresh_state(instance, imports, now)
            context.update_cursor(json.dumps(state))
            return dg.SkipReason(f"watching {project} for {', '.join(events)} from now on")
        found: list[Alert] = []
        if "file_rejected" in events:
            found += _rejected_files(instance, project, imports, state, ui_url)
        if "batch_failed" in events:
            found += _failed_batches(context, project, imports, qualified_imports, state, now, ui_url)
        if "zombie" in events:
            found += _zombies(instance, project, qualified_jobs, state, ui_url)
        if "freshness" in events:
            found += _stale_collections(instance, project, imports, state, now, ui_url)
        state["since"] = now
        for alert in found:
            for index, rule in enumerate(rules):
                if alert.event in rule.events:
                    for channel in rule.channels():
                        state["pending"].append({"alert": alert.as_json(), "rule": index, "channel": channel,
                                                 "tries": 0, "next": now})
        sent, failed, gave_up = _deliver_due(context, rules, state, now)
        context.update_cursor(json.dumps(state))
        told = [f"{len(found)} new event(s)" if found else "nothing new"]
        if sent:
            told.append(f"sent {len(sent)}: " + "; ".join(sent[:5]) + (" ..." if len(sent) > 5 else ""))
        if failed:
            told.append(f"{len(failed)} failed, tried again later: " + "; ".join(failed[:3]))
        if gave_up:
            told.append(f"gave up on {len(gave_up)} after {MAX_TRIES} tries: " + "; ".join(gave_up[:3]))
        waiting = len(state["pending"])
        if waiting:
            told.append(f"{waiting} waiting for delivery")
        return dg.SkipReason("; ".join(told))

    return core4_alerts


# -- the cursor ---------------------------------------------------------------------------------

def _load(cursor: str | None) -> dict | None:
    if not cursor:
        return None
    try:
        state = json.loads(cursor)
    except ValueError:
        return None
    return state if isinstance(state, dict) and "since" in state else None


def _fresh_state(instance: dg.DagsterInstance, imports: Sequence[WatchedImport], now: float) -> dict:
    from core4_pipelines.ingest.assets import REJECTED_CHECK

    after = {}
    for watched in imports:
        key = dg.AssetCheckKey(watched.collection, REJECTED_CHECK)
        latest = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
        after[watched.collection.to_user_string()] = latest[0].id if latest else 0
    return {"since": now, "checks_after": after, "told_runs": [], "stale": {}, "first_seen": now, "pending": []}


def _remember(state: dict, run_id: str) -> None:
    told = state["told_runs"]
    told.append(run_id)
    del told[:-MAX_REMEMBERED]


# -- the events ---------------------------------------------------------------------------------

def _run_url(ui_url: str | None, run_id: str) -> str | None:
    return f"{ui_url}/runs/{run_id}" if ui_url else None


def _rejected_files(instance, project: str, imports: Sequence[WatchedImport], state: dict, ui_url) -> list[Alert]:
    """From each collection's ``no_rejected_files`` executions since the last tick: one alert per
    batch that rejected files (whether its run failed for them or only warned)."""
    from core4_pipelines.ingest.assets import REJECTED_CHECK

    alerts = []
    for watched in imports:
        name = watched.collection.to_user_string()
        after = state["checks_after"].get(name, 0)
        key = dg.AssetCheckKey(watched.collection, REJECTED_CHECK)
        # The storage's history of one check, newest first: what the UI's check page reads.
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=MAX_RUNS_PER_TICK)
        for record in sorted((r for r in history if r.id > after), key=lambda r: r.id):
            if record.status.value == "PLANNED":
                break  # its run is still at it: read again from here next tick
            state["checks_after"][name] = record.id
            event = record.event.dagster_event if record.event else None
            evaluation = getattr(event, "event_specific_data", None)
            metadata = getattr(evaluation, "metadata", None) or {}
            rejected = int(_value(metadata.get("rejected")) or 0)
            if not rejected:
                continue
            table = _value(metadata.get("rejected_files"))
            rows = [r.data for r in getattr(table, "records", None) or ()]
            files = tuple((str(r.get("file")), str(r.get("reason") or "").removeprefix(f"{r.get('file')}: "))
                          for r in rows)[:MAX_LISTED_FILES]
            batch = str(_value(metadata.get("batch")))
            alerts.append(Alert(
                event="file_rejected", project=project, key=f"file_rejected:{name}:{record.id}",
                subject=f"[core4] {project}: {rejected} file(s) of batch {batch} moved to the error folder",
                lines=(f"collection: {name}", f"Fixed files go back with: coco retry {project} NAME... (or --all)"),
                job=watched.job.name, batch=batch, run_id=record.run_id, url=_run_url(ui_url, record.run_id),
                files=files, file_count=rejected))
    return alerts


def _failed_batches(context, project, imports, qualified_imports, state, now, ui_url) -> list[Alert]:
    from core4_pipelines.ingest.sensor import batch_retry_settings, counted_runs

    if not qualified_imports:
        return []
    instance = context.instance
    by_name = {w.job.name: w for w in imports}
    since = datetime.fromtimestamp(state["since"] - OVERLAP_SECONDS, tz=timezone.utc)
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={JOB_TAG: qualified_imports}, updated_after=since,
                              statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]),
        limit=MAX_RUNS_PER_TICK)
    told = set(state["told_runs"])
    alerts = []
    for record in records:
        run = record.dagster_run
        batch = run.tags.get(BATCH_TAG)
        if run.run_id in told or not batch or run.tags.get(STATE_TAG) == REJECTED_STATE:
            continue  # told, no batch, or its files went to error (told as file_rejected)
        watched = by_name.get(run.job_name)
        if watched is None:
            continue
        runs = instance.get_run_records(filters=dg.RunsFilter(tags={BATCH_TAG: batch}))
        if runs and runs[0].dagster_run.run_id != run.run_id:
            continue  # a newer run of the batch: that one tells
        attempts, _ = batch_retry_settings(context, watched.job)
        finished = sum(1 for r in runs if r.dagster_run.is_finished)
        canceled_by_hand = run.status == dg.DagsterRunStatus.CANCELED and not (
            run.tags.get(RECOVERED_TAG) or run.tags.get(STATE_TAG) == "zombie")
        if counted_runs(runs) < attempts and not canceled_by_hand:
            continue  # the claim sensor runs the batch again (an outage's runs use no attempt)
        _remember(state, run.run_id)
        why = (f"canceled: the batch waits for a human (coco restart {project}.{run.job_name} or coco retry)"
               if canceled_by_hand else
               f"failed {finished} time(s), its last run {run.run_id}; no run of it will follow")
        message = run.tags.get(MESSAGE_TAG)
        alerts.append(Alert(
            event="batch_failed", project=project, key=f"batch_failed:{run.run_id}",
            subject=f"[core4] {project}: batch {batch} of {run.job_name} failed for good",
            lines=(why,) + ((f"message: {message}",) if message else ()) + _failure_lines(instance, run.run_id),
            job=run.job_name, batch=batch, run_id=run.run_id, url=_run_url(ui_url, run.run_id)))
    return alerts


def _failure_lines(instance, run_id: str) -> tuple[str, ...]:
    """The run's failure, in a line or two: what its failure event said."""
    # The step's error first: the run's failure only says which step failed.
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1).records
    if not records:
        records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE, limit=1).records
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        data = getattr(event, "event_specific_data", None)
        error = getattr(data, "error", None)
        while getattr(error, "cause", None) is not None and str(getattr(error, "cls_name", "")).startswith("Dagster"):
            error = error.cause  # Dagster's wrapper of the op's own error
        text = getattr(error, "message", None) or getattr(event, "message", None) or entry.user_message
        if text:
            return (f"error: {text.strip()[:1000]}",)
    return ()


def _zombies(instance, project: str, qualified_jobs: Sequence[str], state: dict, ui_url) -> list[Alert]:
    if not qualified_jobs:
        return []
    runs = instance.get_runs(filters=dg.RunsFilter(tags={JOB_TAG: list(qualified_jobs), STATE_TAG: "zombie"}),
                             limit=MAX_RUNS_PER_TICK)
    told = set(state["told_runs"])
    alerts = []
    for run in runs:
        if run.run_id in told:
            continue
        _remember(state, run.run_id)
        alerts.append(Alert(
            event="zombie", project=project, key=f"zombie:{run.run_id}",
            subject=f"[core4] {project}: run of {run.job_name} has no heartbeat (zombie)",
            lines=(run.tags.get(MESSAGE_TAG, "zombie"),), job=run.job_name, batch=run.tags.get(BATCH_TAG),
            run_id=run.run_id, url=_run_url(ui_url, run.run_id)))
    return alerts


def _stale_collections(instance, project, imports, state, now, ui_url) -> list[Alert]:
    alerts = []
    for watched in imports:
        if not watched.freshness_seconds:
            continue
        name = watched.collection.to_user_string()
        latest = instance.get_latest_materialization_event(watched.collection)
        last = latest.timestamp if latest is not None else state["first_seen"]
        if now - last <= watched.freshness_seconds:
            state["stale"].pop(name, None)
            continue
        if state["stale"].get(name) == last:
            continue  # told for this quiet spell
        state["stale"][name] = last
        since = (datetime.fromtimestamp(last, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
                 if latest is not None else "never imported since alerts began watching")
        alerts.append(Alert(
            event="freshness", project=project, key=f"freshness:{name}:{last}",
            subject=f"[core4] {project}: no new records in {name} for {_duration(now - last)}",
            lines=(f"freshness: {_duration(watched.freshness_seconds)}", f"last import: {since}"),
            job=watched.job.name,
            url=f"{ui_url}/assets/{'/'.join(watched.collection.path)}" if ui_url else None))
    return alerts


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def _value(entry):
    return getattr(entry, "value", entry)


# -- delivery -----------------------------------------------------------------------------------

def _deliver_due(context, rules: Sequence[AlertRule], state: dict, now: float) -> tuple[list, list, list]:
    sent, failed, gave_up, kept = [], [], [], []
    down: set[tuple[int, str]] = set()  # channels that failed this tick: the rest of theirs waits (no 10 s each)
    for item in state["pending"]:
        if item["rule"] >= len(rules):
            continue  # its rule is gone from the configuration
        if item["next"] > now or (item["rule"], item["channel"]) in down:
            kept.append(item)
            continue
        rule, channel = rules[item["rule"]], item["channel"]
        alert = Alert.from_json(item["alert"])
        label = f"{alert.event} {alert.key.split(':', 1)[1]} -> {channel_label(rule, channel)}"
        try:
            deliver(rule, channel, alert)
        except DeliveryError as exc:
            down.add((item["rule"], channel))
            item["tries"] += 1
            if item["tries"] >= MAX_TRIES:
                context.log.error(f"alert {label}: {exc}; gave up after {MAX_TRIES} tries")
                gave_up.append(label)
                continue
            wait = min(FIRST_RETRY_SECONDS * 2 ** (item["tries"] - 1), MAX_RETRY_SECONDS)
            item["next"] = now + wait
            context.log.warning(f"alert {label}: {exc}; try {item['tries'] + 1} of {MAX_TRIES} in {wait:.0f}s")
            failed.append(f"{label}: {exc}")
            kept.append(item)
            continue
        context.log.info(f"alert {label}: sent")
        sent.append(label)
    state["pending"] = kept
    return sent, failed, gave_up


def watched_imports(project: str, jobs: Sequence[dg.JobDefinition]) -> list[WatchedImport]:
    """The import jobs among ``jobs`` with their collection assets and freshness."""
    from core4_pipelines.ingest.assets import assets_of, collection_key

    watched = []
    for job in jobs:
        found = assets_of(job)
        if found is None or found.collection is None or found.produces is not None:
            continue
        freshness = found.freshness
        seconds = freshness.total_seconds() if hasattr(freshness, "total_seconds") else (
            float(freshness) if freshness is not None else None)
        watched.append(WatchedImport(job, collection_key(project, found.collection), seconds))
    return watched


def ui_address(host: str, port: int) -> str:
    """The UI's address for links: a wildcard bind address is not one to click."""
    import socket

    shown = socket.getfqdn() if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{port}"

