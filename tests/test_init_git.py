"""`coco init NAME` as core4's: folder.home made when missing (saying so), the project a git
repository with a first commit of its files when git is there, and a project either way."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest
from support import coco

FILES = [".gitignore", "README.md", "enter_env", "pyproject.toml", "sales/__init__.py", "sales/definitions.py",
         "sales/defs/records/defs.yaml", "sales/models.py", "sales/sales.yaml", "tests/test_definitions.py"]
GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


def git_env(tmp_path, user: bool = True, path: str | None = None) -> dict:
    """This environment without any GIT_* or EMAIL, with a global git config of its own (with or
    without a user) and no system one: nothing the developer configured is read or written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k != "EMAIL"}
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n\tname = Ada Lovelace\n\temail = ada@example.org\n" if user else "")
    env.update(HOME=str(tmp_path / "user-home"), GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1")
    if path is not None:
        env["PATH"] = path
    return env


def git(*args, env, cwd=None) -> str:
    done = subprocess.run([GIT, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def committed_files(project, env) -> list[str]:
    return sorted(git("-C", str(project), "ls-tree", "-r", "--name-only", "HEAD", env=env).split())


def written_files(project) -> list[str]:
    found = []
    for top, dirs, names in os.walk(project):
        dirs[:] = [d for d in dirs if d != ".git"]
        found += [os.path.relpath(os.path.join(top, n), project) for n in names]
    return sorted(found)


@needs_git
def test_the_project_is_a_repository_with_one_commit_of_its_files(tmp_path):
    env = git_env(tmp_path)
    config_before = (tmp_path / "gitconfig").read_text()
    done = coco("--home", str(tmp_path / "home"), "init", "sales", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    project = tmp_path / "home" / "sales"
    assert f"created {project}\n" in done.stdout
    assert "is a repository with a first commit" in done.stdout
    log = git("-C", str(project), "log", "--oneline", env=env).splitlines()
    assert len(log) == 1 and log[0].endswith("coco init sales"), log
    # .env (DAGSTER_HOME for dg dev, a path of this machine) is written but never committed.
    assert committed_files(project, env) == FILES and written_files(project) == sorted([".env", *FILES])
    assert git("-C", str(project), "status", "--porcelain", env=env) == ""
    author = git("-C", str(project), "log", "-1", "--format=%an <%ae>|%cn <%ce>", env=env).strip()
    assert author == "Ada Lovelace <ada@example.org>|Ada Lovelace <ada@example.org>"
    assert (project / ".gitignore").read_text().splitlines() == [
        ".venv/", "__pycache__/", "*.egg-info/", ".env", ".tmp_dagster_home_*/"]
    # What the venv and Python leave in a project is ignored: the tree stays clean.
    (project / ".venv").mkdir()
    (project / ".venv" / "pyvenv.cfg").write_text("x\n")
    (project / "sales" / "__pycache__").mkdir()
    (project / "sales" / "__pycache__" / "definitions.cpython-311.pyc").write_bytes(b"\0")
    (project / "sales.egg-info").mkdir()
    (project / "sales.egg-info" / "PKG-INFO").write_text("x\n")
    assert git("-C", str(project), "status", "--porcelain", env=env) == ""
    assert (tmp_path / "gitconfig").read_text() == config_before


@needs_git
def test_a_missing_folder_home_is_created_with_its_parents_saying_so(tmp_path):
    home = tmp_path / "not" / "yet" / "home"
    env = git_env(tmp_path)
    env["CORE4_OPTION_folder__home"] = str(home)  # folder.home from the configuration, no --home
    done = coco("init", "sales", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"created folder.home {home}\ncreated {home / 'sales'}\n"), done.stdout
    for folder in (tmp_path / "not", tmp_path / "not" / "yet", home):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750, folder
    assert len(git("-C", str(home / "sales"), "log", "--oneline", env=env).splitlines()) == 1

    again = coco("init", "other", env=env, timeout=120)  # now it exists: nothing to say about it
    assert again.returncode == 0, again.stderr
    assert "folder.home" not in again.stdout


@needs_git
def test_without_a_git_user_the_first_commit_is_cocos_for_that_commit_only(tmp_path):
    env = git_env(tmp_path, user=False)
    done = coco("--home", str(tmp_path / "home"), "init", "sales", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "git has no user configured: the first commit is by coco <coco@localhost>" in done.stdout
    project = tmp_path / "home" / "sales"
    author = git("-C", str(project), "log", "-1", "--format=%an <%ae>|%cn <%ce>", env=env).strip()
    assert author == "coco <coco@localhost>|coco <coco@localhost>"
    assert committed_files(project, env) == FILES
    assert (tmp_path / "gitconfig").read_text() == ""  # the user's global config: untouched
    assert "user" not in (project / ".git" / "config").read_text()  # nor written into the project
    assert not (tmp_path / "user-home" / ".gitconfig").exists()

    # An identity from the environment is git's usual one: no fallback then.
    env.update(GIT_AUTHOR_NAME="Env Author", GIT_COMMITTER_NAME="Env Committer", EMAIL="env@example.org")
    done = coco("--home", str(tmp_path / "home"), "init", "other", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no user configured" not in done.stdout
    author = git("-C", str(tmp_path / "home" / "other"), "log", "-1", "--format=%an <%ae>|%cn <%ce>",
                 env=env).strip()
    assert author == "Env Author <env@example.org>|Env Committer <env@example.org>"


def test_without_git_on_path_the_project_is_made_and_says_it_is_no_repository(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    env = git_env(tmp_path, path=str(empty))
    done = coco("--home", str(tmp_path / "home"), "init", "sales", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "git not found: the project is not a repository\n" in done.stdout
    project = tmp_path / "home" / "sales"
    assert written_files(project) == sorted([".env", *FILES])
    assert not (project / ".git").exists()


@needs_git
def test_inside_another_repository_the_project_is_its_own(tmp_path):
    env = git_env(tmp_path)
    outer = tmp_path / "work"
    outer.mkdir()
    git("init", "-q", str(outer), env=env)
    home = outer / "projects"
    done = coco("--home", str(home), "init", "sales", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{home} is inside the git repository {outer}: the project becomes its own repository" in done.stdout
    project = home / "sales"
    assert git("-C", str(project), "rev-parse", "--show-toplevel", env=env).strip() == str(project)
    assert committed_files(project, env) == FILES
    assert git("-C", str(project), "status", "--porcelain", env=env) == ""
    # The outer repository gained no commit and nothing staged; it sees the project as one nested repository.
    assert subprocess.run([GIT, "-C", str(outer), "rev-parse", "HEAD"], capture_output=True, env=env,
                          check=False).returncode != 0
    assert git("-C", str(outer), "status", "--porcelain", env=env) == "?? projects/\n"


@needs_git
def test_a_failing_git_leaves_the_files_and_no_half_made_repository(tmp_path):
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "git").write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = commit ] && '
                              f'{{ echo "fatal: simulated hook refusal" >&2; exit 3; }}; done\nexec {GIT} "$@"\n')
    (fake / "git").chmod(0o755)
    env = git_env(tmp_path, path=f"{fake}{os.pathsep}{os.environ.get('PATH', '')}")
    done = coco("--home", str(tmp_path / "home"), "init", "sales", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("git commit failed (exit 3: fatal: simulated hook refusal): the project's files are written, "
            "but it is not a repository") in done.stdout
    project = tmp_path / "home" / "sales"
    assert written_files(project) == sorted([".env", *FILES])
    assert not (project / ".git").exists()
