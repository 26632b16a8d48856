"""Where runs execute: this machine (Dagster's default run launcher), or Celery workers on several
(``dagster.engine: celery``; Dagster's own Celery run launcher, see docs/scale-out.md)."""

# The Celery broker's URL (it may hold a password), passed to Dagster's processes and the
# workers in this environment variable, never written into a file.
BROKER_URL_ENV = "CORE4_CELERY_BROKER_URL"
# The Celery queue runs go to unless a run's dagster-celery/queue tag names another.
DEFAULT_QUEUE = "dagster"


def engine_problems(settings) -> list[str]:
    """What the configuration lacks for its ``dagster.engine`` (none for ``local``)."""
    dagster = settings.dagster
    if dagster.engine != "celery":
        return []
    problems = []
    if not dagster.broker_url:
        problems.append("dagster.broker_url is not set: the Celery broker the runs go through, e.g. "
                        "redis://host:6379/0")
    if not dagster.postgres_url:
        problems.append("dagster.postgres_url is not set: workers on other machines share the run and event "
                        "storage, which SQLite under DAGSTER_HOME cannot be")
    if not settings.mongo_url:
        problems.append("mongo_url is not set: the embedded MongoDB is for one machine; workers elsewhere need "
                        "a server they can all reach")
    return problems


def check_engine(settings, error=RuntimeError) -> None:
    problems = engine_problems(settings)
    if problems:
        raise error(f"dagster.engine is celery, but {'; '.join(problems)} (docs/scale-out.md)")
