"""Shared helpers of the reliability suite: checksums, folder views, runs, and the tally."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time

import dagster as dg

from core4_pipelines.claims import claim_batches, scan_ready
from core4_pipelines.jobs import import_job, import_run_config
from core4_pipelines.readers import read_csv
from core4_resources.folders import FolderResource

STRESS = os.environ.get("CORE4_STRESS") == "1"
OLD = time.time() - 3600
JOB = import_job("import_things", read=read_csv, collection="things")

# What the suite did, printed at the end of the session (conftest.pytest_terminal_summary).
TALLY = {"kills injected": 0, "files checked": 0, "bad inputs tried": 0, "files lost": 0}


def count(key: str, n: int = 1) -> None:
    TALLY[key] += n


def make_folders(root, project: str = "demo") -> FolderResource:
    return FolderResource.under_root(root, project)


def put(folder, name: str, content: bytes | str, mtime: float | None = OLD) -> str:
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "wb") as handle:
        handle.write(content.encode() if isinstance(content, str) else content)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


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


def claim_all(folders: FolderResource, batch_size: int = 1000) -> list[str]:
    proc = folders.proc_folder()
    names = scan_ready(proc, None, 0).ready
    return [b.batch_id for b in claim_batches(proc, names, batch_size, max_batches=10_000)]


def run_import(folders, mongo, batch_id: str, job=JOB, instance=None, base=None):
    return job.execute_in_process(
        run_config=import_run_config(job, batch_id, base),
        resources={"folders": folders, "mongo": mongo},
        instance=instance,
        raise_on_error=False,
        tags={"core4/batch": batch_id},
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


def write_json(path: str, data) -> None:
    with open(path, "w") as handle:
        json.dump(data, handle)


def event_log_text(instance: dg.DagsterInstance, run_id: str) -> str:
    from dagster._serdes import serialize_value

    return "\n".join(serialize_value(entry) for entry in instance.all_logs(run_id))
