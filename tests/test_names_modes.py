"""Every legal file name moves (255 bytes, multi-byte, not UTF-8), and every folder and
file we create has its exact mode whatever the umask. Real files under tmp_path."""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import stat
import sys
import uuid

import pytest
from support import STARTED, mode_of, put, read

from core4_pipelines.supervise.sweep import _shown, sweep
from core4_pipelines.coco.instance import write_instance
from core4_pipelines.coco.workspace import write_workspace
from core4_resources.files import moves
from core4_resources.config.settings import load_config
from core4_resources.files.folders import (
    NAME_MAX,
    FolderResource,
    derived_name,
    gzip_original_name,
    printable_name,
    write_file_atomic,
)
from core4_resources.files.moves import (
    download_temp_name,
    hidden_temp_name,
    is_move_marker,
    is_partial_copy,
    marker_source,
    move_marker_path,
    open_new_file,
)

CONTENT = b"id,name\n1,a\n2,b\n" * 50


def size(name: str) -> int:
    return len(os.fsencode(name))


def filled(unit: str, ext: str = ".csv", total: int = NAME_MAX) -> str:
    """A name of exactly ``total`` bytes: ``unit`` repeated, padded with "x", then ``ext``."""
    room = total - size(ext)
    count = room // size(unit)
    name = unit * count + "x" * (room - count * size(unit)) + ext
    assert size(name) == total
    return name


NAMES = {
    "ascii-255": filled("a"),
    "utf8-255": filled("日"),  # 3 bytes a character
    "utf8-2byte-255": filled("é", ext=".csv.gz"),
    "not-utf8": os.fsdecode(b"caf\xe9 \xff-data.csv"),
    "not-utf8-255": os.fsdecode(b"\xe9" * 251 + b".csv"),
}


@pytest.fixture(params=sorted(NAMES))
def name(request) -> str:
    return NAMES[request.param]


