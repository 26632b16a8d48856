"""The Supervisor of `coco serve` with a real embedded MongoDB and a stand-in for `dagster dev`
(a real process in its own session): the restart bound, and a dagster dev that exits by itself.
The whole `coco serve` is exercised in tests/live/test_live_supervise.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pymongo
from pymongo.write_concern import WriteConcern

from core4_pipelines.coco.serve import Supervisor
from core4_resources.mongo.embedded.server import EmbeddedMongo

STAND_IN = [sys.executable, "-c", "import time; time.sleep(600)"]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_mongodb_dying_too_often_stops_everything_with_the_log_tail(tmp_path):
    said: list[str] = []
    stand_in = subprocess.Popen(STAND_IN, start_new_session=True)
    with EmbeddedMongo(tmp_path / "mongo") as mongo:
        with pymongo.MongoClient(mongo.url) as client:
            # Journaled: a kill -9 right after an unjournaled write may lose it (see make_durable).
            client.demo.get_collection("kept", write_concern=WriteConcern(j=True)).insert_one({"_id": 1})
        port, killed = mongo.port, []

        def kill_mongo(text: str | None = None) -> None:
            """Kill the server now, and again each time it is said to be restarted."""
            if text is not None:
                said.append(text)
            if text is None or "restarted on the same port" in text:
                killed.append(mongo.pid)
                os.kill(mongo.pid, signal.SIGKILL)

        kill_mongo()
        supervisor = Supervisor(stand_in, mongo, kill_mongo, poll_every=0.1, max_restarts=2, grace=5)
        code = supervisor.run()

        assert code == 1
        assert [text.split(";")[0] for text in said] == ["embedded MongoDB died (exit -9)"] * 3
        assert f"restarted on the same port {port} " in said[0] and "restart 2 of at most 2" in said[1]
        assert "restarted 2 times within 10 minutes already: giving up" in said[2]
        assert f"log: {mongo.log_path}" in said[2] and "last lines of the log" in said[2]
        assert stand_in.poll() is not None and _gone(stand_in.pid)
        assert all(_gone(pid) for pid in killed)
        # The data folder is intact: a later start finds what was there.
        mongo.restart()
        with pymongo.MongoClient(mongo.url) as client:
            assert client.demo.kept.find_one() == {"_id": 1}


def test_a_dagster_dev_exiting_0_on_its_own_is_still_a_failure():
    said: list[str] = []
    stand_in = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    assert Supervisor(stand_in, None, said.append, poll_every=0.1).run() == 1
    assert said == [f"dagster dev (pid {stand_in.pid}) died (exit 0); stopping everything and exiting with 1, "
                    f"so whatever supervises coco serve can restart it"]


def test_an_interrupt_stops_the_process_group_and_returns_0():
    said: list[str] = []
    # SIGTERM explicitly at its default and unblocked in the stand-in: whatever this test process
    # inherited, the stand-in is one that SIGTERM stops, as dagster dev is.
    stand_in = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_DFL); "
                                 "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM}); time.sleep(600)"],
                                start_new_session=True)
    # Python's own Ctrl-C handler, also when this process inherited SIGINT ignored (a background
    # job of a non-interactive shell does): the interrupt is what this test is about.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        assert Supervisor(stand_in, None, said.append, poll_every=0.1, grace=5).run() == 0
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
        if stand_in.poll() is None:
            stand_in.kill()
    assert said == [] and stand_in.returncode == -signal.SIGTERM


def test_a_server_that_fails_every_query_waits_for_room_then_is_restarted(tmp_path):
    """Health, not liveness: a server answering pings but failing every query (its storage engine
    gave up on a full disk) is restarted -- once there is room again, not before."""
    from pymongo.errors import OperationFailure

    from core4_pipelines.coco.serve import _read_probe

    said: list[str] = []
    stand_in = subprocess.Popen(STAND_IN, start_new_session=True)
    with EmbeddedMongo(tmp_path / "mongo") as mongo:
        with pymongo.MongoClient(mongo.url) as client:
            assert _read_probe(client) is None  # the real probe: an authenticated read that works
        wedged = {"on": True}

        def query(client):
            if wedged["on"]:
                raise OperationFailure("internal server error")
            return _read_probe(client)

        supervisor = Supervisor(stand_in, mongo, said.append, poll_every=0.05, ping_every=0.05, ping_failures=2,
                                min_free="100%", query=query)  # "100%": never room, as on a full disk
        runner = threading.Thread(target=lambda: said.append(f"exit {supervisor.run()}"))
        runner.start()
        try:
            first_pid = mongo.pid
            _wait(lambda: any("restarting it once there is room" in s for s in said))
            (waiting,) = said
            assert "answers pings but failed every query 2 times in a row (last: OperationFailure" in waiting
            assert f"{mongo.storage_path} has " in waiting and "below folder.min_free 100%" in waiting
            assert mongo.pid == first_pid and len(said) == 1  # no restart while there is no room, said once
            supervisor.min_free = 0  # room again
            _wait(lambda: any("restarted on the same port" in s for s in said))
            wedged["on"] = False
            assert mongo.pid != first_pid and "; stopped it; restarted on the same port" in said[1]
        finally:
            stand_in.kill()
            runner.join(30)
        assert said[-1] == "exit 137" and not any("giving up" in s for s in said)  # the stand-in was killed


def _wait(condition, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_dying_dagster_dev_is_started_again_a_bounded_number_of_times():
    said: list[str] = []
    started: list[subprocess.Popen] = []

    def start_again() -> subprocess.Popen:
        started.append(subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], start_new_session=True))
        return started[-1]

    first = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], start_new_session=True)
    code = Supervisor(first, None, said.append, poll_every=0.05, restart_dagster=start_again,
                      max_dagster_restarts=2).run()
    assert code == 3 and len(started) == 2
    assert said[0].startswith(f"dagster dev (pid {first.pid}) died (exit 3); started it again (pid {started[0].pid}; "
                              "restart 1 of at most 2 within 10 minutes)")
    assert "restart 2 of at most 2" in said[1]
    assert said[2] == (f"dagster dev (pid {started[1].pid}) died (exit 3); it was restarted 2 times within 10 minutes "
                       "already: giving up")
    assert said[3].startswith(f"dagster dev (pid {started[1].pid}) died (exit 3); stopping everything and exiting with 3")
