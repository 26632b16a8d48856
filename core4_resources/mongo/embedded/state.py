"""Which embedded server serves a data folder: one at a time, found again by every process.

Beside the data folder ``<storage>`` (as the credentials and the log are):

- ``<storage>.lock``: an ``fcntl.flock`` lock, held by whoever checks for a running server and
  starts one. The kernel drops it when its holder dies, so a lock file is never stale.
- ``<storage>.state``: JSON ``{"pid", "port", "host"}`` of the last server started for the
  folder. The port stays after the server stopped, so the next start uses it again. A pid is
  trusted only while that process is alive, not a zombie, and runs a server of this very data
  folder (its command line says so): a dead or reused pid is stale state, recovered by
  starting a new server.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import time
from dataclasses import asdict, dataclass
from typing import Iterator

from core4_resources.errors import EmbeddedMongoError

log = logging.getLogger(__name__)

STATE_FILE_MODE = 0o600
_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class ServerState:
    pid: int
    port: int
    host: str = "127.0.0.1"


def read_state(path: str) -> ServerState | None:
    """The state in ``path``; None when there is none or it cannot be used (it is then stale)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return ServerState(pid=int(data["pid"]), port=int(data["port"]), host=str(data.get("host", "127.0.0.1")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the unreadable embedded server state %s (%s); a new server starts", path, exc)
        return None


def write_state(path: str, state: ServerState) -> None:
    """Replace ``path`` with ``state`` in one rename: a reader sees the old or the new state."""
    temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, STATE_FILE_MODE)
        with open(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(state), handle)
            handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def exclusive(lock_path: str, timeout: float) -> Iterator[None]:
    """Hold the lock on ``lock_path`` for the block; EmbeddedMongoError after ``timeout`` seconds."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, STATE_FILE_MODE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EmbeddedMongoError(
                        f"another process has held {lock_path} for more than {timeout:g}s while starting "
                        f"the embedded server; see the log beside it, or stop that process"
                    ) from None
                time.sleep(_POLL_SECONDS)
        yield
    finally:
        os.close(fd)  # releases the lock


def serves(pid: int, storage_path: str) -> bool:
    """Whether process ``pid`` is alive (not a zombie) and a server of ``storage_path``."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            # "<pid> (<name>) <state> ..."; the name may hold ")".
            if handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            arguments = handle.read().decode(errors="replace").split("\0")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:  # no /proc: alive is all that can be told
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return any(a == "--storage-path" and b == storage_path for a, b in zip(arguments, arguments[1:]))


def stop_pid(pid: int, storage_path: str, grace: float) -> bool:
    """Stop the server ``pid`` of ``storage_path`` (SIGTERM to its group, SIGKILL after
    ``grace`` seconds) and wait until it is gone; False when it was not running."""
    if not serves(pid, storage_path):
        return False
    deadline = time.monotonic() + grace
    for signum in (signal.SIGTERM, signal.SIGKILL):
        # The server leads its own process group: a helper it spawned stops with it.
        with contextlib.suppress(ProcessLookupError):
            try:
                os.killpg(pid, signum)
            except PermissionError:
                os.kill(pid, signum)
        while serves(pid, storage_path):
            if signum == signal.SIGTERM and time.monotonic() >= deadline:
                log.warning("embedded server pid %s did not stop within %ss; killing it", pid, grace)
                break
            time.sleep(_POLL_SECONDS)
        else:
            return True
    return True
