"""What a new project's folder gets beside its files: a git repository with a first commit
(``make_repository``) and, when asked, a ``.venv`` with this framework installed (``make_venv``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable


GIT_FALLBACK_USER = {"user.name": "coco", "user.email": "coco@localhost"}
# Variables that would point git at another repository than the project's.
_GIT_LOCATION_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR",
                     "GIT_NAMESPACE", "GIT_PREFIX")


def make_repository(folder: str, files: list[str], message: str, say: Callable[[str], None] = print) -> bool:
    """``git init`` in ``folder`` and a first commit of ``files`` (relative to it). True when done.

    Git missing, ``folder`` already a repository's top, or a failing git command: the files stay
    as they are, ``say`` tells why, and a ``.git`` made here is removed again, so the project is
    either a repository with its first commit or no repository at all. Inside another repository
    the project still becomes its own (nested) repository. The author and committer are git's
    usual ones (environment, then configuration); when git has none configured, ``coco`` and
    ``coco@localhost`` are passed with ``-c`` for this commit only, never written to a config."""
    git = shutil.which("git")
    if git is None:
        say("git not found: the project is not a repository")
        return False
    if os.path.exists(os.path.join(folder, ".git")):
        say(f"{folder} is already a git repository: the new files are left uncommitted")
        return False
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_ENV}
    env["GIT_TERMINAL_PROMPT"] = "0"

    def run(*args: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([git, *args], cwd=folder, env=env, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:  # a broken git is a failed step, not a crash
            return subprocess.CompletedProcess([git, *args], -1, "", str(exc))

    outer = run("-C", os.path.dirname(folder), "rev-parse", "--show-toplevel")
    if outer.returncode == 0 and outer.stdout.strip():
        say(f"{os.path.dirname(folder)} is inside the git repository {outer.stdout.strip()}: "
            "the project becomes its own repository in it")
    for name, args in (("init", ["init", "-q"]), ("add", ["add", "--", *files]), ("commit", None)):
        if args is None:  # the identity check needs the new repository's configuration
            overrides = [arg for key, value in GIT_FALLBACK_USER.items() if not _git_knows(run, env, key)
                         for arg in ("-c", f"{key}={value}")]
            if overrides:
                say("git has no user configured: the first commit is by coco <coco@localhost> "
                    "(for this commit only; set git config user.name and user.email for your own)")
            args = [*overrides, "commit", "-q", "-m", message]
        done = run(*args)
        if done.returncode != 0:
            shutil.rmtree(os.path.join(folder, ".git"), ignore_errors=True)
            reason = (done.stderr or done.stdout).strip().splitlines()
            say(f"git {name} failed (exit {done.returncode}{': ' + reason[-1] if reason else ''}): "
                "the project's files are written, but it is not a repository")
            return False
    say(f"git: {folder} is a repository with a first commit ({message!r})")
    return True


def _git_knows(run, env: dict, key: str) -> bool:
    """Whether git has ``user.name`` / ``user.email`` for a commit (environment or configuration)."""
    field = key.split(".")[1].upper()
    if env.get(f"GIT_AUTHOR_{field}") and env.get(f"GIT_COMMITTER_{field}"):
        return True
    if key == "user.email" and env.get("EMAIL"):
        return True
    return bool(run("config", "--get", key).stdout.strip())


def make_venv(folder: str, framework_source: str | None = None) -> str:
    """``<folder>/.venv`` with this framework and the project installed (editable)."""
    target = os.path.join(folder, ".venv")
    subprocess.run([sys.executable, "-m", "venv", target], check=True)
    python = os.path.join(target, "bin", "python")
    framework = framework_source or _framework_source()
    subprocess.run([python, "-m", "pip", "install", "-q", "-e", framework], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "-e", folder], check=True)
    return python


def _framework_source() -> str:
    # The checkout this framework runs from, when installed editable; else the published name.
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return here if os.path.isfile(os.path.join(here, "pyproject.toml")) else "core4-pipelines"
