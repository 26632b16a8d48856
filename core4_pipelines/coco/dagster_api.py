"""The running Dagster webserver's GraphQL API, for `coco enqueue`, `runs`, `kill` and `restart`.

Launching a job, a run's status and terminating a run go through Dagster's own client,
``dagster_graphql.DagsterGraphQLClient``, imported on first use: it imports Dagster,
which `coco`'s own process does not load otherwise (tests/test_layers.py). What that
client lacks is hand-written GraphQL below, posted with the standard library (so
`coco runs` and `coco restart` do not load Dagster either) and validated against this
Dagster's schema by tests/test_operate.py: a job's ops and their config fields, run
listing, a run's details, re-execution, and terminating with the policy
MARK_AS_CANCELED_IMMEDIATELY (`coco kill` of a run whose worker is gone).

Every failure becomes an ``OperateError`` saying what failed, where, and what to do.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from core4_pipelines.coco.errors import OperateError, RunNotStoppedError
from core4_pipelines.tags import FINISHED_STATUSES, IN_PROGRESS_STATUSES

REPOSITORY = "__repository__"  # the repository name of a code location built from Definitions
IN_PROGRESS = IN_PROGRESS_STATUSES
FINISHED = FINISHED_STATUSES

RUN_FIELDS = """
  runId jobName status creationTime startTime endTime parentRunId
  tags { key value }
  repositoryOrigin { repositoryLocationName }
"""

# Only fragments on types the result union can hold are valid GraphQL.
_REEXECUTE_ERRORS = """
  ... on Error { message }
  ... on RunConfigValidationInvalid { errors { message } }
  ... on InvalidStepError { invalidStepKey }
  ... on InvalidOutputError { stepKey invalidOutputName }
"""
_TERMINATE_ERRORS = """
  ... on Error { message }
  ... on TerminateRunFailure { message }
"""

JOB_OPS = """
query JobOps($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { solidHandles { handleID solid { name definition {
      ... on SolidDefinition { configField { configType { ... on CompositeConfigType { fields { name } } } } }
    } } } }
    ... on PipelineNotFoundError { message }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}
"""

REEXECUTE = f"""
mutation Reexecute($params: ReexecutionParams!) {{
  launchRunReexecution(reexecutionParams: $params) {{
    __typename ... on LaunchRunSuccess {{ run {{ runId }} }} {_REEXECUTE_ERRORS}
  }}
}}
"""

# Dagster's client terminates with the default policy SAFE_TERMINATE only.
MARK_CANCELED = f"""
mutation MarkCanceled($runId: String!) {{
  terminateRun(runId: $runId, terminatePolicy: MARK_AS_CANCELED_IMMEDIATELY) {{
    __typename ... on TerminateRunSuccess {{ run {{ runId status }} }} {_TERMINATE_ERRORS}
  }}
}}
"""

# $withFailures: each run's failure event too (`coco runs` shows its first line). It loads every
# event of every listed run (some 8 ms a run), so only on request, not for the scans of
# `coco kill` or `coco restart` over up to thousands of runs.
RUNS = f"""
query Runs($filter: RunsFilter, $limit: Int, $withFailures: Boolean = false) {{
  runsOrError(filter: $filter, limit: $limit) {{
    __typename ... on Runs {{ results {{ {RUN_FIELDS}
      eventConnection @include(if: $withFailures) {{
        events {{ __typename
          ... on RunFailureEvent {{ message error {{ message causes {{ message }} }} }}
          ... on ExecutionStepFailureEvent {{ message error {{ message causes {{ message }} }} }} }}
      }}
    }} }}
    ... on InvalidPipelineRunsFilterError {{ message }} ... on PythonError {{ message }}
  }}
}}
"""

RUN = f"""
query Run($runId: ID!) {{
  runOrError(runId: $runId) {{
    __typename ... on Run {{ {RUN_FIELDS} }} ... on RunNotFoundError {{ message }} ... on PythonError {{ message }}
  }}
}}
"""


def _problem(result: Mapping[str, Any]) -> str:
    if result.get("errors"):
        return "; ".join(error.get("message", "?") for error in result["errors"])
    if result.get("message"):
        return result["message"]
    if result.get("invalidStepKey"):
        return f"invalid step {result['invalidStepKey']}"
    return result.get("__typename", "unknown error")


def _in_chain(exc: BaseException, kinds) -> BaseException | None:
    """The first exception of type ``kinds`` among ``exc`` and its causes."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _client_problem(exc: BaseException) -> str:
    """What Dagster answered, from a DagsterGraphQLClientError raised on a GraphQL result
    (its args: the result's type name, then a message, a step key or a list of errors)."""
    name, detail = (list(exc.args) + [None, None])[:2]
    body = getattr(exc, "body", None)
    if body is not None and hasattr(body, "invalid_output_name"):
        detail = f"step {body.step_key} has no output {body.invalid_output_name!r}"
    elif isinstance(detail, list):
        detail = "; ".join(e.get("message", "?") if isinstance(e, Mapping) else str(e) for e in detail)
    elif name == "InvalidStepError":
        detail = f"invalid step {detail}"
    detail = str(detail).strip() if detail is not None else ""
    return f"{detail} ({name})" if detail else str(name or "unknown error")


