"""FolderResource and the move primitives, on real folders under tmp_path."""

from __future__ import annotations

import errno
import gzip
import os
import re
import shutil
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import dagster as dg
import pytest
from support import STARTED, make_folders, mode_of, read, write

from core4_resources.files import fileops, moves
from core4_resources.errors import ConfigError, FolderError
from core4_resources.files.folders import (
    FolderResource,
    SourceMissingError,
    is_hidden,
    make_dirs,
    rename_noreplace,
    safe_move,
    write_file_atomic,
)


def all_names(folder) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.fixture
def folders_with(tmp_path):
    """The ``folders`` fixture's folders with other options (a new resource, as a run would build it)."""
    return lambda **options: make_folders(tmp_path / "root", **options)


@pytest.fixture
def restrictive_umask():
    old = os.umask(0o077)
    yield
    os.umask(old)


@pytest.fixture
def cross_device(monkeypatch):
    """Renames between different folders fail with EXDEV, as between two filesystems."""
    real_noreplace = moves.rename_noreplace
    real_replace = os.replace

    def noreplace(src, dst):
        if os.path.dirname(os.path.abspath(src)) != os.path.dirname(os.path.abspath(dst)):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, None, dst)
        real_noreplace(src, dst)

    def replace(src, dst, **kwargs):
        if os.path.dirname(os.path.abspath(src)) != os.path.dirname(os.path.abspath(dst)):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, None, dst)
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(moves, "rename_noreplace", noreplace)
    monkeypatch.setattr(os, "replace", replace)


# -- primitives -----------------------------------------------------------------


def test_is_hidden():
    assert is_hidden(".a.csv.1234.part")
    assert is_hidden("/x/y/.batch")
    assert not is_hidden("a.csv")
    assert not is_hidden("/x/.y/a.csv")


@pytest.mark.parametrize("native", [True, False], ids=["renameat2", "fallback"])
def test_rename_noreplace_refuses_an_existing_target(tmp_path, monkeypatch, native):
    if not native:
        monkeypatch.setattr(fileops, "_renameat2", None)
    src = write(tmp_path / "a" / "x.csv", b"new")
    dst = write(tmp_path / "b" / "x.csv", b"old")
    with pytest.raises(FileExistsError):
        rename_noreplace(src, dst)
    assert read(src) == b"new" and read(dst) == b"old"
    free = str(tmp_path / "b" / "y.csv")
    rename_noreplace(src, free)
    assert read(free) == b"new" and not os.path.exists(src)


def test_make_dirs_sets_mode_despite_umask(tmp_path, restrictive_umask):
    made = make_dirs(str(tmp_path / "a" / "b" / "c"))
    for folder in (tmp_path / "a", tmp_path / "a" / "b", made):
        assert mode_of(folder) == 0o750


def test_write_file_atomic_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "r.txt"
    write(target, b"old")
    write_file_atomic(str(target), b"new")
    assert read(target) == b"new"
    assert all_names(tmp_path) == ["r.txt"]


def test_safe_move_same_filesystem(tmp_path, restrictive_umask):
    source = write(tmp_path / "in" / "a.csv", b"payload")
    final = safe_move(source, str(tmp_path / "out" / "sub"))
    assert final == str(tmp_path / "out" / "sub" / "a.csv")
    assert read(final) == b"payload" and not os.path.exists(source)
    assert mode_of(tmp_path / "out") == 0o750 and mode_of(tmp_path / "out" / "sub") == 0o750


def test_safe_move_with_new_name(tmp_path):
    source = write(tmp_path / "in" / "a.csv", b"payload")
    final = safe_move(source, str(tmp_path / "out"), name="b.csv")
    assert final == str(tmp_path / "out" / "b.csv") and read(final) == b"payload"


