"""The reliability suite: crash injection, concurrency, bad inputs, security.

`make test` runs it with small counts; `make test-stress` (CORE4_STRESS=1, -m stress)
runs the stress sizes. The tally of what was tried is printed at the end.
"""

from __future__ import annotations

from support import TALLY


def pytest_terminal_summary(terminalreporter):
    if any(TALLY.values()):
        counts = ", ".join(f"{key}: {value}" for key, value in TALLY.items())
        terminalreporter.write_sep("-", f"reliability: {counts}")

