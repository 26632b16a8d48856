"""``coco alerts test PROJECT``: a test message to every channel of the project's alerts rules."""

from __future__ import annotations

import argparse
import time


def cmd_alerts_test(args) -> int:
    from core4_pipelines.alerts.channels import Alert, DeliveryError, channel_label, deliver
    from core4_resources.config.settings import load_config

    settings = load_config(args.project)
    if not settings.alerts:
        print(f"{args.project}: no alerts rules: add an alerts: list to the local file (for every project) "
              f"or to the project's yaml (see docs/alerts.md)")
        return 1
    alert = Alert(event="test", project=args.project, key=f"test:{time.time()}",
                  subject=f"[core4] {args.project}: a test of its alerts",
                  lines=("Sent by coco alerts test: this channel works.",))
    failed = 0
    for rule in settings.alerts:
        for channel in rule.channels():
            label = f"{channel_label(rule, channel)} ({rule.where})"
            try:
                deliver(rule, channel, alert)
            except DeliveryError as exc:
                failed += 1
                print(f"FAILED  {label}: {exc}")
            else:
                print(f"sent    {label}")
    return 1 if failed else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("alerts", help="the alerts of a project: coco alerts test PROJECT sends a test message")
    verbs = p.add_subparsers(dest="alerts_command", required=True)
    test = verbs.add_parser("test", help="send a test message to every channel of PROJECT's alerts rules and say "
                                         "which worked (exit 1 when one did not)")
    test.add_argument("project")
    test.set_defaults(run=cmd_alerts_test)
