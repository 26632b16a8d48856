"""The folder root's probe: claims (a rename that never replaces) and batch locks (flock on a
folder) must be exclusive there, or `coco serve` and `coco worker` refuse to start, saying why."""

from __future__ import annotations

import os

import pytest
import yaml
from support import coco

from core4_resources.errors import FolderError
from core4_resources.files import probe
from core4_resources.files.probe import probe_root


def test_a_local_root_passes_and_the_probe_leaves_nothing(tmp_path):
    root = tmp_path / "root"
    probe_root(str(root))  # created when missing
    assert os.listdir(root) == []


def test_a_root_where_a_second_lock_is_not_kept_out_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(probe.fcntl, "flock", lambda fd, how: None)  # as a share mounted nolock behaves
    with pytest.raises(FolderError, match=r"a lock on a folder did not keep a second one out.*NFSv3 without lockd"):
        probe_root(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_a_root_that_cannot_lock_is_refused_with_the_reason(tmp_path, monkeypatch):
    def refuse(fd, how):
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(probe.fcntl, "flock", refuse)
    with pytest.raises(FolderError, match="a folder cannot be locked \\(Bad file descriptor\\)"):
        probe_root(str(tmp_path))


def test_a_rename_that_replaces_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "rename_noreplace", os.replace)
    with pytest.raises(FolderError, match="a rename replaced an existing file, so two claimers could both take one"):
        probe_root(str(tmp_path))


def test_coco_serve_refuses_a_root_it_cannot_create_a_folder_in(tmp_path, isolated_config):
    root = tmp_path / "root"
    root.write_text("a file, not a folder")
    isolated_config.write_text(yaml.safe_dump({"folder": {"root": str(root), "home": str(tmp_path)}}))
    done = coco("serve", env=dict(os.environ))
    assert done.returncode != 0 and f"cannot create folder {root}: a file of that name exists" in done.stderr
