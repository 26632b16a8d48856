"""kill -9 a process in the middle of move_transfer, move_proc, move_archive and move_archive_many.

Each kill is real: a forked child runs the move and gets SIGKILL -- either from
itself at the k-th traced line of the move code (every point of the code path is
reachable, chosen at random), or from this process after a random delay (for
large files, so the kill lands inside a copy or a compression). After each kill:
every original byte is at the source or complete at the target (sha256), no
partial file has a visible name, the next move of the same file succeeds and
leaves exactly one copy, and the sweep removes every hidden leftover.

The batch archive (``move_archive_many``: every copy written, one durability
point, then every rename) is killed the same way over a batch of files: each
file's bytes at its source or complete in the archive, at most one copy each,
and archiving the batch again leaves exactly one copy of every file.

Cross-filesystem moves run both for real (/dev/shm is a tmpfs, a filesystem of
its own) and forced (renames between folders raise EXDEV in the child).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import sys
import time
import uuid

import pytest
from support import (
    SEED,
    STARTED,
    STRESS,
    content_sha256,
    count,
    hidden_files,
    make_folders,
    sha256_file,
    visible_files,
)

from core4_pipelines.supervise.sweep import sweep
from core4_resources.files import archiving, batch_moves, fileops, paths as folder_paths, moves
OPERATIONS = ("transfer", "proc", "archive", "archive_plain")
FILESYSTEMS = ("same", "exdev_forced", "exdev_real")
SIZES = {"small": 40_000, "large": 20 * 1024 * 1024 + 12_345}
TRACED = {os.path.abspath(m.__file__) for m in (moves, fileops, batch_moves, archiving, folder_paths)} | {
    os.path.abspath(sys.modules["core4_resources.files.folders"].__file__),
    os.path.abspath(shutil.__file__), os.path.abspath(sys.modules["gzip"].__file__)}
COMBOS = [(op, fs, size) for op in OPERATIONS for fs in FILESYSTEMS for size in SIZES]


def _shm_is_another_filesystem(tmp_path) -> bool:
    return os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) and \
        os.stat("/dev/shm").st_dev != os.stat(tmp_path).st_dev


@contextlib.contextmanager
def forced_exdev():
    """Renames between two folders fail with EXDEV, as between two filesystems."""
    real_noreplace, real_replace = moves.rename_noreplace, os.replace

    def across(src, dst):
        return os.path.dirname(os.path.abspath(src)) != os.path.dirname(os.path.abspath(dst))

    def noreplace(src, dst):
        if across(src, dst):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, None, dst)
        real_noreplace(src, dst)

    def replace(src, dst, **kwargs):
        if across(src, dst):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, None, dst)
        real_replace(src, dst, **kwargs)

    moves.rename_noreplace, os.replace = noreplace, replace
    try:
        yield
    finally:
        moves.rename_noreplace, os.replace = real_noreplace, real_replace


class Scene:
    """One operation on one file: where the source lives, where the target lands."""

    def __init__(self, tmp_path, op: str, fs: str, size: int, rng: random.Random):
        self.op, self.fs, self.rng = op, fs, rng
        self.folders = make_folders(tmp_path / "root")
        if fs == "exdev_real":
            self.incoming = os.path.join("/dev/shm", f"core4-crash-{uuid.uuid4().hex[:8]}")
        else:
            self.incoming = str(tmp_path / "root" / "incoming")
        os.makedirs(self.incoming, exist_ok=True)
        self.name = "data file-ü.csv"
        self.source = os.path.join(self.incoming, self.name)
        # Text-like content (compresses like real data), different per scene.
        seed = rng.randbytes(4096)
        self.content = (seed.hex().encode() * (size // 8192 + 1))[:size]
        self.sha = None
        self.roots = [self.incoming, self.folders.transfer, self.folders.proc, self.folders.archive]
        self.target_root = {
            "transfer": self.folders.transfer, "proc": self.folders.proc,
        }.get(op, self.folders.archive)

    def reset(self) -> None:
        for root in self.roots:
            shutil.rmtree(root, ignore_errors=True)
        os.makedirs(self.incoming, exist_ok=True)
        with open(self.source, "wb") as handle:
            handle.write(self.content)
        os.utime(self.source, (1_600_000_000, 1_600_000_000))
        self.sha = self.sha or sha256_file(self.source)

    def move(self) -> str:
        f = self.folders
        if self.op == "transfer":
            return f.move_transfer(self.source)
        if self.op == "proc":
            return f.move_proc(self.source)
        return f.move_archive(self.source, compress=self.op == "archive", run_id="r1", started=STARTED)

    @contextlib.contextmanager
    def environment(self):
        with forced_exdev() if self.fs == "exdev_forced" else contextlib.nullcontext():
            yield

    def cleanup(self) -> None:
        for root in self.roots:
            shutil.rmtree(root, ignore_errors=True)


def _child(scene: Scene, kill_at: int | None, report_fd: int) -> None:
    """Runs in the forked child; never returns."""
    try:
        events = 0

        def local(frame, event, arg):
            nonlocal events
            if event == "line":
                events += 1
                if events == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            return local

        def global_trace(frame, event, arg):
            return local if frame.f_code.co_filename in TRACED else None

        with scene.environment():
            os.write(report_fd, b"R")
            started = time.monotonic()
            if kill_at is not None:
                sys.settrace(global_trace)
            scene.move()
            sys.settrace(None)
            os.write(report_fd, f"{events} {time.monotonic() - started}\n".encode())
        os._exit(0)
    except BaseException:
        import traceback

        traceback.print_exc()
        os._exit(3)


def run_child(scene: Scene, kill_at: int | None = None, kill_after: float | None = None):
    """Fork a child moving the scene's file; returns (killed, events, seconds)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(scene, kill_at, write_fd)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            ready = pipe.read(1)
            if ready == b"R" and kill_after is not None:
                time.sleep(kill_after)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            rest = pipe.read().decode()
    finally:
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True, None, None
    assert os.WEXITSTATUS(status) == 0, f"the move failed in the child (exit {os.WEXITSTATUS(status)})"
    events, seconds = rest.split()
    return False, int(events), float(seconds)


