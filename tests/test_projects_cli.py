"""Projects as code locations, through the `coco` and `dagster` commands a user runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from core4_pipelines.coco.discovery import discover_projects

BIN = os.path.dirname(sys.executable)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def coco(*args, env=None, cwd=None, timeout=300):
    return subprocess.run(
        [os.path.join(BIN, "coco"), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "home"
    path.mkdir()
    return path


def broken_project(home, name="broken"):
    package = home / name / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('__project__ = "core4"\n__version__ = "9.9"\n')
    (package / f"{name}.yaml").write_text("")
    (package / "definitions.py").write_text("raise RuntimeError('this project is broken on purpose')\n")


def test_init_workspace_validate_and_a_broken_neighbour(home, tmp_path):
    done = coco("--home", str(home), "init", "sales")
    assert done.returncode == 0, done.stderr
    for rel in ["README.md", "pyproject.toml", "enter_env", "sales/__init__.py", "sales/sales.yaml",
                "sales/definitions.py", "tests/test_definitions.py"]:
        assert (home / "sales" / rel).is_file(), rel
    broken_project(home)
    (home / "not_a_project").mkdir()
    workspace = tmp_path / "workspace.yaml"
    done = coco("--home", str(home), "workspace", "-o", str(workspace))
    assert done.returncode == 0, done.stderr
    assert "not_a_project" in done.stderr
    entries = yaml.safe_load(workspace.read_text())["load_from"]
    assert [e["python_module"]["location_name"] for e in entries] == ["broken", "sales"]
    assert entries[1]["python_module"]["working_directory"] == str(home / "sales")

    env = dict(os.environ, CORE4_OPTION_folder__root=str(tmp_path / "root"))
    only_sales = tmp_path / "sales-workspace.yaml"
    only_sales.write_text(yaml.safe_dump({"load_from": [entries[1]]}))
    valid = subprocess.run([os.path.join(BIN, "dagster"), "definitions", "validate", "-w", str(only_sales)],
                           capture_output=True, text=True, env=env, timeout=300)
    assert valid.returncode == 0, valid.stdout + valid.stderr

    both = subprocess.run([os.path.join(BIN, "dagster"), "definitions", "validate", "-w", str(workspace)],
                          capture_output=True, text=True, env=env, timeout=300)
    out = both.stdout + both.stderr
    assert both.returncode != 0 and "this project is broken on purpose" in out

    listing = coco("--home", str(home), "projects", env=env)
    assert "sales" in listing.stdout and "loads" in listing.stdout
    assert "broken" in listing.stdout and "this project is broken on purpose" in listing.stdout
    assert listing.returncode == 1

    jobs = coco("--home", str(home), "jobs", "sales", env=env)
    assert jobs.returncode == 0, jobs.stderr
    assert "import_records" in jobs.stdout and "import_records_proc_sensor" in jobs.stdout

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests"], cwd=home / "sales",
                           capture_output=True, text=True, env=dict(env, PYTHONPATH=str(home / "sales")))
    assert tests.returncode == 0, tests.stdout


def test_init_refuses_to_overwrite(home):
    assert coco("--home", str(home), "init", "sales").returncode == 0
    (home / "sales" / "sales" / "definitions.py").write_text("# my work\n")
    again = coco("--home", str(home), "init", "sales")
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    assert (home / "sales" / "sales" / "definitions.py").read_text() == "# my work\n"


def test_discovery_reads_version_and_skips_invalid_folders(home):
    broken_project(home)
    (home / "plain").mkdir()
    (home / "plain" / "plain").mkdir()
    (home / "plain" / "plain" / "__init__.py").write_text("x = 1\n")
    projects, skipped = discover_projects(str(home))
    assert [(p.name, p.version) for p in projects] == [("broken", "9.9")]
    assert any("__project__" in reason for reason in skipped)


def test_checked_in_workspace_is_what_coco_workspace_writes(tmp_path):
    out = tmp_path / "workspace.yaml"
    done = coco("--home", os.path.join(REPO, "projects"), "workspace", "-o", str(out), "--relative")
    assert done.returncode == 0, done.stderr
    written = yaml.safe_load(out.read_text())["load_from"]
    checked_in = yaml.safe_load(open(os.path.join(REPO, "workspace.yaml")).read())["load_from"]
    # The checked-in file is relative to the repository root; what coco wrote here is absolute.
    for entry in checked_in:
        module = entry["python_module"]
        module["working_directory"] = os.path.normpath(os.path.join(REPO, module["working_directory"]))
    assert checked_in == written


def test_coco_demo_is_download_then_drain_on_the_embedded_mongodb(tmp_path):
    """`make run`'s setting, no mongo_url: one embedded server under folder.root for both steps."""
    from core4_resources.mongo.embedded.server import EmbeddedMongo
    from core4_resources.mongo.resource import MongoResource

    root = tmp_path / "root"
    done = coco("--root", str(root), "--home", os.path.join(REPO, "projects"), "demo")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("embedded MongoDB on ") == 1, done.stdout
    downloaded = re.search(r"demo.download_samples: run (\S+) succeeded \(in-process\)", done.stdout)
    assert downloaded, done.stdout
    assert ("import_readings: 4 files, 96 records into demo.readings, 1 run, 0 files in error, "
            "4 archived, 0 left in proc") in done.stdout, done.stdout
    archives = [n for _, _, names in os.walk(root / "archive" / "demo") for n in names]
    assert len(archives) == 4 and all(n.endswith(".csv.gz") for n in archives)
    assert [n for n in os.listdir(root / "proc" / "demo") if not n.startswith(".")] == []
    stamp = downloaded.group(1)[:8]  # the download names its files <sample>-<run id[:8]>-<copy>.csv
    with EmbeddedMongo(root / "mongo") as server:  # the demo's server again, on its data
        readings = MongoResource(mongo_url=server.url, database="demo").collection("readings")
        assert readings.count_documents({"_src": {"$regex": f"^readings-berlin-{stamp}-0"}}) == 24
        assert readings.count_documents({"_src": {"$regex": f"-{stamp}-0\\.csv$"}}) == 96


