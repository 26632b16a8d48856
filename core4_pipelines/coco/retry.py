"""`coco retry PROJECT [NAME ...]`: fixed files from the error folder back into proc.

A file whose content was refused waits in ``<error>/<project>/`` beside its
``<name>.reason.txt``. Once fixed (or once the import was changed to take it), ``coco retry``
moves it back into proc with the crash-safe move (never replacing a file of that name
waiting there) and removes its reason file; the proc sensor then imports it like any new
file. Without names it lists what waits in error, with each reason.

A file that went to error *after* its records were written (it could not be archived)
is refused unless ``--force``: importing it again would write its records twice.
"""

from __future__ import annotations

import argparse
import os

from core4_pipelines.coco.errors import OperateError
from core4_resources.errors import FolderError
from core4_resources.files.names import printable_name

# The reason ingest/files.not_archived writes for a file whose records are in MongoDB.
_IMPORTED_MARK = "records were imported"


def _folders(args):
    from core4_resources.config.settings import load_config
    from core4_resources.files.folders import FolderResource

    settings = load_config()
    home = settings.folder.home
    if home and not os.path.isdir(os.path.join(home, args.project)):
        raise OperateError(f"no project {args.project!r} in folder.home {home}")
    return FolderResource.from_settings(settings, args.project)


def _shown(folders, path: str) -> str:
    root = os.path.normpath(folders.root)
    return printable_name(os.path.relpath(path, root) if path.startswith(root + os.sep) else path)


def cmd_retry(args) -> int:
    from core4_pipelines.ingest.reappear import release

    folders = _folders(args)
    waiting = folders.list_error(base=args.base)
    by_name = {os.path.basename(path): path for path in waiting}
    where = _shown(folders, folders.error_folder(args.base))
    if not args.names and not args.all:
        if not waiting:
            print(f"no file waits in {where}")
            return 0
        print(f"{len(waiting)} files wait in {where}:")
        for path in waiting:
            reason = (folders.error_reason(path) or "(no reason file)").splitlines()[0]
            print(f"  {printable_name(os.path.basename(path))}: {reason}")
        print(f"fixed? coco retry {args.project} NAME ...  (or --all) puts them back into proc")
        return 0
    names = list(by_name) if args.all else args.names
    if not names:
        print(f"no file waits in {where}")
        return 0
    failed = 0
    for name in names:
        path = by_name.get(name)
        if path is None:
            failed += 1
            print(f"{name}: not in {where}" + (f" (there: {', '.join(sorted(by_name)[:10])})" if by_name else ""))
            continue
        reason = folders.error_reason(path) or ""
        if _IMPORTED_MARK in reason and not args.force:
            failed += 1
            print(f"{name}: left in {where}: its records are in MongoDB already ({reason.splitlines()[0]}); "
                  f"importing it again writes them twice. --force moves it all the same")
            continue
        proc = folders.proc_folder(args.base)
        release(proc, name, os.stat(path).st_ino)  # put back on purpose: no hold as a reappearing name
        try:
            target = folders.move_back_from_error(name, base=args.base)
        except FolderError as exc:
            failed += 1
            print(f"{name}: {exc}")
            continue
        release(proc, os.path.basename(target))  # a copy across filesystems has an inode of its own
        print(f"{name}: {_shown(folders, path)} -> {_shown(folders, target)}; the proc sensor imports it")
    return 1 if failed else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retry", help="move fixed files from a project's error folder back into proc "
                                     "(their reason files removed); without names: list what waits in error")
    p.add_argument("project")
    p.add_argument("names", nargs="*", metavar="NAME", help="file names in the error folder")
    p.add_argument("--all", action="store_true", help="every file in the error folder")
    p.add_argument("--base", help="the proc/error sub folder a job's base names, instead of the project's own")
    p.add_argument("--force", action="store_true",
                   help="also move files whose records were written before they went to error")
    p.set_defaults(run=cmd_retry)
