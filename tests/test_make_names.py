"""make_transfer / make_proc / make_temp: a known or a new unique name; make_temp(folder=True)."""

from __future__ import annotations

import os

import pytest
from support import mode_of


@pytest.fixture
def restrictive_umask():
    """A umask of 077: folders made here still come out 0750."""
    old = os.umask(0o077)
    yield
    os.umask(old)


def test_make_transfer_and_proc_without_a_name_give_a_new_unique_name(folders, restrictive_umask):
    for make, root in ((folders.make_transfer, folders.transfer), (folders.make_proc, folders.proc)):
        first, second = make(), make()
        assert first != second
        assert os.path.dirname(first) == os.path.join(root, "demo") == os.path.dirname(second)
        assert not os.path.exists(first), "the name is new and nothing is created"
        assert mode_of(os.path.dirname(first)) == 0o750
        assert not os.path.basename(first).startswith("."), "a file written there is seen by listings"
        assert make("x.csv") == os.path.join(root, "demo", "x.csv"), "a known name as before"
    other = folders.make_proc(base="other/sub")
    assert os.path.dirname(other) == os.path.join(folders.proc, "other", "sub")


def test_make_temp_with_folder_creates_a_temporary_folder(folders, restrictive_umask):
    path = folders.make_temp()
    assert os.path.dirname(path) == folders.temp and not os.path.exists(path)
    made, again = folders.make_temp(folder=True), folders.make_temp(folder=True)
    assert made != again and os.path.dirname(made) == folders.temp
    assert os.path.isdir(made) and mode_of(made) == 0o750 and os.listdir(made) == []
    named = folders.make_temp("work/today", folder=True)
    assert named == os.path.join(folders.temp, "work", "today")
    assert os.path.isdir(named) and mode_of(named) == 0o750 and mode_of(os.path.dirname(named)) == 0o750
    assert folders.make_temp("work/today", folder=True) == named, "an existing folder is fine"
