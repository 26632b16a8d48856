"""`coco pause`, `coco resume`, `coco halt`: a project's sensors and schedules, through GraphQL.

Pausing stops every sensor and schedule of the project in the running instance; Dagster
stores that state in its schedule storage under DAGSTER_HOME, where a stored state wins
over the ``default_status`` in code, so a paused project stays paused across a restart
of `coco serve`. Resuming resets each one to the status its code declares (a schedule
declared ``schedule_status: stopped`` stays stopped). Runs already queued or running are
not touched by a pause; `coco halt --kill` also stops those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core4_pipelines.coco.dagster_api import IN_PROGRESS, DagsterAPI, _problem
from core4_pipelines.coco.errors import OperateError

INSTIGATORS = """
query Instigators {
  workspaceOrError {
    __typename
    ... on Workspace { locationEntries { name loadStatus locationOrLoadError {
      __typename
      ... on RepositoryLocation { repositories { name
        sensors { id name sensorState { status } }
        schedules { id name scheduleState { status } } } }
      ... on PythonError { message } } } }
    ... on PythonError { message }
  }
}
"""

_MUTATION_ERRORS = "... on PythonError { message } ... on UnauthorizedError { message }"

STOP_SENSOR = f"""
mutation StopSensor($id: String) {{
  stopSensor(id: $id) {{
    __typename ... on StopSensorMutationResult {{ instigationState {{ status }} }} {_MUTATION_ERRORS}
  }}
}}
"""

RESET_SENSOR = f"""
mutation ResetSensor($selector: SensorSelector!) {{
  resetSensor(sensorSelector: $selector) {{
    __typename ... on Sensor {{ sensorState {{ status }} }} ... on SensorNotFoundError {{ message }} {_MUTATION_ERRORS}
  }}
}}
"""

STOP_SCHEDULE = f"""
mutation StopSchedule($id: String) {{
  stopRunningSchedule(id: $id) {{
    __typename ... on ScheduleStateResult {{ scheduleState {{ status }} }}
    ... on ScheduleNotFoundError {{ message }} {_MUTATION_ERRORS}
  }}
}}
"""

RESET_SCHEDULE = f"""
mutation ResetSchedule($selector: ScheduleSelector!) {{
  resetSchedule(scheduleSelector: $selector) {{
    __typename ... on ScheduleStateResult {{ scheduleState {{ status }} }}
    ... on ScheduleNotFoundError {{ message }} {_MUTATION_ERRORS}
  }}
}}
"""

DOCUMENTS = ("INSTIGATORS", "STOP_SENSOR", "RESET_SENSOR", "STOP_SCHEDULE", "RESET_SCHEDULE")


@dataclass(frozen=True)
class Instigator:
    project: str
    repository: str
    kind: str  # "sensor" or "schedule"
    name: str
    id: str
    status: str  # RUNNING or STOPPED


def instigators(api: DagsterAPI) -> tuple[dict[str, list[Instigator]], dict[str, str]]:
    """Sensors and schedules per loaded project, and the projects that did not load (with why)."""
    workspace = api.query(INSTIGATORS)["workspaceOrError"]
    if workspace["__typename"] != "Workspace":
        raise OperateError(f"cannot read the workspace of {api.url}: {_problem(workspace)}")
    found: dict[str, list[Instigator]] = {}
    broken: dict[str, str] = {}
    for entry in workspace["locationEntries"]:
        loaded = entry.get("locationOrLoadError") or {}
        if loaded.get("__typename") != "RepositoryLocation":
            lines = (loaded.get("message") or "").strip().splitlines()
            broken[entry["name"]] = lines[-1] if lines else entry.get("loadStatus") or "not loaded"
            continue
        items = found.setdefault(entry["name"], [])
        for repository in loaded["repositories"]:
            for sensor in repository["sensors"]:
                items.append(Instigator(entry["name"], repository["name"], "sensor", sensor["name"],
                                        sensor["id"], sensor["sensorState"]["status"]))
            for schedule in repository["schedules"]:
                items.append(Instigator(entry["name"], repository["name"], "schedule", schedule["name"],
                                        schedule["id"], schedule["scheduleState"]["status"]))
    return found, broken


def _of_project(api: DagsterAPI, project: str) -> list[Instigator]:
    found, broken = instigators(api)
    if project in broken:
        raise OperateError(f"project {project} did not load in {api.url} ({broken[project]}); fix it, then retry")
    if project not in found:
        raise OperateError(f"no project {project!r} in {api.url} (projects: {', '.join(sorted(found)) or 'none'})")
    return found[project]


def _status_of(result: dict, doing: str, state_key: str) -> str:
    if result.get(state_key) is None:
        raise OperateError(f"{doing}: {_problem(result)}")
    return result[state_key]["status"]


def stop(api: DagsterAPI, item: Instigator) -> str:
    doing = f"{item.kind} {item.project}.{item.name} was not stopped"
    if item.kind == "sensor":
        result = api.query(STOP_SENSOR, {"id": item.id})["stopSensor"]
        return _status_of(result, doing, "instigationState")
    result = api.query(STOP_SCHEDULE, {"id": item.id})["stopRunningSchedule"]
    return _status_of(result, doing, "scheduleState")


def reset(api: DagsterAPI, item: Instigator) -> str:
    """Back to the status its code declares."""
    doing = f"{item.kind} {item.project}.{item.name} was not resumed"
    selector = {"repositoryLocationName": item.project, "repositoryName": item.repository}
    if item.kind == "sensor":
        result = api.query(RESET_SENSOR, {"selector": {**selector, "sensorName": item.name}})["resetSensor"]
        return _status_of(result, doing, "sensorState")
    result = api.query(RESET_SCHEDULE, {"selector": {**selector, "scheduleName": item.name}})["resetSchedule"]
    return _status_of(result, doing, "scheduleState")


def pause(api: DagsterAPI, project: str, say: Callable[[str], None] = print) -> int:
    """Stop every running sensor and schedule of ``project``; how many were stopped."""
    items = _of_project(api, project)
    stopped = 0
    for item in items:
        if item.status == "RUNNING":
            stop(api, item)
            stopped += 1
            say(f"{project}: stopped {item.kind} {item.name}")
    say(f"{project}: paused ({stopped} stopped, {len(items) - stopped} were stopped already)")
    return stopped


def resume(api: DagsterAPI, project: str, say: Callable[[str], None] = print) -> int:
    """Every sensor and schedule of ``project`` back to its status in code; how many run."""
    running = 0
    for item in _of_project(api, project):
        status = reset(api, item)
        running += status == "RUNNING"
        say(f"{project}: {item.kind} {item.name} {status.lower()}")
    say(f"{project}: resumed ({running} running)")
    return running


def halt(api: DagsterAPI, kill_runs: bool, say: Callable[[str], None] = print) -> int:
    """Pause every loaded project; with ``kill_runs`` stop every queued and running run too."""
    found, broken = instigators(api)
    for project in sorted(found):
        pause(api, project, say)
    for project, why in sorted(broken.items()):
        say(f"{project}: not loaded, nothing to pause ({why})")
    if not kill_runs:
        return 0
    from core4_pipelines.coco.operate import kill

    for run in api.runs(statuses=IN_PROGRESS, limit=10000):
        try:
            say(kill(api, run["runId"]))
        except OperateError as exc:  # finished meanwhile: nothing left to stop
            say(str(exc))
    return 0


# -- commands -------------------------------------------------------------------------------


def cmd_pause(args) -> int:
    from core4_pipelines.coco.operate import _api

    pause(_api(args), args.project)
    return 0


def cmd_resume(args) -> int:
    from core4_pipelines.coco.operate import _api

    resume(_api(args), args.project)
    return 0


def cmd_halt(args) -> int:
    from core4_pipelines.coco.operate import _api

    return halt(_api(args), args.kill)


def add_commands(sub) -> None:
    """Register pause, resume and halt on the `coco` parser."""
    from core4_pipelines.coco.operate import URL_HELP

    p = sub.add_parser("pause", help="stop a project's sensors and schedules (kept across a restart)")
    p.add_argument("project")
    p.add_argument("--url", help=URL_HELP)
    p.set_defaults(run=cmd_pause)
    p = sub.add_parser("resume", help="a paused project's sensors and schedules back to their status in code")
    p.add_argument("project")
    p.add_argument("--url", help=URL_HELP)
    p.set_defaults(run=cmd_resume)
    p = sub.add_parser("halt", help="pause every project; --kill also stops every queued and running run")
    p.add_argument("--kill", action="store_true", help="also stop every queued and running run")
    p.add_argument("--url", help=URL_HELP)
    p.set_defaults(run=cmd_halt)
