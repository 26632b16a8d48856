"""What starts a core4 job besides a user: its schedule and the chain of another job.

- ``schedule`` → a ``ScheduleDefinition`` in the job's time zone (UTC unless declared),
  running by default, whose tick is skipped while a run of the job is queued or running:
  a core4 schedule never overlaps itself. Missed ticks run once: Dagster's scheduler
  only considers the latest missed tick of a non-partitioned schedule.
- ``chain`` → each project has one run-status sensor that watches successful runs in
  every code location and requests the jobs of its own project named in the run's
  ``core4/chain`` tag. A sensor can only request jobs of its own code location, so the
  chain is carried by the finished run and picked up by the target's project: that is
  what makes a chain across projects work.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from core4_pipelines.properties import CHAIN_TAG, JOB_TAG, JobProperties
from core4_pipelines.tags import CHAINED_FROM_TAG, IN_PROGRESS_STATUSES

CHAIN_SENSOR_INTERVAL = 5


def active_run(instance: dg.DagsterInstance, qualified: str) -> dg.DagsterRun | None:
    """A queued or running run of the job ``<project>.<job>``, if there is one."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={JOB_TAG: qualified}, statuses=[dg.DagsterRunStatus(s) for s in IN_PROGRESS_STATUSES]), limit=1
    )
    return runs[0] if runs else None


def job_schedule(job: dg.JobDefinition, project: str, props: JobProperties) -> dg.ScheduleDefinition:
    qualified = f"{project}.{job.name}"
    status = (
        dg.DefaultScheduleStatus.RUNNING if props.schedule_status == "running" else dg.DefaultScheduleStatus.STOPPED
    )

    @dg.schedule(
        name=f"{job.name}_schedule",
        cron_schedule=props.schedule,
        job=job,
        execution_timezone=props.timezone,
        default_status=status,
        description=f"core4 schedule of {qualified}: {props.schedule} ({props.timezone}); skipped while a run is active",
    )
    def core4_schedule(context: dg.ScheduleEvaluationContext):
        busy = active_run(context.instance, qualified)
        if busy is not None:
            return dg.SkipReason(
                f"{qualified} is still {busy.status.value.lower()} (run {busy.run_id}); "
                f"a scheduled job never overlaps itself"
            )
        return dg.RunRequest()

    return core4_schedule


def chain_targets(run: dg.DagsterRun, project: str) -> list[str]:
    """The job names of ``project`` that ``run`` chains to (its ``core4/chain`` tag)."""
    targets = []
    for entry in (run.tags.get(CHAIN_TAG) or "").split(","):
        entry = entry.strip()
        owner, _, name = entry.rpartition(".")
        if entry and owner == project and name not in targets:
            targets.append(name)
    return targets


def chain_sensor(project: str, jobs: Sequence[dg.JobDefinition]) -> dg.SensorDefinition:
    """The project's chain sensor: requests its jobs named by successful runs anywhere."""
    names = {job.name for job in jobs}

    @dg.run_status_sensor(
        name="core4_chain",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitor_all_code_locations=True,
        request_jobs=list(jobs),
        minimum_interval_seconds=CHAIN_SENSOR_INTERVAL,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts the jobs of {project} that a successful run chains to (its {CHAIN_TAG} tag)",
    )
    def core4_chain(context: dg.RunStatusSensorContext):
        run = context.dagster_run
        requests = []
        for name in chain_targets(run, project):
            if name not in names:
                context.log.warning(f"run {run.run_id} chains to {project}.{name}, which is no job of {project}")
                continue
            requests.append(
                dg.RunRequest(
                    run_key=f"chain:{run.run_id}:{name}",
                    job_name=name,
                    tags={CHAINED_FROM_TAG: run.run_id},
                )
            )
        return requests or None  # None: this run is not for this project; look at the next one

    return core4_chain
