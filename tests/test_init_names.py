"""`coco init NAME` refuses names that could never become a working project, saying why."""

from __future__ import annotations

import os

import pytest
from support import coco

from core4_pipelines.errors import ProjectError
from core4_pipelines.coco.scaffold import MAX_NAME, init_project


@pytest.mark.parametrize("name, expected", [
    ("a" * 300, "project name 'aaaaaaaaaaaaaaaaaaaa'... is 300 characters long; use at most 63 "
                "(it also names the project's MongoDB database)"),
    ("os", "project name 'os' is a module of Python's standard library; a project of that name "
           "would hide it: choose another name"),
    ("yaml", "project name 'yaml' is also an installed module ("),
    ("class", "project name 'class' is a Python keyword; 'import class' could never load it"),
    ("job", "project name 'job' is a section of the configuration (DEFAULT, embedded, folder, job, logging, dagster, alerts)"),
    ("Sales", "project name 'Sales': use lower-case letters, digits and _"),
])
def test_coco_init_refuses_a_name_that_cannot_be_a_project(tmp_path, name, expected):
    done = coco("--home", str(tmp_path), "init", name, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"coco init: {expected}"), done.stderr
    assert "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []


def test_the_longest_name_allowed_is_created(tmp_path):
    name = "p" * MAX_NAME
    folder = init_project(name, str(tmp_path))
    assert os.path.isfile(os.path.join(folder, name, "definitions.py"))
    with pytest.raises(ProjectError, match="is 64 characters long"):
        init_project(name + "p", str(tmp_path))
