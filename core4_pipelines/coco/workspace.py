"""workspace.yaml: one Dagster code location per project in folder.home; beside it a .env that
points `dagster dev -w workspace.yaml` at the instance `coco serve` uses."""

from __future__ import annotations

import os

import yaml

from core4_pipelines.coco.discovery import ProjectInfo, discover_projects
from core4_pipelines.coco.instance import dagster_home, ensure_instance, write_dagster_env
from core4_resources.config.settings import Settings
from core4_resources.files.moves import make_dirs, write_file_atomic


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


def write_workspace(home: str, path: str, relative: bool = False,
                    settings: Settings | None = None) -> tuple[list[ProjectInfo], list[str]]:
    """Write ``path`` (0o640; missing folders 0o750) for the projects in ``home``;
    returns the projects and the skipped folders.

    Beside it, ``.env`` sets DAGSTER_HOME (of ``settings``, default: the configuration) and
    that folder gets its dagster.yaml when it has none, so `dagster dev -w <path>` keeps its
    runs where `coco serve` keeps them. Not for the workspace coco serve writes into
    DAGSTER_HOME itself: it passes DAGSTER_HOME to dagster dev.
    """
    folder = os.path.dirname(os.path.abspath(path))
    text, projects, skipped = render_workspace(home, folder if relative else None)
    make_dirs(folder)
    write_file_atomic(path, text.encode("utf-8"))
    if settings is None:
        from core4_resources.config.settings import load_config

        settings = load_config()
    if os.path.abspath(dagster_home(settings)) != folder:
        instance, _ = ensure_instance(settings)
        write_dagster_env(folder, instance)
    return projects, skipped