@pytest.fixture
def elsewhere(tmp_path):
    """A folder on another filesystem (/dev/shm), so moves into the project folders copy."""
    if not (os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK)
            and os.stat("/dev/shm").st_dev != os.stat(tmp_path).st_dev):
        pytest.skip("/dev/shm is not another writable filesystem here")
    folder = os.path.join("/dev/shm", f"core4-names-{uuid.uuid4().hex[:8]}")
    os.mkdir(folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def assert_short_names(*roots) -> None:
    """Every name under ``roots`` fits NAME_MAX bytes, and no hidden in-flight file is left."""
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for entry in dirs + files:
                assert size(entry) <= NAME_MAX, entry
                assert not (is_partial_copy(entry) or is_move_marker(entry)), os.path.join(folder, entry)


# -- names -----------------------------------------------------------------------------------


def test_derived_name_keeps_short_names_and_shortens_long_ones_the_same_way():
    assert derived_name("a.csv", ".gz") == "a.csv.gz"
    assert FolderResource.derived_name("a.csv", ".reason.txt") == "a.csv.reason.txt"
    long = filled("日")
    shortened = derived_name(long, ".gz")
    assert size(shortened) <= NAME_MAX and shortened.endswith(".csv.gz")
    assert "~" in shortened and long.startswith(shortened.split("~")[0])
    assert derived_name(long, ".gz") == shortened  # a retry derives the same name
    other = long[:-5] + "y.csv"  # same start, another name: another hash
    assert derived_name(other, ".gz") != shortened
    assert derived_name(filled("é", ext=".csv.gz"), ".gz").endswith(".csv.gz.gz")
    assert size(derived_name("b" * 255, ".reason.txt")) == NAME_MAX  # no extension at all


def test_hidden_names_fit_and_are_recognised_by_the_sweep(tmp_path, name):
    temp, download = hidden_temp_name(name), download_temp_name(name)
    marker = os.path.basename(move_marker_path(os.path.join(tmp_path, name)))
    for hidden in (temp, download, marker):
        assert size(hidden) <= NAME_MAX and hidden.startswith(".")
    assert is_partial_copy(temp) and is_partial_copy(download) and is_move_marker(marker)
    assert not is_partial_copy(name) and not is_move_marker(name)
    assert hidden_temp_name(name) != temp  # random: two writers never share a temp
    source = put(tmp_path, name, CONTENT)
    put(tmp_path, name[:-4] + ".txt", CONTENT)  # a neighbour with the same start
    assert marker_source(os.path.join(tmp_path, marker)) == source


def test_printable_name_shows_bytes_that_are_not_utf8_as_escapes():
    assert printable_name(os.fsdecode(b"caf\xe9.csv")) == "caf\\xe9.csv"
    assert printable_name(b"caf\xe9.csv") == "caf\\xe9.csv"
    assert printable_name("café 日.csv") == "café 日.csv"
    assert printable_name(os.fsdecode(b"/x/caf\xc3\xa9\xff")) == "/x/café\\xff"
    text = printable_name(os.fsdecode(b"\xe9" * 251 + b".csv"))
    text.encode("utf-8")  # valid text: it can go into a file, a log, MongoDB
    assert printable_name("\ud800x") == "\\ud800x"  # a surrogate no file name holds


# -- every move, for every name --------------------------------------------------------------


def test_transfer_proc_and_a_numbered_conflict(folders, name, tmp_path):
    path = folders.make_transfer(name)
    with open_new_file(path) as handle:
        handle.write(CONTENT)
    in_transfer = folders.move_transfer(put(tmp_path / "incoming", name, CONTENT))  # the same name again
    assert os.path.basename(path) == name and read(path) == CONTENT
    assert in_transfer != path and read(in_transfer) == CONTENT  # numbered, shortened to fit
    assert not os.path.exists(tmp_path / "incoming" / name)
    first, second = folders.move_proc(path), folders.move_proc(in_transfer)
    assert os.path.basename(first) == name and read(first) == read(second) == CONTENT
    assert not os.path.exists(path) and not os.path.exists(in_transfer)
    assert folders.list_proc() == sorted([first, second])
    assert_short_names(folders.root)


def test_archive_gzip_and_plain(folders, name):
    source = put(folders.proc_folder(), name, CONTENT)
    packed = folders.move_archive(source, run_id="r1", started=STARTED)
    assert not os.path.exists(source)
    assert gzip.decompress(read(packed)) == CONTENT
    assert gzip_original_name(packed) == name  # the original name, byte for byte
    expected = name + ".gz" if size(name) <= NAME_MAX - 3 else derived_name(name, ".gz")
    assert os.path.basename(packed) == expected and packed.endswith(".gz")
    # Archived again (a retry with a new copy of the file): the same derived name, numbered.
    again = folders.move_archive(put(folders.proc_folder(), name, CONTENT), run_id="r1", started=STARTED)
    assert again != packed and gzip.decompress(read(again)) == CONTENT and gzip_original_name(again) == name
    plain = folders.move_archive(put(folders.proc_folder(), name, CONTENT), compress=False, run_id="r2", started=STARTED)
    assert os.path.basename(plain) == name and read(plain) == CONTENT
    assert folders.list_proc() == []
    assert_short_names(folders.root)


def test_error_with_reason_records_the_original_name(folders, name):
    source = put(folders.proc_folder(), name, CONTENT)
    reason = f"{source}: line 2: not a number"
    final = folders.move_error(source, reason)
    assert not os.path.exists(source) and read(final) == CONTENT and os.path.basename(final) == name
    (reason_file,) = [p for p in os.listdir(folders.error_folder()) if p != name]
    assert reason_file == derived_name(name, ".reason.txt")
    text = read(os.path.join(folders.error_folder(), reason_file)).decode("utf-8")  # valid UTF-8
    assert text.startswith(printable_name(reason))
    assert f"original name: {printable_name(name)}" in text
    second = folders.move_error(put(folders.proc_folder(), name, CONTENT), "again")
    assert second != final and read(second) == CONTENT
    second_reason = derived_name(os.path.basename(second), ".reason.txt")
    assert f"original name: {printable_name(name)}" in read(os.path.join(folders.error_folder(), second_reason)).decode()
    assert_short_names(folders.root)


def test_a_short_utf8_name_keeps_its_plain_reason(folders):
    final = folders.move_error(put(folders.proc_folder(), "a.csv", CONTENT), "line 3: not a number")
    assert read(final + ".reason.txt") == b"line 3: not a number\n"


def test_every_move_across_filesystems(folders, name, elsewhere):
    moved = folders.move_transfer(put(elsewhere, name, CONTENT))
    assert os.path.basename(moved) == name and read(moved) == CONTENT
    proc = folders.move_proc(put(elsewhere, name, CONTENT))
    packed = folders.move_archive(put(elsewhere, name, CONTENT), run_id="r", started=STARTED)
    plain = folders.move_archive(put(elsewhere, name, CONTENT), compress=False, run_id="r", started=STARTED)
    failed = folders.move_error(put(elsewhere, name, CONTENT), "bad")
    assert read(proc) == read(plain) == read(failed) == gzip.decompress(read(packed)) == CONTENT
    assert gzip_original_name(packed) == name
    assert os.listdir(elsewhere) == []  # every source gone, no marker left behind
    assert_short_names(folders.root, elsewhere)


def test_download_style_write_and_the_sweep_of_leftovers(folders, name, tmp_path, monkeypatch, capsys):
    transfer = folders.transfer_folder()
    target = folders.make_transfer(name)
    partial = os.path.join(transfer, download_temp_name(name))
    with open_new_file(partial) as handle:
        handle.write(CONTENT)
    moves.safe_move(partial, transfer, name=name)
    assert read(target) == CONTENT
    # Leftovers of crashes for this name: a partial copy, and a move killed after its copy
    # was installed (the marker beside the source; the sweep finishes it).
    stale = put(folders.proc_folder(), hidden_temp_name(name), b"half")
    source = put(folders.proc_folder(), name, CONTENT)
    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        patch.setattr(moves, "fsync_dir", lambda path: sys.exit("killed after the copy was installed"))
        folders.move_archive(source, run_id="r", started=STARTED)
    assert os.path.exists(move_marker_path(source))
    report = sweep([folders.root], older_than=0, apply=True)
    assert report.errors == []
    assert {item.kind for item in report.items} == {"partial copy", "interrupted move"}
    assert not os.path.exists(stale) and not os.path.exists(source)
    (packed,) = [os.path.join(d, f) for d, _, fs in os.walk(folders.archive_folder()) for f in fs]
    assert gzip.decompress(read(packed)) == CONTENT
    for item in report.items:
        shown = _shown(item.path)
        shown.encode("utf-8")
        print(shown)  # a terminal takes it
    assert printable_name(os.path.basename(source)) in capsys.readouterr().out
    assert_short_names(folders.root)


def test_names_longer_than_the_os_allows_are_refused_clearly(folders):
    from core4_resources.errors import FolderError

    with pytest.raises(FolderError, match="longer than 255 bytes"):
        folders.make_transfer("a" * 256)


# -- modes, whatever the umask ---------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o000, 0o077, 0o022])
def test_every_folder_and_file_we_create_has_its_exact_mode(tmp_path, mask, monkeypatch):
    root = tmp_path / "root"
    folders = FolderResource.under_root(root, "demo")
    with umask(mask):
        transfer_file = folders.make_transfer("in.csv")
        with open_new_file(transfer_file) as handle:
            handle.write(CONTENT)
        assert mode_of(transfer_file) == 0o640
        in_proc = folders.move_proc(transfer_file)
        packed = folders.move_archive(in_proc, run_id="r", started=STARTED)
        bad = put(folders.proc_folder(), "bad.csv", CONTENT)
        os.chmod(bad, 0o604)
        failed = folders.move_error(bad, "line 1: bad")
        written = write_file_atomic(os.path.join(folders.make_temp_folder(), "state.json"), b"{}")
        monkeypatch.setenv("CORE4_OPTION_folder__root", str(tmp_path / "dagster-root"))
        home = write_instance(load_config())
        projects = tmp_path / "projects"
        projects.mkdir()
        workspace = tmp_path / "ws" / "deep" / "workspace.yaml"
        write_workspace(str(projects), str(workspace))
    for folder in (root, folders.transfer_folder(), folders.proc_folder(), folders.archive_folder(),
                   os.path.dirname(packed), folders.error_folder(), folders.temp,
                   tmp_path / "dagster-root", home, tmp_path / "ws", workspace.parent):
        assert mode_of(folder) == 0o750, (folder, oct(mode_of(folder)))
    for file in (packed, written, failed + ".reason.txt", os.path.join(home, "dagster.yaml"), workspace):
        assert mode_of(file) == 0o640, (file, oct(mode_of(file)))
    assert mode_of(failed) == 0o604  # moved by a rename (same filesystem): it keeps its mode


def test_a_copied_file_gets_0640_and_keeps_its_mtime(folders, elsewhere):
    with umask(0):
        source = put(elsewhere, "wide.csv", CONTENT)
        os.chmod(source, 0o666)
        os.utime(source, (1_600_000_000, 1_600_000_000))
        moved = folders.move_proc(source)
        failed = folders.move_error(put(elsewhere, "bad.csv", CONTENT), "bad")
    assert mode_of(moved) == 0o640 and os.stat(moved).st_mtime == 1_600_000_000
    assert mode_of(failed) == 0o640 and mode_of(failed + ".reason.txt") == 0o640


def test_a_hidden_temp_is_never_wider_than_its_final_mode(tmp_path):
    with umask(0):
        with open_new_file(str(tmp_path / ".x.part")) as handle:
            assert stat.S_IMODE(os.fstat(handle.fileno()).st_mode) == 0o640  # before any byte
        with open_new_file(str(tmp_path / ".x.part"), 0o600, exclusive=False) as handle:
            assert stat.S_IMODE(os.fstat(handle.fileno()).st_mode) == 0o600
        with pytest.raises(FileExistsError):
            open_new_file(str(tmp_path / ".x.part"))
