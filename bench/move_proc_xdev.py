"""FolderResource.move_proc across filesystems, against shutil.move.

The sources live on /dev/shm (tmpfs), the proc folder under the system temp
folder (disk): a rename fails with EXDEV and both sides copy. Ours copies into
a hidden temp, fsyncs it, renames it, fsyncs the folder and only then removes
the source; shutil.move copies and removes without any fsync. The ratio is
the price of that safety. A third figure, the same protocol in bare Python
(copy, fsync, rename, fsync folder, unlink), separates the cost of the disk
flushes from the cost of our code.

When /dev/shm is on the same filesystem as the temp folder, the EXDEV path is
forced by making the first rename of every move fail with EXDEV.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import statistics
import tempfile
from collections.abc import Iterator

from bench import REPORT_ONLY, Row, folder_resource, interleaved, scratch, write_files

NAME = "move_proc_xdev"
TITLE = "move_proc across filesystems (fsync'd), vs shutil.move"
FILES = 1_000
SMOKE_FILES = 50
FILE_BYTES = 50 * 1024
SHM = "/dev/shm"


def other_filesystem() -> str | None:
    """/dev/shm when it is a writable folder on another filesystem than the temp folder."""
    try:
        if os.stat(SHM).st_dev != os.stat(tempfile.gettempdir()).st_dev and os.access(SHM, os.W_OK):
            return SHM
    except OSError:
        pass
    return None


@contextlib.contextmanager
def forced_exdev() -> Iterator[None]:
    """Every rename from one folder into another fails with EXDEV, as across filesystems."""
    from core4_resources.files import moves
    real = moves.rename_noreplace

    def cross_device(src: str, dst: str) -> None:
        if os.path.dirname(os.path.abspath(src)) != os.path.dirname(os.path.abspath(dst)):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, None, dst)
        real(src, dst)

    moves.rename_noreplace = cross_device
    try:
        yield
    finally:
        moves.rename_noreplace = real


def bare_safe_move(source: str, target_dir: str, name: str) -> None:
    """The same crash-safe protocol as ours, in bare Python, with no checks."""
    temp = os.path.join(target_dir, f".{name}.part")
    with open(source, "rb") as src, open(temp, "xb") as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
        dst.flush()
        os.fsync(dst.fileno())
    shutil.copystat(source, temp)
    os.rename(temp, os.path.join(target_dir, name))
    fd = os.open(target_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.unlink(source)


def run(smoke: bool) -> list[Row]:
    count = SMOKE_FILES if smoke else FILES
    shm = other_filesystem()
    payload = os.urandom(FILE_BYTES)
    names = [f"reading-{i:05d}.csv" for i in range(count)]
    with scratch(NAME) as root, scratch(NAME, parent=shm) as source_root:
        folders = folder_resource(root)
        proc = folders.proc_folder()
        plain = os.path.join(root, "plain-target")
        bare = os.path.join(root, "bare-target")
        incoming = os.path.join(source_root, "incoming")

        def refill(*targets: str):
            def prepare():
                for target in targets:
                    shutil.rmtree(target, ignore_errors=True)
                    os.makedirs(target)
                write_files(incoming, names, payload)

            return prepare

        paths = [os.path.join(incoming, name) for name in names]

        def ours():
            for path in paths:
                folders.move_proc(path)

        def baseline():
            for name, path in zip(names, paths):
                if shm is None:  # forced: what shutil.move does across filesystems
                    shutil.copy2(path, os.path.join(plain, name))
                    os.unlink(path)
                else:
                    shutil.move(path, os.path.join(plain, name))

        repeats = 2 if smoke else 5
        with contextlib.nullcontext() if shm else forced_exdev():
            ours_s, baseline_s = interleaved(
                ours, baseline, repeats, prepare_ours=refill(proc), prepare_baseline=refill(plain)
            )
            moved = len(os.listdir(proc))
        bare_s, _ = interleaved(
            lambda: [bare_safe_move(p, bare, n) for p, n in zip(paths, names)],
            lambda: None,
            repeats,
            prepare_ours=refill(bare),
        )
    if moved != count:
        raise AssertionError(f"move_proc moved {moved} of {count} files")
    return [
        Row(
            f"{count:,} x 50 KB",
            ours_s,
            baseline_s,
            REPORT_ONLY,
            context={
                "files": count,
                "file_bytes": FILE_BYTES,
                "source_filesystem": shm or "same filesystem, EXDEV forced",
                "forced_exdev": shm is None,
                "bare_safe_protocol_s": statistics.median(bare_s),
                "safety_cost_ratio": statistics.median(bare_s) / statistics.median(baseline_s),
                "our_code_ratio": statistics.median(ours_s) / statistics.median(bare_s),
            },
        )
    ]
