"""Where `coco serve` serves: a small state file under DAGSTER_HOME.

`coco serve` writes ``coco-serve.json`` (the webserver's URL, its own pid, the MongoDB
URL with any password masked) once Dagster is started and removes it when it stops.
The verbs that talk to the running instance (`enqueue`, `runs`, `kill`, `restart`,
`pause`, `resume`, `halt`, `info`) read it, so ``--url`` is needed only for a webserver
on another machine. A file left by a `coco serve` that was killed names a pid that no
longer runs and is ignored. No Dagster here: `coco` itself does not load it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass

from core4_resources.files.moves import write_file_atomic

STATE_FILE = "coco-serve.json"


@dataclass(frozen=True)
class ServeState:
    url: str
    pid: int
    mongo_url: str  # masked: the state file never holds a password

    @property
    def running(self) -> bool:
        return pid_alive(self.pid)


def state_path(dagster_home: str) -> str:
    return os.path.join(dagster_home, STATE_FILE)


def webserver_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a webserver bound to ``host``."""
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_state(dagster_home: str, state: ServeState) -> str:
    path = state_path(dagster_home)
    write_file_atomic(path, (json.dumps(asdict(state), indent=2) + "\n").encode("utf-8"))
    return path


def remove_state(dagster_home: str, pid: int) -> None:
    """Remove the state file if it is still the one ``pid`` wrote (a newer serve keeps its own)."""
    state = read_state(dagster_home, only_running=False)
    if state is not None and state.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state_path(dagster_home))


def read_state(dagster_home: str, only_running: bool = True) -> ServeState | None:
    """The recorded state; None when there is none, it is unreadable, or (``only_running``)
    the `coco serve` that wrote it is gone."""
    try:
        with open(state_path(dagster_home), encoding="utf-8") as handle:
            data = json.load(handle)
        state = ServeState(url=str(data["url"]), pid=int(data["pid"]), mongo_url=str(data.get("mongo_url", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if only_running and not state.running:
        return None
    return state


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it runs
    try:  # a zombie (exited, not yet reaped) serves nothing
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            # The pid of a killed serve may belong to another program by now.
            return b"coco" in handle.read()
    except (OSError, IndexError):
        return True


def served_url(settings) -> tuple[str, ServeState | None]:
    """The webserver to talk to: the running `coco serve`'s, else dagster.host/port of the
    configuration; with the state when there is one."""
    from core4_pipelines.coco.instance import dagster_home

    state = read_state(dagster_home(settings))
    if state is not None:
        return state.url, state
    return webserver_url(settings.dagster.host, settings.dagster.port), None
