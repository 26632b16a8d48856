"""Helpers shared by every test module (tests/, tests/reliability/, tests/live/).

tests/ has no __init__.py: pytest puts it on sys.path when it loads tests/conftest.py, so any
test module imports these with ``from support import ...`` (a script a test starts adds tests/
to its own sys.path, see reliability/import_worker.py).

- files: ``write``, ``put`` (into a folder, dated an hour back), ``read``, ``mode_of``,
  ``csv_rows``, checksums, and listings that see hidden names or not;
- folders and import runs: ``make_folders``, ``claim_all``, ``run_import``, ``tick`` (one
  sensor evaluation), ``start_import_worker`` (a run in a process a test may kill),
  ``archived``, ``failure_text``, ``event_log_text``;
- jobs and projects: ``declared_job``, ``make_project``, ``coco`` (the CLI in a subprocess);
- the reliability suite's ``STRESS``, ``SEED`` and tally (``count``, printed at the end by
  tests/reliability/conftest.py).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import stat
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone

import dagster as dg

from core4_pipelines.ingest.claim import claim_batches, scan_ready
from core4_pipelines.ingest.job import BATCH_TAG, import_job, import_run_config
from core4_pipelines.properties import job_properties
from core4_pipelines.ingest.readers import read_csv
from core4_resources.files.folders import FolderResource

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
COCO = os.path.join(BIN, "coco")
IMPORT_WORKER = os.path.join(REPO, "tests", "reliability", "import_worker.py")
STRESS = os.environ.get("CORE4_STRESS") == "1"
# One seed per session for the randomised crash tests; CORE4_STRESS_SEED replays a failure's seed.
SEED = int(os.environ.get("CORE4_STRESS_SEED", random.randrange(1 << 30)))
OLD = time.time() - 3600
STARTED = datetime(2024, 3, 5, 14, 7, tzinfo=timezone.utc)
JOB = import_job("import_things", read=read_csv, collection="things")

# What the reliability suite did, printed at the end of the session (its conftest's terminal summary).
TALLY = {"kills injected": 0, "files checked": 0, "bad inputs tried": 0, "files lost": 0}


def count(key: str, n: int = 1) -> None:
    TALLY[key] += n


# -- files --------------------------------------------------------------------------------------


def write(path, content: bytes | str = b"a,b\n1,2\n", mtime: float | None = None) -> str:
    """A file at ``path`` (its folder made as needed), dated ``mtime`` when given."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(content.encode() if isinstance(content, str) else content)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def put(folder, name: str, content: bytes | str = b"a,b\n1,2\n", mtime: float | None = OLD) -> str:
    """A file ``name`` in ``folder``, an hour old by default (old enough for any age check)."""
    return write(os.path.join(str(folder), name), content, mtime)


