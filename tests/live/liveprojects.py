"""The projects of the live stack's home.

- ``demo``    a copy of projects/demo (download job, import job, proc sensor);
- ``second``  made by ``coco init second``, plus a job that overruns its
              ``dagster/max_runtime`` (core4's wall_time);
- ``ownvenv`` a project with its own ``.venv``, loaded through ``executable_path``;
              its yaml names a MongoDB URL with a password that must never be shown;
- ``broken``  raises at import; the others must load regardless.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# A password that lives only in ownvenv's yaml: it must not appear in any output.
OWNVENV_MONGO_PASSWORD = "ownvenv-Secret-4711"
OWNVENV_MONGO_URL = f"mongodb://reader:{OWNVENV_MONGO_PASSWORD}@127.0.0.1:9/ownvenv"
PROJECTS = ("broken", "demo", "ownvenv", "second")


SECOND_EXTRA = '''

# Added by the live tests: a job that overruns its wall_time (dagster/max_runtime).
import time as _time

import dagster as _dg


@_dg.op
def sleep_past_wall_time(context):
    context.log.info("sleeping 300 s; run monitoring should stop this run after 3 s")
    _time.sleep(300)
    context.log.info("woke up: the wall_time was not enforced")


@_dg.job(tags={"dagster/max_runtime": "3"}, executor_def=_dg.in_process_executor)
def overruns_wall_time():
    sleep_past_wall_time()


defs = _dg.Definitions.merge(defs, _dg.Definitions(jobs=[overruns_wall_time]))
'''

OWNVENV_DEFINITIONS = '''"""ownvenv: runs with its own interpreter and a module only its .venv has."""

import sys

import dagster as dg
import ownvenv_only

from core4_pipelines import project_definitions


@dg.op
def report_interpreter(context) -> str:
    context.log.info(f"sys.executable={sys.executable}")
    context.log.info(f"sys.prefix={sys.prefix}")
    context.log.info(f"ownvenv_only={ownvenv_only.__file__}")
    return sys.executable


@dg.job(executor_def=dg.in_process_executor)
def which_python():
    report_interpreter()


defs = project_definitions("ownvenv", jobs=[which_python])
'''


def copy_demo(home: Path) -> None:
    shutil.copytree(REPO / "projects" / "demo", home / "demo",
                    ignore=shutil.ignore_patterns(".venv", "__pycache__", "tests", "*.egg-info"))


def make_second(home: Path, env: dict[str, str]) -> None:
    done = subprocess.run([str(BIN / "coco"), "init", "second", "--home", str(home)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(home / "second" / "second" / "definitions.py", "a", encoding="utf-8") as handle:
        handle.write(SECOND_EXTRA)


def make_broken(home: Path) -> None:
    package = home / "broken" / "broken"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('__project__ = "core4"\n__version__ = "0.0.1"\n')
    (package / "broken.yaml").write_text("")
    (package / "definitions.py").write_text("raise RuntimeError('this project is broken on purpose')\n")


def shared_venv(target: Path) -> Path:
    """A virtual environment of its own whose third-party packages come from this checkout's .venv.

    The project's interpreter is ``target/bin/python`` (sys.prefix = target); the
    framework and Dagster are reached through a .pth that adds this .venv's
    site-packages, which takes a second where a full ``make_venv`` (pip
    installing Dagster and its dependencies) takes one to two minutes.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=120)
    python = target / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    shared = sysconfig.get_paths()["purelib"]
    (purelib / "zz_core4_shared.pth").write_text(f"import site; site.addsitedir({shared!r})\n")
    (purelib / "ownvenv_only.py").write_text('"""Installed only in ownvenv\'s .venv."""\n')
    return python


def make_ownvenv(home: Path) -> Path:
    folder = home / "ownvenv"
    package = folder / "ownvenv"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('__project__ = "core4"\n__version__ = "0.1.0"\n')
    (package / "ownvenv.yaml").write_text(f"DEFAULT:\n  mongo_url: {OWNVENV_MONGO_URL}\n")
    (package / "definitions.py").write_text(OWNVENV_DEFINITIONS)
    return shared_venv(folder / ".venv")


def make_home(home: Path, env: dict[str, str]) -> None:
    home.mkdir(parents=True)
    copy_demo(home)
    make_second(home, env)
    make_broken(home)
    make_ownvenv(home)
