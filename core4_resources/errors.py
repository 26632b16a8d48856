"""Errors of the resources layer: each message says what, where, and what to do."""


class Core4Error(Exception):
    """Base of every error this framework raises on purpose."""


class ConfigError(Core4Error):
    """A configuration value is missing, unknown, mistyped or invalid."""


class FolderError(Core4Error):
    """A folder operation was refused or failed (bad path, conflict, I/O)."""


class SourceMissingError(FolderError, FileNotFoundError):
    """The file to move does not exist (e.g. another process moved it first)."""


class MongoError(Core4Error):
    """MongoDB is unreachable or refused an operation; ``outage`` is True for the first."""

    outage: bool = False


class EmbeddedMongoError(MongoError):
    """The embedded MongoDB server could not be started or stopped."""

    outage = True