class DagsterAPI:
    """One Dagster webserver at ``url``; every method raises OperateError on failure."""

    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise OperateError(f"--url {url!r}: expected http://HOST:PORT (e.g. http://127.0.0.1:3000)")
        self._parts = parts
        self._client = None

    def _unreachable(self, reason: object) -> OperateError:
        return OperateError(
            f"no Dagster webserver at {self.url} ({reason}): start it with `coco serve`, "
            f"pass --url, or run the job in-process with --local"
        )

    # -- Dagster's own client: launch, status, terminate ------------------------------------

    def client(self):
        """Dagster's ``DagsterGraphQLClient`` for this webserver (Dagster is imported here)."""
        if self._client is None:
            from dagster_graphql import DagsterGraphQLClient

            self._client = DagsterGraphQLClient(
                self._parts.netloc,  # host:port; the client adds no port of its own then
                use_https=self._parts.scheme == "https",
                timeout=max(1, round(self.timeout)),
                path_prefix=self._parts.path.rstrip("/"),
            )
        return self._client

    def _call(self, doing: str, call: Callable[[Any], Any]) -> Any:
        """``call(client)``; a DagsterGraphQLClientError becomes an OperateError saying ``doing``."""
        from dagster_graphql import DagsterGraphQLClientError

        client = self.client()
        try:
            with warnings.catch_warnings():
                # dagster_graphql calls gql in a way gql deprecates; not ours to fix, not the user's to see.
                warnings.filterwarnings("ignore", "Using variable_values and operation_name", DeprecationWarning)
                return call(client)
        except DagsterGraphQLClientError as exc:
            raise self._client_failure(doing, exc) from None

    def _client_failure(self, doing: str, exc: BaseException) -> OperateError:
        import requests
        from gql.transport.exceptions import TransportProtocolError, TransportQueryError, TransportServerError

        if _in_chain(exc, requests.exceptions.Timeout) is not None:
            return OperateError(
                f"{doing}: the Dagster webserver at {self.url} did not answer within {self.timeout:g} s "
                f"(it may be busy loading code locations); try again in a moment"
            )
        refused = _in_chain(exc, requests.exceptions.ConnectionError)
        if refused is not None:
            found = re.search(r"\[Errno -?\d+\] [^'\")]+", str(refused))
            return self._unreachable(found.group(0) if found else "no connection")
        server = _in_chain(exc, TransportServerError)
        if server is not None:
            return OperateError(f"{doing}: the Dagster webserver at {self.url} answered HTTP {server.code}: "
                                f"{str(server)[:300]}")
        query = _in_chain(exc, TransportQueryError)
        if query is not None:
            messages = [e.get("message", "?") for e in query.errors or () if isinstance(e, Mapping)]
            return OperateError(f"{doing}: GraphQL error from {self.url}: {'; '.join(messages) or query}")
        protocol = _in_chain(exc, TransportProtocolError)
        if protocol is not None:
            return OperateError(f"{doing}: {self.url} did not answer like a Dagster webserver: {str(protocol)[:300]}; "
                                f"check --url")
        if exc.__cause__ is not None:  # anything else the client caught on its way
            return OperateError(f"{doing}: {type(exc.__cause__).__name__}: {exc.__cause__} (at {self.url})")
        return OperateError(f"{doing}: {_client_problem(exc)}")

    def launch(self, project: str, job: str, run_config: Mapping, tags: Mapping[str, str]) -> str:
        """Launch ``project.job``; the new run's id."""
        return self._call(
            f"{project}.{job} was not launched",
            lambda client: client.submit_job_execution(
                job, repository_location_name=project, repository_name=REPOSITORY,
                run_config=dict(run_config), tags=dict(tags),
            ),
        )

    def status(self, run_id: str) -> str:
        """The run's status: QUEUED, STARTED, ..., SUCCESS, FAILURE, CANCELING, CANCELED."""
        return self._call(f"no status of run {run_id}", lambda client: client.get_run_status(run_id)).value

    def terminate(self, run_id: str) -> str:
        """Stop the run (Dagster's SAFE_TERMINATE); its status afterwards (CANCELING or CANCELED).

        When Dagster does not stop a run that has not finished -- its worker is gone or does
        not answer -- RunNotStoppedError; :meth:`mark_canceled` is what is left to do.
        """
        doing = f"run {run_id} was not stopped"
        try:
            self._call(doing, lambda client: client.terminate_run(run_id))
        except OperateError as failure:
            try:
                status = self.status(run_id)
            except OperateError:
                raise failure from None  # no webserver, no such run: the first answer says it
            if status in FINISHED:
                raise OperateError(f"{doing}: it has finished already ({status})") from None
            reason = str(failure).removeprefix(f"{doing}: ")
            raise RunNotStoppedError(f"{failure} (the run is {status})", run_id, status, reason) from None
        return self.status(run_id)

    def mark_canceled(self, run_id: str) -> str:
        """Mark the run canceled without waiting for its worker (MARK_AS_CANCELED_IMMEDIATELY).

        Dagster's client does not offer the policy; the run's status afterwards."""
        result = self.query(MARK_CANCELED, {"runId": run_id})["terminateRun"]
        if result["__typename"] != "TerminateRunSuccess":
            raise OperateError(f"run {run_id} was not marked canceled either: {_problem(result)}; "
                               f"see {self.url}/runs/{run_id}")
        return result["run"]["status"]

    # -- hand-written GraphQL: what Dagster's client lacks -----------------------------------

    def query(self, text: str, variables: Mapping[str, Any] | None = None) -> dict:
        """The ``data`` of a GraphQL document posted to the webserver."""
        body = json.dumps({"query": text, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:  # Dagster answers 500 with a typed result (a PythonError) when a resolver failed
                answer = json.loads(text)
            except ValueError:
                answer = None
            if not isinstance(answer, dict) or not answer.get("data"):
                raise OperateError(f"the Dagster webserver at {self.url} answered HTTP {exc.code}: {text[:300]}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._unreachable(getattr(exc, "reason", exc)) from None
        if answer.get("errors"):
            raise OperateError(f"GraphQL error from {self.url}: " + "; ".join(e.get("message", "?") for e in answer["errors"]))
        return answer["data"]

    def job_op_fields(self, project: str, job: str) -> dict[str, list[str]]:
        """Each top-level op of the job and the fields of its config."""
        selector = {"pipelineName": job, "repositoryName": REPOSITORY, "repositoryLocationName": project}
        result = self.query(JOB_OPS, {"selector": selector})["pipelineOrError"]
        if result["__typename"] != "Pipeline":
            raise OperateError(f"no job {project}.{job} on {self.url}: {_problem(result)}")
        fields = {}
        for handle in result["solidHandles"]:
            if "." in handle["handleID"]:
                continue  # ops inside graphs take their config by full path
            config = (handle["solid"]["definition"].get("configField") or {}).get("configType") or {}
            fields[handle["solid"]["name"]] = [f["name"] for f in config.get("fields", [])]
        return fields

    def reexecute(self, run_id: str, strategy: str = "ALL_STEPS") -> str:
        result = self.query(REEXECUTE, {"params": {"parentRunId": run_id, "strategy": strategy}})
        result = result["launchRunReexecution"]
        if result["__typename"] != "LaunchRunSuccess":
            raise OperateError(f"run {run_id} was not re-executed: {_problem(result)}")
        return result["run"]["runId"]

    def runs(
        self, *, statuses: Iterable[str] = (), tags: Mapping[str, str] | None = None, limit: int = 50,
        failures: bool = False, run_ids: Iterable[str] = (),
    ) -> list[dict]:
        """Runs, newest first; with ``failures`` each with its failure events (``eventConnection``:
        slower, for a listing a person reads, not for scans)."""
        run_filter: dict[str, Any] = {}
        if statuses:
            run_filter["statuses"] = list(statuses)
        if run_ids:
            run_filter["runIds"] = list(run_ids)
        if tags:
            run_filter["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        result = self.query(RUNS, {"filter": run_filter, "limit": limit, "withFailures": failures})["runsOrError"]
        if result["__typename"] != "Runs":
            raise OperateError(f"cannot list runs: {_problem(result)}")
        return result["results"]

    def run(self, run_id: str) -> dict:
        result = self.query(RUN, {"runId": run_id})["runOrError"]
        if result["__typename"] != "Run":
            raise OperateError(f"no run {run_id}: {_problem(result)}")
        return result

    def resolve_run_id(self, prefix: str, scan: int = 1000) -> str:
        """A full run id from an id or a unique prefix of one (tables show 8 characters)."""
        if len(prefix) == 36:
            return prefix
        matches = [r["runId"] for r in self.runs(limit=scan) if r["runId"].startswith(prefix)]
        if len(matches) != 1:
            found = "no run" if not matches else f"{len(matches)} runs"
            raise OperateError(f"{found} with an id starting with {prefix!r} among the last {scan} runs")
        return matches[0]
