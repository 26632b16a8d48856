"""Bad files and bad folder states: each a clear error that says what and where; nothing lost.

Every test here is a row of the table in docs/reliability.md.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time

import pytest
from support import (
    JOB,
    archived,
    claim_all,
    content_sha256,
    count,
    csv_rows,
    failure_text,
    make_folders,
    put,
    run_import,
    sha256_file,
    tick,
    visible_files,
    walk_files,
)

from core4_pipelines.ingest.claim import batch_files, batch_root, claim_batches, scan_ready
from core4_pipelines.ingest.sensor import proc_folder_sensor
from core4_resources.files import moves
from core4_resources.errors import FolderError

READER_RSS_LIMIT_KB = 64 * 1024


def import_batch(folders, mongo, files: dict[str, bytes]):
    """Put ``files`` in proc, claim them as one batch and run the import; returns (result, batch_id)."""
    for name, content in files.items():
        put(folders.proc_folder(), name, content)
    (batch_id,) = claim_all(folders)
    return run_import(folders, mongo, batch_id), batch_id


def in_error(folders, name: str) -> tuple[bytes, str]:
    """The file's bytes and its reason, from the error folder."""
    path = os.path.join(folders.error_folder(), name)
    with open(path, "rb") as data, open(path + ".reason.txt", encoding="utf-8") as reason:
        return data.read(), reason.read()


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("malformed.csv", b"id,tag,value\n1,a,1\n2,b\n3,c,3\n", "line 3: expected 3 fields, got 2"),
        ("latin1.csv", "id,city\n1,K\xf6ln\n".encode("latin-1"), "not utf-8 text"),
        ("empty.csv", b"", "empty file, expected a header line"),
        ("garbage.bin", random.Random(7).randbytes(65536), "garbage.bin"),
        ("unclosed-quote.csv", b'id,tag\n1,"never closed\n2,x\n', "unexpected end of data"),
    ],
)
def test_bad_content_goes_to_error_with_the_reason_and_the_rest_is_imported(folders, mongo, name, content, expected):
    count("bad inputs tried")
    result, batch_id = import_batch(folders, mongo, {name: content, "good.csv": csv_rows(4)})
    assert not result.success
    message = failure_text(result)
    assert name in message and expected in message, message
    data, reason = in_error(folders, name)
    assert data == content and expected in reason
    things = mongo.collection("things")
    assert things.count_documents({"_src": name}) == 0
    assert things.count_documents({"_src": "good.csv"}) == 4
    assert list(archived(folders)) == ["good.csv"]
    assert not os.path.exists(os.path.join(batch_root(folders.proc_folder()), batch_id))


def _free_bytes(path) -> int:
    stat = os.statvfs(str(path))
    return stat.f_bavail * stat.f_frsize


READ_AND_MEASURE = """
import json, resource, sys
from core4_pipelines.errors import RecordError
from core4_pipelines.ingest.readers import read_csv
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    message = f"read {sum(1 for _ in read_csv(sys.argv[1]))} records"
except RecordError as exc:
    message = str(exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "after_kb": after, "message": message}))
"""


