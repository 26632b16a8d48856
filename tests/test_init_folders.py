"""`coco init NAME` makes the project's transfer, proc, archive and error folders (0750) and says
where proc is; the project's README says how to start it, where to put files and where to read
the result."""

from __future__ import annotations

import os
import stat

from support import coco

KINDS = ("transfer", "proc", "archive", "error")


def environment(tmp_path) -> dict[str, str]:
    """This environment with folder.root under tmp_path and no DAGSTER_HOME of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORE4_OPTION_") and k != "DAGSTER_HOME"}
    env["CORE4_OPTION_folder__root"] = str(tmp_path / "root")
    return env


def printed_folders(tmp_path, env) -> dict[str, str]:
    done = coco("--home", str(tmp_path / "home"), "folders", "sales", env=env)
    assert done.returncode == 0, done.stderr
    return dict(line.split(None, 1) for line in done.stdout.splitlines())


def test_init_makes_the_folders_coco_folders_prints_and_says_where_proc_is(tmp_path):
    env = environment(tmp_path)
    done = coco("--home", str(tmp_path / "home"), "init", "sales", env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    folders = printed_folders(tmp_path, env)
    for kind in KINDS:
        path = folders[kind]
        assert path == str(tmp_path / "root" / kind / "sales")
        assert os.path.isdir(path), f"{kind} folder {path} was not created"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o750, kind
    assert f"proc folder {folders['proc']}: put the files to import here" in done.stdout
    # `cp cities.csv <proc>/` works right after `coco init`: the folder is there to copy into.
    with open(os.path.join(folders["proc"], "cities.csv"), "w") as handle:
        handle.write("city,celsius\nberlin,21.5\n")


def test_the_readme_says_how_to_start_it_where_files_go_and_where_results_are(tmp_path):
    env = environment(tmp_path)
    home = tmp_path / "home"
    assert coco("--home", str(home), "init", "sales", env=env, timeout=120).returncode == 0
    folders = printed_folders(tmp_path, env)
    readme = (home / "sales" / "README.md").read_text()
    for words in [
        f"coco serve --home {home}",                       # start: everything, with the UI
        "`dg dev`",                                         # start: this project alone
        str(tmp_path / "root" / "dagster"),                 # ... keeping its runs in coco's instance
        f"cp *.csv {folders['proc']}/",                     # put files in
        "coco folders sales",
        "collection `records` in the database `sales`",     # read the result
        "coco info",
        "coco runs --project sales",
        folders["archive"],
        folders["error"],
        "coco retry sales",
        "/assets/sales/records",
    ]:
        assert words in readme, f"README.md does not say {words!r}:\n{readme}"


def test_a_proc_folder_that_cannot_be_made_stops_init_before_any_file_is_written(tmp_path):
    env = environment(tmp_path)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "proc").write_text("a file where the proc folder belongs\n")
    done = coco("--home", str(tmp_path / "home"), "init", "sales", env=env, timeout=120)
    assert done.returncode == 2
    assert f"cannot create folder {tmp_path / 'root' / 'proc'}" in done.stderr, done.stderr
    assert not (tmp_path / "home" / "sales").exists()