def check_after_kill(scene: Scene, where: str) -> None:
    """Every byte at the source or complete at the target; nothing partial is visible."""
    source_there = os.path.exists(scene.source)
    if source_there:
        assert sha256_file(scene.source) == scene.sha, f"{where}: the source was changed"
        count("files checked")
    visible = [p for root in scene.roots for p in visible_files(root)]
    targets = [p for p in visible if p != scene.source]
    for path in targets:
        assert os.path.dirname(path) != scene.incoming, f"{where}: unexpected visible file {path}"
        assert content_sha256(path) == scene.sha, f"{where}: visible but incomplete: {path}"
        count("files checked")
    assert len(targets) <= 1, f"{where}: more than one copy: {targets}"
    if not (source_there or targets):
        count("files lost")
        pytest.fail(f"{where}: the data is neither at the source nor at the target")


def check_next_move(scene: Scene, where: str) -> None:
    """The next move of the same file succeeds; afterwards one complete copy, no leftovers."""
    if os.path.exists(scene.source):
        with scene.environment():
            final = scene.move()
        assert os.path.isfile(final), where
    assert not os.path.exists(scene.source), f"{where}: the source is still there"
    (target,) = visible_files(scene.target_root)
    assert content_sha256(target) == scene.sha, f"{where}: {target} is not complete"
    # Whatever hidden leftovers the kill made, the sweep removes them (and only them).
    sweep(scene.roots, older_than=0, apply=True)
    leftovers = [p for root in scene.roots for p in hidden_files(root)]
    assert leftovers == [], f"{where}: the sweep left {leftovers}"
    assert visible_files(scene.target_root) == [target]