@pytest.mark.timeout(300)
def test_a_1gb_single_line_file_is_refused_in_bounded_memory(folders, mongo, tmp_path):
    count("bad inputs tried")
    size = 1 << 30
    if _free_bytes(tmp_path) < 3 * size:
        pytest.skip(f"needs 3 GiB free in {tmp_path} for a 1 GiB file; {_free_bytes(tmp_path) >> 20} MiB free")
    proc = folders.proc_folder()
    os.makedirs(proc)
    path = os.path.join(proc, "one-line.csv")
    block = b"1234567," * (1 << 20)  # 8 MiB, no newline anywhere
    try:
        with open(path, "wb") as handle:
            handle.write(b"id,value\n")
            handle.writelines(block for _ in range(size // len(block)))
        os.utime(path, (time.time() - 60,) * 2)
        measured = subprocess.run([sys.executable, "-c", READ_AND_MEASURE, path], capture_output=True,
                                  text=True, timeout=240)
        assert measured.returncode == 0, measured.stderr[-2000:]
        report = json.loads(measured.stdout.strip().splitlines()[-1])
        assert "line 2 is longer than" in report["message"], report
        grew = report["after_kb"] - report["before_kb"]
        assert grew < READER_RSS_LIMIT_KB, f"reading grew the process by {grew} KiB"
        # Through the import run: refused with the reason, moved (renamed, not copied) to error.
        (batch_id,) = claim_all(folders)
        result = run_import(folders, mongo, batch_id)
        assert not result.success and "one-line.csv" in failure_text(result)
        moved = os.path.join(folders.error_folder(), "one-line.csv")
        assert os.path.getsize(moved) == size + len(b"id,value\n")
        assert mongo.collection("things").count_documents({}) == 0
    finally:
        for leftover in (path, os.path.join(folders.error_folder(), "one-line.csv")):
            if os.path.exists(leftover):
                os.unlink(leftover)


NAMES = ["my readings.csv", "Grüße 東京 ☃.csv", "line\nbreak.csv", "-rf.csv", "--help.csv", " leading-space.csv"]


def test_awkward_file_names_are_claimed_imported_and_archived_intact(folders, mongo):
    count("bad inputs tried", len(NAMES))
    tags = {name: f"n{i}" for i, name in enumerate(NAMES)}
    originals = {name: sha256_file(put(folders.proc_folder(), name, csv_rows(3, tag=tags[name]))) for name in NAMES}
    sensor = proc_folder_sensor(JOB, min_age_seconds=0)
    (request,) = tick(sensor, folders, mongo).run_requests
    result = run_import(folders, mongo, request.run_key)
    assert result.success, failure_text(result)
    things = mongo.collection("things")
    assert sorted(things.distinct("_src")) == sorted(NAMES)
    for name in NAMES:
        assert things.count_documents({"_src": name, "tag": tags[name]}) == 3
    paths = archived(folders)
    assert sorted(paths) == sorted(NAMES)
    for name, (path,) in paths.items():
        assert os.path.basename(path) == name + ".gz"
        assert content_sha256(path) == originals[name]


def test_a_file_that_disappears_between_scan_and_claim_is_skipped(folders):
    count("bad inputs tried")
    proc = folders.proc_folder()
    for name in ("a.csv", "b.csv", "c.csv"):
        put(proc, name, "x\n1\n")
    scan = scan_ready(proc, None, 0)
    os.unlink(os.path.join(proc, "b.csv"))  # taken by a person or another claimer
    (batch,) = claim_batches(proc, scan.ready, batch_size=10, max_batches=1)
    assert batch.files == ["a.csv", "c.csv"]
    assert batch_files(batch.path) == ["a.csv", "c.csv"]
    assert visible_files(proc) == []


def test_directories_and_symlinks_in_proc_are_left_alone(folders, mongo, tmp_path):
    count("bad inputs tried", 3)
    proc = folders.proc_folder()
    put(proc, "good.csv", csv_rows(2))
    os.makedirs(os.path.join(proc, "folder.csv"))
    put(os.path.join(proc, "folder.csv"), "inner.csv", csv_rows(1))
    outside = put(tmp_path / "elsewhere", "secret.csv", csv_rows(5))
    os.symlink(outside, os.path.join(proc, "link.csv"))
    os.symlink("/etc", os.path.join(proc, "etc.csv"))
    sensor = proc_folder_sensor(JOB, pattern=r".*\.csv$", min_age_seconds=0)
    (request,) = tick(sensor, folders, mongo).run_requests
    batch = os.path.join(batch_root(proc), request.run_key)
    assert os.listdir(batch) == ["good.csv"]
    # A link smuggled into a claimed batch is not followed either.
    os.symlink(outside, os.path.join(batch, "smuggled.csv"))
    result = run_import(folders, mongo, request.run_key)
    assert result.success
    assert mongo.collection("things").distinct("_src") == ["good.csv"]
    assert open(outside, "rb").read() == csv_rows(5)
    assert sorted(os.listdir(proc)) == [".batch", "etc.csv", "folder.csv", "link.csv"]
    skip = tick(sensor, folders, mongo).skip_message
    assert "3 entries are not regular files" in skip


# -- permissions ------------------------------------------------------------------------------
# The tests run as root, and root's CAP_DAC_OVERRIDE bypasses permission bits. The import
# therefore runs in a child without the capabilities that bypass them (setpriv drops them
# from its bounding set): a file or folder owned by another user is then as closed to it as
# to any ordinary user. Without root, the permission bits apply as they are.

NOBODY = 65534
WITHOUT_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def _import_restricted(tmp_path, mongo, root: str, batch_id: str) -> dict:
    settings = str(tmp_path / f"settings-{batch_id}-{time.monotonic_ns()}.json")
    with open(settings, "w") as handle:
        json.dump({"root": root, "mongo_url": mongo.mongo_url, "database": mongo.database,
                   "batch_id": batch_id}, handle)
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    prefix = WITHOUT_DAC if os.geteuid() == 0 else []
    done = subprocess.run(
        [*prefix, sys.executable, os.path.join(os.path.dirname(__file__), "import_worker.py"), settings],
        capture_output=True, text=True, timeout=240, cwd=str(tmp_path),
        env={**os.environ, "DAGSTER_HOME": str(home)},
    )
    assert done.stdout.strip(), done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def restricted():
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: cannot drop CAP_DAC_OVERRIDE")


@pytest.mark.timeout(300)
def test_a_file_without_read_permission_goes_to_error_with_the_reason(restricted, folders, mongo, tmp_path):
    count("bad inputs tried")
    put(folders.proc_folder(), "readable.csv", csv_rows(3))
    put(folders.proc_folder(), "unreadable.csv", csv_rows(3))
    (batch_id,) = claim_all(folders)
    claimed = os.path.join(batch_root(folders.proc_folder()), batch_id, "unreadable.csv")
    os.chown(claimed, NOBODY, NOBODY)
    os.chmod(claimed, 0o000)
    outcome = _import_restricted(tmp_path, mongo, folders.root, batch_id)
    assert not outcome["success"]
    assert "unreadable.csv" in outcome["error"] and "Permission denied" in outcome["error"]
    data, reason = in_error(folders, "unreadable.csv")
    assert data == csv_rows(3) and "Permission denied" in reason
    assert mongo.collection("things").distinct("_src") == ["readable.csv"]
    assert list(archived(folders)) == ["readable.csv"]


@pytest.mark.timeout(300)
def test_an_archive_folder_without_write_permission_fails_the_run_and_keeps_the_file_claimed(
    restricted, folders, mongo, tmp_path
):
    count("bad inputs tried")
    put(folders.proc_folder(), "a.csv", csv_rows(5))
    (batch_id,) = claim_all(folders)
    os.makedirs(folders.archive)
    os.chown(folders.archive, NOBODY, NOBODY)
    os.chmod(folders.archive, 0o555)
    outcome = _import_restricted(tmp_path, mongo, folders.root, batch_id)
    assert not outcome["success"]
    assert folders.archive in outcome["error"] and "Permission denied" in outcome["error"]
    claimed = os.path.join(batch_root(folders.proc_folder()), batch_id, "a.csv")
    assert open(claimed, "rb").read() == csv_rows(5)
    assert mongo.collection("things").count_documents({}) == 5
    assert walk_files(folders.archive) == []
    # The operator fixes the folder and re-executes: every record once, the file archived once.
    os.chown(folders.archive, 0, 0)
    os.chmod(folders.archive, 0o750)
    again = run_import(folders, mongo, batch_id)
    assert again.success, failure_text(again)
    assert mongo.collection("things").count_documents({}) == 5
    (path,) = archived(folders)["a.csv"]
    assert content_sha256(path) == hashlib.sha256(csv_rows(5)).hexdigest()
    assert not os.path.exists(claimed)


# -- disk full ------------------------------------------------------------------------------------


def _copy_then_enospc(src, dst, length=0):
    dst.write(src.read(100_000))
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("operation", ["move_proc across filesystems", "move_archive"])
def test_disk_full_during_a_move_keeps_the_source_and_leaves_nothing(folders, tmp_path, monkeypatch, operation):
    count("bad inputs tried")
    content = random.Random(3).randbytes(300_000)
    source = put(tmp_path / "incoming", "big.csv", content)
    monkeypatch.setattr(shutil, "copyfileobj", _copy_then_enospc)
    with pytest.raises(FolderError) as raised:
        if operation == "move_archive":
            folders.move_archive(source, run_id="r1")
        else:
            def exdev(src, dst):
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, None, dst)

            monkeypatch.setattr(moves, "rename_noreplace", exdev)
            folders.move_proc(source)
    message = str(raised.value)
    assert "No space left on device" in message and source in message and "source is unchanged" in message
    assert open(source, "rb").read() == content
    for root in (folders.proc, folders.archive):
        assert walk_files(root) == []  # neither a partial file nor a hidden temp


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A real 1 MiB tmpfs; skipped where mounting is not allowed."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}); the injected ENOSPC test covers it")
    try:
        yield str(mountpoint)
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


@pytest.mark.parametrize("target", ["proc", "archive"])
def test_a_really_full_filesystem_keeps_the_source(tmp_path, tiny_filesystem, target):
    count("bad inputs tried")
    folders = make_folders(tmp_path / "root").model_copy(update={target: tiny_filesystem})
    content = random.Random(5).randbytes(3 << 20)  # 3 MiB, incompressible: cannot fit in 1 MiB
    source = put(tmp_path / "incoming", "big.csv", content)
    with pytest.raises(FolderError, match="No space left on device"):
        if target == "archive":
            folders.move_archive(source, run_id="r1")
        else:
            folders.move_proc(source)  # tmpfs is another filesystem: the copy path, for real
    assert open(source, "rb").read() == content
    left = [os.path.join(d, n) for d, _, names in os.walk(tiny_filesystem) for n in names]
    assert left == []
    # With room again, the same move succeeds.
    roomy = folders.model_copy(update={target: str(tmp_path / f"roomy-{target}")})
    final = roomy.move_archive(source, run_id="r1") if target == "archive" else roomy.move_proc(source)
    assert content_sha256(final) == hashlib.sha256(content).hexdigest()
