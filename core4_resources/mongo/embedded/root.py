"""The embedded MongoDB of ``folder.root``: what every process uses when no ``mongo_url`` is set.

``ensure_embedded(root)`` returns the URL of the server of ``<root>/mongo``, starting it when
none runs -- a code server, a run worker, ``dagster job execute``, ``dagster dev``, ``dg dev``
or a project's own tests, whichever needs it first. It is started detached: it outlives the
process that started it and keeps running until ``stop_embedded(root)`` (``python -m
core4_resources.mongo.embedded.root stop``) or a reboot. ``coco serve`` adopts it when it runs, and
otherwise starts and supervises its own on the same data, port and credentials.
"""

from __future__ import annotations

import logging
import os
import sys

from core4_resources.mongo.embedded.credentials import Credentials, read_credentials
from core4_resources.mongo.embedded.server import EmbeddedMongo, server_url
from core4_resources.mongo.embedded.state import exclusive, read_state, serves, stop_pid

log = logging.getLogger(__name__)

ROOT_STORAGE = "mongo"


def root_server(root: str | os.PathLike, *, port: int | None = None, detached: bool = False) -> EmbeddedMongo:
    """The embedded server of ``folder.root`` (not started): data in ``<root>/mongo``, log
    ``<root>/mongo.log``, user and password in ``<root>/mongo.credentials``, lock and state
    in ``<root>/mongo.lock`` and ``<root>/mongo.state``."""
    root = os.path.abspath(os.fspath(root))
    return EmbeddedMongo(os.path.join(root, ROOT_STORAGE), log_path=os.path.join(root, f"{ROOT_STORAGE}.log"),
                         port=port, detached=detached)


def ensure_embedded(root: str | os.PathLike, *, port: int | None = None) -> str:
    """The URL (with the user and password) of the embedded server of ``root``; started,
    detached, when none runs. Safe to call from many processes at once: one server starts."""
    server = root_server(root, port=port, detached=True)
    # Without the lock first: when the state names a live server of this folder, a few file reads.
    state = read_state(server.state_path)
    if state is not None and serves(state.pid, server.storage_path):
        credentials = read_credentials(server.credentials_path)
        if credentials is not None and credentials.provisioned:
            return server_url(state.host, state.port, credentials)
    server.start()
    if not server.adopted:
        log.info("started the embedded MongoDB of %s on port %s (pid %s); it keeps running: stop it with "
                 "python -m core4_resources.mongo.embedded.root stop %s", root, server.port, server.pid, root)
    return server.url


def stop_embedded(root: str | os.PathLike, grace: float = 10) -> bool:
    """Stop the embedded server of ``root``; False when none was running."""
    server = root_server(root)
    if not os.path.isdir(os.path.dirname(server.lock_path)):
        return False
    with exclusive(server.lock_path, server.startup_timeout + 60):
        state = read_state(server.state_path)
        return state is not None and stop_pid(state.pid, server.storage_path, grace)


def embedded_status(root: str | os.PathLike, port: int | None = None) -> tuple[str | None, int | None]:
    """The URL (password masked as ***) the embedded server of ``root`` has or will have --
    None while no port is known yet -- and the pid of the running server, or None."""
    server = root_server(root)
    state = read_state(server.state_path)
    pid = state.pid if state is not None and serves(state.pid, server.storage_path) else None
    # Running: its port. Else the one the next start uses: the configured one, else the kept one.
    known = state.port if pid is not None else port if port is not None else state.port if state else None
    if known is None:
        return None, pid
    return server_url(state.host if pid is not None else "127.0.0.1", known, Credentials("core4", "***")), pid


def main(argv: list[str] | None = None) -> int:
    """``python -m core4_resources.mongo.embedded.root {start,stop,status} [ROOT]`` (default: folder.root)."""
    import argparse

    from core4_resources.config.settings import load_config, mask_url

    parser = argparse.ArgumentParser(prog="python -m core4_resources.mongo.embedded.root",
                                     description="the embedded MongoDB of folder.root")
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("root", nargs="?", help="folder.root (default: the configured one)")
    args = parser.parse_args(argv)
    settings = load_config()
    root = os.path.abspath(args.root or settings.folder.root)
    if args.action == "start":
        print(mask_url(ensure_embedded(root, port=settings.embedded.port)))
    elif args.action == "stop":
        print("stopped" if stop_embedded(root) else "not running")
    else:
        url, pid = embedded_status(root, settings.embedded.port)
        print(f"{url or '(no port yet)'}  " + (f"running, pid {pid}" if pid else "not running"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
