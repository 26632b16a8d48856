"""One way to load a project's definitions from its folder: coco.discovery.load_definitions."""

from __future__ import annotations


import dagster as dg
import pytest
from support import make_project

from core4_pipelines.coco.discovery import load_definitions
from core4_pipelines.coco.probe import describe
from core4_pipelines.errors import ProjectError


DEFS = """
    import dagster as dg
    from core4_pipelines import project_definitions

    @dg.op
    def hello():
        pass

    @dg.job
    def greet():
        hello()

    defs = project_definitions({name!r}, jobs=[greet])
"""


def test_load_definitions_imports_the_projects_defs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))  # undone afterwards, with what load_definitions adds
    folder = make_project(tmp_path, "loadme", DEFS.format(name="loadme"))
    defs = load_definitions(folder, "loadme")
    assert isinstance(defs, dg.Definitions)
    assert defs.resolve_job_def("greet").tags["core4/job"] == "loadme.greet"
    assert load_definitions(folder, "loadme") is defs  # once per process


def test_a_project_without_defs_or_another_of_the_same_name_is_refused(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = make_project(tmp_path, "nodefs_here", "x = 1\n")
    with pytest.raises(ProjectError, match="nodefs_here/definitions.py defines no `defs`"):
        load_definitions(folder, "nodefs_here")
    assert describe(folder, "nodefs_here") == {"ok": False, "error": "nodefs_here/definitions.py defines no `defs`"}
    other = make_project(tmp_path / "elsewhere", "nodefs_here", DEFS.format(name="nodefs_here"))
    with pytest.raises(ProjectError, match="one process loads one project of a name"):
        load_definitions(other, "nodefs_here")
