"""sFTP downloads against the plain client loop, over loopback to the test SFTP server
(scripts/sftp_server.py, asyncssh, its own process).

- 1,000 x 50 KB: ``fetch_sftp_into_proc`` (listing, ledger, hidden temp, size check, fsync, move
  into proc) vs one asyncssh connection ``get``-ting each file into a local folder.
- one 200 MB file: the same two.

Ratio = baseline time / our time (throughput, higher is better), medians of interleaved runs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys

from bench import Row, at_least, folder_resource, interleaved, scratch

NAME = "sftp"
TITLE = "sFTP download vs a plain asyncssh get loop"
FILES, SMOKE_FILES = 1_000, 20
FILE_BYTES = 50 * 1024
BIG_BYTES, SMOKE_BIG_BYTES = 200 << 20, 4 << 20
REPEATS, SMOKE_REPEATS = 3, 1
SERVER = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "sftp_server.py")
USER, PASSWORD = "bench", "bench-password"


def run(smoke: bool) -> list[Row]:
    import asyncssh

    from core4_resources.mongo.embedded.server import EmbeddedMongo, free_port
    from core4_resources.mongo.resource import MongoResource

    files, big = (SMOKE_FILES, SMOKE_BIG_BYTES) if smoke else (FILES, BIG_BYTES)
    repeats = SMOKE_REPEATS if smoke else REPEATS
    rows = []
    with scratch(NAME) as root, EmbeddedMongo(os.path.join(root, "mongo")) as server:
        mongo = MongoResource(mongo_url=server.url, database="bench_sftp")
        remote = os.path.join(root, "remote")
        os.makedirs(remote)
        key = asyncssh.generate_private_key("ssh-ed25519")
        key_file = os.path.join(root, "host")
        key.write_private_key(key_file)
        authorized = "-"  # password only
        port = free_port()
        known_hosts = os.path.join(root, "known_hosts")
        with open(known_hosts, "w") as out:
            out.write(f"[127.0.0.1]:{port} {key.export_public_key().decode().strip()}\n")
        os.environ["BENCH_SFTP_PASSWORD"] = PASSWORD
        process = subprocess.Popen([sys.executable, SERVER, str(port), remote, key_file, authorized, USER, PASSWORD],
                                   stdout=subprocess.PIPE, text=True)
        try:
            assert process.stdout.readline().strip() == "ready"
            for case, count, size in (("small", files, FILE_BYTES), ("big", 1, big)):
                rows.append(_case_row(root, remote, mongo, port, known_hosts, case, count, size, repeats))
        finally:
            process.kill()
            process.wait()
            mongo.db().client.drop_database("bench_sftp")
    return rows


def _case_row(root, remote, mongo, port, known_hosts, case: str, count: int, size: int, repeats: int) -> Row:
    import asyncssh

    from core4_pipelines.download.sftp import SftpSource, fetch_sftp_into_proc

    folder = os.path.join(remote, case)
    os.makedirs(folder)
    payload = os.urandom(size)
    for index in range(count):
        with open(os.path.join(folder, f"f-{index:05d}.bin"), "wb") as out:
            out.write(payload)
    source = SftpSource(host="127.0.0.1", port=port, user=USER, remote_dir=f"/{case}",
                        password="BENCH_SFTP_PASSWORD", known_hosts=known_hosts, min_age_seconds=0,
                        max_files=count + 1, max_bytes=count * size + 1)
    state = {"round": 0}

    def prepare_ours():
        state["round"] += 1
        mongo.collection("sys.downloads").delete_many({})
        state["folders"] = folder_resource(os.path.join(root, f"ours-{case}-{state['round']}"))

    def ours():
        fetch_sftp_into_proc(state["folders"], mongo, source, f"bench.{case}")

    def prepare_plain():
        target = os.path.join(root, f"plain-{case}")
        shutil.rmtree(target, ignore_errors=True)
        os.makedirs(target)
        state["plain"] = target

    def plain():
        async def loop():
            async with asyncssh.connect("127.0.0.1", port, username=USER, password=PASSWORD,
                                        known_hosts=known_hosts) as connection, \
                    connection.start_sftp_client() as client:
                for name in await client.listdir(f"/{case}"):
                    if not name.startswith("."):
                        await client.get(f"/{case}/{name}", os.path.join(state["plain"], name))
        asyncio.run(loop())

    ours_t, base_t = interleaved(ours, plain, repeats, prepare_ours=prepare_ours, prepare_baseline=prepare_plain)
    return Row(f"{count} x {size // 1024} KB", ours_t, base_t, at_least(0.8), ratio_kind="throughput",
               context={"files": count, "bytes": size})
