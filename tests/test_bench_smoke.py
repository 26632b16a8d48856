"""`python -m bench --smoke` runs every benchmark at a tiny size and writes its JSON.

Proves the benchmarks work (including the live ones: `coco serve`, a bare
`dagster dev`, the embedded MongoDB); it never looks at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import RESULT_KEYS, ROW_KEYS
from bench.__main__ import BENCHMARKS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.live
@pytest.mark.bench  # make bench-smoke, not make test: two minutes that time nothing
@pytest.mark.timeout(900)
def test_smoke_run_writes_every_result(tmp_path):
    results = tmp_path / "results"
    process = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--results", str(results)],
        cwd=REPO,
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert process.returncode == 0, f"stdout:\n{process.stdout[-4000:]}\nstderr:\n{process.stderr[-4000:]}"
    for name in BENCHMARKS:
        data = json.loads((results / f"{name}.json").read_text())
        assert set(RESULT_KEYS) <= set(data), f"{name}: missing {set(RESULT_KEYS) - set(data)}"
        assert data["benchmark"] == name and data["mode"] == "smoke"
        assert data["error"] is None, data["error"]
        assert data["rows"], f"{name}: no rows"
        for row in data["rows"]:
            assert set(ROW_KEYS) <= set(row), f"{name}: row missing {set(ROW_KEYS) - set(row)}"
            assert row["ratio"] is not None and row["ratio"] > 0, f"{name}: {row['case']} has no ratio"
            assert row["target"]["text"]
    table = (results / "table.md").read_text()
    assert all(f"| {name} |" in table for name in BENCHMARKS)
    assert not [p for p in os.listdir(results) if p.endswith(".tmp")]
