"""Errors of the operator tool `coco`: each message says what failed, where, and what to do."""

from __future__ import annotations

from core4_pipelines.errors import PipelineError


class OperateError(PipelineError):
    """An operation on runs failed: the webserver is unreachable or refused it."""


class RunNotStoppedError(OperateError):
    """Dagster did not stop a run that has not finished: its worker is gone or did not answer.

    ``status`` is the run's status after the attempt, ``reason`` what Dagster answered.
    """

    def __init__(self, message: str, run_id: str, status: str, reason: str):
        super().__init__(message)
        self.run_id = run_id
        self.status = status
        self.reason = reason
