"""What kind of failure ended a run: the machine's (the database, the disk, a dead worker), which
never uses up a batch's attempts, or the content's and the code's, which do.

A core4 op's failure tags its run ``core4/failure=infrastructure`` or ``core4/failure=error``;
a run failed by recovery (its worker gone) or stopped as a zombie is the machine's too, and so
is a failed run no one said why about: Dagster's code server and its run monitoring fail a run
whose worker died without a reason (``dagster/failure_reason``), where a failure inside the run
always has one (a step's, the run's, the job's loading).
"""

from __future__ import annotations

import errno

from core4_pipelines.tags import FAILURE_KIND_TAG, RECOVERED_TAG, STATE_TAG

# Dagster's tag on a failed run, and its reasons that are the machine's: a worker that crashed,
# never started in time, or was restarted.
FAILURE_REASON_TAG = "dagster/failure_reason"
_MACHINE_REASONS = frozenset({"UNEXPECTED_TERMINATION", "START_TIMEOUT", "RUN_WORKER_RESTART"})
INFRASTRUCTURE = "infrastructure"
ERROR = "error"
# The disk is full, gone read-only or failing: nothing a human has to change in the data or code.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ESTALE})
_DISK_TEXTS = ("No space left on device", "Disk quota exceeded", "Read-only file system")


def failure_kind(exc: BaseException) -> str:
    """INFRASTRUCTURE when ``exc`` (or what caused it) is the database out of reach or a disk
    error; ERROR for anything else (a refused operation, a bug, bad settings)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "outage", False):  # MongoError says so (core4_resources.mongo)
            return INFRASTRUCTURE
        if isinstance(current, OSError) and current.errno in _DISK_ERRNOS:
            return INFRASTRUCTURE
        if _is_connection_failure(current) or any(text in str(current) for text in _DISK_TEXTS):
            return INFRASTRUCTURE
        current = current.__cause__ or current.__context__
    return ERROR


def _is_connection_failure(exc: BaseException) -> bool:
    try:
        from pymongo.errors import ConnectionFailure
    except ImportError:  # pragma: no cover - pymongo is a dependency
        return False
    return isinstance(exc, ConnectionFailure)


def is_infrastructure_failure(tags, status: str | None = None) -> bool:
    """Whether a run with these tags (and ``status``, e.g. ``"FAILURE"``) ended by the machine's fault."""
    if (tags.get(FAILURE_KIND_TAG) == INFRASTRUCTURE or tags.get(RECOVERED_TAG)
            or tags.get(STATE_TAG) == "zombie"):
        return True
    reason = tags.get(FAILURE_REASON_TAG)
    if reason in _MACHINE_REASONS:
        return True
    # Failed, and neither a core4 op nor Dagster's run said why: its worker died.
    return status == "FAILURE" and reason is None and FAILURE_KIND_TAG not in tags
