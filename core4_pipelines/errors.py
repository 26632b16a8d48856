"""Errors of the pipelines layer."""

from core4_resources.errors import Core4Error


class PipelineError(Core4Error):
    """Base for errors of sensors, jobs and projects."""


class ProjectError(PipelineError):
    """A project folder is not a valid core4 project or fails to load."""


class JobSettingsError(PipelineError):
    """A job's core4 properties are invalid."""


class RecordError(PipelineError):
    """A file's content cannot be read into records (bad row, encoding, shape)."""


class ImportBatchError(PipelineError):
    """Some files of an import batch went to the error folder."""
