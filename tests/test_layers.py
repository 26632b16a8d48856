"""The two rooms and the rule (README, "A short tour"): arrows point down only.

- ``core4_pipelines`` is the library a project imports; ``core4_pipelines.coco`` is the
  operator tool. Importing the library, or a project's definitions (what every code
  server and run worker does), never loads the operator tool.
- No library module imports ``core4_pipelines.coco``; ``core4_resources`` imports neither.
- The ``coco serve`` process does not import Dagster: everything that needs Dagster runs
  in a child process.

Each check runs in a fresh interpreter, so what another test imported cannot hide a
violation.
"""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import core4_pipelines

REPO = Path(__file__).resolve().parent.parent
LIBRARY = REPO / "core4_pipelines"
RESOURCES = REPO / "core4_resources"
OPERATOR = LIBRARY / "coco"
DEMO = REPO / "projects" / "demo"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_path(module: str) -> Path:
    """The file of ``module``: ``<name>.py``, or ``<name>/__init__.py`` for a package."""
    base = REPO / module.replace(".", "/")
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _modules(package: Path, *, skip: Path | None = None) -> list[str]:
    return sorted(
        _module_name(path) for path in package.rglob("*.py")
        if skip is None or skip not in path.parents
    )


LIBRARY_MODULES = _modules(LIBRARY, skip=OPERATOR)
RESOURCE_MODULES = _modules(RESOURCES)


def loaded_after(code: str, tmp_path: Path) -> list[str]:
    """The modules in sys.modules after ``code`` ran in a fresh interpreter (repo root as cwd)."""
    config = tmp_path / "local.yaml"
    config.write_text("")
    env = {name: value for name, value in os.environ.items() if not name.startswith("CORE4_OPTION_")}
    env.update(
        CORE4_CONFIG=str(config),  # no developer config; loads without MongoDB running
        CORE4_OPTION_folder__root=str(tmp_path / "root"),
        CORE4_OPTION_folder__home=str(REPO / "projects"),
    )
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def _under(modules: list[str], package: str) -> list[str]:
    return [m for m in modules if m == package or m.startswith(package + ".")]


# -- (a) a code location's import never loads the operator tool -------------------------------


def test_importing_the_library_does_not_load_the_operator_tool(tmp_path):
    loaded = loaded_after("import core4_pipelines", tmp_path)
    assert _under(loaded, "core4_pipelines.coco") == []


def test_a_projects_definitions_do_not_load_the_operator_tool(tmp_path):
    loaded = loaded_after(f"""
        import sys
        sys.path.insert(0, {str(DEMO)!r})
        from demo.definitions import defs
        assert defs.resolve_job_def("import_readings") is not None
    """, tmp_path)
    assert "core4_pipelines.ingest.sensor" in loaded  # it did load the library
    assert _under(loaded, "core4_pipelines.coco") == []


def test_the_public_names_load_lazily_and_are_the_defining_modules_objects(tmp_path):
    assert sorted(core4_pipelines.__all__) == sorted(core4_pipelines._EXPORTS)
    # No public name is also a submodule's name: loading that submodule would replace it.
    submodules = {module.name for module in pkgutil.iter_modules(core4_pipelines.__path__)}
    assert submodules & set(core4_pipelines.__all__) == set()
    loaded_after("""
        import importlib
        import core4_pipelines
        from core4_pipelines import Cookie, cookie
        from core4_pipelines.supervise.runtime import cookie as runtime_cookie
        assert cookie is runtime_cookie and core4_pipelines.cookie is runtime_cookie, cookie
        for name in core4_pipelines.__all__:
            module = importlib.import_module(core4_pipelines._EXPORTS[name])
            assert getattr(core4_pipelines, name) is getattr(module, name), name
        assert set(core4_pipelines.__all__) <= set(dir(core4_pipelines))
    """, tmp_path)


# -- (b) the library never imports the operator tool ------------------------------------------


