"""FolderResource.move_proc on one filesystem, against a bare os.rename per file.

Both move the same 50 KB files from an incoming folder into the project's
proc folder; between repeats the files are renamed back, untimed.
"""

from __future__ import annotations

import os
import statistics

from bench import Row, at_most, folder_resource, interleaved, scratch, write_files
from core4_resources.files.moves import rename_noreplace, safe_move

NAME = "move_proc"
TITLE = "move_proc, same filesystem, vs os.rename"
FILES = 10_000
SMOKE_FILES = 200
FILE_BYTES = 50 * 1024


def move_back(source_folder: str, target_folder: str) -> None:
    if not os.path.isdir(target_folder):
        return
    with os.scandir(target_folder) as entries:
        names = [e.name for e in entries if e.is_file()]
    for name in names:
        os.rename(os.path.join(target_folder, name), os.path.join(source_folder, name))


def run(smoke: bool) -> list[Row]:
    count = SMOKE_FILES if smoke else FILES
    with scratch(NAME) as root:
        folders = folder_resource(root)
        incoming = os.path.join(root, "incoming")
        names = [f"reading-{i:06d}.csv" for i in range(count)]
        paths = write_files(incoming, names, os.urandom(FILE_BYTES))
        proc = folders.proc_folder()
        bare_target = os.path.join(root, "bare-target")
        os.makedirs(bare_target)

        def restore():
            move_back(incoming, proc)
            move_back(incoming, bare_target)

        def ours():
            for path in paths:
                folders.move_proc(path)

        def baseline():
            for name, path in zip(names, paths):
                os.rename(path, os.path.join(bare_target, name))

        ours_s, baseline_s = interleaved(
            ours,
            baseline,
            2 if smoke else 5,
            prepare_ours=restore,
            prepare_baseline=restore,
        )
        # Where the time goes, per file: the no-replace rename, safe_move (which adds the
        # source checks and folder creation), and resolving the checked proc folder path.
        steps = {
            "rename_noreplace": lambda: [rename_noreplace(p, os.path.join(bare_target, n)) for p, n in zip(paths, names)],
            "safe_move": lambda: [safe_move(p, bare_target) for p in paths],
            "proc_folder": lambda: [folders.proc_folder() for _ in paths],
        }
        breakdown = {}
        for step, function in steps.items():
            restore()
            step_s, _ = interleaved(function, lambda: None, 1, prepare_ours=restore, warmup=False)
            breakdown[f"{step}_us_per_file"] = 1e6 * step_s[0] / count
        restore()
    return [
        Row(
            f"{count:,} x 50 KB",
            ours_s,
            baseline_s,
            at_most(2.0),
            context={
                "files": count,
                "file_bytes": FILE_BYTES,
                "ours_files_per_s": count / min(ours_s),
                "baseline_files_per_s": count / min(baseline_s),
                "ours_us_per_file": 1e6 * statistics.median(ours_s) / count,
                "os_rename_us_per_file": 1e6 * statistics.median(baseline_s) / count,
                **breakdown,
            },
        )
    ]
