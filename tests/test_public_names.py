"""Every name the package exports, and every import the README and docs/ show, works as written:
a name moved between modules without its export would break users' code, not ours."""

from __future__ import annotations

import importlib
import pathlib
import re
import types

import pytest

import core4_pipelines

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMPORT = re.compile(r"^\s*from (core4_(?:pipelines|resources)[\w.]*) import ([\w, ()]+)$", re.MULTILINE)


def shown_imports() -> list[tuple[str, str, str]]:
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for module, names in IMPORT.findall(page.read_text(encoding="utf-8")):
            for name in re.split(r"[,\s()]+", names):
                if name:
                    found.append((page.name, module, name))
    return found


def test_the_docs_show_imports_at_all():
    pages = {page for page, _, _ in shown_imports()}
    assert "README.md" in pages and "readers.md" in pages


@pytest.mark.parametrize("page, module, name", shown_imports())
def test_every_import_the_docs_show_works(page, module, name):
    assert hasattr(importlib.import_module(module), name), f"{page}: from {module} import {name}"


@pytest.mark.parametrize("name", core4_pipelines.__all__)
def test_every_exported_name_loads_and_is_no_module(name):
    value = getattr(core4_pipelines, name)
    assert not isinstance(value, types.ModuleType), name
    home = core4_pipelines._EXPORTS[name]
    assert getattr(importlib.import_module(home), name) is value