def read(path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def csv_rows(n: int, tag: str = "x") -> bytes:
    return ("id,tag,value\n" + "".join(f"{i},{tag},{i * 0.5}\n" for i in range(n))).encode()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(path: str) -> str:
    """The sha256 of a file's content; a .gz file is decompressed first."""
    if not path.endswith(".gz"):
        return sha256_file(path)
    digest = hashlib.sha256()
    with gzip.open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def walk_files(root) -> list[str]:
    """Every file (and symlink) below root, hidden or not."""
    found = []
    for folder, dirs, files in os.walk(str(root)):
        found += [os.path.join(folder, name) for name in files]
        found += [os.path.join(folder, d) for d in dirs if os.path.islink(os.path.join(folder, d))]
    return sorted(found)


def has_hidden_part(path: str, root) -> bool:
    relative = os.path.relpath(path, str(root))
    return any(part.startswith(".") for part in relative.split(os.sep))


def visible_files(root) -> list[str]:
    """Files below root whose path has no hidden component (what a listing or a user sees)."""
    return [p for p in walk_files(root) if not has_hidden_part(p, root)]


def hidden_files(root) -> list[str]:
    return [p for p in walk_files(root) if has_hidden_part(p, root)]


def write_json(path: str, data) -> None:
    with open(path, "w") as handle:
        json.dump(data, handle)


# -- folders, batches and import runs -----------------------------------------------------------


def make_folders(root, project: str = "demo", **options) -> FolderResource:
    """A FolderResource for ``project`` with every folder under ``root``; ``options`` set its other
    fields (archive_stamp, compress_level, ...). The ``folders`` fixture is this under tmp_path/root."""
    return FolderResource.under_root(root, project, **options)


def claim_all(folders: FolderResource, batch_size: int = 1000) -> list[str]:
    """Claim every ready file in proc (no age check) into batches; their ids."""
    proc = folders.proc_folder()
    names = scan_ready(proc, None, 0).ready
    return [b.batch_id for b in claim_batches(proc, names, batch_size, max_batches=10_000)]


def run_import(folders, mongo, batch_id: str, job=JOB, instance=None, base=None):
    return job.execute_in_process(
        run_config=import_run_config(job, batch_id, base),
        resources={"folders": folders, "mongo": mongo},
        instance=instance,
        raise_on_error=False,
        tags={BATCH_TAG: batch_id},
    )


def tick(sensor, folders, mongo, instance=None):
    """One evaluation of a sensor that takes ``folders`` and ``mongo``."""
    context = dg.build_sensor_context(instance=instance, resources={"folders": folders, "mongo": mongo})
    return sensor.evaluate_tick(context)


def start_import_worker(tmp_path, dagster_home, settings: dict) -> subprocess.Popen:
    """reliability/import_worker.py importing one batch in a process group of its own (so a test can
    kill it with -9), on the instance in ``dagster_home``; ``settings`` as that script reads them."""
    path = os.path.join(str(tmp_path), f"worker-{settings['batch_id']}.json")
    write_json(path, settings)
    return subprocess.Popen(
        [sys.executable, IMPORT_WORKER, path], env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
        cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def failure_text(result, job=JOB) -> str:
    failure = result.failure_data_for_node(f"{job.name}_batch")
    return str(failure.error) if failure is not None else ""


def archived(folders: FolderResource) -> dict[str, list[str]]:
    """name in the archive (without .gz) -> paths where it was archived."""
    found: dict[str, list[str]] = {}
    for path in visible_files(folders.archive_folder()):
        name = os.path.basename(path)
        found.setdefault(name.removesuffix(".gz"), []).append(path)
    return found


def event_log_text(instance: dg.DagsterInstance, run_id: str) -> str:
    from dagster._serdes import serialize_value

    return "\n".join(serialize_value(entry) for entry in instance.all_logs(run_id))


# -- jobs, projects and the CLI -----------------------------------------------------------------


@dg.op
def noop() -> None:
    pass


def declared_job(name: str, op=noop, **properties) -> dg.JobDefinition:
    """A one-op job ``name``; with core4 job properties when any are given."""

    @dg.job(name=name)
    def the_job():
        op()

    return job_properties(**properties)(the_job) if properties else the_job


def make_project(home, name: str, definitions: str, yaml: str = "", version: str | None = None) -> str:
    """A project folder ``<home>/<name>`` as discovery finds it: package ``name`` with
    ``__project__``, its yaml and ``definitions`` (dedented). Returns the project folder."""
    package = os.path.join(str(home), name, name)
    os.makedirs(package)
    init = '__project__ = "core4"\n' + (f'__version__ = "{version}"\n' if version else "")
    write(os.path.join(package, "__init__.py"), init)
    write(os.path.join(package, f"{name}.yaml"), yaml)
    write(os.path.join(package, "definitions.py"), textwrap.dedent(definitions))
    return os.path.dirname(package)


def coco(*args, env: dict | None = None, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``coco ARGS`` in a subprocess; ``env`` is its whole environment (None: this process's)."""
    return subprocess.run([COCO, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
                          check=False)


def deliver_batch(folders, mongo, job, files: dict):
    """Put ``files`` (name -> content) into proc, claim them as one batch and import it:
    (the run's result, the batch id, its materialization's metadata or None)."""
    for name, content in files.items():
        put(folders.proc_folder(), name, content)
    (batch_id,) = claim_all(folders)
    result = run_import(folders, mongo, batch_id, job=job)
    events = result.get_asset_materialization_events()
    return result, batch_id, (events[0].materialization.metadata if events else None)


def deliver(folders, mongo, job, files: dict):
    """As deliver_batch: (the run's result, its materialization's metadata or None)."""
    result, _, metadata = deliver_batch(folders, mongo, job, files)
    return result, metadata

