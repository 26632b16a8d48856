"""The reliability suite: crash injection, concurrency, bad inputs, security.

`make test` runs it with small counts; `make test-stress` (CORE4_STRESS=1, -m stress)
runs the stress sizes. The tally of what was tried (support.count) is printed at the end by tests/conftest.py,
summed over the pytest-xdist workers.
"""

from __future__ import annotations
