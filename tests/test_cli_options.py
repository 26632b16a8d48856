"""The options a user is told to pass work where they are told to pass them: `make run`'s
command line, and coco's --home/--root before or after the verb."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from core4_pipelines.coco.cli import build_parser
from tests.support import coco

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_run_argv(*make_args: str) -> list[str]:
    """The coco arguments `make run` would run (make -n prints the command without running it)."""
    printed = subprocess.run(["make", "-n", "--no-print-directory", "run", *make_args], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    line = next(line for line in printed.splitlines() if "coco serve" in line)
    argv = shlex.split(line)
    return argv[argv.index(next(a for a in argv if a.endswith("/coco"))) + 1:]


def test_make_run_is_a_command_coco_accepts():
    args = build_parser().parse_args(make_run_argv())
    assert (args.command, args.home, args.port) == ("serve", "projects", None)


def test_make_run_port_and_host_reach_coco_serve():
    args = build_parser().parse_args(make_run_argv("PORT=3123", "HOST=0.0.0.0"))
    assert (args.command, args.home, args.port, args.host) == ("serve", "projects", 3123, "0.0.0.0")


@pytest.mark.parametrize("argv", [
    ["--home", "H", "--root", "R", "folders"],
    ["folders", "--home", "H", "--root", "R"],
    ["--home", "H", "folders", "--root", "R"],
])
def test_home_and_root_before_or_after_the_verb(argv):
    args = build_parser().parse_args(argv)
    assert (args.home, args.root) == ("H", "R")


def test_every_verb_takes_home_and_root():
    parser = build_parser()
    verbs = next(action for action in parser._actions if action.dest == "command").choices
    for verb, sub in verbs.items():
        options = {option for action in sub._actions for option in action.option_strings}
        assert {"--home", "--root"} <= options, verb


def test_a_verb_without_home_keeps_the_one_given_before_it():
    args = build_parser().parse_args(["--home", "H", "serve"])
    assert args.home == "H"


def test_missing_home_says_an_option_that_works(tmp_path):
    env = dict(os.environ, CORE4_OPTION_folder__root=str(tmp_path / "root"))
    env.pop("CORE4_OPTION_folder__home", None)
    done = coco("projects", env=env)
    assert done.returncode == 2
    assert "pass --home DIR" in done.stderr
    # ... and the advice, followed, works after the verb as well as before it
    (tmp_path / "home").mkdir()
    followed = coco("projects", "--home", str(tmp_path / "home"), env=env)
    assert followed.returncode == 0, followed.stderr
