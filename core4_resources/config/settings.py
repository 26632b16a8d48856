"""Configuration: the core4 cascade read into frozen pydantic models.

Cascade (later wins): packaged core4.yaml -> the project's yaml (nested under the project name)
-> one local file -> CORE4_OPTION_a__b__c env vars. DEFAULT fills mongo_url/mongo_database into
logging and the project section where they lack them; a project's own DEFAULT wins there.
Every problem found in one load is reported together, each naming source, key path and
what was expected.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator

from core4_resources.config.alerts import AlertRule, parse_alert_rules
from core4_resources.config.masking import URL_PASSWORD_IN_TEXT, mask_url
from core4_resources.files.space import EXPECTED as SPACE_EXPECTED
from core4_resources.files.space import parse_min_free
from core4_resources.config.sources import (
    ALERTS, DEFAULT, JOBS, PACKAGED_PATH, Cascade, Source, default_source, env_layers, file_source,
    local_config_path, packaged_source, read_yaml_file,
)
from core4_resources.errors import ConfigError
from core4_resources.config.job_properties import PROPERTY_NAMES, STRICT, JobProperties
from core4_resources.config.job_properties import expected as expected_text

__all__ = ["load_config", "mask_url", "Settings", "FolderSettings", "JobSection",
           "LoggingSettings", "DagsterSettings", "EmbeddedSettings", "ProjectSettings", "DefaultSettings"]

class _Frozen(BaseModel):
    model_config = STRICT

    def __repr_args__(self):
        for key, value in super().__repr_args__():
            yield key, mask_url(value) if isinstance(value, str) else value


_FOLDER = "a path (a relative one is joined onto folder.root)"


class FolderSettings(_Frozen):
    root: str = Field(description="an absolute path")
    transfer: str = Field(description=_FOLDER)
    proc: str = Field(description=_FOLDER)
    archive: str = Field(description=_FOLDER)
    temp: str = Field(description=_FOLDER)
    error: str = Field(description=_FOLDER)
    home: str | None = Field(description="an absolute path to an existing directory, or ~ (unset)")
    min_free: str | int = Field("1%", description=SPACE_EXPECTED)

    @field_validator("min_free")
    @classmethod
    def _a_floor(cls, value: str | int) -> str | int:
        parse_min_free(value)
        return value

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, value: str) -> str:
        value = os.path.expanduser(value)
        if not os.path.isabs(value):
            raise ValueError("an absolute path")
        return os.path.normpath(value)

    @field_validator("transfer", "proc", "archive", "temp", "error")
    @classmethod
    def _join_onto_root(cls, value: str, info: ValidationInfo) -> str:
        value = os.path.expanduser(value)
        root = info.data.get("root")  # absent when root itself is invalid (reported there)
        if not os.path.isabs(value) and root is not None:
            value = os.path.join(root, value)
        return os.path.normpath(value)

    @field_validator("home")
    @classmethod
    def _existing_home(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = os.path.expanduser(value)
        if not os.path.isabs(value):
            raise ValueError("an absolute path to an existing directory, or ~ (unset)")
        if not os.path.isdir(value):
            raise ValueError("an existing directory (create it or change folder.home)")
        return os.path.normpath(value)


class JobSection(JobProperties):
    """The cascade's ``job:`` section: the properties every job starts from (JobProperties:
    those core4.yaml sets, and the model's own defaults for the rest), and how
    ``move_archive`` stores a file."""

    archive_stamp: str
    compress_level: int = Field(ge=0, le=9)


class DefaultSettings(_Frozen):
    """The DEFAULT keys; optional, so a section may set some of them (model_fields_set)."""

    mongo_url: str | None = Field(None, description="a MongoDB URL string, or ~ (embedded server)")
    mongo_database: str | None = Field(None, description="a database name (a string)")

    @field_validator("mongo_database")
    @classmethod
    def _database_named(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("a database name (a string)")
        return value


class EmbeddedSettings(_Frozen):
    """The ``embedded`` section: the embedded MongoDB used when no mongo_url is configured."""

    port: int | None = Field(None, ge=1, le=65535,
                             description="a TCP port (1-65535), or ~ (picked once, then kept under folder.root)")


_LEVELS = ("CRITICAL", "DEBUG", "ERROR", "INFO", "WARNING")


class LoggingSettings(_Frozen):
    """The ``logging`` section: what ``core4_resources.logs`` does with it."""

    level: str = Field(description=f"one of {', '.join(_LEVELS)}")
    format: str = Field(description="a logging format such as '%(asctime)s %(levelname)s %(message)s'")
    mongo_collection: str | None
    mongo_url: str | None = None        # DEFAULT fills these two unless logging sets them
    mongo_database: str = "core4"

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in _LEVELS:
            raise ValueError(f"one of {', '.join(_LEVELS)}")
        return value.upper()

    @field_validator("format")
    @classmethod
    def _usable_format(cls, value: str) -> str:
        try:
            logging.Formatter(value)
        except (ValueError, TypeError):
            raise ValueError(cls.model_fields["format"].description) from None
        return value


class DagsterSettings(_Frozen):
    host: str
    port: int = Field(ge=1, le=65535)
    max_concurrent_runs: int = Field(ge=1, le=1000)
    home: str | None = Field(description="an absolute path, or ~ (<folder.root>/dagster)")
    postgres_url: str | None
    engine: Literal["local", "celery"] = Field("local", description="local or celery")
    broker_url: str | None = Field(None, description="a broker URL, e.g. redis://host:6379/0")

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = os.path.expanduser(value)
        if not os.path.isabs(value):
            raise ValueError("an absolute path, or ~ (<folder.root>/dagster)")
        return os.path.normpath(value)


class ProjectSettings(_Frozen):
    name: str
    mongo_url: str | None
    mongo_database: str
    jobs: Mapping[str, Mapping[str, Any]] = Field(default_factory=dict)
    options: Mapping[str, Any] = Field(default_factory=dict)


class Settings(_Frozen):
    folder: FolderSettings
    mongo_url: str | None
    mongo_database: str
    job: JobSection
    logging: LoggingSettings
    dagster: DagsterSettings
    embedded: EmbeddedSettings = EmbeddedSettings()
    project: ProjectSettings | None = None
    # The local file's rules (for every project), then the loaded project's own.
    alerts: tuple[AlertRule, ...] = ()
    sources: Mapping[str, str] = Field(default_factory=dict)

    def flat(self, masked: bool = True) -> dict[str, Any]:
        """Dotted key (as written in YAML / env) -> value; the keys of `sources`."""
        out: dict[str, Any] = {f"{DEFAULT}.mongo_url": self.mongo_url,
                               f"{DEFAULT}.mongo_database": self.mongo_database}
        for section in ("folder", "job", "logging", "dagster", "embedded"):
            model = getattr(self, section)
            for key, value in model:
                if key in model.model_fields_set:  # job: not the properties only a job declares
                    out[f"{section}.{key}"] = value
        if self.project is not None:
            name = self.project.name
            out[f"{name}.mongo_url"] = self.project.mongo_url
            out[f"{name}.mongo_database"] = self.project.mongo_database
            _flatten(out, f"{name}.{JOBS}", self.project.jobs)
            _flatten(out, name, self.project.options)
        for rule in self.alerts:  # keyed as written: alerts[0], demo.alerts[1]
            channels = {name: getattr(rule, name).model_dump(by_alias=True, exclude_none=True) for name in rule.channels()}
            out[rule.where.split(" ", 1)[0]] = {"events": list(rule.events), **channels}
        if masked:
            out = {k: mask_url(v) if isinstance(v, str) else v for k, v in out.items()}
        return out


def _flatten(out: dict, prefix: str, mapping: Mapping) -> None:
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            _flatten(out, f"{prefix}.{key}", value)
        else:
            out[f"{prefix}.{key}"] = value


def _got(value: Any) -> str:
    # In a list or mapping, too, every URL's password is masked.
    return repr(mask_url(value)) if isinstance(value, str) else URL_PASSWORD_IN_TEXT.sub(r"\1:***@", repr(value))


class _Validator:
    """Validates raw sections into models, turning pydantic errors into ConfigError lines."""

    def __init__(self, sources: Mapping[str, Source], errors: list[str]):
        self.sources, self.errors = sources, errors

    def __call__(self, model: type[_Frozen], raw: Mapping, prefix: str):
        try:
            return model.model_validate(dict(raw))
        except ValidationError as exc:
            reported = set()
            for error in exc.errors():
                key = str(error["loc"][0]) if error["loc"] else ""
                path = f"{prefix}.{key}" if key else prefix
                if path in reported:
                    continue
                reported.add(path)
                source = self.sources.get(path)
                where = f" {source.where}" if source else ""
                if error["type"] == "value_error":
                    expected = str(error["ctx"]["error"])
                elif error["type"] == "missing":
                    self.errors.append(f"{path}: missing{where}; set it in the local file")
                    continue
                elif key in model.model_fields:
                    expected = expected_text(model.model_fields[key])
                else:
                    expected = error["msg"]
                self.errors.append(f"{path}{where}: expected {expected}, got {_got(error['input'])}")
            return None


def _project_folder_checker(home: str | None):
    def is_project_folder(name: str) -> bool:
        return bool(home) and not name.startswith(".") and os.path.isdir(os.path.join(home, name))
    return is_project_folder


def _raw_home(layers: list[Mapping]) -> str | None:
    """folder.home as the cascade will see it, before the project layer is read."""
    home = None
    for layer in layers:
        folder = layer.get("folder")
        if isinstance(folder, Mapping) and "home" in folder:
            home = folder["home"]
    if not isinstance(home, str):
        return None
    home = os.path.expanduser(home)
    return os.path.normpath(home) if os.path.isabs(home) and os.path.isdir(home) else None


def _raise(errors: list[str]) -> None:
    if len(errors) == 1:
        raise ConfigError(errors[0])
    raise ConfigError(f"{len(errors)} configuration errors:\n" + "\n".join(f"  {e}" for e in errors))


def load_config(project: str | None = None, *, project_yaml: str | os.PathLike | None = None,
                environ: Mapping[str, str] | None = None) -> Settings:
    """Read the cascade into Settings, or raise ConfigError listing every problem found."""
    environ = os.environ if environ is None else environ
    errors: list[str] = []
    schema = read_yaml_file(PACKAGED_PATH, errors)
    if schema is None:
        _raise(errors)
    if project is not None and (not isinstance(project, str) or not project.isidentifier()
                                or project in schema):
        _raise([f"project name {project!r}: expected a Python identifier (the project's package "
                f"name) other than {', '.join(schema)}"])

    local_path = local_config_path(environ, errors)
    local = read_yaml_file(local_path, errors) if local_path else None
    envs = env_layers(environ, errors)
    home = _raw_home([schema] + ([local] if local else []) + [data for data, _ in envs])

    project_data, project_path = None, None
    if project is not None:
        if project_yaml is not None:
            project_path = Path(project_yaml).expanduser().absolute()
            if not project_path.is_file():
                errors.append(f"project yaml {project_path} for project {project!r} is not an "
                              f"existing file: create it or pass another project_yaml")
                project_path = None
        elif home is not None:
            # a project without its yaml simply has no settings of its own
            candidate = Path(home) / project / project / f"{project}.yaml"
            project_path = candidate if candidate.is_file() else None
        if project_path is not None:
            project_data = read_yaml_file(project_path, errors, "a mapping (the project's settings)")

    cascade = Cascade(schema, project, default_sections=("logging",), job_keys=PROPERTY_NAMES)
    cascade.add(schema, packaged_source())
    if project_data is not None:
        cascade.add({project: project_data}, file_source(project_path))
    if local is not None:
        cascade.add(local, file_source(local_path))
    for data, source in envs:
        cascade.add(data, source)
    cascade.finish(_project_folder_checker(home), home)
    errors.extend(cascade.errors)
    return _build(cascade, project, errors)


def _build(cascade: Cascade, project: str | None, errors: list[str]) -> Settings:
    tree, sources = cascade.tree, dict(cascade.sources)
    validate = _Validator(sources, errors)
    default_keys = cascade.default_keys

    def own(section: Mapping) -> dict:
        return {k: v for k, v in section.items() if k in default_keys}

    folder = validate(FolderSettings, tree["folder"], "folder")
    job = validate(JobSection, tree["job"], "job")
    dagster = validate(DagsterSettings, tree["dagster"], "dagster")
    embedded = validate(EmbeddedSettings, tree["embedded"], "embedded")
    defaults = validate(DefaultSettings, tree[DEFAULT], DEFAULT)
    logging_raw = tree["logging"]
    logging_base = validate(LoggingSettings, {k: v for k, v in logging_raw.items()
                                              if k not in default_keys}, "logging")
    logging_own = validate(DefaultSettings, own(logging_raw), "logging")
    section, project_default, project_own = {}, None, None

    def where(key: str) -> str:
        return sources[key].where if key in sources else ""

    alerts = parse_alert_rules(tree.get(ALERTS), ALERTS, where(ALERTS), errors)
    if project is not None:
        section = tree.get(project, {})
        alerts += parse_alert_rules(section.get(ALERTS), f"{project}.{ALERTS}", where(f"{project}.{ALERTS}"), errors)
        project_default = validate(DefaultSettings, section.get(DEFAULT, {}), f"{project}.{DEFAULT}")
        project_own = validate(DefaultSettings, own(section), project)
    if errors:
        _raise(errors)

    def resolve(prefix: str, layers: list[tuple[DefaultSettings, str | None]]) -> dict:
        """First layer that sets the key wins; records the chosen value's source."""
        values = {}
        for key in default_keys:
            for model, default_prefix in layers:
                if key in model.model_fields_set:
                    values[key] = getattr(model, key)
                    if default_prefix is not None:
                        sources[f"{prefix}.{key}"] = default_source(sources[f"{default_prefix}.{key}"])
                    break
        return values

    logging_settings = logging_base.model_copy(update=resolve(
        "logging", [(logging_own, None), (defaults, DEFAULT)]))
    project_settings = None
    if project is not None:
        resolved = resolve(project, [(project_own, None),
                                     (project_default, f"{project}.{DEFAULT}"), (defaults, DEFAULT)])
        project_settings = ProjectSettings(
            name=project, **resolved, jobs=section.get(JOBS, {}),
            options={k: v for k, v in section.items() if k not in (DEFAULT, JOBS, ALERTS, *default_keys)})
    settings = Settings(folder=folder, mongo_url=defaults.mongo_url,
                        mongo_database=defaults.mongo_database, job=job,
                        logging=logging_settings, dagster=dagster, embedded=embedded,
                        project=project_settings, alerts=alerts)
    labels = {key: sources[key.split("[", 1)[0]].label for key in settings.flat(masked=False)}
    return settings.model_copy(update={"sources": labels})
