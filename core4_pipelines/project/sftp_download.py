"""The ``SftpDownload`` component: a download job fetching new files from an sFTP server into
``<proc>/<project>/`` for the import of ``collection`` (``download/sftp.py`` does the fetching)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from core4_pipelines.download.job import download_job
from core4_pipelines.download.sftp import SftpSource, check_source, fetch_sftp_into_proc, sftp_listing_sensor
from core4_pipelines.ingest.assets import inbox_key, md_code
from core4_pipelines.project.components import (
    ComponentDeclarationError,
    _at_least,
    _Core4Component,
    _project,
    _properties,
    _where,
)
from core4_resources.files.folders import FolderResource
from core4_resources.mongo.resource import MongoResource


class _SftpDownloadScaffolder(dg.Scaffolder):
    """``dg scaffold defs core4_pipelines.SftpDownload NAME``: an sFTP download into the import of NAME,
    its secret named by an environment variable; edit host, user, known_hosts and remote_dir."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = Path(request.target_path).name
        dg.scaffold_component(request, {
            "collection": name, "host": "sftp.example.org", "user": name,
            "password": f"{name.upper()}_SFTP_PASSWORD", "known_hosts": "/etc/core4/known_hosts",
            "remote_dir": "/outgoing", "pattern": f"{re.escape(name)}.*\\.csv$", "schedule": "*/15 * * * *",
        })


@dg.scaffold_with(_SftpDownloadScaffolder)
class SftpDownload(_Core4Component):
    """Fetch new files from an sFTP server into ``<proc>/<project>/``, for the import of
    ``collection``: the host key verified (``known_hosts`` or ``host_key``), each file whole
    and once (remembered in ``sys.downloads``), a file still being uploaded left for later;
    on ``schedule`` (UTC) or launched by hand. Secrets come from environment variables.

    Examples:
        .. code-block:: yaml

            type: core4_pipelines.SftpDownload
            attributes:
              collection: records
              host: sftp.partner.example
              user: partner
              password: PARTNER_SFTP_PASSWORD      # the environment variable holding it
              known_hosts: /etc/core4/known_hosts
              remote_dir: /outgoing
              pattern: 'records-.*\\.csv$'
              after: keep
              schedule: "*/15 * * * *"
    """

    collection: str = Field(description="The collection whose FileImport reads the files (its inbox is produced).")
    host: str = Field(description="The sFTP server's host name or address.")
    port: int = Field(22, description="Its SSH port.")
    user: str = Field(description="The user to log in as.")
    password: str | None = Field(None, description="The environment variable holding the password.")
    private_key: str | None = Field(None, description="The environment variable holding a private key's text.")
    private_key_file: str | None = Field(None, description="A private key file.")
    known_hosts: str | None = Field(None, description="A known_hosts file holding the server's host key.")
    host_key: str | None = Field(None, description="Or the host key's SHA256 fingerprint (SHA256:...).")
    remote_dir: str = Field(description="The remote folder to fetch from.")
    pattern: str | None = Field(None, description="A regular expression matched at the start of the file names.")
    recursive: bool = Field(False, description="Also the files in the remote folder's subfolders.")
    after: str = Field("keep", description="After pickup: keep, delete, or move:<remote folder>.")
    min_age_seconds: int | float = Field(5.0, description="Seconds between two listings a file must stay unchanged in.")
    max_files: int = Field(1000, description="Files per run at most; the rest wait for the next run.")
    max_bytes: int = Field(10 << 30, description="Bytes per run at most (a larger single file still goes alone).")
    timeout: int | float = Field(30.0, description="Seconds to wait for the server; more than 0.")
    listing_interval: int | None = Field(
        None, description="Seconds between listings of a sensor that starts the download when new files are there.")
    name: str | None = Field(None, description="The job's name (default download_<collection>).")
    description: str | None = Field(None, description="The job's description.")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        _at_least(context, self, "timeout", 0, False)
        _at_least(context, self, "min_age_seconds", 0, True)
        _at_least(context, self, "max_files", 1, True)
        settings: dict[str, Any] = {k: getattr(self, k) for k in SftpSource.__dataclass_fields__}
        source = SftpSource(**settings)
        try:
            check_source(source)
        except Exception as exc:  # ValueError, re.error: the key starts the message
            text = str(exc)
            key = text.split(" ", 1)[0].rstrip(":") if text.split(" ", 1)[0].rstrip(":") in settings else "pattern"
            raise ComponentDeclarationError(f"{_where(context)}: attributes.{key}: {text}") from None
        project = _project(context)
        job_name = self.name or f"download_{self.collection}"

        def fetch(context, folders: FolderResource, mongo: MongoResource) -> list[str]:
            return fetch_sftp_into_proc(folders, mongo, source, f"{project}.{job_name}", log=context.log)

        shown = f"{source.where}{source.remote_dir}" + (f" ({source.pattern})" if source.pattern else "")
        fetch.__doc__ = f"Fetch new files from {md_code(shown)} into proc"
        job = download_job(
            job_name, fetch, produces=inbox_key(project, self.collection),
            description=self.description, properties=_properties(context, self) or None,
            source=f"{source.where}{source.remote_dir}",  # no secret: those stay in the environment
        )
        sensors = []
        if self.listing_interval is not None:
            _at_least(context, self, "listing_interval", 1, True)
            sensors.append(sftp_listing_sensor(job, source, job_key=f"{project}.{job_name}",
                                               minimum_interval_seconds=self.listing_interval))
        return dg.Definitions(jobs=[job], sensors=sensors)