def _imported_names(path: Path, module: str | None = None, executed_only: bool = False) -> set[str]:
    """Every module an ``import`` statement in ``path`` names (relative ones resolved), and for
    ``from X import a`` also ``X.a``: it may be a submodule. ``executed_only``: not those under
    ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    if executed_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
                node.body = []
    module = module or _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", LIBRARY_MODULES)
def test_no_library_module_imports_the_operator_tool(module):
    path = _module_path(module)
    bad = sorted(n for n in _imported_names(path) if n == "core4_pipelines.coco" or n.startswith("core4_pipelines.coco."))
    assert bad == [], f"{module} imports the operator tool: {bad}"


def test_loading_every_library_module_leaves_the_operator_tool_out(tmp_path):
    loaded = loaded_after("\n".join(f"import {m}" for m in LIBRARY_MODULES), tmp_path)
    assert set(LIBRARY_MODULES) <= set(loaded)
    assert _under(loaded, "core4_pipelines.coco") == []


# -- (c) the resources layer imports neither ---------------------------------------------------


@pytest.mark.parametrize("module", RESOURCE_MODULES)
def test_no_resources_module_imports_core4_pipelines(module):
    path = _module_path(module)
    bad = sorted(n for n in _imported_names(path) if n.startswith("core4_pipelines"))
    assert bad == [], f"{module} imports {bad}"


def test_loading_every_resources_module_leaves_core4_pipelines_out(tmp_path):
    loaded = loaded_after("\n".join(f"import {m}" for m in RESOURCE_MODULES), tmp_path)
    assert set(RESOURCE_MODULES) <= set(loaded)
    assert _under(loaded, "core4_pipelines") == []


# -- (d) the coco serve process stays free of Dagster -------------------------------------------


def test_coco_and_the_serve_process_do_not_import_dagster(tmp_path):
    """What `coco serve` does in its own process before it hands over to `dagster dev`:
    the parser with every verb, finding the projects, the workspace and dagster.yaml
    (with max_parallel limits). The projects' limits are probed in child processes."""
    loaded = loaded_after(f"""
        from core4_pipelines.coco import cli, serve
        from core4_pipelines.coco.discovery import discover_projects
        from core4_pipelines.coco.instance import write_instance
        from core4_pipelines.coco.workspace import write_workspace
        from core4_resources.config.settings import load_config

        cli.build_parser()
        settings = load_config()
        projects, _ = discover_projects(settings.folder.home)
        assert [p.name for p in projects] == ["demo"], projects
        write_workspace(settings.folder.home, {str(tmp_path / "workspace.yaml")!r})
        write_instance(settings, job_limits={{"demo.import_readings": 2}})
    """, tmp_path)
    assert "core4_pipelines.coco.serve" in loaded
    assert _under(loaded, "dagster") == []


# -- (d) no import cycle anywhere in the library ----------------------------------------------


def _executed_imports(path: Path, module: str) -> set[str]:
    """What ``path`` imports when it runs: as ``_imported_names``, except under ``if TYPE_CHECKING:``
    (never executed). A lazy import inside a function still counts: hiding a cycle there does
    not remove it."""
    return _imported_names(path, module, executed_only=True)


def import_cycles(paths: dict[str, Path]) -> list[list[str]]:
    """The import cycles among ``paths`` (module name -> file): Tarjan's strongly connected
    components of more than one module, or a module importing itself."""
    graph = {name: sorted((_executed_imports(path, name) & set(paths)) - {name}) for name, path in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def _library_files() -> dict[str, Path]:
    return {_module_name(path): path for package in (LIBRARY, RESOURCES) for path in package.rglob("*.py")}


def test_the_library_has_no_import_cycle():
    assert import_cycles(_library_files()) == []


def test_the_cycle_check_finds_a_cycle_put_back(tmp_path):
    # A cycle hidden in a function, as the library once had (job_context -> project -> ... -> job_context).
    files = _library_files()
    settings = tmp_path / "settings.py"
    settings.write_text(files["core4_pipelines.settings"].read_text(encoding="utf-8")
                        + "\n\ndef _hidden():\n    from core4_pipelines.job_context import job_config\n")
    files["core4_pipelines.settings"] = settings
    assert any("core4_pipelines.settings" in cycle and "core4_pipelines.job_context" in cycle
               for cycle in import_cycles(files))
