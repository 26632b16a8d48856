"""`coco`: the command line of core4 pipelines (the operator tool; projects never import it)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from core4_resources.errors import Core4Error

HOME_ENV = "CORE4_OPTION_folder__home"
ROOT_ENV = "CORE4_OPTION_folder__root"


def _settings(project: str | None = None):
    from core4_resources.config.settings import load_config

    return load_config(project)


def _home(settings) -> str:
    from core4_pipelines.errors import PipelineError

    if not settings.folder.home:
        raise PipelineError("folder.home is not set: pass --home DIR or set folder.home in your config")
    return settings.folder.home


def cmd_config(args) -> int:
    settings = _settings(args.project)
    flat = settings.flat(masked=True)
    width = max(len(key) for key in flat)
    for key in sorted(flat):
        value = json.dumps(flat[key]) if not isinstance(flat[key], str) else flat[key]
        print(f"{key:<{width}}  {value}    # {settings.sources.get(key, '?')}")
    if not ((settings.project and settings.project.mongo_url) or settings.mongo_url):
        from core4_resources.mongo.embedded.root import embedded_status

        url, pid = embedded_status(settings.folder.root, settings.embedded.port)
        state = f"running, pid {pid}" if pid else "not running: the first process that needs it starts it"
        print(f"{'embedded.url':<{width}}  {url or '(a free port, picked at its first start)'}    "
              f"# no mongo_url: the embedded server of folder.root, {state}")
    return 0


def cmd_folders(args) -> int:
    from core4_resources.files.folders import FolderResource

    settings = _settings(args.project)
    folders = FolderResource.from_settings(settings, args.project or "PROJECT")
    rows = {
        "transfer": folders.transfer_folder(),
        "proc": folders.proc_folder(),
        "archive": folders.archive_folder(),
        "error": folders.error_folder(),
        "temp": settings.folder.temp,
        "home": settings.folder.home or "(unset)",
    }
    for name, path in rows.items():
        print(f"{name:<9} {path}")
    return 0


def _project_rows(settings, only: str | None = None):
    from core4_pipelines.coco.discovery import discover_projects
    from core4_pipelines.coco.probe import inspect_in_subprocess

    projects, skipped = discover_projects(_home(settings))
    if only:
        projects = [p for p in projects if p.name == only]
        if not projects:
            raise Core4Error(f"no project {only!r} in {settings.folder.home}")
    for project in projects:
        python = project.venv_python or sys.executable
        yield project, inspect_in_subprocess(python, project.folder, project.name)
    for reason in skipped if not only else ():
        print(f"skipped: {reason}")


def cmd_projects(args) -> int:
    settings = _settings()
    failed = 0
    for project, info in _project_rows(settings):
        venv = ".venv" if project.venv_python else "-"
        state = "loads" if info["ok"] else f"ERROR {info['error']}"
        failed += 0 if info["ok"] else 1
        print(f"{project.name:<20} {project.version or '?':<10} {venv:<6} {state}")
        for problem in project.problems:
            print(f"  warning: {problem}")
    return 1 if failed else 0


def cmd_jobs(args) -> int:
    settings = _settings()
    failed = 0
    for project, info in _project_rows(settings, args.project):
        print(project.name)
        if not info["ok"]:
            failed += 1
            print(f"  ERROR {info['error']}")
            continue
        for kind in ("jobs", "sensors", "schedules"):
            for item in info[kind]:
                print(f"  {kind[:-1]:<9} {item}")
    return 1 if failed else 0


def cmd_workspace(args) -> int:
    from core4_pipelines.coco.workspace import write_workspace

    settings = _settings()
    projects, skipped = write_workspace(_home(settings), args.output, relative=args.relative)
    for reason in skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    print(f"wrote {args.output}: {len(projects)} code locations ({', '.join(p.name for p in projects)})")
    return 0


def cmd_init(args) -> int:
    from core4_pipelines.coco.scaffold import check_project_name, configured_home, init_project, make_home

    check_project_name(args.name)  # before the configuration: a bad name is the first thing to say
    make_home(configured_home())  # created first: the configuration accepts only an existing folder.home
    home = _home(_settings())
    init_project(args.name, home, venv=args.venv, source=args.source)  # says what it created, and what git did
    return 0


def cmd_serve(args) -> int:
    from core4_pipelines.coco.serve import serve

    settings = _settings()
    return serve(settings, args.host or settings.dagster.host, args.port or settings.dagster.port,
                 verbose=args.verbose)


def _print_drain(result) -> int:
    from core4_pipelines.coco.drain import summary_lines

    for line in summary_lines(result):
        print(line)
    return 0 if result.ok else 1


def cmd_drain(args) -> int:
    from core4_pipelines.coco.drain import drain

    return _print_drain(drain(_settings(), args.project, timeout=args.timeout, verbose=args.verbose))


def cmd_demo(args) -> int:
    """demo.download_samples run in this process, then `coco drain demo`, on one MongoDB."""
    from core4_pipelines.coco.drain import drain_loaded, loaded_project, run_job

    with loaded_project(_settings(), "demo") as loaded:
        run = run_job(loaded, "download_samples", verbose=args.verbose)
        print(f"demo.download_samples: run {run.run_id} {'succeeded' if run.success else 'failed'} (in-process)")
        if not run.success:
            for line in run.failure.splitlines():
                print(f"  {line}")
            return 1
        result = drain_loaded(loaded, timeout=args.timeout, verbose=args.verbose)
    return _print_drain(result)


def _add_folder_options(parser: argparse.ArgumentParser, default=None) -> None:
    parser.add_argument("--home", default=default,
                        help="folder.home: the projects' folder (sets CORE4_OPTION_folder__home)")
    parser.add_argument("--root", default=default, help="folder.root (sets CORE4_OPTION_folder__root)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coco", description="core4 pipelines on Dagster")
    _add_folder_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("config", help="print the effective settings and where each came from")
    p.add_argument("--project", help="include this project's yaml and section")
    p.set_defaults(run=cmd_config)
    p = sub.add_parser("folders", help="print the resolved folders")
    p.add_argument("project", nargs="?")
    p.set_defaults(run=cmd_folders)
    p = sub.add_parser("projects", help="list the projects in folder.home: version, venv, loads or the error")
    p.set_defaults(run=cmd_projects)
    p = sub.add_parser("jobs", help="list each project's jobs, sensors and schedules")
    p.add_argument("project", nargs="?")
    p.set_defaults(run=cmd_jobs)
    p = sub.add_parser("workspace", help="write workspace.yaml: one code location per project")
    p.add_argument("-o", "--output", default="workspace.yaml")
    p.add_argument("--relative", action="store_true", help="write paths relative to the workspace file")
    p.set_defaults(run=cmd_workspace)
    p = sub.add_parser("init", help="create a new project (and folder.home when missing); a git "
                                     "repository with a first commit when git is there")
    p.add_argument("name")
    p.add_argument("--venv", action="store_true", help="also create .venv with the framework and the project")
    p.add_argument("--source", choices=("http", "sftp"), default="http",
                   help="the download below the import: http (commented out) or sftp (loads as it is; fill in "
                        "host, user, known_hosts and remote_dir)")
    p.set_defaults(run=cmd_init)
    p = sub.add_parser("serve", help="the Dagster UI and daemon over all projects (embedded MongoDB if no mongo_url)")
    p.add_argument("--host", help="bind address (default dagster.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default dagster.port)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="all of dagster dev's output: every sensor tick, every run's DEBUG events")
    p.set_defaults(run=cmd_serve)
    timeout_help = "seconds to wait for files still being written or batches to retry (default 300)"
    verbose_help = "also Dagster's log of each run: its events, a failure's stack trace"
    p = sub.add_parser("drain", help="tick a project's proc sensors and import every batch in this process until "
                                     "proc is empty; print a summary per job and why each file in error is there")
    p.add_argument("project")
    p.add_argument("--timeout", type=float, default=300.0, help=timeout_help)
    p.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    p.set_defaults(run=cmd_drain)
    p = sub.add_parser("demo", help="the demo once, headless: run demo.download_samples in this process, "
                                    "then drain demo")
    p.add_argument("--timeout", type=float, default=300.0, help=timeout_help)
    p.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    p.set_defaults(run=cmd_demo)
    # Commands that live beside their implementation: operations on runs, and the clean-up sweep.
    from core4_pipelines.coco import alerts, clean, control, files, info, operate, retry, worker

    operate.add_commands(sub)
    control.add_commands(sub)
    info.add_commands(sub)
    clean.add_commands(sub)
    retry.add_commands(sub)
    files.add_commands(sub)
    alerts.add_commands(sub)
    worker.add_commands(sub)
    # --home and --root work before the verb and after it (`coco serve --home projects`): a
    # user told to pass them should not have to know where argparse wants them. SUPPRESS keeps a
    # verb's unset option from overwriting the value given before the verb.
    for verb in sub.choices.values():
        _add_folder_options(verb, default=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Exported, so code locations and run workers started from here see the same folders.
    if args.home:
        os.environ[HOME_ENV] = os.path.abspath(args.home)
    if args.root:
        os.environ[ROOT_ENV] = os.path.abspath(args.root)
    try:
        return args.run(args)
    except Core4Error as exc:
        print(f"coco {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
