"""The running Dagster webserver's GraphQL API, for `coco enqueue`, `runs`, `kill` and `restart`.

Plain HTTP POSTs to ``<url>/graphql`` (stdlib only); every failure becomes an
``OperateError`` saying what went wrong and what to do.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

from core4_pipelines.errors import PipelineError

REPOSITORY = "__repository__"  # the repository name of a code location built from Definitions
IN_PROGRESS = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")

RUN_FIELDS = """
  runId jobName status creationTime startTime endTime parentRunId
  tags { key value }
  repositoryOrigin { repositoryLocationName }
"""

# Only fragments on types the result union can hold are valid GraphQL.
_LAUNCH_ERRORS = """
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

LAUNCH = f"""
mutation Launch($params: ExecutionParams!) {{
  launchRun(executionParams: $params) {{ __typename ... on LaunchRunSuccess {{ run {{ runId }} }} {_LAUNCH_ERRORS} }}
}}
"""

REEXECUTE = f"""
mutation Reexecute($params: ReexecutionParams!) {{
  launchRunReexecution(reexecutionParams: $params) {{
    __typename ... on LaunchRunSuccess {{ run {{ runId }} }} {_LAUNCH_ERRORS}
  }}
}}
"""

TERMINATE = f"""
mutation Terminate($runId: String!) {{
  terminateRun(runId: $runId) {{
    __typename ... on TerminateRunSuccess {{ run {{ runId status }} }} {_TERMINATE_ERRORS}
  }}
}}
"""

RUNS = f"""
query Runs($filter: RunsFilter, $limit: Int) {{
  runsOrError(filter: $filter, limit: $limit) {{
    __typename ... on Runs {{ results {{ {RUN_FIELDS} }} }}
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


class OperateError(PipelineError):
    """An operation on runs failed: the webserver is unreachable or refused it."""


def _problem(result: Mapping[str, Any]) -> str:
    if result.get("errors"):
        return "; ".join(error.get("message", "?") for error in result["errors"])
    if result.get("message"):
        return result["message"]
    if result.get("invalidStepKey"):
        return f"invalid step {result['invalidStepKey']}"
    return result.get("__typename", "unknown error")


class DagsterAPI:
    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, text: str, variables: Mapping[str, Any] | None = None) -> dict:
        body = json.dumps({"query": text, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise OperateError(f"the Dagster webserver at {self.url} answered HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OperateError(
                f"no Dagster webserver at {self.url} ({reason}): start it with `coco serve`, "
                f"pass --url, or run the job in-process with --local"
            ) from None
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

    def launch(self, project: str, job: str, run_config: Mapping, tags: Mapping[str, str]) -> str:
        params = {
            "selector": {"jobName": job, "repositoryName": REPOSITORY, "repositoryLocationName": project},
            "runConfigData": dict(run_config),
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        result = self.query(LAUNCH, {"params": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise OperateError(f"{project}.{job} was not launched: {_problem(result)}")
        return result["run"]["runId"]

    def reexecute(self, run_id: str, strategy: str = "ALL_STEPS") -> str:
        result = self.query(REEXECUTE, {"params": {"parentRunId": run_id, "strategy": strategy}})
        result = result["launchRunReexecution"]
        if result["__typename"] != "LaunchRunSuccess":
            raise OperateError(f"run {run_id} was not re-executed: {_problem(result)}")
        return result["run"]["runId"]

    def terminate(self, run_id: str) -> str:
        result = self.query(TERMINATE, {"runId": run_id})["terminateRun"]
        if result["__typename"] != "TerminateRunSuccess":
            raise OperateError(f"run {run_id} was not stopped: {_problem(result)}")
        return result["run"]["status"]

    def runs(
        self, *, statuses: Iterable[str] = (), tags: Mapping[str, str] | None = None, limit: int = 50
    ) -> list[dict]:
        run_filter: dict[str, Any] = {}
        if statuses:
            run_filter["statuses"] = list(statuses)
        if tags:
            run_filter["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        result = self.query(RUNS, {"filter": run_filter, "limit": limit})["runsOrError"]
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