def test_conflict_rename_numbers_before_the_extension(tmp_path):
    out = tmp_path / "out"
    write(out / "a.csv", b"first")
    second = safe_move(write(tmp_path / "in" / "a.csv", b"second"), str(out))
    third = safe_move(write(tmp_path / "in" / "a.csv", b"third"), str(out))
    assert (os.path.basename(second), os.path.basename(third)) == ("a.1.csv", "a.2.csv")
    assert [read(out / n) for n in ("a.csv", "a.1.csv", "a.2.csv")] == [b"first", b"second", b"third"]
    write(out / "a.csv.gz", b"z")
    assert os.path.basename(safe_move(write(tmp_path / "in" / "a.csv.gz"), str(out))) == "a.1.csv.gz"
    write(out / "README", b"r")
    assert os.path.basename(safe_move(write(tmp_path / "in" / "README"), str(out))) == "README.1"


def test_conflict_replace(tmp_path):
    out = tmp_path / "out"
    write(out / "a.csv", b"old")
    final = safe_move(write(tmp_path / "in" / "a.csv", b"new"), str(out), on_conflict="replace")
    assert read(final) == b"new" and all_names(out) == ["a.csv"]


def test_conflict_fail_keeps_both_files(tmp_path):
    out = tmp_path / "out"
    write(out / "a.csv", b"old")
    source = write(tmp_path / "in" / "a.csv", b"new")
    with pytest.raises(FolderError, match="already exists"):
        safe_move(source, str(out), on_conflict="fail")
    assert read(source) == b"new" and read(out / "a.csv") == b"old"
    assert all_names(out) == ["a.csv"]


def test_unknown_conflict_policy_and_missing_source(tmp_path):
    source = write(tmp_path / "in" / "a.csv")
    with pytest.raises(FolderError, match="on_conflict='overwrite'"):
        safe_move(source, str(tmp_path / "out"), on_conflict="overwrite")
    with pytest.raises(SourceMissingError, match="does not exist") as caught:
        safe_move(str(tmp_path / "in" / "gone.csv"), str(tmp_path / "out"))
    assert isinstance(caught.value, FolderError) and isinstance(caught.value, FileNotFoundError)


# -- across filesystems (EXDEV) ---------------------------------------------------


def test_cross_device_move_copies_completely_and_removes_source(tmp_path, cross_device):
    data = os.urandom(3 * moves.COPY_CHUNK + 17)
    source = write(tmp_path / "in" / "a.bin", data)
    os.utime(source, (1_600_000_000, 1_600_000_000))
    final = safe_move(source, str(tmp_path / "out"))
    assert read(final) == data
    assert not os.path.exists(source)
    assert all_names(tmp_path / "out") == ["a.bin"]  # no hidden .part left
    assert os.stat(final).st_mtime == 1_600_000_000  # as a rename would keep it


def test_cross_device_removes_source_only_after_target_is_complete(tmp_path, cross_device, monkeypatch):
    data = b"x" * 5000
    source = write(tmp_path / "in" / "a.csv", data)
    target = tmp_path / "out" / "a.csv"
    seen = []
    real_fsync_dir = moves.fsync_dir

    def fsync_dir(path):
        # The folder is made durable while the source still exists and the target is whole.
        seen.append((os.path.exists(source), read(target) == data))
        real_fsync_dir(path)

    monkeypatch.setattr(moves, "fsync_dir", fsync_dir)
    safe_move(source, str(tmp_path / "out"))
    assert seen == [(True, True)]
    assert not os.path.exists(source)


