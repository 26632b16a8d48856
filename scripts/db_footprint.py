"""Bytes on disk per document of the embedded database: 150,000 small stamped documents (6.5 MB as
CSV) inserted into secantusd-py with its own defaults and with the embedded server's flags.

    .venv/bin/python scripts/db_footprint.py    # prints one line per setting (BENCHMARKS.md has the figures)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pymongo

from core4_resources.mongo.embedded.server import OPLOG_MAX_ENTRIES, OPLOG_RETENTION_SECONDS

DOCUMENTS = 150_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _bytes_under(path: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(path) for name in names)


def measure(root: str, label: str, flags: list[str]) -> None:
    path = os.path.join(root, label)
    port = _free_port()
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "secantusd-py"), "--host", "127.0.0.1",
                               "--port", str(port), "--storage-path", path, *flags],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with pymongo.MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=20000) as client:
            client.admin.command("ping")
            csv_bytes = 0
            for start in range(0, DOCUMENTS, 1000):
                docs = [{"id": i, "name": f"item {i}", "price": i * 1.25, "day": "2026-12-01",
                         "region": "north" if i % 2 else "south", "_src": f"f{i // 1000}.csv",
                         "_job_id": "0123456789abcdef0123456789abcdef"} for i in range(start, start + 1000)]
                csv_bytes += sum(len(f"{d['id']},{d['name']},{d['price']},{d['day']},{d['region']}\n") for d in docs)
                client.db.docs.insert_many(docs)
            time.sleep(5)
            running = _bytes_under(path)
    finally:
        server.terminate()
        server.wait(60)
    stopped = _bytes_under(path)
    print(f"{label:<10} csv {csv_bytes / 1e6:.1f} MB  on disk running {running / 1e6:.0f} MB "
          f"({running / DOCUMENTS:.0f} B/doc, {running / csv_bytes:.1f}x the CSV), after a stop {stopped / 1e6:.0f} MB")


def main() -> None:
    root = tempfile.mkdtemp(prefix="core4-db-footprint-")
    try:
        measure(root, "defaults", [])
        measure(root, "embedded", ["--oplog-max-entries", str(OPLOG_MAX_ENTRIES),
                                   "--oplog-retention-seconds", str(OPLOG_RETENTION_SECONDS)])
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
