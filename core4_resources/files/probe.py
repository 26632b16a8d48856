"""Does the folder root keep claims and locks exclusive? A short probe before anything is claimed.

A claim is a rename that never replaces (``rename_noreplace``: the file is the claimer's, or it
is another's), and a batch is held by ``flock`` on its folder while a run imports it. Both hold
on a local filesystem and on NFSv4 (Linux emulates ``flock`` with NFS byte-range locks); on
NFSv3 without lockd, or a share mounted ``nolock``/``local_lock``, a lock taken on one machine
is not seen on another, and two machines would import one batch at once. The probe, under the
root, in a hidden folder of its own that it removes:

* a rename onto an existing name must fail, and one onto a free name must move the file;
* an exclusive ``flock`` on a folder must refuse a second one through another open of it (the
  kernel checks that between two opens in one process as between two machines' processes).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import uuid

from core4_resources.errors import FolderError
from core4_resources.files.fileops import FOLDER_MODE, make_dirs, rename_noreplace
from core4_resources.files.names import printable_name

_DOCS = "docs/scale-out.md says which filesystems keep claims and locks exclusive"


def probe_root(root: str) -> None:
    """Raise FolderError naming ``root`` and what misbehaved; return quietly when all held."""
    shown = printable_name(root)
    probe = os.path.join(root, f".core4-probe-{uuid.uuid4().hex[:12]}")
    try:
        make_dirs(root)
        os.mkdir(probe, FOLDER_MODE)
    except OSError as exc:
        raise FolderError(f"folder.root {shown}: cannot create a folder there ({exc.strerror})") from None
    try:
        _probe_rename(probe, shown)
        _probe_lock(probe, shown)
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _probe_rename(probe: str, shown: str) -> None:
    first, second, target = (os.path.join(probe, name) for name in ("first", "second", "target"))
    for path in (first, second):
        with open(path, "wb") as handle:
            handle.write(os.path.basename(path).encode())
    rename_noreplace(first, target)
    try:
        rename_noreplace(second, target)
    except FileExistsError:
        pass
    else:
        raise FolderError(f"folder.root {shown}: a rename replaced an existing file, so two claimers could both "
                          f"take one file; {_DOCS}")
    with open(target, "rb") as handle:
        if handle.read() != b"first" or os.path.exists(first):
            raise FolderError(f"folder.root {shown}: a rename did not move the file whole; {_DOCS}")


def _probe_lock(probe: str, shown: str) -> None:
    holder = os.open(probe, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise FolderError(f"folder.root {shown}: a folder cannot be locked ({exc.strerror}), so a batch cannot "
                              f"be held for its run; {_DOCS}") from None
        other = os.open(probe, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise FolderError(f"folder.root {shown}: locking failed ({exc.strerror}); {_DOCS}") from None
        else:
            raise FolderError(f"folder.root {shown}: a lock on a folder did not keep a second one out, so two runs "
                              f"could import one batch at once (NFSv3 without lockd, or mounted nolock?); {_DOCS}")
        finally:
            os.close(other)
    finally:
        os.close(holder)
