"""A project's own tests pass as its developers run them (`pytest tests` in the project folder):
the demo's here; the tests `coco init` writes into a new project run in test_projects_cli."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import REPO


@pytest.mark.timeout(300)
def test_the_demos_own_tests_pass():
    demo = os.path.join(REPO, "projects", "demo")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=demo,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout, done.stdout
