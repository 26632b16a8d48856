"""HTTP(S) downloads into proc, for the ``HttpDownload`` component (or any download job).

Each file is streamed into transfer under a hidden name and becomes visible there only when
its body is complete (a body shorter than its ``Content-Length``, or a chunked body cut off,
is an error). Only when every file of the run is complete are they moved into proc; a run
that fails removes what it fetched, so nothing partial -- no half file, no half set of
files -- ever reaches proc, and a retry (per the job's ``attempts``) fetches the set again.
Header values come from environment variables at run time: they are never in a file.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import posixpath
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from core4_pipelines.errors import PipelineError
from core4_pipelines.tags import SCHEDULED_TIME_TAG
from core4_resources.config.settings import mask_url
from core4_resources.files.folders import FolderResource, safe_move
from core4_resources.files.moves import download_temp_name, open_new_file

CHUNK = 1 << 16


class DownloadError(PipelineError):
    """A file could not be fetched completely; nothing of it reached proc."""


@dataclass(frozen=True)
class HttpSource:
    """What one download run fetches: ``urls`` (templates with ``{date}``), the file name each
    gets (a template with ``{date}``, ``{name}`` -- the URL's last path segment -- and
    ``{index}``), headers as header name -> environment variable, a timeout per request."""

    urls: Sequence[str]
    file_name: str = "{name}"
    headers: Mapping[str, str] | None = None
    timeout: float = 60.0


def render(template: str, *, date: datetime, url: str = "", index: int = 0) -> str:
    """``template`` with ``{date}`` (format it: ``{date:%Y-%m-%d}``), ``{name}`` and ``{index}``."""
    name = posixpath.basename(urllib.parse.urlsplit(url).path) if url else ""
    try:
        return template.format(date=date, name=name, index=index)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise DownloadError(
            f"template {template!r}: {exc!r}; it may use {{date}} (e.g. {{date:%Y-%m-%d}}), {{name}} and {{index}}"
        ) from None


def header_values(headers: Mapping[str, str] | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Header name -> the value of its environment variable; DownloadError naming a missing one."""
    environ = os.environ if environ is None else environ
    values = {}
    for header, variable in (headers or {}).items():
        if variable not in environ:
            raise DownloadError(f"header {header}: the environment variable {variable} is not set")
        values[header] = environ[variable]
    return values


def run_date(tags: Mapping[str, str]) -> datetime:
    """The time a scheduled run was due (UTC), else now: what ``{date}`` stands for."""
    scheduled = tags.get(SCHEDULED_TIME_TAG)
    if scheduled:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(scheduled).astimezone(timezone.utc)
    return datetime.now(timezone.utc)


def fetch_to_transfer(folders: FolderResource, url: str, name: str, headers: Mapping[str, str],
                      timeout: float) -> str:
    """Stream ``url`` into ``<transfer>/<project>/<name>`` (hidden until complete); its path."""
    shown = mask_url(url)  # what messages say: never a password in the URL
    target = folders.make_transfer(name)
    folder, final_name = os.path.split(target)
    partial = os.path.join(folder, download_temp_name(final_name))
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open_new_file(partial) as handle:
            expected = response.headers.get("Content-Length")
            received = 0
            for block in iter(lambda: response.read(CHUNK), b""):
                handle.write(block)
                received += len(block)
            if expected is not None and expected.isdigit() and received != int(expected):
                raise DownloadError(f"{shown}: body cut off: {received} of {expected} bytes")
            handle.flush()
            os.fsync(handle.fileno())
        return safe_move(partial, folder, name=final_name, on_conflict="replace")
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{shown}: HTTP {exc.code} {exc.reason}") from None
    except http.client.IncompleteRead as exc:
        raise DownloadError(f"{shown}: body cut off after {len(exc.partial)} bytes") from None
    except (TimeoutError, socket.timeout):
        raise DownloadError(f"{shown}: no answer within {timeout:g}s") from None
    except urllib.error.URLError as exc:
        reason = "no answer within " + f"{timeout:g}s" if isinstance(exc.reason, TimeoutError) else exc.reason
        raise DownloadError(f"{shown}: {reason}") from None
    except (http.client.HTTPException, OSError) as exc:
        raise DownloadError(f"{shown}: {type(exc).__name__}: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


def fetch_into_proc(folders: FolderResource, source: HttpSource, date: datetime, log=None) -> list[str]:
    """Fetch every URL of ``source`` into transfer; once all are complete, move them into proc.
    Returns their paths in proc. On any failure what this call fetched is removed."""
    headers = header_values(source.headers)
    fetched: list[str] = []
    try:
        for index, template in enumerate(source.urls):
            url = render(template, date=date)
            name = render(source.file_name, date=date, url=url, index=index)
            if not name or name.startswith(".") or "/" in name:
                raise DownloadError(f"file name {name!r} (from {source.file_name!r} for {mask_url(url)}) is not a visible "
                                    f"file name; set file_name")
            fetched.append(fetch_to_transfer(folders, url, name, headers, source.timeout))
            if log is not None:
                log.info(f"fetched {mask_url(url)} -> {fetched[-1]} ({os.path.getsize(fetched[-1])} bytes)")
    except BaseException:
        for path in fetched:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        raise
    return [folders.move_proc(path) for path in fetched]
