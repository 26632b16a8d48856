"""`python -m bench [--smoke] [--only NAME ...]`: run the benchmarks, print the table, write the JSON."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from datetime import UTC, datetime

from bench import RESULTS_DIR, SMOKE_RESULTS_DIR, Row, machine, megabytes, seconds

# In the order they run: the cheap in-process ones first, the live stacks last.
BENCHMARKS = (
    "sensor_tick",
    "sensor_claim",
    "move_proc",
    "move_proc_xdev",
    "move_archive",
    "import_records",
    "write_modes",
    "readers",
    "sftp",
    "end_to_end",
    "engine_celery",
    "memory",
)


def table_lines(results: list[dict]) -> list[str]:
    """A Markdown table of every row of ``results``."""
    lines = [
        "| benchmark | case | ours | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        if result["error"]:
            first = result["error"].strip().splitlines()[-1]
            lines.append(f"| {result['benchmark']} | FAILED: {first} | | | | | |")
            continue
        for row in result["rows"]:
            memory = row["ours_bytes"] is not None
            ours = megabytes(row["ours_bytes"]) if memory else seconds(row["ours_s"])
            baseline = megabytes(row["baseline_bytes"]) if memory else seconds(row["baseline_s"])
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
            met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
            lines.append(
                f"| {result['benchmark']} | {row['case']} | {ours} | {baseline} | {ratio} | "
                f"{row['target']['text']} | {met} |"
            )
    return lines


def run_one(name: str, smoke: bool) -> dict:
    module = importlib.import_module(f"bench.{name}")
    started = time.perf_counter()
    result = {
        "benchmark": name,
        "title": module.TITLE,
        "mode": "smoke" if smoke else "full",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": None,
        "machine": machine(),
        "rows": [],
        "error": None,
    }
    try:
        rows: list[Row] = module.run(smoke)
        result["rows"] = [row.as_dict() for row in rows]
    except Exception:  # noqa: BLE001 -- recorded in the JSON and the table; the others still run
        result["error"] = traceback.format_exc()
    result["duration_s"] = time.perf_counter() - started
    return result


def write_json(folder: str, result: dict) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{result['benchmark']}.json")
    partial = path + ".tmp"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    os.replace(partial, path)
    return path


def read_json(folder: str, name: str) -> dict | None:
    try:
        with open(os.path.join(folder, f"{name}.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves every benchmark works")
    parser.add_argument(
        "--only", action="append", choices=BENCHMARKS, metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--results", help="where the JSON goes (default bench/results, or bench/results/smoke with --smoke)"
    )
    args = parser.parse_args(argv)
    folder = args.results or (SMOKE_RESULTS_DIR if args.smoke else RESULTS_DIR)
    names = [name for name in BENCHMARKS if not args.only or name in args.only]
    results = []
    for name in names:
        print(f"== {name} ({'smoke' if args.smoke else 'full'}) ...", flush=True)
        result = run_one(name, args.smoke)
        path = write_json(folder, result)
        results.append(result)
        print("\n".join(table_lines([result])))
        if result["error"]:
            print(result["error"], file=sys.stderr)
        print(f"   {result['duration_s']:.0f} s, written to {path}\n", flush=True)
    print("\n".join(table_lines(results)))
    # The combined table holds the latest result of every benchmark, also after --only.
    latest = [r for r in (read_json(folder, name) for name in BENCHMARKS) if r is not None]
    with open(os.path.join(folder, "table.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(table_lines(latest)) + "\n")
    return 1 if any(result["error"] for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