def kill_campaign(tmp_path, op: str, fs: str, size_name: str, kills: int) -> None:
    if fs == "exdev_real" and not _shm_is_another_filesystem(tmp_path):
        pytest.skip("/dev/shm is not a separate writable filesystem here (exdev_forced covers EXDEV)")
    rng = random.Random(f"{SEED}-{op}-{fs}-{size_name}")
    scene = Scene(tmp_path, op, fs, SIZES[size_name], rng)
    try:
        scene.reset()
        killed, events, seconds = run_child(scene, kill_at=10**9)  # calibration: a whole traced move
        assert not killed and events > 0
        check_next_move(scene, "uninterrupted move")
        landed = attempts = 0
        while landed < kills:
            attempts += 1
            assert attempts < kills * 5, "kills do not land"
            scene.reset()
            timed = size_name == "large" and attempts % 2 == 0
            if timed:
                delay = rng.uniform(0, seconds * 1.1)
                killed, _, _ = run_child(scene, kill_after=delay)
                where = f"{op}/{fs}/{size_name}: SIGKILL after {delay:.3f}s (seed {SEED})"
            else:
                point = rng.randint(1, events)
                killed, _, _ = run_child(scene, kill_at=point)
                where = f"{op}/{fs}/{size_name}: SIGKILL at line event {point}/{events} (seed {SEED})"
            landed += killed
            count("kills injected", int(killed))
            check_after_kill(scene, where)
            check_next_move(scene, where)
    finally:
        scene.cleanup()


def _default_kills(op: str, size_name: str) -> int:
    return 2 if size_name == "small" and op in ("transfer", "archive") else 1


@pytest.mark.timeout(300)
@pytest.mark.parametrize("op, fs, size_name", COMBOS)
def test_kill_during_move(tmp_path, op, fs, size_name):
    kill_campaign(tmp_path, op, fs, size_name, _default_kills(op, size_name))


@pytest.mark.stress
@pytest.mark.timeout(900)
@pytest.mark.skipif(not STRESS, reason="stress size: make test-stress (CORE4_STRESS=1)")
@pytest.mark.parametrize("op, fs, size_name", COMBOS)
def test_kill_during_move_stress(tmp_path, op, fs, size_name):
    kill_campaign(tmp_path, op, fs, size_name, 10)


def test_archiving_again_after_a_kill_finishes_the_first_archive(tmp_path, monkeypatch):
    """Killed between installing the .gz and removing the source; the re-executed run (a new run id,
    so a new stamp folder) archives the same source again: the first archive is kept, no second one."""
    folders = make_folders(tmp_path / "root")
    source = os.path.join(tmp_path, "root", "proc", "demo", ".batch", "20240101T000000-0123abcd", "a.csv")
    os.makedirs(os.path.dirname(source))
    with open(source, "wb") as handle:
        handle.write(b"id\n1\n")

    def killed(path):
        raise SystemExit("killed right after the rename")

    with monkeypatch.context() as patch:
        patch.setattr(moves, "fsync_dir", killed)
        with pytest.raises(SystemExit):
            folders.move_archive(source, run_id="first-run", started=STARTED)
    assert os.path.exists(source)
    final = folders.move_archive(source, run_id="second-run", started=STARTED)
    assert "first-run" in final and not os.path.exists(source)
    assert [os.path.relpath(p, folders.archive) for p in visible_files(folders.archive)] == [
        os.path.join("demo", "2024", "03", "05", "first-run", "a.csv.gz")
    ]
    assert hidden_files(os.path.dirname(source)) == []
    assert not os.path.exists(os.path.join(folders.archive, "demo", "2024", "03", "05", "second-run"))


# -- the batch archive ----------------------------------------------------------------------

BATCH_FILES = 5


