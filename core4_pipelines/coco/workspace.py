"""workspace.yaml: one Dagster code location per project in folder.home."""

from __future__ import annotations

import os

import yaml

from core4_pipelines.coco.discovery import ProjectInfo, discover_projects
from core4_resources.moves import make_dirs, write_file_atomic


def workspace_entries(projects: list[ProjectInfo], relative_to: str | None = None) -> list[dict]:
    """One ``python_module`` entry per project.

    With ``relative_to``, paths below that folder are written relative to it
    (the checked-in workspace of this repository, used from its root).
    """

    def shown(path: str) -> str:
        if relative_to is None:
            return path
        rel = os.path.relpath(path, relative_to)
        return path if rel.startswith("..") else rel

    entries = []
    for project in projects:
        module = {
            "module_name": f"{project.name}.definitions",
            "attribute": "defs",
            "location_name": project.name,
            "working_directory": shown(project.folder),
        }
        if project.venv_python:
            module["executable_path"] = shown(project.venv_python)
        entries.append({"python_module": module})
    return entries


def render_workspace(home: str, relative_to: str | None = None) -> tuple[str, list[ProjectInfo], list[str]]:
    projects, skipped = discover_projects(home)
    body = yaml.safe_dump({"load_from": workspace_entries(projects, relative_to)}, sort_keys=False)
    header = f"# Written by `coco workspace` from {shown_home(home, relative_to)}: one code location per project.\n"
    return header + body, projects, skipped


def shown_home(home: str, relative_to: str | None) -> str:
    if relative_to is None:
        return os.path.abspath(home)
    rel = os.path.relpath(os.path.abspath(home), relative_to)
    return os.path.abspath(home) if rel.startswith("..") else rel


def write_workspace(home: str, path: str, relative: bool = False) -> tuple[list[ProjectInfo], list[str]]:
    """Write ``path`` (0o640; missing folders 0o750) for the projects in ``home``;
    returns the projects and the skipped folders."""
    relative_to = os.path.dirname(os.path.abspath(path)) if relative else None
    text, projects, skipped = render_workspace(home, relative_to)
    make_dirs(os.path.dirname(os.path.abspath(path)))
    write_file_atomic(path, text.encode("utf-8"))
    return projects, skipped