def test_cross_device_copy_failing_midway_keeps_source_and_shows_nothing(tmp_path, cross_device, monkeypatch):
    data = b"y" * 10_000
    source = write(tmp_path / "in" / "a.csv", data)

    def copy_half(src, dst, length=0):
        dst.write(src.read(len(data) // 2))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", copy_half)
    with pytest.raises(FolderError, match="source is unchanged"):
        safe_move(source, str(tmp_path / "out"))
    assert read(source) == data
    assert all_names(tmp_path / "out") == []  # neither a partial file nor a hidden temp


@pytest.mark.parametrize("on_conflict, expected", [("rename", "a.1.csv"), ("replace", "a.csv")])
def test_cross_device_conflict_policies(tmp_path, cross_device, on_conflict, expected):
    out = tmp_path / "out"
    write(out / "a.csv", b"old")
    final = safe_move(write(tmp_path / "in" / "a.csv", b"new"), str(out), on_conflict=on_conflict)
    assert os.path.basename(final) == expected and read(final) == b"new"
    assert not any(is_hidden(n) for n in all_names(out))


def test_cross_device_conflict_fail_cleans_up(tmp_path, cross_device):
    out = tmp_path / "out"
    write(out / "a.csv", b"old")
    source = write(tmp_path / "in" / "a.csv", b"new")
    with pytest.raises(FolderError, match="already exists"):
        safe_move(source, str(out), on_conflict="fail")
    assert read(source) == b"new" and read(out / "a.csv") == b"old"
    assert all_names(out) == ["a.csv"]


# -- FolderResource: folders, listings, paths -----------------------------------------


def test_project_folders_and_base_override(folders, tmp_path):
    root = tmp_path / "root"
    assert folders.transfer_folder() == str(root / "transfer" / "demo")
    assert folders.proc_folder() == str(root / "proc" / "demo")
    assert folders.archive_folder("other") == str(root / "archive" / "other")
    assert folders.error_folder("a/b/c") == str(root / "error" / "a" / "b" / "c")


def test_list_proc_matches_anchored_skips_hidden_and_sorts(folders):
    proc = folders.proc_folder()
    for name in ("b_data.csv", "data.csv", "data.txt", "a.csv", ".hidden.csv", ".x.csv.1a2b.part"):
        write(os.path.join(proc, name))
    os.makedirs(os.path.join(proc, ".batch", "b1"))
    visible = ("a.csv", "b_data.csv", "data.csv", "data.txt")
    assert folders.list_proc() == [os.path.join(proc, n) for n in visible]
    # match, not search: "data" does not hit "b_data.csv"
    assert folders.list_proc("data") == [os.path.join(proc, n) for n in ("data.csv", "data.txt")]
    assert folders.list_proc(re.compile(r".*\.csv$")) == [
        os.path.join(proc, n) for n in ("a.csv", "b_data.csv", "data.csv")
    ]
    assert folders.list_proc(r".*hidden") == []


def test_list_transfer_with_base_and_missing_folder(folders):
    assert folders.list_transfer() == []
    assert folders.list_transfer(base="x/y") == []
    deep = write(os.path.join(folders.transfer_folder("x/y"), "f.csv"))
    assert folders.list_transfer(base="x/y") == [deep]
    assert folders.list_transfer() == []


def test_list_rejects_bad_regex(folders):
    with pytest.raises(FolderError, match=r"pattern='\('"):
        folders.list_proc("(")


def test_make_transfer_and_proc_create_parents_not_the_file(folders, restrictive_umask):
    path = folders.make_transfer("2024/x.csv")
    assert path == os.path.join(folders.transfer_folder(), "2024", "x.csv")
    assert os.path.isdir(os.path.dirname(path)) and not os.path.exists(path)
    for folder in (folders.root, folders.transfer, folders.transfer_folder(), os.path.dirname(path)):
        assert mode_of(folder) == 0o750, folder
    proc_path = folders.make_proc("y.csv", base="other/sub")
    assert proc_path == os.path.join(folders.proc, "other", "sub", "y.csv")
    assert os.path.isdir(os.path.dirname(proc_path)) and not os.path.exists(proc_path)


def test_temp_is_global(folders, restrictive_umask):
    first, second = folders.make_temp(), folders.make_temp()
    assert os.path.dirname(first) == folders.temp and first != second
    assert not os.path.exists(first)
    assert folders.make_temp("a/b.txt") == os.path.join(folders.temp, "a", "b.txt")
    made = folders.make_temp_folder()
    assert os.path.dirname(made) == folders.temp and os.path.isdir(made)
    assert mode_of(made) == 0o750 and mode_of(folders.temp) == 0o750
    assert made != folders.make_temp_folder()


@pytest.mark.parametrize("bad", ["../x", "/abs/x.csv", "a/../../x", "..", ""])
def test_make_rejects_filenames_leaving_the_folder(folders, bad):
    with pytest.raises(FolderError, match=re.escape(f"filename={bad!r}")):
        folders.make_proc(bad)
    with pytest.raises(FolderError, match=re.escape(f"filename={bad!r}")):
        folders.make_temp(bad)


@pytest.mark.parametrize("bad", ["../other", "/abs", "a/../b", "."])
def test_base_rejected(folders, bad):
    with pytest.raises(FolderError, match=re.escape(f"base={bad!r}")):
        folders.list_proc(base=bad)
    with pytest.raises(FolderError, match=re.escape(f"base={bad!r}")):
        folders.make_transfer("x.csv", base=bad)


def test_symlink_pointing_outside_is_rejected(folders, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.makedirs(folders.proc_folder())
    os.symlink(outside, os.path.join(folders.proc, "escape"))
    os.symlink(outside, os.path.join(folders.proc_folder(), "link"))
    with pytest.raises(FolderError, match="base='escape'.*outside"):
        folders.list_proc(base="escape")
    with pytest.raises(FolderError, match="filename='link/x.csv'.*outside"):
        folders.make_proc("link/x.csv")
    source = write(tmp_path / "in" / "x.csv")
    with pytest.raises(FolderError, match="base='escape'"):
        folders.move_proc(source, base="escape")
    assert os.listdir(outside) == [] and os.path.exists(source)


def test_relative_root_rejected(folders):
    bad = folders.model_copy(update={"proc": "proc"})
    with pytest.raises(FolderError, match="proc='proc' is not an absolute path"):
        bad.list_proc()


# -- FolderResource: moves ----------------------------------------------------------


def test_move_transfer_then_proc(folders, tmp_path):
    source = write(tmp_path / "download" / "a.csv", b"data")
    in_transfer = folders.move_transfer(source)
    assert in_transfer == os.path.join(folders.transfer_folder(), "a.csv")
    in_proc = folders.move_proc(in_transfer)
    assert folders.list_proc() == [in_proc] and read(in_proc) == b"data"
    assert folders.list_transfer() == []


def test_move_proc_conflict_policies(folders, tmp_path):
    write(os.path.join(folders.proc_folder(), "a.csv"), b"old")
    renamed = folders.move_proc(write(tmp_path / "in" / "a.csv", b"new"))
    assert os.path.basename(renamed) == "a.1.csv" and read(renamed) == b"new"
    source = write(tmp_path / "in" / "a.csv", b"newer")
    with pytest.raises(FolderError):
        folders.move_proc(source, on_conflict="fail")
    assert read(source) == b"newer"
    replaced = folders.move_proc(source, on_conflict="replace")
    assert os.path.basename(replaced) == "a.csv" and read(replaced) == b"newer"


def test_move_of_missing_source(folders, tmp_path):
    with pytest.raises(SourceMissingError, match="gone.csv"):
        folders.move_proc(str(tmp_path / "gone.csv"))


def test_move_archive_with_explicit_run(folders, tmp_path, restrictive_umask):
    data = b"id,value\n" + b"1,abc\n" * 1000
    source = write(tmp_path / "in" / "a.csv", data)
    final = folders.move_archive(source, run_id="run-1", started=STARTED)
    assert final == os.path.join(folders.archive, "demo", "2024", "03", "05", "run-1", "a.csv.gz")
    assert gzip.decompress(read(final)) == data
    assert not os.path.exists(source)
    assert all_names(os.path.dirname(final)) == ["a.csv.gz"]
    assert mode_of(os.path.dirname(final)) == 0o750
    again = folders.move_archive(write(source, b"second"), run_id="run-1", started=STARTED)
    assert os.path.basename(again) == "a.1.csv.gz" and gzip.decompress(read(again)) == b"second"


def test_move_archive_stamp_is_utc_and_keys(folders, folders_with, tmp_path):
    custom = folders_with(archive_stamp="{year:04d}-{month:02d}-{day:02d}T{hour:02d}{minute:02d}/{run_id}")
    berlin = timezone(timedelta(hours=2))
    final = custom.move_archive(
        write(tmp_path / "a.csv"), base="b/c", run_id="r9", started=datetime(2024, 3, 5, 1, 30, tzinfo=berlin)
    )
    assert final == os.path.join(folders.archive, "b", "c", "2024-03-04T2330", "r9", "a.csv.gz")


def test_move_archive_uncompressed_and_empty_stamp(folders, folders_with, tmp_path):
    plain = folders.move_archive(write(tmp_path / "a.csv", b"p"), compress=False, run_id="r", started=STARTED)
    assert plain == os.path.join(folders.archive, "demo", "2024", "03", "05", "r", "a.csv")
    assert read(plain) == b"p"
    flat = folders_with(archive_stamp="")
    assert flat.move_archive(write(tmp_path / "b.csv")) == os.path.join(folders.archive, "demo", "b.csv.gz")


def test_move_archive_compress_level(folders, folders_with, tmp_path):
    data = b"0123456789abcdef" * 20_000
    stored = folders_with(compress_level=0).move_archive(
        write(tmp_path / "a.csv", data), run_id="r", started=STARTED
    )
    packed = folders_with(compress_level=9).move_archive(
        write(tmp_path / "b.csv", data), run_id="r", started=STARTED
    )
    assert os.path.getsize(stored) > len(data) > 50 * os.path.getsize(packed)
    assert gzip.decompress(read(stored)) == data == gzip.decompress(read(packed))
    with pytest.raises(FolderError, match="compress_level=12"):
        folders_with(compress_level=12).move_archive(
            write(tmp_path / "c.csv"), run_id="r", started=STARTED
        )


def test_move_archive_failing_midway_leaves_no_gz(folders, tmp_path, monkeypatch):
    data = b"z" * 10_000
    source = write(tmp_path / "a.csv", data)

    def copy_half(src, dst, length=0):
        dst.write(src.read(len(data) // 2))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", copy_half)
    with pytest.raises(FolderError, match="source is unchanged"):
        folders.move_archive(source, run_id="r", started=STARTED)
    assert read(source) == data
    target = os.path.join(folders.archive, "demo", "2024", "03", "05", "r")
    assert all_names(target) == []


def test_move_archive_outside_a_run_needs_run_id(folders, folders_with, tmp_path):
    source = write(tmp_path / "a.csv")
    with pytest.raises(FolderError, match="pass run_id= and started="):
        folders.move_archive(source)
    assert os.path.exists(source) and not os.path.exists(folders.archive)
    by_year = folders_with(archive_stamp="{year:04d}")
    final = by_year.move_archive(source, started=STARTED)
    assert final == os.path.join(folders.archive, "demo", "2024", "a.csv.gz")


def test_move_archive_rejects_bad_stamps(folders, folders_with, tmp_path):
    source = write(tmp_path / "a.csv")
    with pytest.raises(FolderError, match=r"archive_stamp='2024/03/05/\.\./\.\./x' contains '\.\.'"):
        folders.move_archive(source, run_id="../../x", started=STARTED)
    with pytest.raises(FolderError, match=r"archive_stamp='\{week\}'.*available keys"):
        folders_with(archive_stamp="{week}").move_archive(source, run_id="r", started=STARTED)
    assert os.path.exists(source)


def test_move_archive_inside_a_dagster_run(folders, folders_with, tmp_path):
    source = write(tmp_path / "a.csv", b"in a run")
    stamped = folders_with(archive_stamp="{year:04d}/{month:02d}/{day:02d}/{hour:02d}{minute:02d}/{_id}")

    @dg.op
    def archive_it(folders: FolderResource) -> str:
        return folders.move_archive(source)

    @dg.job
    def archive_job():
        archive_it()

    instance = dg.DagsterInstance.ephemeral()
    result = archive_job.execute_in_process(resources={"folders": stamped}, instance=instance)
    assert result.success
    started = datetime.fromtimestamp(instance.get_run_record_by_id(result.run_id).start_time, tz=timezone.utc)
    expected = os.path.join(
        folders.archive, "demo", started.strftime("%Y/%m/%d/%H%M"), result.run_id, "a.csv.gz"
    )
    assert result.output_for_node("archive_it") == expected
    assert gzip.decompress(read(expected)) == b"in a run"


def test_move_error_writes_reason_beside_the_file(folders, tmp_path):
    final = folders.move_error(write(tmp_path / "a.csv", b"bad"), "line 3: not a number")
    assert final == os.path.join(folders.error_folder(), "a.csv") and read(final) == b"bad"
    assert read(final + ".reason.txt") == b"line 3: not a number\n"
    second = folders.move_error(write(tmp_path / "a.csv", b"worse"), "empty", base="other")
    assert second == os.path.join(folders.error, "other", "a.csv")
    third = folders.move_error(write(tmp_path / "a.csv", b"again"), "twice")
    assert os.path.basename(third) == "a.1.csv" and read(third + ".reason.txt") == b"twice\n"
    assert read(final + ".reason.txt") == b"line 3: not a number\n"
    assert all_names(folders.error_folder()) == ["a.1.csv", "a.1.csv.reason.txt", "a.csv", "a.csv.reason.txt"]


def test_from_settings(tmp_path):
    root = str(tmp_path)
    settings = SimpleNamespace(
        folder=SimpleNamespace(
            root=root,
            transfer=root + "/t",
            proc=root + "/p",
            archive=root + "/a",
            temp=root + "/tmp",
            error=root + "/e",
            min_free="2 GB",
        ),
        job=SimpleNamespace(archive_stamp="{_id}", compress_level=3),
        project=SimpleNamespace(name="demo"),
    )
    resource = FolderResource.from_settings(settings)
    assert (resource.project, resource.proc, resource.archive_stamp, resource.compress_level, resource.min_free) == (
        "demo", root + "/p", "{_id}", 3, "2 GB",
    )
    assert FolderResource.from_settings(settings, project="other").proc_folder() == root + "/p/other"
    with pytest.raises(ConfigError, match="pass project="):
        FolderResource.from_settings(SimpleNamespace(**{**vars(settings), "project": None}))


def test_from_loaded_configuration(tmp_path, isolated_config):
    from core4_resources.config.settings import load_config

    isolated_config.write_text(
        f"folder:\n  root: {tmp_path}/c4\n  archive: /srv/archive\njob:\n  compress_level: 2\n"
    )
    resource = FolderResource.from_settings(load_config(), project="demo")
    assert resource.proc_folder() == f"{tmp_path}/c4/proc/demo"
    assert resource.archive_folder() == "/srv/archive/demo"
    assert resource.compress_level == 2


def test_checked_folders_follow_a_copy_with_other_folders(tmp_path):
    """Folders are checked once per instance; a model_copy with another proc uses that one."""
    folders = FolderResource.under_root(tmp_path / "a", "demo")
    assert folders.proc_folder() == str(tmp_path / "a" / "proc" / "demo")
    other = folders.model_copy(update={"proc": str(tmp_path / "b")})
    assert other.proc_folder() == str(tmp_path / "b" / "demo")
    assert folders.proc_folder() == str(tmp_path / "a" / "proc" / "demo")
    assert folders.model_copy(update={"project": "x"}).proc_folder() == str(tmp_path / "a" / "proc" / "x")
