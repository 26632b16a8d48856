"""The bad-row policy of an import: ``bad_rows: fail | skip | divert`` and ``max_bad_rows``.

A bad row is one record a file cannot give: a reader's row that does not fit (a reader
yields a :class:`BadRow` for it, e.g. a CSV row with more or fewer fields than the header),
a record the record model refuses, a record without the keys of an upsert. With ``fail``
(the default) the file goes to the error folder whole, as it always did. With ``skip`` the
good rows are imported and the bad ones counted -- in the batch's materialization, the file
table and the ``no_bad_rows`` check; ``divert`` also writes each bad row, its place and
reason to ``<error>/<file>.rejected.jsonl`` beside a reason file. A file with more bad rows
than ``max_bad_rows`` (a count, or a fraction of its rows below 1) still goes to error
whole. Nothing read is dropped without a count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from core4_pipelines.errors import RecordError

BAD_ROWS_ACTIONS = ("fail", "skip", "divert")
REJECTED_SUFFIX = ".rejected.jsonl"
MAX_REASONS_KEPT = 5


@dataclass(frozen=True)
class BadRow:
    """What a reader yields for a row that cannot be a record: where (``line 7``), why, and the
    row as read (its fields, or its text) for the diverted file."""

    where: str
    reason: str
    data: Any = None


class BadRecord(RecordError):
    """A record refused for itself (not the file): a bad row under the policy."""

    def __init__(self, shown: str, where: str, reason: str):
        super().__init__(f"{shown}: {where}: {reason}")
        self.where, self.reason = where, reason


def check_bad_rows(action: str, max_bad_rows: float | None, where: str) -> None:
    if action not in BAD_ROWS_ACTIONS:
        raise ValueError(f"{where}: bad_rows must be one of {', '.join(BAD_ROWS_ACTIONS)}, got {action!r}")
    if max_bad_rows is None:
        return
    if isinstance(max_bad_rows, bool) or not isinstance(max_bad_rows, (int, float)) or max_bad_rows < 0 or (
            max_bad_rows >= 1 and max_bad_rows != int(max_bad_rows)):
        raise ValueError(f"{where}: max_bad_rows must be a count (0, 1, 2 ...) or a fraction of a file's rows "
                         f"below 1 (0.1 for 10%), got {max_bad_rows!r}")
    if action == "fail":
        raise ValueError(f"{where}: max_bad_rows is for bad_rows skip or divert; with fail one bad row rejects the file")


@dataclass
class BadRowPolicy:
    action: str = "fail"
    max_bad_rows: float | None = None

    def for_file(self, shown: str, divert_to: str | None) -> FileBadRows:
        """The tally of one file; ``divert_to`` the path its diverted rows are written to."""
        return FileBadRows(self, shown, divert_to if self.action == "divert" else None)


@dataclass
class FileBadRows:
    policy: BadRowPolicy
    shown: str
    divert_path: str | None
    count: int = 0
    rows: int = 0  # every row read, good and bad
    reasons: list[str] = field(default_factory=list)
    _handle: BinaryIO | None = None

    def refuse(self, where: str, reason: str, data: Any = None) -> None:
        """One bad row: RecordError with ``fail``, else counted (and with ``divert`` written)."""
        if self.policy.action == "fail":
            raise RecordError(f"{self.shown}: {where}: {reason}")
        self.count += 1
        if len(self.reasons) < MAX_REASONS_KEPT:
            self.reasons.append(f"{where}: {reason}")
        if self.divert_path is not None:
            if self._handle is None:
                self._handle = open(self.divert_path, "wb")  # noqa: SIM115 - closed by close()
            line = {"file": self.shown, "where": where, "reason": reason, "row": _jsonable(data)}
            self._handle.write(json.dumps(line, ensure_ascii=False, default=str).encode() + b"\n")

    def bad_row(self, item: BadRow) -> None:
        self.refuse(item.where, item.reason, item.data)

    def check_limit(self) -> None:
        """RecordError when the file has more bad rows than ``max_bad_rows`` allows: rejected whole."""
        limit = self.policy.max_bad_rows
        if limit is None or not self.count:
            return
        allowed = limit if limit >= 1 or limit == 0 else limit * self.rows
        if self.count > allowed:
            shown_limit = f"{limit:g} of its rows" if 0 < limit < 1 else f"{int(limit)}"
            raise RecordError(f"{self.shown}: {self.count} of {self.rows} rows are bad, more than max_bad_rows "
                              f"({shown_limit}); the file is rejected whole. First: " + "; ".join(self.reasons))

    def close(self) -> str | None:
        """The diverted rows' file, complete (None: nothing diverted)."""
        if self._handle is None:
            return None
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        self._handle = None
        return self.divert_path

    def discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self.divert_path is not None:
            try:
                os.unlink(self.divert_path)
            except FileNotFoundError:
                pass

    def summary(self) -> str:
        return f"{self.count} bad rows {'diverted' if self.divert_path else 'skipped'}: " + "; ".join(self.reasons) + (
            " ..." if self.count > len(self.reasons) else "")


def _jsonable(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {str(k): v for k, v in data.items()}
    return data