class BatchScene(Scene):
    """``move_archive_many`` over a batch of files (one of them larger, so timed kills land in it)."""

    def __init__(self, tmp_path, fs: str, rng: random.Random):
        super().__init__(tmp_path, "archive", fs, SIZES["small"], rng)
        self.incoming = os.path.join(str(tmp_path / "root"), "proc", "demo", ".batch", "20240101T000000-0123abcd")
        self.roots[0] = self.incoming
        self.names = [f"part {i}-ü.csv" for i in range(BATCH_FILES)]
        self.contents = {
            name: (rng.randbytes(2048).hex().encode() * (1 + (size // 4096)))[:size]
            for name, size in zip(self.names, [3_000, 40_000, 1, 2 * 1024 * 1024, 0])
        }
        self.shas = {}
        self.source = None

    def reset(self) -> None:
        for root in self.roots:
            shutil.rmtree(root, ignore_errors=True)
        os.makedirs(self.incoming)
        for name, content in self.contents.items():
            path = os.path.join(self.incoming, name)
            with open(path, "wb") as handle:
                handle.write(content)
            os.utime(path, (1_600_000_000, 1_600_000_000))
            self.shas.setdefault(name, sha256_file(path))

    def sources(self) -> list[str]:
        return [os.path.join(self.incoming, name) for name in self.names if os.path.exists(os.path.join(self.incoming, name))]

    def move(self) -> list:
        results = self.folders.move_archive_many(self.sources(), run_id="r1", started=STARTED)
        failed = [r for r in results if not isinstance(r, str)]
        assert not failed, failed
        return results


def check_batch_after_kill(scene: BatchScene, where: str) -> None:
    """Each file at its source or complete in the archive, once; nothing partial is visible."""
    seen = {name: 0 for name in scene.names}
    for path in visible_files(scene.incoming):
        name = os.path.basename(path)
        assert sha256_file(path) == scene.shas[name], f"{where}: the source {name} was changed"
        seen[name] += 1
        count("files checked")
    archived_paths = visible_files(scene.folders.archive)
    for path in archived_paths:
        name = os.path.basename(path).removesuffix(".gz")
        assert path.endswith(".gz") and name in seen, f"{where}: unexpected visible file {path}"
        assert content_sha256(path) == scene.shas[name], f"{where}: visible but incomplete: {path}"
        seen[name] += 1
        count("files checked")
    archived_names = [os.path.basename(p) for p in archived_paths]
    assert len(archived_names) == len(set(archived_names)), f"{where}: archived twice: {archived_paths}"
    lost = [name for name, times in seen.items() if times == 0]
    if lost:
        count("files lost", len(lost))
        pytest.fail(f"{where}: lost {lost}")


def check_batch_next_move(scene: BatchScene, where: str) -> None:
    """Archiving the batch again leaves one complete copy of every file and no leftovers."""
    with scene.environment():
        scene.move()
    assert visible_files(scene.incoming) == [], f"{where}: sources left"
    archived_paths = visible_files(scene.folders.archive)
    assert sorted(os.path.basename(p) for p in archived_paths) == sorted(n + ".gz" for n in scene.names), where
    for path in archived_paths:
        assert content_sha256(path) == scene.shas[os.path.basename(path)[:-3]], f"{where}: {path}"
    sweep(scene.roots, older_than=0, apply=True)
    leftovers = [p for root in scene.roots for p in hidden_files(root)]
    assert leftovers == [], f"{where}: the sweep left {leftovers}"


def batch_kill_campaign(tmp_path, fs: str, kills: int) -> None:
    if fs == "exdev_real":
        pytest.skip("the batch archive gzips into the archive folder: a copy on any filesystem")
    rng = random.Random(f"{SEED}-archive_many-{fs}")
    scene = BatchScene(tmp_path, fs, rng)
    try:
        scene.reset()
        killed, events, seconds = run_child(scene, kill_at=10**9)
        assert not killed and events > 0
        check_batch_next_move(scene, "uninterrupted batch")
        landed = attempts = 0
        while landed < kills:
            attempts += 1
            assert attempts < kills * 5, "kills do not land"
            scene.reset()
            if attempts % 3 == 0:
                delay = rng.uniform(0, seconds * 1.1)
                killed, _, _ = run_child(scene, kill_after=delay)
                where = f"archive_many/{fs}: SIGKILL after {delay:.3f}s (seed {SEED})"
            else:
                point = rng.randint(1, events)
                killed, _, _ = run_child(scene, kill_at=point)
                where = f"archive_many/{fs}: SIGKILL at line event {point}/{events} (seed {SEED})"
            landed += killed
            count("kills injected", int(killed))
            check_batch_after_kill(scene, where)
            check_batch_next_move(scene, where)
    finally:
        scene.cleanup()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fs", ["same", "exdev_forced"])
def test_kill_during_batch_archive(tmp_path, fs):
    batch_kill_campaign(tmp_path, fs, 4)


@pytest.mark.stress
@pytest.mark.timeout(900)
@pytest.mark.skipif(not STRESS, reason="stress size: make test-stress (CORE4_STRESS=1)")
@pytest.mark.parametrize("fs", ["same", "exdev_forced"])
def test_kill_during_batch_archive_stress(tmp_path, fs):
    batch_kill_campaign(tmp_path, fs, 40)


def test_batch_archive_reports_each_file_and_keeps_the_rest_going(tmp_path):
    """One source missing and one name taken (on_conflict='fail'): those two are errors and stay;
    the others are archived once each."""
    folders = make_folders(tmp_path / "root")
    batch = os.path.join(folders.proc_folder(), ".batch", "20240101T000000-0123abcd")
    os.makedirs(batch)
    paths = []
    for name in ("a.csv", "b.csv", "c.csv"):
        paths.append(os.path.join(batch, name))
        with open(paths[-1], "wb") as handle:
            handle.write(name.encode() * 100)
    stamp = os.path.join(folders.archive_folder(), "2024", "03", "05", "r1")
    os.makedirs(stamp)
    with open(os.path.join(stamp, "c.csv.gz"), "wb") as handle:
        handle.write(b"taken")
    results = folders.move_archive_many(
        [paths[0], os.path.join(batch, "gone.csv"), paths[1], paths[2]],
        run_id="r1", started=STARTED, on_conflict="fail",
    )
    assert results[0] == os.path.join(stamp, "a.csv.gz") and results[2] == os.path.join(stamp, "b.csv.gz")
    assert isinstance(results[1], FileNotFoundError)
    assert isinstance(results[3], OSError) and "already exists" in str(results[3])
    assert visible_files(batch) == [paths[2]]
    assert content_sha256(results[0]) == sha256_file_bytes(b"a.csv" * 100)
    assert hidden_files(batch) == [] and hidden_files(folders.archive) == []


def sha256_file_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_the_sweep_finishes_a_batch_archive_killed_after_its_renames(tmp_path, monkeypatch):
    """Killed after every copy was renamed into the archive, before any source was removed: the
    sweep of stale leftovers (no new run) finishes the batch: one copy of each, no source left."""
    folders = make_folders(tmp_path / "root")
    batch = os.path.join(folders.proc_folder(), ".batch", "20240101T000000-0123abcd")
    os.makedirs(batch)
    shas = {}
    for name in ("a.csv", "b.csv", "c.csv"):
        with open(os.path.join(batch, name), "wb") as handle:
            handle.write(name.encode() * 500)
        shas[name] = sha256_file(os.path.join(batch, name))

    def killed(path):
        raise SystemExit("killed right after the renames")

    with monkeypatch.context() as patch:
        patch.setattr(moves, "fsync_dir", killed)
        with pytest.raises(SystemExit):
            folders.move_archive_many([os.path.join(batch, n) for n in shas], run_id="r1", started=STARTED)
    assert sorted(os.path.basename(p) for p in visible_files(batch)) == sorted(shas)  # sources all there
    sweep([folders.proc, folders.archive], older_than=0, apply=True)
    assert visible_files(batch) == [] and hidden_files(batch) == []
    archived_paths = visible_files(folders.archive)
    assert sorted(os.path.basename(p) for p in archived_paths) == sorted(n + ".gz" for n in shas)
    for path in archived_paths:
        assert content_sha256(path) == shas[os.path.basename(path)[:-3]]
    assert hidden_files(folders.archive) == []
