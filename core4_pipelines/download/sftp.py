"""sFTP downloads into proc, for the ``SftpDownload`` component (or any download job).

One run connects once (asyncssh), lists ``remote_dir``, and fetches the files matching
``pattern`` that it has not fetched before:

- **The server is who it says**: its host key must be in the ``known_hosts`` file given, or
  have the ``host_key`` fingerprint given (``SHA256:...``); an unknown or changed key is
  refused with the fingerprint it showed. Nothing is ever added to a known_hosts file.
- **Never a half file**: each file is fetched into transfer under a hidden temp name and
  checked against the size the listing gave; only when every file of the run is complete are
  they moved into proc. A file whose size or mtime changes between two listings
  ``min_age_seconds`` apart is still being uploaded: it is left for a later run.
- **Never one twice**: what was fetched (remote path, size, mtime) is kept in the project's
  ``sys.downloads`` collection; a file listed again is not fetched again -- unless its size or
  mtime changed, which the log says. ``after: delete`` or ``move:<dir>`` happens only once the
  file is in proc and recorded; a run killed in between does it on the next run.
- Secrets come from environment variables at run time (``password``, ``private_key``) or a key
  file (``private_key_file``): never from a YAML file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import posixpath
import re
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
from pymongo import UpdateOne
from pymongo.errors import PyMongoError

from core4_pipelines.download.http import DownloadError
from core4_resources.files.folders import FolderResource, safe_move
from core4_resources.files.names import download_temp_name
from core4_resources.mongo.resource import MongoResource

DOWNLOADS_COLLECTION = "sys.downloads"
AFTER_ACTIONS = ("keep", "delete", "move:<remote folder>")


@dataclass(frozen=True)
class SftpSource:
    """Where one sFTP download fetches from, and how it proves who it talks to.

    ``password`` and ``private_key`` name environment variables (their values are the secret);
    ``private_key_file`` is a path. ``known_hosts`` is a path, ``host_key`` a fingerprint
    (``SHA256:...``, as ``ssh-keygen -lf`` prints it): one of the two is required.
    ``after``: keep | delete | move:<remote folder>. ``max_files``/``max_bytes`` bound a run.
    """

    host: str
    user: str
    remote_dir: str
    port: int = 22
    password: str | None = None
    private_key: str | None = None
    private_key_file: str | None = None
    known_hosts: str | None = None
    host_key: str | None = None
    pattern: str | None = None
    recursive: bool = False
    after: str = "keep"
    min_age_seconds: float = 5.0
    max_files: int = 1000
    max_bytes: int = 10 << 30
    timeout: float = 30.0

    @property
    def where(self) -> str:
        return f"sftp://{self.user}@{self.host}:{self.port}"


def check_source(source: SftpSource) -> None:
    """ValueError naming the setting that cannot work."""
    if not (source.known_hosts or source.host_key):
        raise ValueError("known_hosts or host_key: the server's host key must be verifiable "
                         "(a known_hosts file, or its SHA256 fingerprint)")
    if source.host_key and not source.host_key.startswith("SHA256:"):
        raise ValueError(f"host_key: a SHA256 fingerprint as ssh-keygen -lf prints it (SHA256:...), got {source.host_key!r}")
    if not (source.password or source.private_key or source.private_key_file):
        raise ValueError("password, private_key or private_key_file: how to log in (the first two name "
                         "environment variables)")
    for key in ("password", "private_key"):
        variable = getattr(source, key)
        if variable and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", variable):
            raise ValueError(f"{key}: the name of an environment variable holding it (never the secret itself), "
                             f"got a value that is no variable name")
    if source.after not in ("keep", "delete") and not (source.after.startswith("move:") and len(source.after) > 5):
        raise ValueError(f"after: keep, delete or move:<remote folder>, got {source.after!r}")
    if source.pattern:
        re.compile(source.pattern)


@dataclass
class RemoteFile:
    path: str  # on the server
    name: str  # in proc
    size: int
    mtime: int


def _entry_id(job: str, path: str) -> str:
    return f"{job}:{path}"


class _Verifier:
    """The client side of the handshake: the host key checked against a fingerprint, or the
    known_hosts file asyncssh reads; the key shown is kept for the error message."""

    def __init__(self, fingerprint: str | None):
        self.fingerprint, self.shown = fingerprint, None

    def client(self):
        import asyncssh

        verifier = self

        class Client(asyncssh.SSHClient):
            def validate_host_public_key(self, host, addr, port, key):
                verifier.shown = key.get_fingerprint("sha256")
                return verifier.fingerprint is not None and verifier.shown == verifier.fingerprint

        return Client


def _secret(variable: str, what: str) -> str:
    if variable not in os.environ:
        raise DownloadError(f"{what}: the environment variable {variable} is not set")
    return os.environ[variable]


async def _connect(source: SftpSource):
    import asyncssh

    verifier = _Verifier(source.host_key)
    options = {"username": source.user, "connect_timeout": source.timeout, "login_timeout": source.timeout,
               "agent_path": None, "known_hosts": source.known_hosts if source.known_hosts else ([], [], [])}
    if source.password:
        options["password"] = _secret(source.password, f"{source.where}: password")
    keys = []
    if source.private_key:
        try:
            keys.append(asyncssh.import_private_key(_secret(source.private_key, f"{source.where}: private_key")))
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise DownloadError(f"private_key: the key in {source.private_key} cannot be read ({exc})") from None
    if source.private_key_file:
        try:
            keys.append(asyncssh.read_private_key(source.private_key_file))
        except (OSError, asyncssh.KeyImportError) as exc:
            raise DownloadError(f"private_key_file {source.private_key_file}: cannot be read ({exc})") from None
    options["client_keys"] = keys or None
    if not source.password:
        options["preferred_auth"] = "publickey"
    try:
        return await asyncssh.connect(source.host, source.port, client_factory=verifier.client(), **options)
    except asyncssh.HostKeyNotVerifiable:
        shown = verifier.shown or "(not shown)"
        if source.known_hosts:
            known = _known_entry(source)
            raise DownloadError(
                f"{source.where}: host key {shown} is not trusted: "
                + (f"{source.known_hosts} has another key for it (changed host key?)" if known
                   else f"{source.known_hosts} has no key for it")
                + "; check the fingerprint with the server's operator, then add it") from None
        raise DownloadError(f"{source.where}: host key {shown} is not the configured host_key {source.host_key}") from None
    except asyncssh.PermissionDenied:
        how = " and ".join(k for k in ("password", "private_key", "private_key_file") if getattr(source, k))
        raise DownloadError(f"{source.where}: login refused (tried {how})") from None
    except (asyncssh.Error, OSError, asyncio.TimeoutError) as exc:
        raise DownloadError(f"{source.where}: cannot connect: {type(exc).__name__}: {exc}") from None


def _known_entry(source: SftpSource) -> bool:
    import asyncssh

    try:
        trusted = asyncssh.read_known_hosts(source.known_hosts).match(source.host, "", source.port)[0]
    except (OSError, ValueError):
        return False
    return bool(trusted)


async def _listing(sftp, source: SftpSource, pattern) -> dict[str, RemoteFile]:
    import asyncssh

    found: dict[str, RemoteFile] = {}
    folders = [source.remote_dir]
    while folders:
        folder = folders.pop()
        try:
            entries = await sftp.readdir(folder)
        except asyncssh.SFTPError as exc:
            raise DownloadError(f"{source.where}{folder}: cannot list it: {exc.reason}") from None
        for entry in entries:
            name = entry.filename
            if name in (".", "..") or name.startswith("."):
                continue  # hidden: an upload in progress by convention, or not ours
            path = posixpath.join(folder, name)
            kind = entry.attrs.type
            if kind == asyncssh.FILEXFER_TYPE_DIRECTORY or (entry.attrs.permissions and stat.S_ISDIR(entry.attrs.permissions)):
                if source.recursive:
                    folders.append(path)
                continue
            relative = posixpath.relpath(path, source.remote_dir)
            if pattern is not None and not pattern.match(relative):
                continue
            found[path] = RemoteFile(path, relative.replace("/", "_"), entry.attrs.size or 0, int(entry.attrs.mtime or 0))
    return found


def _ledger(mongo: MongoResource):
    return mongo.collection(DOWNLOADS_COLLECTION)


def _recorded(mongo: MongoResource, job: str, paths) -> dict[str, Mapping]:
    try:
        return {d["path"]: d for d in _ledger(mongo).find({"_id": {"$in": [_entry_id(job, p) for p in paths]}})}
    except PyMongoError as exc:
        mongo.raise_error(f"the download ledger {mongo.database}.{DOWNLOADS_COLLECTION}", exc)


def _record(mongo: MongoResource, job: str, remotes: list[RemoteFile], state: str,
            proc: Mapping[str, str] | None = None) -> None:
    """One write for the files of a run (fetched: with where each went in proc; done)."""
    now = datetime.now(UTC)
    operations = []
    for remote in remotes:
        fields = {"job": job, "path": remote.path, "size": remote.size, "mtime": remote.mtime, "state": state,
                  "at": now}
        if proc is not None:
            fields["proc"] = proc[remote.path]
        operations.append(UpdateOne({"_id": _entry_id(job, remote.path)}, {"$set": fields}, upsert=True))
    if not operations:
        return
    try:
        _ledger(mongo).bulk_write(operations, ordered=False)
    except PyMongoError as exc:
        mongo.raise_error(f"the download ledger {mongo.database}.{DOWNLOADS_COLLECTION}", exc)


async def _new_files(sftp, mongo: MongoResource, source: SftpSource, job: str, pattern, say):
    """(files not fetched before or changed since, files fetched whose after-pickup step is due)."""
    first = await _listing(sftp, source, pattern)
    recorded = _recorded(mongo, job, list(first))
    pending_after, new = [], []
    for path, remote in sorted(first.items()):
        entry = recorded.get(path)
        if entry is not None and (entry["size"], entry["mtime"]) == (remote.size, remote.mtime):
            if entry.get("state") == "fetched" and source.after != "keep":
                pending_after.append(remote)  # in proc already; its after-pickup step was cut off
            continue
        if entry is not None:
            say(f"{source.where}{path} changed on the server ({entry['size']} -> {remote.size} bytes, "
                f"mtime {entry['mtime']} -> {remote.mtime}): fetched again")
        new.append(remote)
    return new, pending_after


def list_new_files(mongo: MongoResource, source: SftpSource, job: str) -> list[RemoteFile]:
    """The files of ``source`` the download ``job`` has not fetched (or that changed since):
    one connection, one listing, nothing fetched. DownloadError as fetch_sftp_into_proc."""
    async def listing():
        import asyncssh

        pattern = re.compile(source.pattern) if source.pattern else None
        connection = await _connect(source)
        try:
            async with connection, connection.start_sftp_client() as sftp:
                new, pending = await _new_files(sftp, mongo, source, job, pattern, lambda _: None)
                return new + pending
        except (asyncssh.Error, OSError, asyncio.TimeoutError) as exc:
            raise DownloadError(f"{source.where}: connection lost: {type(exc).__name__}: {exc}") from None

    check_source(source)
    return asyncio.run(listing())


async def _after(sftp, source: SftpSource, remote: RemoteFile) -> None:
    import asyncssh

    try:
        if source.after == "delete":
            await sftp.remove(remote.path)
        elif source.after.startswith("move:"):
            target = source.after[5:]
            await sftp.rename(remote.path, posixpath.join(target, posixpath.basename(remote.path)))
    except asyncssh.SFTPNoSuchFile:
        pass  # gone already (done by an earlier run killed before it said so)
    except asyncssh.SFTPError as exc:
        raise DownloadError(f"{source.where}{remote.path}: after pickup, {source.after} failed: {exc.reason}") from None


async def _fetch(folders: FolderResource, mongo: MongoResource, source: SftpSource, job: str, log) -> list[str]:
    import asyncssh

    say = log.info if log is not None else (lambda _: None)
    pattern = re.compile(source.pattern) if source.pattern else None
    connection = await _connect(source)
    fetched: list[tuple[RemoteFile, str]] = []
    delivered: list[str] = []
    try:
        async with connection, connection.start_sftp_client() as sftp:
            new, pending_after = await _new_files(sftp, mongo, source, job, pattern, say)
            for remote in pending_after:
                await _after(sftp, source, remote)
            _record(mongo, job, pending_after, "done")
            if new and source.min_age_seconds > 0:
                await asyncio.sleep(source.min_age_seconds)
                second = await _listing(sftp, source, pattern)
                stable = []
                for remote in new:
                    again = second.get(remote.path)
                    if again is None:
                        continue
                    if (again.size, again.mtime) != (remote.size, remote.mtime):
                        say(f"{source.where}{remote.path} is still being uploaded ({remote.size} -> {again.size} "
                            f"bytes): left for a later run")
                        continue
                    stable.append(remote)
                new = stable
            chosen, total = [], 0
            for remote in new:
                if len(chosen) >= source.max_files or (chosen and total + remote.size > source.max_bytes):
                    say(f"{len(new) - len(chosen)} more file(s) on {source.where}{source.remote_dir} "
                        f"left for the next run (max_files {source.max_files}, max_bytes {source.max_bytes})")
                    break
                chosen.append(remote)
                total += remote.size
            for remote in chosen:
                target = folders.make_transfer(remote.name)
                folder, final_name = os.path.split(target)
                partial = os.path.join(folder, download_temp_name(final_name))
                try:
                    await sftp.get(remote.path, partial)
                    size = os.path.getsize(partial)
                    if size != remote.size:
                        say(f"{source.where}{remote.path} changed while it was fetched ({remote.size} listed, "
                            f"{size} fetched): left for a later run")
                        continue
                    with open(partial, "rb") as handle:
                        os.fsync(handle.fileno())
                    fetched.append((remote, safe_move(partial, folder, name=final_name, on_conflict="replace")))
                except asyncssh.SFTPError as exc:
                    raise DownloadError(f"{source.where}{remote.path}: cannot fetch it: {exc.reason}") from None
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(partial)
            # Every file complete: into proc, recorded, then what happens on the server.
            # A run killed among these moves fetches the files not yet recorded once more; the
            # import's duplicate check (duplicates: skip) keeps their bytes from being imported twice.
            moved, where = [], {}
            while fetched:
                remote, path = fetched.pop(0)
                delivered.append(folders.move_proc(path))
                moved.append(remote)
                where[remote.path] = delivered[-1]
                say(f"fetched {source.where}{remote.path} -> {delivered[-1]} ({remote.size} bytes)")
            _record(mongo, job, moved, "fetched", where)
            if source.after != "keep":
                for remote in moved:
                    await _after(sftp, source, remote)
                _record(mongo, job, moved, "done")
    except (asyncssh.Error, OSError, asyncio.TimeoutError) as exc:
        raise DownloadError(f"{source.where}: connection lost: {type(exc).__name__}: {exc}") from None
    finally:
        for _, path in fetched:  # fetched into transfer, not moved on: nothing partial stays
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return delivered


def fetch_sftp_into_proc(folders: FolderResource, mongo: MongoResource, source: SftpSource, job: str,
                         log=None) -> list[str]:
    """Fetch the new files of ``source`` into proc (see the module's text); their paths in proc.
    Raises DownloadError naming the server and path for a connection, login, host key or
    remote file problem; nothing partial stays in transfer or proc."""
    try:
        check_source(source)
    except ValueError as exc:
        raise DownloadError(f"{source.where}: {exc}") from None
    started = time.monotonic()
    delivered = asyncio.run(_fetch(folders, mongo, source, job, log))
    if log is not None and not delivered:
        log.info(f"{source.where}{source.remote_dir}: nothing new ({time.monotonic() - started:.1f}s)")
    return delivered


def sftp_listing_sensor(job, source: SftpSource, *, job_key: str, minimum_interval_seconds: int = 60,
                        name: str | None = None, default_status=None):
    """A sensor that lists ``source`` every ``minimum_interval_seconds`` and starts ``job`` (the
    download) when there are files it has not fetched: the UI shows, per tick, what it found.
    One run per new set of files (run key: their paths, sizes and mtimes)."""
    @dg.sensor(
        name=name or f"{job.name}_sftp_sensor", job=job, minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status or dg.DefaultSensorStatus.RUNNING,
        description=f"Lists {source.where}{source.remote_dir} and starts {job.name} when new files are there",
    )
    def listing_sensor(context: dg.SensorEvaluationContext, mongo: MongoResource):
        try:
            new = list_new_files(mongo, source, job_key)
        except DownloadError as exc:
            return dg.SkipReason(str(exc))
        if not new:
            return dg.SkipReason(f"nothing new on {source.where}{source.remote_dir}")
        digest = hashlib.blake2b(digest_size=12)
        for remote in sorted(new, key=lambda r: r.path):
            digest.update(f"{remote.path}\0{remote.size}\0{remote.mtime}\n".encode())
        shown = ", ".join(r.path for r in new[:5]) + (f" and {len(new) - 5} more" if len(new) > 5 else "")
        context.log.info(f"{len(new)} new file(s) on {source.where}: {shown}")
        return dg.RunRequest(run_key=digest.hexdigest())

    return listing_sensor
