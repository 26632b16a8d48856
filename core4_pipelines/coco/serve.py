"""`coco serve`: the Dagster UI and daemon over every project, with the embedded MongoDB.

The `coco serve` process itself only supervises its children: it never imports Dagster
(nor the library's Dagster definitions); what needs Dagster runs in a child process
(``python -m core4_pipelines.supervise.recovery``, the probes, ``dagster dev``). ``mongo_for`` is
also what the in-process verbs (`coco drain`, `coco enqueue --local`) use.

What dagster dev and its processes print passes through coco serve, which leaves out what
says nothing happened (``DagsterOutputFilter``): a sensor tick that claimed nothing, each
run's DEBUG events (the UI has them). ``coco serve -v`` shows everything.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import glob
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Callable, Iterator

import pymongo
from pymongo.errors import PyMongoError

from core4_pipelines.alerts.supervision import SupervisionAlerts
from core4_pipelines.coco.instance import instance_environment, write_instance
from core4_pipelines.coco.probe import collect_job_limits
from core4_pipelines.coco.serve_output import OUTPUT_CLOSE_SECONDS, DagsterOutputFilter, OutputForwarder
from core4_pipelines.coco.state import ServeState, remove_state, webserver_url, write_state
from core4_pipelines.coco.workspace import write_workspace
from core4_pipelines.errors import PipelineError
from core4_resources.config.settings import Settings, mask_url
from core4_resources.mongo.embedded.server import EmbeddedMongo
from core4_resources.mongo.embedded.root import root_server
from core4_resources.errors import EmbeddedMongoError

from core4_pipelines.engine import check_engine
from core4_resources.files.probe import probe_root

MONGO_URL_ENV = "CORE4_OPTION_DEFAULT__mongo_url"


@contextlib.contextmanager
def embedded_mongo_for(settings: Settings, say: Callable[[str], None]) -> Iterator[EmbeddedMongo | None]:
    """An embedded server under folder.root for the duration; None when mongo_url is configured."""
    if settings.mongo_url:
        yield None
        return
    # The same server every entry point starts on demand: its folder, its kept port, or
    # embedded.port when configured.
    with root_server(settings.folder.root, port=settings.embedded.port) as server:
        say(f"embedded MongoDB on {mask_url(server.url)} (data in {server.storage_path}, "
            f"user and password in {server.credentials_path})")
        yield server


@contextlib.contextmanager
def mongo_for(settings: Settings, say: Callable[[str], None]) -> Iterator[str]:
    """The configured MongoDB URL, or an embedded server under folder.root for the duration."""
    with embedded_mongo_for(settings, say) as server:
        yield server.url if server is not None else settings.mongo_url


# `dagster dev` warns on every start that it is superseded by `dg dev`, which serves one dg
# project, not the workspace of all projects coco serves. Ignored in that process only (-W: a
# literal prefix of the message, no import needed); its children do not inherit it.
DEV_SUPERSEDED = "Function `dev_command` is superseded"


def dagster_dev_command(workspace: str, host: str, port: int) -> list[str]:
    """``dagster dev`` on ``workspace`` with this Python, without its supersession warning."""
    if importlib.util.find_spec("dagster") is None:  # finds, does not import
        raise PipelineError("Dagster is not installed for this Python; reinstall core4-pipelines")
    return [sys.executable, "-W", f"ignore:{DEV_SUPERSEDED}", "-m", "dagster", "dev",
            "-w", workspace, "-h", host, "-p", str(port)]


def check_port_free(host: str, port: int) -> None:
    """PipelineError naming ``host:port`` when something listens there already."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PipelineError(f"cannot serve the Dagster UI on {host}:{port}: {exc.strerror}; "
                            f"pass --host or set dagster.host") from None
    family, kind, proto, _, address = addresses[0]
    with socket.socket(family, kind, proto) as probe:
        # As the webserver binds: SO_REUSEADDR, so a closed connection in TIME_WAIT does not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise PipelineError(f"cannot serve the Dagster UI on {host}:{port}: {exc.strerror}") from None
            raise PipelineError(
                f"cannot serve the Dagster UI on {host}:{port}: the port is in use by another program "
                f"(another coco serve or dagster dev?). Stop it, or choose a free port: "
                f"coco serve --port <port>, or dagster.port in your configuration"
            ) from None


PROCESS_UMASK = 0o027


