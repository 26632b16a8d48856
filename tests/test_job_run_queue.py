"""max_parallel, priority, wall_time and zombie_time enforced by a real DagsterInstance with the daemon's queue and monitoring."""

from __future__ import annotations

import logging
import os
import textwrap
import time

import dagster as dg
import pytest
import yaml
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.utils import make_new_run_id
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)
from support import declared_job, make_project

from core4_pipelines.coco.instance import instance_config, write_instance
from core4_pipelines.coco.probe import collect_job_limits
from core4_pipelines.project.definitions import project_definitions
from core4_resources.config.settings import load_config

ACTIVE = {dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED}

DEFINITIONS = textwrap.dedent(
    """
    import dagster as dg
    from core4_pipelines import project_definitions
    from core4_pipelines.ingest.job import job_properties

    @dg.op
    def fetch():
        pass

    @job_properties(max_parallel=5)
    @dg.job
    def crawl():
        fetch()

    @dg.job
    def report():
        fetch()

    defs = project_definitions("shopq", jobs=[crawl, report])
    """
)


@pytest.fixture
def home(tmp_path):
    """A folder.home with project shopq: crawl declares max_parallel 5, its yaml lowers it to 2."""
    make_project(tmp_path / "home", "shopq", DEFINITIONS, yaml="jobs:\n  crawl:\n    max_parallel: 2\n")
    return tmp_path / "home"


def queue_instance(job_limits, zombie_time=1800):
    config = instance_config("/unused", job_limits=job_limits, max_concurrent_runs=10, zombie_time=zombie_time)
    return dg.instance_for_test(
        overrides={
            "run_coordinator": config["run_coordinator"],
            "run_monitoring": config["run_monitoring"],
            # Launching marks a run STARTING and goes no further: what is measured is the queue.
            "run_launcher": {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"},
        }
    )


def submit(instance, job, count, tags=None):
    runs = []
    for _ in range(count):
        # A queued run as the webserver or a sensor leaves it: with the code location it came from.
        origin = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("shop"), "__repository__")
        run = dg.DagsterRun(
            job_name=job.name,
            run_id=make_new_run_id(),
            status=dg.DagsterRunStatus.QUEUED,
            tags={**job.run_tags, **(tags or {})},
            remote_job_origin=origin.get_job_origin(job.name),
        )
        instance.add_run(run)
        runs.append(run.run_id)
    return runs


def status(instance, run_ids):
    return [instance.get_run_by_id(run_id).status for run_id in run_ids]


def test_max_parallel_from_the_project_caps_runs_leaving_the_queue(home):
    limits, problems = collect_job_limits(str(home))
    assert (limits, problems) == ({"shopq.crawl": 2}, [])

    defs = project_definitions("shopq", jobs=[declared_job("crawl", max_parallel=2), declared_job("report")])
    crawl, report = defs.resolve_job_def("crawl"), defs.resolve_job_def("report")
    with queue_instance(limits) as instance:
        crawls, reports = submit(instance, crawl, 5), submit(instance, report, 3)
        daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
        with create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance) as workspace:
            list(daemon.run_iteration(workspace))
            assert sum(s in ACTIVE for s in status(instance, crawls)) == 2
            assert all(s in ACTIVE for s in status(instance, reports)), "other jobs are not held back"

            finished = next(r for r, s in zip(crawls, status(instance, crawls)) if s in ACTIVE)
            instance.report_run_failed(instance.get_run_by_id(finished))
            for _ in range(2):
                list(daemon.run_iteration(workspace))
            active = sum(s in ACTIVE for s in status(instance, crawls))
            queued = status(instance, crawls).count(dg.DagsterRunStatus.QUEUED)
    assert (active, queued) == (2, 2)


def test_priority_orders_the_queue():
    defs = project_definitions("shopp", jobs=[declared_job("low"), declared_job("high", priority=10)])
    low, high = defs.resolve_job_def("low"), defs.resolve_job_def("high")
    with queue_instance({"shopp.low": 1, "shopp.high": 1}) as instance:
        first_low, first_high = submit(instance, low, 1), submit(instance, high, 1)
        # max_concurrent_runs 10 admits both; priority decides who goes first among equals.
        with create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance):
            daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
            order = [run.run_id for run in daemon._get_runs_to_dequeue(
                instance, instance.get_concurrency_config(), fixed_iteration_time=None)]
    assert order == first_high + first_low


def test_wall_time_stops_a_run_through_run_monitoring():
    defs = project_definitions("shopw", jobs=[declared_job("slow", wall_time=0.5)])
    slow = defs.resolve_job_def("slow")
    with queue_instance({}) as instance:
        (run_id,) = submit(instance, slow, 1)
        with create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance) as workspace:
            list(QueuedRunCoordinatorDaemon(interval_seconds=1).run_iteration(workspace))
            run = instance.get_run_by_id(run_id)
            instance.report_dagster_event(
                dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name),
                run_id=run_id,
            )
            list(execute_run_monitoring_iteration(workspace, logging.getLogger("test")))
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
            time.sleep(0.8)
            list(execute_run_monitoring_iteration(workspace, logging.getLogger("test")))
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE


def test_zombie_time_fails_a_run_that_never_gets_going(tmp_path):
    with queue_instance({}, zombie_time=1) as instance:
        (run_id,) = submit(instance, declared_job("hung"), 1)
        with create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance) as workspace:
            list(QueuedRunCoordinatorDaemon(interval_seconds=1).run_iteration(workspace))
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTING  # its worker never reports
            time.sleep(1.3)
            list(execute_run_monitoring_iteration(workspace, logging.getLogger("test")))
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE


def test_write_instance_carries_limits_and_zombie_time(tmp_path, monkeypatch):
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path))
    monkeypatch.setenv("CORE4_OPTION_job__zombie_time", "600")
    home = write_instance(load_config(), job_limits={"shop.crawl": 2})
    with open(os.path.join(home, "dagster.yaml"), encoding="utf-8") as handle:
        written = yaml.safe_load(handle)
    assert {"key": "core4/job", "value": "shop.crawl", "limit": 2} in (
        written["run_coordinator"]["config"]["tag_concurrency_limits"]
    )
    assert written["run_monitoring"]["start_timeout_seconds"] == 600
    with dg.DagsterInstance.from_config(home) as instance:  # Dagster accepts what was written
        assert instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
