"""Who may use the embedded server: its user and password, provisioned on the first start.

The first start for a storage folder generates a random password for the user ``core4`` and
writes it to the credentials file beside the folder (``<storage>.credentials``, mode 0600,
JSON; credentials.py) *before* the user exists; then it starts the server once without
``--auth`` -- on 127.0.0.1, on a port the OS picked a moment before, for about a second --
creates the user (role ``root`` on ``admin``), drops any other user that appeared meanwhile,
stops it, and marks the file ``"provisioned": true``. A start that finds the file unmarked
(provisioning was interrupted) provisions again with the same password (``updateUser`` when
the user exists).
"""

from __future__ import annotations

import logging

import pymongo
from pymongo.errors import OperationFailure, PyMongoError

from core4_resources.mongo.embedded.credentials import Credentials, read_credentials, write_credentials
from core4_resources.errors import EmbeddedMongoError

log = logging.getLogger(__name__)

AUTH_SOURCE = "admin"
_USER_EXISTS = 51003


def provisioned_credentials(server) -> Credentials:  # server: an EmbeddedMongo
    """The credentials file's content, provisioning the user first when that has not
    finished (a first start, or an earlier provisioning that was interrupted)."""
    credentials = read_credentials(server.credentials_path)
    if credentials is None:
        credentials = Credentials.generate()
        # On disk (0600) before the user exists: a crash from here on is repaired
        # by the next start, which provisions the same password.
        write_credentials(server.credentials_path, credentials)
    if not credentials.provisioned:
        _provision(server, credentials)
        credentials.provisioned = True
        write_credentials(server.credentials_path, credentials)
    return credentials


def _provision(server, credentials: Credentials) -> None:
    log.info("provisioning user %s for %s", credentials.user, server.storage_path)
    bare = type(server)(server.storage_path, host="127.0.0.1", startup_timeout=server.startup_timeout,
                        log_path=server.log_path, auth=False)
    with bare, pymongo.MongoClient(bare.url, directConnection=True,
                                   serverSelectionTimeoutMS=5000) as client:
        admin = client[AUTH_SOURCE]
        roles = [{"role": "root", "db": AUTH_SOURCE}]
        try:
            try:
                admin.command("createUser", credentials.user, pwd=credentials.password, roles=roles)
            except OperationFailure as exc:
                if exc.code != _USER_EXISTS:
                    raise
                # Made by an interrupted provisioning (or the file was removed): set the password.
                admin.command("updateUser", credentials.user, pwd=credentials.password, roles=roles)
            # Nobody else may keep a user made while the server ran without --auth.
            for other in admin["system.users"].find({}, {"user": 1, "db": 1}):
                if (other["user"], other["db"]) != (credentials.user, AUTH_SOURCE):
                    log.warning("dropping user %s@%s of %s: not provisioned by core4",
                                other["user"], other["db"], server.storage_path)
                    client[other["db"]].command("dropUser", other["user"])
        except PyMongoError as exc:
            raise EmbeddedMongoError(
                f"provisioning the user {credentials.user} for {server.storage_path} failed: {exc}; "
                f"the next start tries again (log: {server.log_path})"
            ) from None
