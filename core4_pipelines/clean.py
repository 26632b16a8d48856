"""`coco clean`: the sweep of stale hidden in-flight files."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands on the `coco` parser."""
