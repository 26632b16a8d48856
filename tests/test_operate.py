"""`coco enqueue` arguments, duplicate refusal, the runs table and how `coco kill` and the
client's failures read, without a real webserver (see tests/live)."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
from support import REPO, coco

from core4_pipelines.coco.dagster_api import DagsterAPI
from core4_pipelines.coco.errors import OperateError
from core4_pipelines.coco.operate import (
    ARGS_TAG,
    args_hash,
    build_launch,
    format_table,
    kill,
    parse_assignments,
    run_rows,
)
from core4_resources.mongo.embedded.server import free_port

OPS = {"fetch": ["copies", "source"], "load": ["source", "batch"], "noop": []}


def launch(*items):
    return build_launch(parse_assignments(items), OPS, "shop")


def test_arguments_become_op_config_and_launch_tags():
    run_config, tags = launch(
        'copies=3', 'fetch.source="s3"', 'load.source={"path": "/x"}', "batch=[1, 2]",
        "ops.noop.config.flag=true", "priority=7", "attempts=2", "chain=report", "wall_time=90",
    )
    assert run_config == {
        "ops": {
            "fetch": {"config": {"copies": 3, "source": "s3"}},
            "load": {"config": {"source": {"path": "/x"}, "batch": [1, 2]}},
            "noop": {"config": {"flag": True}},
        }
    }
    assert tags == {"dagster/priority": "7", "core4/attempts": "2", "core4/chain": "shop.report",
                    "dagster/max_runtime": "90"}


@pytest.mark.parametrize(
    "item, words",
    [
        ("source=x", ["fetch, load", "OP.source"]),
        ("bogus=1", ["no op of this job takes 'bogus'", "copies"]),
        ("nop.flag=1", ["'nop' is no op"]),
        ("attempts=0", ["attempts", "integer >= 1"]),
        ("novalue", ["expected key=value"]),
    ],
)
def test_bad_arguments_say_what_to_write(item, words):
    with pytest.raises(OperateError) as error:
        launch(item)
    assert all(word in str(error.value) for word in words), str(error.value)


def test_plain_words_are_strings_and_the_hash_ignores_order():
    assert parse_assignments(["a=abc", "b=1", 'c="1"']) == [("a", "abc"), ("b", 1), ("c", "1")]
    first = args_hash("shop.load", {"ops": {"a": {"config": {"x": 1, "y": 2}}}})
    assert first == args_hash("shop.load", {"ops": {"a": {"config": {"y": 2, "x": 1}}}})
    assert first != args_hash("shop.load", {"ops": {"a": {"config": {"x": 1, "y": 3}}}})
    assert first != args_hash("shop.other", {"ops": {"a": {"config": {"x": 1, "y": 2}}}})


def test_runs_table_is_readable():
    runs = [
        {"runId": "0123456789abcdef0123456789abcdef0123", "jobName": "load", "status": "STARTED",
         "creationTime": 1_800_000_000.0, "startTime": 1_800_000_001.0, "endTime": None, "parentRunId": None,
         "tags": [{"key": "core4/job", "value": "shop.load"}, {"key": "core4/progress", "value": "40%"},
                  {"key": "core4/progress_message", "value": "file 4 of 10"}],
         "repositoryOrigin": {"repositoryLocationName": "shop"}},
        {"runId": "fedcba9876543210fedcba9876543210fedc", "jobName": "crawl", "status": "FAILURE",
         "creationTime": 1_800_000_100.0, "startTime": 1_800_000_100.0, "endTime": 1_800_000_160.0,
         "parentRunId": "0123456789abcdef0123456789abcdef0123",
         "tags": [{"key": "core4/state", "value": "inactive"}, {"key": "core4/message", "value": "no data"}],
         "repositoryOrigin": {"repositoryLocationName": "depot"}},
    ]
    table = format_table(["RUN", "JOB", "STATUS", "CREATED (UTC)", "TIME", "INFO"], run_rows(runs)).splitlines()
    assert table[1].split()[:5] == ["01234567", "shop.load", "STARTED", "2027-01-15", "08:00:00"]
    assert "40% file 4 of 10" in table[1]
    assert table[2].split()[:3] == ["fedcba98", "depot.crawl", "FAILURE"] and " 60s " in table[2]
    assert "inactive: no data; re-run of 01234567" in table[2]


def test_local_enqueue_runs_the_job_and_refuses_a_duplicate(tmp_path, mongo_url):
    env = dict(os.environ, CORE4_OPTION_DEFAULT__mongo_url=mongo_url)
    common = ["--home", os.path.join(REPO, "projects"), "--root", str(tmp_path / "root")]
    done = coco(*common, "enqueue", "demo.download_samples", "copies=2", "--local", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(os.listdir(tmp_path / "root" / "proc" / "demo")) == 8

    digest = args_hash("demo.download_samples", {"ops": {"download_samples_fetch": {"config": {"copies": 1}}}})
    with dg.DagsterInstance.from_config(str(tmp_path / "root" / "dagster")) as instance:
        (finished,) = instance.get_runs()
        assert finished.status == dg.DagsterRunStatus.SUCCESS and ARGS_TAG in finished.tags
        busy = dg.DagsterRun(job_name="download_samples", status=dg.DagsterRunStatus.STARTED, tags={ARGS_TAG: digest})
        instance.add_run(busy)
    refused = coco(*common, "enqueue", "demo.download_samples", "copies=1", "--local", env=env)
    assert refused.returncode == 2 and busy.run_id in refused.stderr and "--force" in refused.stderr


def test_graphql_documents_are_valid_for_this_dagster():
    import graphql
    from dagster_graphql.schema import create_schema

    from core4_pipelines.coco import dagster_api

    schema = graphql.build_schema(str(create_schema()))
    problems = {
        name: [e.message for e in graphql.validate(schema, graphql.parse(getattr(dagster_api, name)))]
        for name in ("JOB_OPS", "REEXECUTE", "MARK_CANCELED", "RUNS", "RUN")
    }
    assert problems == {name: [] for name in problems}


# -- Dagster's client and `coco kill` against a scripted webserver ------------------------------

RUN_ID = "0123abcd-0000-4000-8000-000000000000"
# The operation names of dagster_graphql's client documents, and of ours.
TERMINATE, STATUS, SUBMIT, MARK = "GraphQLClientTerminateRun", "GraphQLClientGetRunStatus", "GraphQLClientSubmitRun", \
    "mutation MarkCanceled"


def _status(status: str) -> tuple[int, dict]:
    return 200, {"data": {"pipelineRunOrError": {"__typename": "Run", "status": status}}}


class ScriptedWebserver:
    """Answers POST /graphql by the document's operation: ``answers[name] = (HTTP code, body)``."""

    def __init__(self, answers: dict[str, tuple[int, object]]):
        self.answers = answers
        self.asked: list[dict] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                script.asked.append(request)
                name = next((n for n in script.answers if n in request["query"]), None)
                answer = script.answers[name] if name else (400, {"errors": [{"message": "unscripted"}]})
                if isinstance(answer, list):  # answers in turn; the last one stays
                    answer = answer.pop(0) if len(answer) > 1 else answer[0]
                code, body = answer
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> ScriptedWebserver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def operations(self) -> list[str]:
        return [next((n for n in self.answers if n in r["query"]), "?") for r in self.asked]


