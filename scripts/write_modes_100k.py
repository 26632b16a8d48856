"""bench/write_modes.py's three write-mode cases at the issue's 100,000 records, one interleaved
round each (ours, then the raw bulk_write), without the benchmark's warm-up round: about six
minutes here, where the benchmark's 3 rounds at 100k would take over half an hour.

    .venv/bin/python scripts/write_modes_100k.py   # one JSON line per case (BENCHMARKS.md has them)
"""

from __future__ import annotations

import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench.write_modes as write_modes  # noqa: E402
from bench import scratch  # noqa: E402
from core4_resources.mongo.embedded.server import EmbeddedMongo  # noqa: E402
from core4_resources.mongo.resource import MongoResource  # noqa: E402

RECORDS = 100_000


def main() -> int:
    write_modes.RECORDS = RECORDS
    interleaved = write_modes.interleaved
    write_modes.interleaved = lambda ours, baseline, _repeats, **kw: interleaved(ours, baseline, 1, warmup=False, **kw)
    with scratch("write_modes_100k") as root, EmbeddedMongo(os.path.join(root, "mongo")) as server:
        mongo = MongoResource(mongo_url=server.url, database="bench_modes")
        for mode, over_existing in (("upsert", False), ("merge", False), ("upsert", True)):
            row = write_modes._mode_row(root, mongo, mode, False, over_existing=over_existing)
            ours, raw = statistics.median(row.ours_runs_s), statistics.median(row.baseline_runs_s)
            print(json.dumps({"case": row.case, "ours_s": round(ours, 2), "raw_bulk_write_s": round(raw, 2),
                              "ratio": round(raw / ours, 3), **row.context}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
