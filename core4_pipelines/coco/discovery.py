"""What a project folder is, and finding the projects in folder.home.

A project is ``<home>/<name>/`` holding a package ``<name>/`` whose
``__init__.py`` says ``__project__ = "core4"``, a config file
``<name>/<name>.yaml`` and ``<name>/definitions.py`` exposing ``defs``.
Discovery reads files only; it never imports a project's code (nor Dagster), so
one broken project cannot stop the others from being listed or loaded.
:func:`load_definitions` is the one place that does import a project's code, for
whoever means to (the probe in the project's own interpreter, a run in process).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field

from core4_pipelines.errors import ProjectError

_MARKER = re.compile(r"""^__project__\s*=\s*["']core4["']""", re.M)
_VERSION = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class ProjectInfo:
    """A project folder found in home, as read from disk (not imported)."""

    name: str
    folder: str
    version: str | None
    venv_python: str | None
    problems: list[str] = field(default_factory=list)

    @property
    def package_dir(self) -> str:
        return os.path.join(self.folder, self.name)

    @property
    def yaml_path(self) -> str:
        return os.path.join(self.package_dir, f"{self.name}.yaml")


def inspect_project_folder(folder: str) -> ProjectInfo | str:
    """A ProjectInfo for a valid project folder, else the reason it is not one."""
    name = os.path.basename(os.path.normpath(folder))
    if not _NAME.match(name):
        return f"{folder}: {name!r} is not a valid Python package name"
    init = os.path.join(folder, name, "__init__.py")
    try:
        with open(init, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return f"{folder}: no package {name}/ with __init__.py"
    except (OSError, UnicodeDecodeError) as exc:
        return f"{init}: cannot be read ({exc})"
    if not _MARKER.search(text):
        return f'{init}: no __project__ = "core4" line'
    version = _VERSION.search(text)
    venv_python = os.path.join(folder, ".venv", "bin", "python")
    info = ProjectInfo(
        name=name,
        folder=os.path.abspath(folder),
        version=version.group(1) if version else None,
        venv_python=venv_python if os.access(venv_python, os.X_OK) else None,
    )
    if not os.path.isfile(os.path.join(folder, name, "definitions.py")):
        info.problems.append(f"{name}/definitions.py is missing (it must expose `defs`)")
    if not os.path.isfile(info.yaml_path):
        info.problems.append(f"{name}/{name}.yaml is missing")
    return info


def discover_projects(home: str) -> tuple[list[ProjectInfo], list[str]]:
    """The projects in ``home``, sorted by name, and why other folders were skipped."""
    if not os.path.isdir(home):
        raise ProjectError(f"folder.home {home!r} is not a directory; set folder.home to your projects' folder")
    projects: list[ProjectInfo] = []
    skipped: list[str] = []
    for entry in sorted(os.scandir(home), key=lambda e: e.name):
        if entry.name.startswith((".", "_")) or not entry.is_dir():
            continue
        found = inspect_project_folder(entry.path)
        if isinstance(found, str):
            skipped.append(found)
        else:
            projects.append(found)
    return _refuse_clashing_names(projects, skipped)


def _refuse_clashing_names(projects: list[ProjectInfo], skipped: list[str]):
    """Names differing only in case share folders (case-insensitive filesystems) and a
    MongoDB database; a name that is also an installed module hides it from Dagster."""
    by_key: dict[str, list[ProjectInfo]] = {}
    for project in projects:
        by_key.setdefault(project.name.casefold(), []).append(project)
    kept = []
    for group in by_key.values():
        if len(group) > 1:
            names = ", ".join(p.name for p in group)
            skipped.extend(f"{p.folder}: project names {names} differ only in case; rename one" for p in group)
            continue
        project = group[0]
        installed = _installed_module_origin(project)
        if installed:
            skipped.append(
                f"{project.folder}: {project.name!r} is also an installed module ({installed}); "
                "a code location would hide it: rename the project"
            )
            continue
        kept.append(project)
    return sorted(kept, key=lambda p: p.name), skipped


def _installed_module_origin(project: ProjectInfo) -> str | None:
    try:
        spec = importlib.util.find_spec(project.name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    origin = spec.origin or next(iter(spec.submodule_search_locations or []), None)
    if origin is None:  # a namespace package: nothing to hide
        return None
    inside = os.path.realpath(origin).startswith(os.path.realpath(project.folder) + os.sep)
    return None if inside else origin


def load_definitions(folder: str, name: str):
    """The ``defs`` of project ``name`` in ``folder`` (``<folder>/<name>/definitions.py``),
    imported in this process: the folder goes first on sys.path. ProjectError when the module
    has no ``defs`` or this process imported another project of that name already."""
    folder = os.path.abspath(folder)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = importlib.import_module(f"{name}.definitions")
    origin = os.path.realpath(getattr(module, "__file__", None) or "")
    if not origin.startswith(os.path.realpath(folder) + os.sep):
        raise ProjectError(
            f"{name}.definitions was imported from {origin or 'nowhere'}, not from {folder}: "
            "one process loads one project of a name"
        )
    defs = getattr(module, "defs", None)
    if defs is None:
        raise ProjectError(f"{name}/definitions.py defines no `defs`")
    return defs
