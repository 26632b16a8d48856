"""`coco clean`: the sweep of stale hidden in-flight files (``core4_pipelines.supervise.sweep``), run by hand.

The sweep and its defaults live in the library (Dagster with them): imported when the
command runs, so `coco` itself starts without Dagster.
"""

from __future__ import annotations

import argparse
import sys


def settings_roots(settings) -> list[str]:
    """Every project's folders: the transfer, proc, archive, error and temp roots."""
    folder = settings.folder
    return [folder.transfer, folder.proc, folder.archive, folder.error, folder.temp]


def cmd_clean(args) -> int:
    from core4_pipelines.supervise.sweep import DEFAULT_OLDER_THAN, _shown, sweep
    from core4_resources.config.settings import load_config

    older_than = DEFAULT_OLDER_THAN if args.older_than is None else args.older_than
    report = sweep(settings_roots(load_config()), older_than, apply=args.apply)
    for item in report.items:
        print(f"{item.action:<14} {item.kind:<18} {item.age:>9.0f}s  {_shown(item.path)}")
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    print(report.summary() + ("" if args.apply or not report.items else "; dry run: pass --apply to act"))
    return 1 if report.errors else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands on the `coco` parser."""
    p = sub.add_parser(
        "clean",
        help="remove stale hidden leftovers of interrupted moves (dry run unless --apply)",
        description="Sweep the transfer, proc, archive, error and temp folders of all projects for "
        "hidden partial copies, move markers and empty batch folders older than --older-than.",
    )
    p.add_argument("--older-than", type=float, default=None, metavar="SECONDS",
                   help="only items at least this old (default 3600: core4_pipelines.supervise.sweep.DEFAULT_OLDER_THAN)")
    p.add_argument("--apply", action="store_true", help="remove and finish; without it, only list")
    p.set_defaults(run=cmd_clean)