def test_without_a_webserver_every_call_says_how_to_start_one():
    api = DagsterAPI(f"http://127.0.0.1:{free_port()}")
    calls = [lambda: api.launch("demo", "job", {}, {}), lambda: api.status(RUN_ID),
             lambda: api.terminate(RUN_ID), lambda: api.runs()]
    for call in calls:
        with pytest.raises(OperateError) as error:
            call()
        assert f"no Dagster webserver at {api.url} ([Errno 111] Connection refused)" in str(error.value)
        assert "coco serve" in str(error.value) and "--url" in str(error.value)


def test_a_url_without_a_scheme_is_refused_with_an_example():
    with pytest.raises(OperateError, match=r"expected http://HOST:PORT \(e.g. http://127.0.0.1:3000\)"):
        DagsterAPI("127.0.0.1:3000")


ZOMBIE_ANSWERS = {
    # What Dagster's webserver answers when the run's code server is gone: the launcher
    # raised, @capture_error made it a PythonError, and the response is HTTP 500.
    "HTTP 500 with a PythonError": (500, {"data": {"terminateRun": {
        "__typename": "PythonError",
        "message": "DagsterUserCodeUnreachableError: Could not reach user code server. gRPC Error code: UNAVAILABLE",
        "stack": []}}}),
    # ... and when the code server answers but no longer runs it (the worker process died).
    "TerminateRunFailure": (200, {"data": {"terminateRun": {
        "__typename": "TerminateRunFailure", "message": f"Unable to terminate run {RUN_ID}"}}}),
    "HTTP 500 without GraphQL": (500, "<html>Internal Server Error</html>"),
}


@pytest.mark.parametrize("answer", list(ZOMBIE_ANSWERS))
def test_kill_marks_a_run_canceled_when_its_worker_does_not_answer(answer):
    marked = {"data": {"terminateRun": {"__typename": "TerminateRunSuccess",
                                        "run": {"runId": RUN_ID, "status": "CANCELED"}}}}
    with ScriptedWebserver({TERMINATE: ZOMBIE_ANSWERS[answer], STATUS: _status("STARTED"),
                            MARK: (200, marked)}) as webserver:
        said = kill(DagsterAPI(webserver.url), RUN_ID)
    assert webserver.operations() == [TERMINATE, STATUS, MARK]
    assert webserver.asked[-1]["variables"] == {"runId": RUN_ID}
    assert said.startswith(f"run {RUN_ID}: canceled: its worker did not answer; marked canceled without "
                           "stopping it (the terminate failed: "), said
    expected = {"HTTP 500 with a PythonError": "Could not reach user code server",
                "TerminateRunFailure": "Unable to terminate run", "HTTP 500 without GraphQL": "answered HTTP 500"}
    assert expected[answer] in said, said