def test_coco_drain_imports_a_new_projects_proc_and_reports_bad_files(home, tmp_path, mongo_server):
    """Any project: one made by `coco init`, whose sensor claims a file only once it stayed
    unchanged for min_age_seconds (5 s): drain ticks until then, imports, archives, reports."""
    from core4_resources.mongo.resource import MongoResource

    assert coco("--home", str(home), "init", "drained").returncode == 0
    root = tmp_path / "root"
    proc = root / "proc" / "drained"
    proc.mkdir(parents=True)
    (proc / "good.csv").write_text("city,celsius\nberlin,21.5\nkoeln,19\nmuenchen,17\n")
    (proc / "bad.csv").write_text("city,celsius\nberlin\n")  # a row short of a field: a content error
    (proc / "notes.txt").write_text("not matching the pattern: stays\n")
    env = dict(os.environ, CORE4_OPTION_DEFAULT__mongo_url=mongo_server.url)
    common = ("--root", str(root), "--home", str(home))

    done = coco(*common, "drain", "drained", "--timeout", "120", env=env)
    assert done.returncode == 1, done.stdout + done.stderr  # a file in error is not a clean drain
    assert ("import_records: 2 files, 3 records into drained.records, 1 run, 1 files in error, "
            "1 archived, 0 left in proc") in done.stdout, done.stdout
    assert "  in error: bad.csv" in done.stdout
    records = MongoResource(mongo_url=mongo_server.url, database="drained").collection("records")
    assert sorted(r["city"] for r in records.find({"_src": "good.csv"})) == ["berlin", "koeln", "muenchen"]
    assert records.count_documents({"_src": "bad.csv"}) == 0
    archives = [n for _, _, names in os.walk(root / "archive" / "drained") for n in names]
    assert archives == ["good.csv.gz"]
    in_error = [n for _, _, names in os.walk(root / "error" / "drained") for n in names]
    assert "bad.csv" in in_error, in_error
    assert [n for n in os.listdir(proc) if not n.startswith(".")] == ["notes.txt"]  # not matching .*\.csv$
    assert [n for _, _, names in os.walk(proc / ".batch") for n in names] == []

    again = coco(*common, "drain", "drained", env=env)  # nothing left: a clean, empty drain
    assert again.returncode == 0, again.stdout + again.stderr
    assert "import_records: 0 files, 0 records into drained.records, 0 runs" in again.stdout

    (home / "quiet").mkdir()
    (home / "quiet" / "quiet").mkdir()
    (home / "quiet" / "quiet" / "__init__.py").write_text('__project__ = "core4"\n')
    (home / "quiet" / "quiet" / "definitions.py").write_text("import dagster as dg\n\ndefs = dg.Definitions()\n")
    none = coco(*common, "drain", "quiet", env=env)
    assert none.returncode == 2 and "project quiet has no proc sensor" in none.stderr, none.stderr
    missing = coco(*common, "drain", "nosuch", env=env)
    assert missing.returncode == 2 and "no project 'nosuch'" in missing.stderr, missing.stderr