def serve(settings: Settings, host: str, port: int, say: Callable[[str], None] = print, *,
          verbose: bool = False) -> int:
    """Run ``dagster dev`` over the projects in folder.home and supervise it and the embedded
    MongoDB until interrupted (exit 0) or until dagster dev dies (its exit code, never 0).
    Its output is filtered (``DagsterOutputFilter``) unless ``verbose``."""
    home = settings.folder.home
    if not home:
        raise PipelineError("folder.home is not set: pass --home DIR or set folder.home in your config")
    check_engine(settings, PipelineError)  # celery: a broker, PostgreSQL and a MongoDB every machine reaches
    check_port_free(host, port)
    probe_root(settings.folder.root)  # claims and batch locks stay exclusive there (a network share may not)
    # Dagster's own files (run and event storage, logs, compute logs) are created by processes
    # this one starts: with this umask they are 0640/0750 like ours, whatever the shell's was.
    os.umask(PROCESS_UMASK)
    try:
        with _sigterm_as_interrupt(), embedded_mongo_for(settings, say) as server:
            return _serve_with(settings, server, host, port, say, verbose)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM before the supervision took over, or while it stopped
        say("interrupted; everything coco serve started is stopped")
        return 0


def _serve_with(settings: Settings, server: EmbeddedMongo | None, host: str, port: int,
                say: Callable[[str], None], verbose: bool) -> int:
    """serve() once MongoDB runs: the instance, the workspace, then dagster dev under supervision."""
    home = settings.folder.home
    mongo_url = server.url if server is not None else settings.mongo_url
    env = dict(os.environ)
    env[MONGO_URL_ENV] = mongo_url
    env["CORE4_OPTION_folder__home"] = home
    env["CORE4_OPTION_folder__root"] = settings.folder.root
    limits, problems = collect_job_limits(home, env=env)
    for problem in problems:
        say(f"max_parallel not applied for {problem}")
    dagster_home = write_instance(settings, job_limits=limits)
    env.update(instance_environment(settings))
    _fail_orphaned_runs(dagster_home, env, say)
    workspace = os.path.join(dagster_home, "workspace.yaml")
    projects, skipped = write_workspace(home, workspace)
    for reason in skipped:
        say(f"skipped: {reason}")
    say(f"{len(projects)} projects from {home}: {', '.join(p.name for p in projects) or '(none)'}")
    command = dagster_dev_command(workspace, host, port)
    say(f"Dagster UI: http://{host}:{port}  (MongoDB {mask_url(mongo_url)}; Ctrl-C stops everything)")
    output = None if verbose else OutputForwarder(DagsterOutputFilter().keep)
    with contextlib.suppress(ValueError, OSError):  # said lines first, then dagster dev's
        sys.stdout.flush()
    def start_dagster() -> subprocess.Popen:
        started = subprocess.Popen(command, env=env, start_new_session=True,
                                   **(output.popen_arguments() if output else {}))
        if output is not None:
            output.attach(started)
        return started

    dagster = start_dagster()
    if output is not None:
        output.start_writing()
    # Where this instance serves, so the other verbs find it without --url.
    write_state(dagster_home, ServeState(webserver_url(host, port), os.getpid(), mask_url(mongo_url)))
    # Every line the supervisor says is an event the supervision alerts rules hear of too.
    told = SupervisionAlerts(settings, say, webserver_url(host, port))
    try:
        return Supervisor(dagster, server, told, min_free=settings.folder.min_free,
                          restart_dagster=start_dagster).run()
    finally:
        try:
            if output is not None:
                output.close(OUTPUT_CLOSE_SECONDS)  # what dagster dev said last, briefly
            told.flush()
        finally:
            remove_state(dagster_home, os.getpid())


# -- dagster dev's output ------------------------------------------------------------------

