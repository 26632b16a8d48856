"""`coco enqueue`, `coco runs`, `coco kill`, `coco restart`: operating runs through Dagster's GraphQL API."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands on the `coco` parser."""
