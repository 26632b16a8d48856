"""Where the library reaches into Dagster's private API, each use with its reason.

Dagster's internals change between minor releases: a use belongs here only where its
public API has no way to do the thing, so that an upgrade has one file to check.
"""

from __future__ import annotations


def failure_without_stack(message: str, kind: str = "RejectedFiles") -> Exception:
    """An exception that fails the step with ``message`` alone: no stack trace in the run page.

    For a data error (a file's content refused) the stack is the framework's and ours, of no
    use to the operator, who needs the file, the line and what to do. ``dg.Failure`` always
    carries the stack of where it was raised (the UI shows any non-empty stack), and there is
    no public way to leave it out. Dagster serializes a ``DagsterUserCodeProcessError`` with a
    single error info as that info itself (``serializable_error_info_from_exc_info``), so an
    info with an empty stack is shown as the message only. Being a ``DagsterError``, it also
    passes the op's retry policy by, as ``Failure(allow_retries=False)`` does: a bad file
    does not get better by retrying.
    """
    from dagster._core.errors import DagsterUserCodeProcessError
    from dagster._utils.error import SerializableErrorInfo

    info = SerializableErrorInfo(message=message if message.endswith("\n") else message + "\n", stack=[],
                                 cls_name=kind)
    return DagsterUserCodeProcessError(message, user_code_process_error_infos=[info])
