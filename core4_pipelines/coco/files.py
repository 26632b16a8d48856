"""`coco files`, `coco reimport` and `coco release`: the file ledger, replays from the archive, held files.

``coco files`` shows what the project's imports did with each file (``sys.files``, see
``core4_pipelines/ingest/ledger.py``): when, which run, how many records, where the file
went, and whether it was a duplicate. ``coco reimport`` puts archived files back into proc
(decompressed, through transfer and the crash-safe move), each marked in the ledger so that
the duplicate check lets its content through once; the import then applies its mode
(upsert and replace make a replay idempotent; insert adds the records again).
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
from datetime import UTC, datetime

from core4_pipelines.coco.errors import OperateError
from core4_resources.files.names import printable_name

MAX_SHOWN = 50


def _project(args):
    from core4_pipelines.settings import project_settings
    from core4_resources.files.folders import FolderResource
    from core4_resources.mongo.resource import MongoResource

    settings = project_settings(args.project)
    return settings, FolderResource.from_settings(settings), MongoResource.from_settings(settings)


def _shown(folders, path: str | None) -> str:
    if not path:
        return "-"
    root = os.path.normpath(folders.root)
    return printable_name(os.path.relpath(path, root) if path.startswith(root + os.sep) else path)


def _entries(mongo, query: dict, limit: int):
    from pymongo.errors import PyMongoError

    from core4_pipelines.ingest.ledger import LEDGER_COLLECTION

    try:
        return list(mongo.collection(LEDGER_COLLECTION).find(query, sort=[("at", -1), ("_id", 1)], limit=limit))
    except PyMongoError as exc:
        mongo.raise_error(f"reading the file ledger {mongo.database}.{LEDGER_COLLECTION}", exc)


def cmd_files(args) -> int:
    _, folders, mongo = _project(args)
    query: dict = {"state": {"$ne": "replay"}}
    if args.name:
        query["name"] = args.name
    entries = _entries(mongo, query, args.limit)
    if not entries:
        print(f"no file of project {args.project} in its ledger" + (f" named {args.name}" if args.name else ""))
        return 0
    for entry in entries:
        at = entry.get("at")
        when = at.strftime("%Y-%m-%d %H:%M:%S") if isinstance(at, datetime) else "?"
        records = entry.get("records")
        line = (f"{when}  {entry.get('state', '?'):<9}  {printable_name(entry.get('name', '?'))}  "
                f"{'-' if records is None else records} records  run {str(entry.get('run', '?'))[:8]}  "
                f"-> {_shown(folders, entry.get('archive'))}")
        print(line + ("  (replay)" if entry.get("replay") else ""))
        if args.name:
            print(f"    job {entry.get('job')}, collection {entry.get('collection')}, {entry.get('bytes')} bytes, "
                  f"blake2b {entry.get('hash')}, batch {entry.get('batch')}")
            if entry.get("reason"):
                print(f"    reason: {entry['reason'].splitlines()[0]}")
    if len(entries) == args.limit:
        print(f"(the newest {args.limit}; --limit N shows more)")
    return 0


def _date(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise OperateError(f"{option} {text!r}: expected a date or time, e.g. 2026-12-01 or 2026-12-01T06:00") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _selected(args, folders, mongo) -> list[dict]:
    if args.archived:
        found = []
        for given in args.archived:
            path = os.path.abspath(given if os.path.isabs(given) else os.path.join(folders.root, given))
            (entry,) = _entries(mongo, {"archive": printable_name(path), "state": "imported"}, 1) or [None]
            if entry is None:
                raise OperateError(f"{given}: no file imported into {args.project} was archived there "
                                   f"(coco files {args.project} NAME shows where each went)")
            found.append({**entry, "archive": path})  # the ledger holds it printable; open it as given
        return found
    if args.since is None:
        raise OperateError("name archived files, or choose them by --since DATE [--until DATE] [--pattern RE]")
    query: dict = {"state": "imported", "at": {"$gte": _date(args.since, "--since")}}
    if args.until:
        query["at"]["$lt"] = _date(args.until, "--until")
    entries = _entries(mongo, query, 100_000)
    if args.pattern:
        try:
            pattern = re.compile(args.pattern)
        except re.error as exc:
            raise OperateError(f"--pattern {args.pattern!r}: not a regular expression ({exc})") from None
        entries = [e for e in entries if pattern.match(e.get("name", ""))]
    return entries


def cmd_reimport(args) -> int:
    from core4_pipelines.ingest.ledger import Ledger, content_hash
    from core4_pipelines.ingest.reappear import release

    _, folders, mongo = _project(args)
    entries = _selected(args, folders, mongo)
    if not entries:
        print("no archived file matches")
        return 0
    for entry in entries:
        archive = entry.get("archive")
        if not archive or not os.path.isfile(archive):
            print(f"  {printable_name(entry['name'])}: its archived copy {_shown(folders, archive)} is gone; skipped")
            continue
        if args.dry_run:
            print(f"  would put back {printable_name(entry['name'])} from {_shown(folders, archive)}")
            continue
        target = folders.make_transfer(entry["name"])
        opener = gzip.open if archive.endswith(".gz") else open
        with opener(archive, "rb") as source, open(target, "xb") as copy:
            shutil.copyfileobj(source, copy, 1 << 20)
            copy.flush()
            os.fsync(copy.fileno())
        Ledger(mongo, entry["job"], entry.get("collection", "")).mark_replay(content_hash(target), archive)
        proc = folders.proc_folder()
        release(proc, os.path.basename(target), os.stat(target).st_ino)  # no hold as a reappearing name
        placed = folders.move_proc(target)
        print(f"  {printable_name(entry['name'])}: back in {_shown(folders, placed)} (from {_shown(folders, archive)})")
    if not args.dry_run:
        print("the proc sensor imports them like new files; each content passes the duplicate check once")
    return 0


def cmd_release(args) -> int:
    """Import files held as reappearing names (see ingest/reappear.py) as files of their own."""
    from core4_pipelines.ingest.reappear import read_holds, release

    settings, folders, _ = _project(args)
    proc = folders.proc_folder(args.base)
    held = {name: hold for name, hold in read_holds(proc).items() if not hold.released}
    where = _shown(folders, proc)
    if not args.names:
        if not held:
            print(f"no file is held in {where}")
            return 0
        print(f"{len(held)} files held in {where} (they appeared again soon after a file of the same name was claimed):")
        for name, hold in sorted(held.items()):
            print(f"  {printable_name(name)}: {hold.since - hold.claimed_at:.0f}s after batch {hold.batch} claimed that name")
        print(f"coco release {args.project} NAME ... imports them as files of their own; or move them out of proc")
        return 0
    failed = 0
    for name in args.names:
        if name not in held:
            failed += 1
            print(f"{name}: not held in {where}" + (f" (held: {', '.join(sorted(held)[:10])})" if held else ""))
            continue
        if not release(proc, name, held[name].inode):
            failed += 1
            print(f"{name}: no longer in {where}")
            continue
        print(f"{name}: released; the proc sensor imports it as a file of its own")
    return 1 if failed else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("files", help="the file ledger of a project: each file imported, when, by which run, "
                                     "how many records, where it went")
    p.add_argument("project")
    p.add_argument("name", nargs="?", help="only files of this name (with their hash, batch and reason)")
    p.add_argument("--limit", type=int, default=MAX_SHOWN, help=f"how many, newest first (default {MAX_SHOWN})")
    p.set_defaults(run=cmd_files)
    p = sub.add_parser("reimport", help="put archived files back into proc to be imported again "
                                        "(through the duplicate check once)")
    p.add_argument("project")
    p.add_argument("archived", nargs="*", metavar="ARCHIVED_FILE",
                   help="an archived file (a path, or relative to folder.root, as coco files shows it)")
    p.add_argument("--since", help="every file imported since this date or time (UTC unless given)")
    p.add_argument("--until", help="with --since: imported before this date or time")
    p.add_argument("--pattern", help="with --since: only names this regular expression matches")
    p.add_argument("--dry-run", action="store_true", help="say what would be put back, change nothing")
    p.set_defaults(run=cmd_reimport)
    p = sub.add_parser("release", help="import files held because they appeared again under a name just claimed "
                                       "(without NAME: list them)")
    p.add_argument("project")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--base", help="the proc sub folder (core4's base) the sensor watches")
    p.set_defaults(run=cmd_release)
