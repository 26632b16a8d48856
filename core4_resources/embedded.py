"""The embedded MongoDB-wire server: SecantusDB run as a child process on 127.0.0.1.

Used when no ``mongo_url`` is configured (``coco serve``, ``coco demo``) and by the
tests. The server runs in its own session so a Ctrl-C in the terminal reaches this
process only, and this process decides how the server stops (cleanly, then killed).
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from types import TracebackType

import pymongo
from pymongo.errors import PyMongoError

from core4_resources.errors import EmbeddedMongoError

log = logging.getLogger(__name__)

SERVER_EXECUTABLE = "secantusd-py"

# A port picked by free_port() can be taken by another process before the server
# binds it; then a new port is tried this many times in total.
_PORT_ATTEMPTS = 5
_PROBE_TIMEOUT_MS = 250
_POLL_SECONDS = 0.1
_TAIL_LINES = 30
_ADDRESS_IN_USE = ("Address already in use", "[Errno 98]")


class _PortTaken(Exception):
    """Internal: the server could not bind its port, or another server answers there."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on host that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_server_executable() -> str:
    """secantusd-py next to the running interpreter, else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), SERVER_EXECUTABLE)
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(SERVER_EXECUTABLE)
    if found:
        return found
    raise EmbeddedMongoError(
        f"{SERVER_EXECUTABLE} not found next to {sys.executable} nor on PATH; "
        f"install SecantusDB into this environment (pip install SecantusDB) "
        f"or set DEFAULT.mongo_url to an existing MongoDB"
    )


class EmbeddedMongo:
    """A SecantusDB server on ``host:port`` keeping its data in ``storage_path``.

    ``with EmbeddedMongo(path) as server: ... server.url`` starts it, waits until it
    answers ``ping`` and stops it when the block ends, also when the block raises.
    Its output goes to ``log_path`` (default ``<storage_path>.log`` beside the folder).
    """

    def __init__(
        self,
        storage_path: str | os.PathLike,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 30,
        log_path: str | os.PathLike | None = None,
    ) -> None:
        self.storage_path = os.path.abspath(os.fspath(storage_path))
        self.host = host
        self.startup_timeout = startup_timeout
        self.log_path = (
            os.path.abspath(os.fspath(log_path))
            if log_path is not None
            else self.storage_path.rstrip(os.sep) + ".log"
        )
        self._requested_port = port
        self._port: int | None = port
        self._process: subprocess.Popen | None = None
        self._owner_pid: int | None = None
        self._log_offset = 0
        self._command: list[str] = []

    # -- properties -------------------------------------------------------------

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pid(self) -> int | None:
        """Process id of the running (or last) server process."""
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str:
        if self._port is None:
            raise EmbeddedMongoError(
                f"embedded server for {self.storage_path} has no port yet; call start() first"
            )
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mongodb://{host}:{self._port}"

    def is_running(self) -> bool:
        if self._process is None:
            return False
        if os.getpid() != self._owner_pid:  # a forked copy cannot wait() on it
            try:
                os.kill(self._process.pid, 0)
            except OSError:
                return False
            return True
        return self._process.poll() is None

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> "EmbeddedMongo":
        """Start the server and wait until it answers; a no-op when it runs already."""
        if self.is_running():
            return self
        executable = find_server_executable()
        os.makedirs(os.path.dirname(self.log_path), mode=0o750, exist_ok=True)
        os.makedirs(os.path.dirname(self.storage_path), mode=0o750, exist_ok=True)
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        last: _PortTaken | None = None
        for attempt in range(1, attempts + 1):
            port = self._requested_port if self._requested_port is not None else free_port(self.host)
            try:
                self._launch(executable, port)
                return self
            except _PortTaken as exc:
                if self._requested_port is not None:
                    raise EmbeddedMongoError(
                        f"port {port} on {self.host} is already in use; stop what listens "
                        f"there or choose another port.\n{exc}"
                    ) from None
                log.info("port %s was taken before the server bound it (attempt %s/%s)",
                         port, attempt, attempts)
                last = exc
        raise EmbeddedMongoError(
            f"embedded server found no free port on {self.host} after {attempts} attempts.\n{last}"
        )

    def stop(self, grace: float = 10) -> None:
        """Ask the server to stop (SIGTERM), kill it after ``grace`` seconds; idempotent."""
        process = self._process
        if process is None or os.getpid() != self._owner_pid:
            return
        atexit.unregister(self.stop)
        if process.poll() is not None:
            return
        self._signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log.warning("embedded server pid %s did not stop within %ss; killing it",
                        process.pid, grace)
            self._signal_group(process, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> "EmbeddedMongo":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"EmbeddedMongo({self.storage_path!r}, port={self._port}, {state})"

    # -- internals --------------------------------------------------------------

    def _launch(self, executable: str, port: int) -> None:
        self._command = [
            executable, "--host", self.host, "--port", str(port),
            "--storage-path", self.storage_path,
        ]
        # The log is a file, never a pipe: nobody reads a pipe while the server
        # runs, and a full pipe would block the server.
        with open(self.log_path, "ab") as log_file:
            self._log_offset = log_file.tell()
            self._process = subprocess.Popen(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=os.path.dirname(self.storage_path),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        self._owner_pid = os.getpid()
        self._port = port
        atexit.register(self.stop)
        try:
            self._wait_until_ready(port)
        except BaseException:
            self.stop(grace=2)
            raise

    def _wait_until_ready(self, port: int) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + self.startup_timeout
        # The client is created once the port accepts connections: a client made
        # earlier would only retry on its own (slower) heartbeat schedule.
        probe: pymongo.MongoClient | None = None
        try:
            while True:
                code = process.poll()
                if code is not None:
                    tail = self._log_tail()
                    if any(marker in tail for marker in _ADDRESS_IN_USE):
                        raise _PortTaken(self._describe(f"exited with code {code}", tail))
                    raise EmbeddedMongoError(
                        self._describe(f"exited with code {code} during startup", tail)
                    )
                if probe is None and self._accepts_connections(port):
                    probe = pymongo.MongoClient(
                        self.host, port, directConnection=True,
                        serverSelectionTimeoutMS=_PROBE_TIMEOUT_MS,
                        connectTimeoutMS=_PROBE_TIMEOUT_MS,
                    )
                if probe is not None:
                    try:
                        probe.admin.command("ping")
                        answering_pid = probe.admin.command("serverStatus").get("pid")
                    except PyMongoError:
                        pass
                    else:
                        if answering_pid in (None, process.pid):
                            return
                        # Another server holds the port; ours cannot bind it.
                        raise _PortTaken(self._describe(
                            f"found another server (pid {answering_pid}) on port {port}",
                            self._log_tail(),
                        ))
                if time.monotonic() >= deadline:
                    raise EmbeddedMongoError(self._describe(
                        f"did not answer ping within {self.startup_timeout}s", self._log_tail()
                    ))
                time.sleep(_POLL_SECONDS)
        finally:
            if probe is not None:
                probe.close()

    def _accepts_connections(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=_PROBE_TIMEOUT_MS / 1000):
                return True
        except OSError:
            return False

    def _describe(self, what: str, tail: str) -> str:
        return (
            f"embedded MongoDB server {what}.\n"
            f"  command: {shlex.join(self._command)}\n"
            f"  log: {self.log_path}\n"
            f"  last lines of the log:\n{tail or '    (empty)'}"
        )

    def _log_tail(self) -> str:
        """The last lines this start wrote to the log."""
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(self._log_offset)
                text = log_file.read().decode("utf-8", errors="replace")
        except OSError as exc:
            return f"    (log not readable: {exc})"
        lines = text.splitlines()[-_TAIL_LINES:]
        return "\n".join(f"    {line}" for line in lines)

    @staticmethod
    def _signal_group(process: subprocess.Popen, signum: int) -> None:
        # The server leads its own process group: signal the group, so a helper
        # process it may have spawned stops with it.
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:
            process.send_signal(signum)
