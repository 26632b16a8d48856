"""The embedded server's user and password: a JSON file beside its data, 0600, replaced atomically."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass

from core4_resources.errors import EmbeddedMongoError
from core4_resources.files.moves import fsync_dir, open_new_file

log = logging.getLogger(__name__)

PRIVATE_FILE_MODE = 0o600
USER = "core4"


@dataclass
class Credentials:
    """The content of a credentials file: who the embedded server lets in."""

    user: str
    password: str
    provisioned: bool = False

    @classmethod
    def generate(cls) -> "Credentials":
        # URL-safe characters only: the password goes into a URL unquoted.
        return cls(user=USER, password=secrets.token_urlsafe(24))


def read_credentials(path: str | os.PathLike) -> Credentials | None:
    """The credentials in ``path``; None when there is no such file.

    A file others may read is narrowed to 0600 first."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with open(fd, encoding="utf-8") as handle:
        if os.fstat(fd).st_mode & 0o077:
            log.warning("credentials file %s was readable by others; narrowed to 0600", path)
            os.fchmod(fd, PRIVATE_FILE_MODE)
        text = handle.read()
    try:
        data = json.loads(text)
        return Credentials(user=data["user"], password=data["password"],
                           provisioned=bool(data.get("provisioned", False)))
    except (ValueError, KeyError, TypeError) as exc:
        raise EmbeddedMongoError(
            f"credentials file {path} is not what the embedded server wrote ({exc!r}); "
            f"remove it, and the next start provisions a new password for the existing data"
        ) from None


def write_credentials(path: str | os.PathLike, credentials: Credentials) -> None:
    """Replace ``path`` atomically with ``credentials``; the file is 0600 before it holds them."""
    path = os.fspath(path)
    folder = os.path.dirname(path)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        with open_new_file(temporary, PRIVATE_FILE_MODE) as handle:
            handle.write(json.dumps(asdict(credentials), indent=2).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_dir(folder)


def url_with_credentials(url: str, credentials_path: str | os.PathLike) -> str:
    """``url`` -- as printed, password masked, or without a user -- with the user and
    password of ``credentials_path`` in it (for a client of the embedded server)."""
    credentials = read_credentials(credentials_path)
    if credentials is None:
        raise EmbeddedMongoError(f"no credentials file {os.fspath(credentials_path)}")
    scheme, _, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    hostport = authority.rpartition("@")[2]
    return f"{scheme}://{credentials.user}:{credentials.password}@{hostport}{slash}{tail}"