# After dagster dev's processes are gone, how long coco serve waits for their last lines.
def _fail_orphaned_runs(dagster_home: str, env: dict[str, str], say: Callable[[str], None]) -> None:
    """Runs left starting or started by a crash of the stack hold run slots and batches
    forever: before Dagster starts, those whose worker is gone are failed (in a process
    of their own: this one does not load Dagster)."""
    done = subprocess.run(
        [sys.executable, "-m", "core4_pipelines.supervise.recovery", dagster_home],
        env=env, capture_output=True, text=True, check=False,
    )
    for line in done.stdout.splitlines():
        say(f"recovered after a crash: {line}")
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        say(f"could not check for runs orphaned by a crash (exit {done.returncode}); going on:\n{tail}")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so it stops everything as Ctrl-C does.

    Ctrl-C itself gets Python's handler even when this process inherited SIGINT ignored
    (started in the background by a non-interactive shell): otherwise the processes started
    here would inherit the ignore too, and dagster dev would not stop on Ctrl-C. A handler,
    unlike an ignore, is reset to the default in each started program.
    """
    def interrupt(*_) -> None:
        raise KeyboardInterrupt()

    previous = signal.signal(signal.SIGTERM, interrupt)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


class Supervisor:
    """Watches ``dagster dev`` and the embedded MongoDB, once a second.

    - dagster dev exits: started again (``restart_dagster``), at most ``max_dagster_restarts``
      times within ``restart_window`` seconds; then (or without ``restart_dagster``) stop, and
      return non-zero (its code; 128+N when killed by signal N; 1 when it exited 0 without
      being asked to), so a supervisor restarts coco serve.
    - the embedded MongoDB dies, or answers no ping ``ping_failures`` times in a row
      (one ping every ``ping_every`` seconds): restart it on the same port with the same
      data; more than ``max_restarts`` within ``restart_window`` seconds: stop, return 1.
    - Ctrl-C or SIGTERM: stop dagster dev's whole process group (killed after
      ``interrupt_grace`` seconds, so everything is gone within 10 s), return 0. The caller
      stops MongoDB.
    """

    def __init__(self, dagster: subprocess.Popen, mongo: EmbeddedMongo | None, say: Callable[[str], None], *,
                 poll_every: float = 1.0, ping_every: float = 5.0, ping_failures: int = 3,
                 max_restarts: int = 5, restart_window: float = 600.0, grace: float = 30.0,
                 interrupt_grace: float = 4.0, min_free: str | int = "1%",
                 query: Callable[[pymongo.MongoClient], object] | None = None,
                 restart_dagster: Callable[[], subprocess.Popen] | None = None, max_dagster_restarts: int = 3) -> None:
        self.dagster = dagster
        self.mongo = mongo
        self.say = say
        self.poll_every = poll_every
        self.ping_every = ping_every
        self.ping_failures = ping_failures
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.grace = grace
        self.interrupt_grace = interrupt_grace
        self._restarts: collections.deque[float] = collections.deque()
        self._failed_pings = 0
        self._next_ping = time.monotonic() + ping_every
        self._client: pymongo.MongoClient | None = None
        # Health, not liveness: an authenticated read of the storage, after the ping. A server whose
        # storage engine gave up (a full disk: WT_PANIC) answers pings and fails every query.
        self.query = query or _read_probe
        # dagster dev started again when it dies, at most max_dagster_restarts times in restart_window.
        self.restart_dagster = restart_dagster
        self.max_dagster_restarts = max_dagster_restarts
        self._dagster_restarts: collections.deque[float] = collections.deque()
        self.min_free = min_free
        self._waiting_for_room = False

    def run(self) -> int:
        try:
            while True:
                code = self.dagster.poll()
                if code is not None:
                    if self._dagster_again(code):
                        continue
                    return self._dagster_died(code)
                if self.mongo is not None and not self._mongo_ok():
                    return self._stop(1)
                time.sleep(self.poll_every)
        except KeyboardInterrupt:
            # An operator waiting at a terminal: a short grace, then everything is killed.
            return self._stop(0, self.interrupt_grace)
        finally:
            self._close_client()
            # Children of dagster dev (code servers, run workers) share its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.dagster.pid, signal.SIGKILL)

    # -- dagster dev -------------------------------------------------------------------

    def _dagster_again(self, code: int) -> bool:
        """dagster dev started again after it died (True), unless it died too often already."""
        if self.restart_dagster is None:
            return False
        now = time.monotonic()
        while self._dagster_restarts and now - self._dagster_restarts[0] > self.restart_window:
            self._dagster_restarts.popleft()
        how = f"exit {code}" + (f", killed by {signal.Signals(-code).name}" if code < 0 else "")
        if len(self._dagster_restarts) >= self.max_dagster_restarts:
            self.say(f"dagster dev (pid {self.dagster.pid}) died ({how}); it was restarted "
                     f"{len(self._dagster_restarts)} times within {self.restart_window / 60:g} minutes already: giving up")
            return False
        old = self.dagster.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(old, signal.SIGKILL)  # what is left of its group (code servers, run workers)
        self._dagster_restarts.append(now)
        self.dagster = self.restart_dagster()
        self.say(f"dagster dev (pid {old}) died ({how}); started it again (pid {self.dagster.pid}; restart "
                 f"{len(self._dagster_restarts)} of at most {self.max_dagster_restarts} within "
                 f"{self.restart_window / 60:g} minutes); runs it was running are failed and their batches run again")
        return True

    def _dagster_died(self, code: int) -> int:
        exit_code = 128 - code if code < 0 else code or 1
        how = f"exit {code}" + (f", killed by {signal.Signals(-code).name}" if code < 0 else "")
        self.say(f"dagster dev (pid {self.dagster.pid}) died ({how}); stopping everything and "
                 f"exiting with {exit_code}, so whatever supervises coco serve can restart it")
        return self._stop(exit_code)

    def _stop(self, code: int, grace: float | None = None) -> int:
        """Stop dagster dev's process group (SIGTERM, SIGKILL after the grace); return ``code``."""
        grace = self.grace if grace is None else grace
        group = self.dagster.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + grace
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.dagster.wait(grace)
        # Its code servers and run workers share its group: give them the rest of the grace.
        while time.monotonic() < deadline and _group_alive(group):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
        self.dagster.wait()
        return code

    # -- the embedded MongoDB --------------------------------------------------------------

    def _mongo_ok(self) -> bool:
        """False once it cannot be restarted (any more); restarts it when dead or hung."""
        mongo = self.mongo
        assert mongo is not None
        if not mongo.is_running():
            return self._restart(f"embedded MongoDB died (exit {mongo.exit_code})", grace=0)
        if time.monotonic() < self._next_ping:
            return True
        self._next_ping = time.monotonic() + self.ping_every
        client = self._ping_client()
        try:
            client.admin.command("ping")
        except PyMongoError as exc:
            self._failed_pings += 1
            if self._failed_pings < self.ping_failures:
                return True
            # Hung (a stopped process, a stuck storage engine): SIGTERM gets a short grace only.
            return self._restart(
                f"embedded MongoDB (pid {mongo.pid}) answered no ping {self._failed_pings} times in a row "
                f"(~{self._failed_pings * self.ping_every:g}s; last: {type(exc).__name__}); killed it", grace=2)
        try:
            self.query(client)
        except PyMongoError as exc:
            self._failed_pings += 1
            if self._failed_pings < self.ping_failures:
                return True
            what = (f"embedded MongoDB (pid {mongo.pid}) answers pings but failed every query {self._failed_pings} "
                    f"times in a row (last: {type(exc).__name__}: {str(exc)[:200]})")
            low = self._low_room()
            if low is not None:  # a restart would fail or wedge again: wait for room, using no restart
                if not self._waiting_for_room:
                    self.say(f"{what}; {low}: restarting it once there is room")
                self._waiting_for_room = True
                return True
            self._waiting_for_room = False
            return self._restart(f"{what}; stopped it", grace=2)
        self._failed_pings = 0
        self._waiting_for_room = False
        return True

    def _low_room(self) -> str | None:
        from core4_resources.files.space import below_floor, parse_min_free

        assert self.mongo is not None
        return below_floor([self.mongo.storage_path], parse_min_free(self.min_free))

    def _restart(self, what: str, grace: float) -> bool:
        mongo = self.mongo
        assert mongo is not None
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > self.restart_window:
            self._restarts.popleft()
        if len(self._restarts) >= self.max_restarts:
            self.say(f"{what}; it was restarted {len(self._restarts)} times within "
                     f"{self.restart_window / 60:g} minutes already: giving up, stopping dagster dev.\n"
                     f"  log: {mongo.log_path}\n  last lines of the log:\n{mongo.log_tail()}")
            return False
        self._restarts.append(now)
        self._close_client()
        self._failed_pings = 0
        try:
            mongo.restart(grace=grace)
        except EmbeddedMongoError as exc:
            self.say(f"{what}; restarting it on port {mongo.port} failed, stopping dagster dev:\n{exc}")
            return False
        self._next_ping = time.monotonic() + self.ping_every
        self.say(f"{what}; restarted on the same port {mongo.port} (pid {mongo.pid}, data in {mongo.storage_path}; "
                 f"restart {len(self._restarts)} of at most {self.max_restarts} "
                 f"within {self.restart_window / 60:g} minutes)")
        return True

    def _ping_client(self) -> pymongo.MongoClient:
        if self._client is None:
            assert self.mongo is not None
            timeout_ms = int(min(self.ping_every, 2.0) * 1000)
            self._client = pymongo.MongoClient(
                self.mongo.url, directConnection=True, serverSelectionTimeoutMS=timeout_ms,
                connectTimeoutMS=timeout_ms, socketTimeoutMS=timeout_ms)
        return self._client

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


# The read the supervisor's health check makes: authenticated, through the storage engine.
HEALTH_DATABASE, HEALTH_COLLECTION = "core4_health", "probe"


def _read_probe(client: pymongo.MongoClient) -> object:
    return client[HEALTH_DATABASE][HEALTH_COLLECTION].find_one({"_id": "supervisor"})


def _group_alive(group: int) -> bool:
    """Whether a process of ``group`` still runs. Zombies do not count: in a container
    nothing may ever reap them, and then they would hold every stop for the full grace."""
    if not os.path.isdir("/proc"):
        return _signal_reaches(group)
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat, encoding="utf-8", errors="replace") as handle:
                # "<pid> (<name>) <state> <ppid> <pgrp> ..."; the name may hold ")".
                state, _, pgrp = handle.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if pgrp == str(group) and state != "Z":
            return True
    return False


def _signal_reaches(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
