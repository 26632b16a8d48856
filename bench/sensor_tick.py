"""Sensor tick over a proc folder with nothing to claim, against os.scandir + stat.

Every file is younger than the sensor's ``min_age_seconds``, so the sensor
stats each entry and claims none: the steady state of a folder that is being
filled. The baseline is the least any scan must do: one ``os.scandir`` and one
``stat`` per entry.
"""

from __future__ import annotations

import contextlib
import os
import statistics

import dagster as dg

from bench import Row, at_most, folder_resource, interleaved, scratch
from core4_pipelines.ingest.claim import scan_ready

NAME = "sensor_tick"
TITLE = "sensor tick, nothing to claim, vs os.scandir + stat"
SIZES = (1_000, 10_000, 100_000)
SMOKE_SIZES = (200,)
PATTERN = r".*\.csv$"


def scandir_stat(folder: str) -> int:
    count = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            entry.stat(follow_symlinks=False)
            count += 1
    return count


def make_sensor(**options) -> dg.SensorDefinition:
    from core4_pipelines.ingest.job import import_job
    from core4_pipelines.ingest.readers import read_csv
    from core4_pipelines.ingest.sensor import proc_folder_sensor

    job = import_job("import_bench", read=read_csv, collection="bench")
    return proc_folder_sensor(job, pattern=PATTERN, **options)


@contextlib.contextmanager
def sensor_mongo():
    """The MongoDB a sensor pings before it claims: an embedded server for the benchmark."""
    from core4_resources.mongo.embedded.server import EmbeddedMongo
    from core4_resources.mongo.resource import MongoResource

    with scratch("sensor_mongo") as root, EmbeddedMongo(os.path.join(root, "mongo")) as server:
        yield MongoResource(mongo_url=server.url, database="bench_sensor")


def evaluate(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, folders, mongo):
    context = dg.build_sensor_context(instance=instance, resources={"folders": folders, "mongo": mongo})
    return sensor.evaluate_tick(context)


def fill(folder: str, count: int) -> None:
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        with open(os.path.join(folder, f"reading-{index:06d}.csv"), "wb") as handle:
            handle.write(b"id\n1\n")


def repeats_for(count: int) -> int:
    return 21 if count <= 1_000 else 11 if count <= 10_000 else 7


def measure(sensor: dg.SensorDefinition, count: int, repeats: int, mongo) -> Row:
    with scratch(NAME) as root, dg.DagsterInstance.ephemeral() as instance:
        folders = folder_resource(root)
        proc = folders.proc_folder()
        fill(proc, count)

        def ours():
            result = evaluate(sensor, instance, folders, mongo)
            if result.run_requests:
                raise AssertionError("the sensor claimed files that are too young")

        ours_s, baseline_s = interleaved(ours, lambda: scandir_stat(proc), repeats)
        # Where the time goes: our scan alone, and the evaluation of an empty folder
        # (Dagster's fixed cost per tick: context, resource initialisation).
        scan_s, _ = interleaved(lambda: scan_ready(proc, PATTERN, 3600), lambda: None, repeats)
        with scratch(NAME) as empty_root:
            empty = folder_resource(empty_root)
            fixed_s, _ = interleaved(lambda: evaluate(sensor, instance, empty, mongo), lambda: None, repeats)
    return Row(
        f"{count:,} files",
        ours_s,
        baseline_s,
        at_most(1.5),
        context={
            "files": count,
            "scan_ready_s": statistics.median(scan_s),
            "scan_ready_ratio": statistics.median(scan_s) / statistics.median(baseline_s),
            "empty_folder_tick_s": statistics.median(fixed_s),
        },
    )


def run(smoke: bool) -> list[Row]:
    sensor = make_sensor(min_age_seconds=3600)
    with sensor_mongo() as mongo:
        return [
            measure(sensor, count, 3 if smoke else repeats_for(count), mongo)
            for count in (SMOKE_SIZES if smoke else SIZES)
        ]