def test_kill_of_a_starting_run_waits_until_it_runs_then_stops_it_the_safe_way(monkeypatch):
    import core4_pipelines.coco.operate as operate

    monkeypatch.setattr(operate, "STARTING_WAIT_SECONDS", 10)
    starting = {"data": {"terminateRun": {
        "__typename": "TerminateRunFailure",
        "message": f"Run {RUN_ID} could not be terminated due to having status STARTING."}}}
    stopped = {"data": {"terminateRun": {"__typename": "TerminateRunSuccess", "run": {"runId": RUN_ID}}}}
    with ScriptedWebserver({
        TERMINATE: [(200, starting), (200, stopped)],
        STATUS: [_status("STARTING"), _status("STARTING"), _status("STARTED"), _status("CANCELING")],
    }) as webserver:
        said = kill(DagsterAPI(webserver.url), RUN_ID)
    assert said == f"run {RUN_ID}: canceling"
    assert MARK not in webserver.operations()


def test_kill_stops_a_live_run_the_safe_way_only():
    stopped = {"data": {"terminateRun": {"__typename": "TerminateRunSuccess", "run": {"runId": RUN_ID}}}}
    with ScriptedWebserver({TERMINATE: (200, stopped), STATUS: _status("CANCELING")}) as webserver:
        said = kill(DagsterAPI(webserver.url), RUN_ID)
    assert said == f"run {RUN_ID}: canceling"
    assert webserver.operations() == [TERMINATE, STATUS]


@pytest.mark.parametrize(
    "terminated, status, words",
    [
        ({"__typename": "TerminateRunFailure",
          "message": f"Run {RUN_ID} could not be terminated due to having status SUCCESS."},
         _status("SUCCESS"), ["was not stopped: it has finished already (SUCCESS)"]),
        ({"__typename": "RunNotFoundError", "runId": RUN_ID},
         (200, {"data": {"pipelineRunOrError": {"__typename": "RunNotFoundError", "message": "not found"}}}),
         ["was not stopped", f"Run Id {RUN_ID} not found (RunNotFoundError)"]),
    ],
)
def test_kill_of_a_finished_or_unknown_run_says_so_and_forces_nothing(terminated, status, words):
    with ScriptedWebserver({TERMINATE: (200, {"data": {"terminateRun": terminated}}), STATUS: status}) as webserver:
        with pytest.raises(OperateError) as error:
            kill(DagsterAPI(webserver.url), RUN_ID)
    assert all(word in str(error.value) for word in words), str(error.value)
    assert MARK not in webserver.operations()


def test_kill_says_when_even_marking_canceled_is_refused():
    refused = {"data": {"terminateRun": {"__typename": "UnauthorizedError", "message": "not allowed"}}}
    with ScriptedWebserver({TERMINATE: ZOMBIE_ANSWERS["TerminateRunFailure"], STATUS: _status("CANCELING"),
                            MARK: (200, refused)}) as webserver:
        with pytest.raises(OperateError) as error:
            kill(DagsterAPI(webserver.url), RUN_ID)
    assert str(error.value) == (f"run {RUN_ID} was not marked canceled either: not allowed; "
                                f"see {webserver.url}/runs/{RUN_ID}")


def test_launch_failures_name_the_job_and_what_dagster_said():
    invalid = {"__typename": "PipelineConfigValidationInvalid", "errors": [
        {"__typename": "FieldNotDefinedConfigError", "message": 'Received unexpected config entry "x" at path '
         'root:ops:fetch:config.', "path": [], "reason": "FIELD_NOT_DEFINED"}]}
    with ScriptedWebserver({SUBMIT: (200, {"data": {"launchPipelineExecution": invalid}})}) as webserver:
        with pytest.raises(OperateError) as error:
            DagsterAPI(webserver.url).launch("shop", "load", {"ops": {"fetch": {"config": {"x": 1}}}}, {"k": "v"})
        (asked,) = webserver.asked
    assert str(error.value) == ('shop.load was not launched: Received unexpected config entry "x" at path '
                                "root:ops:fetch:config. (PipelineConfigValidationInvalid)")
    selector = asked["variables"]["executionParams"]["selector"]
    assert (selector["repositoryLocationName"], selector["repositoryName"], selector["pipelineName"]) == \
        ("shop", "__repository__", "load")
    assert asked["variables"]["executionParams"]["executionMetadata"] == {"tags": [{"key": "k", "value": "v"}]}


def test_status_and_launch_through_dagsters_client():
    launched = {"data": {"launchPipelineExecution": {"__typename": "LaunchRunSuccess", "run": {"runId": RUN_ID}}}}
    with ScriptedWebserver({SUBMIT: (200, launched), STATUS: _status("QUEUED")}) as webserver:
        api = DagsterAPI(webserver.url + "/")
        assert api.launch("shop", "load", {}, {}) == RUN_ID
        assert api.status(RUN_ID) == "QUEUED"
