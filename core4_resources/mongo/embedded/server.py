"""The embedded MongoDB-wire server: SecantusDB run as a child process on 127.0.0.1.

Used when no ``mongo_url`` is configured (``coco serve``, ``coco demo``) and by the
tests. The server runs in its own session so a Ctrl-C in the terminal reaches this
process only, and this process decides how the server stops (cleanly, then killed).

Access control: the server always runs with ``--auth`` (SCRAM-SHA-256), its user and
password provisioned on the first start (embedded_users.py). ``EmbeddedMongo.url``
carries the credentials: print it only through ``config.mask_url``.

One server per data folder: a start takes the lock beside the folder and, when a server of the
folder runs already (started by another process: ``coco serve``, or a code server or run worker
through ``ensure_embedded``), adopts it instead of starting a second one (see embedded_state.py).
An adopted server is left running by ``stop()``; ``restart()`` replaces it.

The embedded server of ``folder.root`` -- what every process uses when no ``mongo_url`` is
configured, started on demand -- is in embedded_root.py.
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
from pymongo.errors import OperationFailure, PyMongoError

from core4_resources.mongo.embedded.credentials import (  # noqa: F401 - url_with_credentials is public here too
    PRIVATE_FILE_MODE,
    Credentials,
    read_credentials,
    url_with_credentials,
    write_credentials,
)
from core4_resources.mongo.embedded.users import AUTH_SOURCE, provisioned_credentials
from core4_resources.mongo.embedded.state import ServerState, exclusive, read_state, serves, stop_pid, write_state
from core4_resources.errors import EmbeddedMongoError
from core4_resources.files.moves import make_dirs

log = logging.getLogger(__name__)

SERVER_EXECUTABLE = "secantusd-py"
OPLOG_MAX_ENTRIES = 1000
OPLOG_RETENTION_SECONDS = 60

# A port picked by free_port() can be taken by another process before the server
# binds it; then a new port is tried this many times in total.
_PORT_ATTEMPTS = 5
_PROBE_TIMEOUT_MS = 250
_POLL_SECONDS = 0.1
_TAIL_LINES = 30
_ADDRESS_IN_USE = ("Address already in use", "[Errno 98]")
# How long our own, running server may refuse the credentials before that is an error
# (a moment longer than a foreign server on a taken port needs to make ours exit).
_AUTH_REFUSED_SECONDS = 5.0
_AUTH_FAILED = 18  # AuthenticationFailed
FOLDER_MODE = 0o750
# What the server creates in its storage folder: readable by this user only.
_SERVER_UMASK = 0o077


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
    Its output goes to ``log_path`` (default ``<storage_path>.log`` beside the folder),
    its user and password to ``credentials_path`` (default ``<storage_path>.credentials``).
    ``auth=False`` runs it without access control: only for provisioning and measurements.
    ``detached=True`` leaves the server running when this process exits (``ensure_embedded``).
    A ``port`` given is used or is an error; else the port of the folder's last server, else a free one.
    """

    def __init__(
        self,
        storage_path: str | os.PathLike,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 30,
        log_path: str | os.PathLike | None = None,
        credentials_path: str | os.PathLike | None = None,
        auth: bool = True,
        detached: bool = False,
    ) -> None:
        self.storage_path = os.path.abspath(os.fspath(storage_path))
        self.host = host
        self.startup_timeout = startup_timeout
        self.log_path = self._beside_storage(log_path, ".log")
        self.credentials_path = self._beside_storage(credentials_path, ".credentials")
        self.auth = auth
        self.detached = detached
        self.lock_path = self._beside_storage(None, ".lock")
        self.state_path = self._beside_storage(None, ".state")
        self._adopted_pid: int | None = None
        self._credentials: Credentials | None = None
        self._requested_port = port
        self._port: int | None = port
        self._process: subprocess.Popen | None = None
        self._owner_pid: int | None = None
        self._log_offset = 0
        self._command: list[str] = []

    def _beside_storage(self, path: str | os.PathLike | None, suffix: str) -> str:
        if path is not None:
            return os.path.abspath(os.fspath(path))
        return self.storage_path.rstrip(os.sep) + suffix

    # -- properties -------------------------------------------------------------

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pid(self) -> int | None:
        """Process id of the running (or last) server process, started here or adopted."""
        return self._process.pid if self._process is not None else self._adopted_pid

    @property
    def adopted(self) -> bool:
        """Whether the server was started by another process and found running by start()."""
        return self._adopted_pid is not None

    @property
    def exit_code(self) -> int | None:
        """The last server process's exit code (-N: killed by signal N); None while it runs."""
        if self._process is None or os.getpid() != self._owner_pid:
            return None
        return self._process.poll()

    @property
    def url(self) -> str:
        """``mongodb://core4:<password>@127.0.0.1:<port>``: the user authenticates on
        ``admin``, pymongo's default when the URL names no database. Print it masked."""
        if self._port is None:
            raise EmbeddedMongoError(
                f"embedded server for {self.storage_path} has no port yet; call start() first"
            )
        return server_url(self.host, self._port, self._credentials)

    def is_running(self) -> bool:
        if self._adopted_pid is not None:
            return serves(self._adopted_pid, self.storage_path)
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
        """Start the server and wait until it answers, or adopt the folder's running one;
        a no-op when it runs already."""
        if self.is_running():
            return self
        executable = find_server_executable()
        self._make_folders()
        if not self.auth:  # provisioning (under the lock already) or a measurement
            self._start_on(executable, self._requested_port, fixed=self._requested_port is not None)
            return self
        with exclusive(self.lock_path, self.startup_timeout + 60):
            self._credentials = provisioned_credentials(self)
            self._start_or_adopt(executable, self._requested_port)
        return self

    def restart(self, grace: float = 5) -> "EmbeddedMongo":
        """Stop the server (killed after ``grace`` seconds; an adopted one too) or clear a dead
        one, and start it again on the same port with the same data."""
        port = self._port
        if self._adopted_pid is not None:
            stop_pid(self._adopted_pid, self.storage_path, grace)
            self._adopted_pid = None
        else:
            self.stop(grace)
        if not self.auth:
            self._start_on(find_server_executable(), port, fixed=True)
            return self
        with exclusive(self.lock_path, self.startup_timeout + 60):
            self._start_or_adopt(find_server_executable(), port)
        return self

    def stop(self, grace: float = 10) -> None:
        """Ask the server to stop (SIGTERM), kill it after ``grace`` seconds; idempotent.
        An adopted server is not this one's to stop: it keeps running."""
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

    def log_tail(self) -> str:
        """The last lines the current (or last) server process wrote to the log, indented."""
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(self._log_offset)
                text = log_file.read().decode("utf-8", errors="replace")
        except OSError as exc:
            return f"    (log not readable: {exc})"
        lines = text.splitlines()[-_TAIL_LINES:]
        return "\n".join(f"    {line}" for line in lines)

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

    def _make_folders(self) -> None:
        for folder in {os.path.dirname(self.log_path), os.path.dirname(self.storage_path),
                       os.path.dirname(self.credentials_path)}:
            make_dirs(folder, FOLDER_MODE)
        # A path that exists but is no folder is left for the server to refuse (with its log).
        if not os.path.lexists(self.storage_path):
            make_dirs(self.storage_path, FOLDER_MODE)

    def _start_or_adopt(self, executable: str, port: int | None) -> None:
        """Under the lock: adopt the folder's running server, or launch one on ``port`` (given:
        that port or an error), else on the port the folder's last server had, else a free one."""
        state = read_state(self.state_path)
        if state is not None and serves(state.pid, self.storage_path):
            self._adopt(state)
            return
        if port is not None:
            self._start_on(executable, port, fixed=True)
        else:
            self._start_on(executable, state.port if state is not None else None, fixed=False)
        write_state(self.state_path, ServerState(pid=self.pid or 0, port=self._port or 0, host=self.host))

    def _adopt(self, state: ServerState) -> None:
        """Use the running server ``state`` names, once it answers as itself."""
        self.host, self._port = state.host, state.port
        deadline = time.monotonic() + self.startup_timeout
        with self._probe(state.port) as probe:
            while True:
                try:
                    if probe.admin.command("serverStatus").get("pid") in (None, state.pid):
                        break
                    raise EmbeddedMongoError(
                        f"the embedded server pid {state.pid} of {self.storage_path} runs, but another "
                        f"server answers on its port {state.port}; stop one of them")
                except PyMongoError as exc:
                    if time.monotonic() >= deadline:
                        raise EmbeddedMongoError(
                            f"the embedded server pid {state.pid} of {self.storage_path} runs but did not "
                            f"answer on port {state.port} within {self.startup_timeout}s ({exc}); stop it "
                            f"(kill {state.pid}) and it is started again\n  log: {self.log_path}") from None
                    time.sleep(_POLL_SECONDS)
        self._adopted_pid = state.pid
        log.info("using the running embedded server pid %s on port %s", state.pid, state.port)

    def _start_on(self, executable: str, port: int | None, *, fixed: bool) -> None:
        """Launch on ``port`` (``fixed``: that port or an error; else tried first), then on free
        ports (retried when taken meanwhile)."""
        attempts = 1 if fixed else _PORT_ATTEMPTS
        last: _PortTaken | None = None
        for attempt in range(1, attempts + 1):
            chosen = port if port is not None and (fixed or attempt == 1) else free_port(self.host)
            try:
                self._launch(executable, chosen)
                return
            except _PortTaken as exc:
                if fixed:
                    raise EmbeddedMongoError(
                        f"port {chosen} on {self.host} is already in use; stop what listens "
                        f"there or choose another port.\n{exc}"
                    ) from None
                log.info("port %s was taken before the server bound it (attempt %s/%s)",
                         chosen, attempt, attempts)
                last = exc
        raise EmbeddedMongoError(
            f"embedded server found no free port on {self.host} after {attempts} attempts.\n{last}"
        )

    def _launch(self, executable: str, port: int) -> None:
        self._command = [
            executable, "--host", self.host, "--port", str(port),
            "--storage-path", self.storage_path,
            # Nothing here reads the oplog (no change streams): a short one, not 100,000 entries
            # for an hour (24 MB of 136 MB on disk for 150k small documents; BENCHMARKS.md).
            "--oplog-max-entries", str(OPLOG_MAX_ENTRIES), "--oplog-retention-seconds", str(OPLOG_RETENTION_SECONDS),
        ]
        if self.auth:
            self._command.append("--auth")
        # The log is a file, never a pipe: nobody reads a pipe while the server
        # runs, and a full pipe would block the server.
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
        with open(fd, "ab") as log_file:
            os.fchmod(fd, PRIVATE_FILE_MODE)
            self._log_offset = log_file.seek(0, os.SEEK_END)
            self._process = subprocess.Popen(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=os.path.dirname(self.storage_path),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
                umask=_SERVER_UMASK,
            )
        self._owner_pid = os.getpid()
        self._port = port
        if not self.detached:
            atexit.register(self.stop)
        try:
            self._wait_until_ready(port)
        except BaseException:
            self.stop(grace=2)
            raise

    def _probe(self, port: int) -> pymongo.MongoClient:
        credentials = {}
        if self._credentials is not None and self.auth:
            credentials = {"username": self._credentials.user, "password": self._credentials.password,
                           "authSource": AUTH_SOURCE}
        return pymongo.MongoClient(
            self.host, port, directConnection=True,
            serverSelectionTimeoutMS=_PROBE_TIMEOUT_MS,
            connectTimeoutMS=_PROBE_TIMEOUT_MS, **credentials,
        )

    def _wait_until_ready(self, port: int) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + self.startup_timeout
        refused_since: float | None = None
        # The client is created once the port accepts connections: a client made
        # earlier would only retry on its own (slower) heartbeat schedule.
        probe: pymongo.MongoClient | None = None
        try:
            while True:
                code = process.poll()
                if code is not None:
                    tail = self.log_tail()
                    if any(marker in tail for marker in _ADDRESS_IN_USE):
                        raise _PortTaken(self._describe(f"exited with code {code}", tail))
                    raise EmbeddedMongoError(
                        self._describe(f"exited with code {code} during startup", tail)
                    )
                if probe is None and self._accepts_connections(port):
                    probe = self._probe(port)
                if probe is not None:
                    try:
                        probe.admin.command("ping")
                        answering_pid = probe.admin.command("serverStatus").get("pid")
                    except OperationFailure as exc:
                        if exc.code != _AUTH_FAILED:
                            raise EmbeddedMongoError(self._describe(
                                f"refused serverStatus ({exc.details and exc.details.get('errmsg')})",
                                self.log_tail())) from None
                        # Ours refusing the credentials, or another server on the port (then
                        # ours exits with "address in use" in a moment).
                        refused_since = refused_since or time.monotonic()
                        if time.monotonic() - refused_since > _AUTH_REFUSED_SECONDS:
                            raise EmbeddedMongoError(self._describe(
                                f"refused the credentials in {self.credentials_path} (user "
                                f"{self._credentials and self._credentials.user}); if the data folder was "
                                f"replaced, remove that file and the next start provisions a new password",
                                self.log_tail())) from None
                    except PyMongoError:
                        pass
                    else:
                        if answering_pid in (None, process.pid):
                            return
                        # Another server holds the port; ours cannot bind it.
                        raise _PortTaken(self._describe(
                            f"found another server (pid {answering_pid}) on port {port}",
                            self.log_tail(),
                        ))
                if time.monotonic() >= deadline:
                    raise EmbeddedMongoError(self._describe(
                        f"did not answer ping within {self.startup_timeout}s", self.log_tail()
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


def server_url(host: str, port: int, credentials: Credentials | None) -> str:
    """``mongodb://<user>:<password>@<host>:<port>`` (no user part without credentials)."""
    user = f"{credentials.user}:{credentials.password}@" if credentials is not None else ""
    return f"mongodb://{user}{f'[{host}]' if ':' in host else host}:{port}"
