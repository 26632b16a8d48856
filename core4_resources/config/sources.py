"""The configuration layers as raw data: YAML files and CORE4_OPTION_ variables, merged in
cascade order with the source of every leaf recorded and unknown keys collected as errors.

Typing and value checks happen later, in config.py; this module only knows which keys exist.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PACKAGED_PATH = Path(__file__).with_name("core4.yaml")
SYSTEM_CONFIG = Path("/etc/core4/local.yaml")
USER_CONFIG = Path(".core4") / "local.yaml"  # below $HOME
CONFIG_VAR = "CORE4_CONFIG"
ENV_PREFIX = "CORE4_OPTION_"
DEFAULT = "DEFAULT"
JOBS = "jobs"
# core4's own names for keys of ours: (section, core4's key) -> our key
ALIASES = {("folder", "process"): "proc"}
_ALIASED = {(section, ours) for (section, _), ours in ALIASES.items()}
MONGO_SCHEMES = ("mongodb://", "mongodb+srv://")
_MODULE = re.compile(r"^[a-z_][a-z0-9_]*$")
_CLASS = re.compile(r"^[A-Z][A-Za-z0-9_]*[a-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Source:
    """Where a value came from: `label` for Settings.sources, `where` for error messages."""

    label: str
    where: str


def file_source(path: str | os.PathLike) -> Source:
    return Source(str(path), f"in {path}")


def env_source(name: str) -> Source:
    return Source(f"env {name}", f"from env {name}")


def packaged_source() -> Source:
    label = f"packaged defaults ({PACKAGED_PATH})"
    return Source(label, f"in {label}")


def alias_source(alias: str, origin: Source) -> Source:
    """The source of a value set under core4's name ``alias`` for one of our keys."""
    return Source(f"as core4's {alias} from {origin.label}", f"(core4's {alias}) {origin.where}")


def default_source(origin: Source) -> Source:
    """The source of a value a DEFAULT section filled in."""
    return Source(f"DEFAULT in {origin.label}", origin.where)


# Aliases (*name) share one node; walking or printing the result expands every share, so a
# few hundred bytes of nested aliases ("billion laughs") can stand for billions of values.
MAX_YAML_ALIASES = 100
MAX_YAML_EXPANDED = 100_000  # values the document may stand for, counting every alias expanded


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (the second one would silently win), more than
    MAX_YAML_ALIASES aliases, aliases that expand beyond MAX_YAML_EXPANDED values, and aliases
    to a node that contains them (a structure without end)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.alias_marks: list = []

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.alias_marks.append(self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def get_single_node(self):
        node = super().get_single_node()  # aliases stay shared here: composing is cheap
        if not self.alias_marks:
            return node
        first = self.alias_marks[0]
        if len(self.alias_marks) > MAX_YAML_ALIASES:
            raise yaml.composer.ComposerError(
                None, None, f"uses {len(self.alias_marks)} YAML aliases (*name); more than "
                f"{MAX_YAML_ALIASES} is refused", first)
        _expanded_size(node, {}, first)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def _connect(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    """core4's ``!connect`` tag: here a MongoDB URL string."""
    value = loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None
    if not isinstance(value, str) or not value.startswith(MONGO_SCHEMES):
        raise yaml.constructor.ConstructorError(
            None, None, f"!connect (core4's connection tag) expects a MongoDB URL such as "
            f"mongodb://user:password@host:27017, got {value if value is not None else node.id!r}: "
            f"write the URL after !connect (or drop the tag)", node.start_mark)
    return value


_StrictLoader.add_constructor("!connect", _connect)


def _expanded_size(node: yaml.Node, sizes: dict[int, int | None], first_alias) -> int:
    """How many values ``node`` stands for with every alias expanded (each shared node counted
    once per use, computed once); ComposerError beyond MAX_YAML_EXPANDED or for a cycle."""
    key = id(node)
    if key in sizes:
        if sizes[key] is None:  # still being counted: the node contains an alias to itself
            raise yaml.composer.ComposerError(
                None, None, "a YAML alias refers to a node that contains it (a structure without "
                "end); refused", node.start_mark)
        return sizes[key]
    sizes[key] = None
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        children = node.value if isinstance(node, yaml.SequenceNode) else []
    size = 1
    for child in children:
        size += _expanded_size(child, sizes, first_alias)
        if size > MAX_YAML_EXPANDED:
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases (*name) expand this document to more than "
                f"{MAX_YAML_EXPANDED} values; refused", first_alias)
    sizes[key] = size
    return size


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc)
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return problem
    return f"line {mark.line + 1} column {mark.column + 1}: {problem}"


def parse_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:  # PyYAML composes and constructs recursively
        raise yaml.YAMLError("nested too deeply to read (thousands of levels); refused") from None


def read_yaml_file(path: Path, errors: list[str], what: str = "a mapping of sections") -> dict | None:
    """The file's top-level mapping ({} when empty), or None after appending an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(f"cannot read configuration file {path}: {getattr(exc, 'strerror', None) or exc}")
        return None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        errors.append(f"invalid YAML in {path} {_yaml_problem(exc)}")
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        errors.append(f"{path}: expected {what} at the top level, got a {type(data).__name__}")
        return None
    return data


def local_config_path(environ: Mapping[str, str], errors: list[str]) -> Path | None:
    """The one local file: $CORE4_CONFIG, else ~/.core4/local.yaml, else /etc/core4/local.yaml."""
    explicit = environ.get(CONFIG_VAR)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            errors.append(f"{CONFIG_VAR} points at {path}, which is not an existing file: "
                          f"create it or unset {CONFIG_VAR}")
            return None
        return path
    home = environ.get("HOME")
    if home and (Path(home) / USER_CONFIG).is_file():
        return Path(home) / USER_CONFIG
    if SYSTEM_CONFIG.is_file():
        return SYSTEM_CONFIG
    return None


def env_layers(environ: Mapping[str, str], errors: list[str]) -> list[tuple[dict, Source]]:
    """One nested mapping per CORE4_OPTION_a__b__c variable, its value parsed as YAML.

    Sorted by name, so CORE4_OPTION_folder__root wins over a mapping in CORE4_OPTION_folder.
    """
    layers = []
    for name in sorted(n for n in environ if n.startswith(ENV_PREFIX)):
        parts = name[len(ENV_PREFIX):].split("__")
        if not all(parts):
            errors.append(f"env {name}: expected {ENV_PREFIX}<section>__<key>, "
                          f"e.g. {ENV_PREFIX}job__attempts=3")
            continue
        try:
            value = parse_yaml(environ[name])
        except yaml.YAMLError as exc:
            errors.append(f"invalid YAML in env {name} {_yaml_problem(exc)} "
                          f"(quote the value, e.g. '\"...\"', to pass it as a string)")
            continue
        for part in reversed(parts):
            value = {part: value}
        layers.append((value, env_source(name)))
    return layers


def _names(keys) -> str:
    return ", ".join(sorted(keys, key=str))


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


ALERTS = "alerts"  # the section that is a list (of alert rules), not a mapping of keys


class Cascade:
    """Merges layers in order (later wins) into one tree, keeping each leaf's source.

    Keys of the packaged sections are fixed by `schema`. A top-level key that is no section is
    the loaded project's section (free keys, DEFAULT, jobs.<job>) or, decided at `finish`, another
    project's section (checked, then dropped); anything else is an unknown key. core4's names
    (ALIASES, e.g. folder.process) are read as ours; a core4 job section (project.module.Class)
    and a jobs.<job> key close to a job property are errors.
    """

    def __init__(self, schema: Mapping[str, Mapping], project: str | None,
                 default_sections: tuple[str, ...] = (), job_keys: tuple[str, ...] = ()):
        self.schema = schema
        self.job_keys = job_keys  # the job properties: a jobs.<job> key close to one is a typo
        self.project = project
        self.default_keys = tuple(schema[DEFAULT])
        self.default_sections = default_sections  # sections that may set DEFAULT keys themselves
        self.tree: dict[str, Any] = {}
        self.sources: dict[str, Source] = {}
        self.errors: list[str] = []
        self._pending: list[tuple[Any, Any, Source]] = []
        self._named: dict[str, dict[str, Source]] = {}  # key with a core4 alias -> name used -> source

    def add(self, data: Mapping, source: Source) -> None:
        for key, value in data.items():
            if key == ALERTS:  # a list of rules: a later file's list replaces an earlier one's
                _set(self.tree, self.sources, (key,), value, source)
            elif key in self.schema:
                self._section(key, value, source)
            elif key == self.project:
                self._project(self.tree, self.sources, key, value, source)
            else:
                self._pending.append((key, value, source))

    def finish(self, is_project_folder: Callable[[str], bool], home: str | None) -> None:
        """Decide the top-level keys that are no section, now that folder.home is known."""
        for ours, used in self._named.items():
            if len(used) > 1:
                (alias, alias_src), (_, own_src) = sorted(used.items(), key=lambda i: i[0] == ours)
                self.errors.append(f"{ours} {own_src.where} and {alias} {alias_src.where} are both set: "
                                   f"{alias} is core4's name for {ours}; keep one of them")
        for key, value, source in self._pending:
            if isinstance(key, str) and "." in key and self._core4_job((), key, value, source):
                continue
            if isinstance(key, str) and is_project_folder(key):
                self._project({}, {}, key, value, source)  # checked for errors, not kept
                continue
            projects = [f"the project name {self.project!r}"] if self.project else []
            projects.append(f"a project folder in folder.home ({home})" if home
                            else "a project folder in folder.home (not set)")
            self.errors.append(f"unknown key {key!r} {source.where}: expected one of "
                               f"{_names(self.schema)}, or {' or '.join(projects)}")
        self._pending.clear()

    def _section(self, name: str, value: Any, source: Source) -> None:
        allowed = list(self.schema[name])
        if name in self.default_sections:
            allowed += [k for k in self.default_keys if k not in allowed]
        if isinstance(value, Mapping):
            value = self._aliased(name, value, source)
        self._keyed((name,), value, source, allowed)

    def _aliased(self, name: str, value: Mapping, source: Source) -> dict:
        """``value`` without core4's names for our keys, which are set here under ours."""
        plain = {}
        for key, leaf in value.items():
            ours = ALIASES.get((name, key))
            if ours is not None:
                self._named.setdefault(f"{name}.{ours}", {})[f"{name}.{key}"] = source
                _set(self.tree, self.sources, (name, ours), leaf, alias_source(f"{name}.{key}", source))
                continue
            if (name, key) in _ALIASED and source.label != packaged_source().label:
                self._named.setdefault(f"{name}.{key}", {})[f"{name}.{key}"] = source
            plain[key] = leaf
        return plain

    def _core4_job(self, path: tuple[str, ...], key: str, value: Any, source: Source) -> bool:
        """A section shaped like core4's job section ``project.module.Class`` (a mapping with a job
        property) at ``path + key``: an error naming the new place; True when it was one."""
        parts = [*path, *key.split(".")]
        if not (len(parts) >= 3 and _CLASS.match(parts[-1]) and all(_MODULE.match(p) for p in parts[1:-1])
                and isinstance(value, Mapping) and any(k in self.job_keys for k in value)):
            return False
        dotted, project = ".".join(parts), parts[0]
        self.errors.append(f"'{dotted}' {source.where} is a core4 job section (project.module.Class): "
                           f"here a job's settings are {project}.{JOBS}.<job>, <job> being the Dagster "
                           f"job's name (coco jobs {project}); move its keys there")
        return True

    def _keyed(self, path: tuple[str, ...], value: Any, source: Source, allowed,
               tree=None, sources=None) -> None:
        """A mapping whose keys are fixed: each known key is a leaf."""
        tree = self.tree if tree is None else tree
        sources = self.sources if sources is None else sources
        dotted = ".".join(path)
        if value is None:  # an empty section in YAML ("job:") sets nothing
            return
        if not isinstance(value, Mapping):
            self.errors.append(f"{dotted} {source.where}: expected a mapping with keys "
                               f"{_names(allowed)}, got {_kind(value)}")
            return
        for key, leaf in value.items():
            if key not in allowed:
                self.errors.append(f"unknown key '{dotted}.{key}' {source.where}: "
                                   f"expected one of {_names(allowed)}")
            else:
                _set(tree, sources, path + (key,), leaf, source)

    def _project(self, tree: dict, sources: dict, name: str, value: Any, source: Source) -> None:
        _container(tree, sources, (name,))
        if value is None:
            return
        if not isinstance(value, Mapping):
            self.errors.append(f"{name} {source.where}: expected a mapping (the project's "
                               f"settings), got {_kind(value)}")
            return
        for key, item in value.items():
            path = (name, key)
            if not isinstance(key, str):
                self._bad_key(name, key, source)
            elif key == DEFAULT:
                self._keyed(path, item, source, self.default_keys, tree, sources)
            elif key == JOBS:
                self._jobs(tree, sources, path, item, source)
            elif not self._core4_job((name,), key, item, source):
                self._free(tree, sources, path, item, source)

    def _jobs(self, tree, sources, path, value, source) -> None:
        _container(tree, sources, path)
        if value is None:
            return
        if not isinstance(value, Mapping):
            self.errors.append(f"{'.'.join(path)} {source.where}: expected a mapping of job "
                               f"name to its settings, got {_kind(value)}")
            return
        for job, settings in value.items():
            if not isinstance(job, str):
                self._bad_key(".".join(path), job, source)
            elif settings is not None and not isinstance(settings, Mapping):
                self.errors.append(f"{'.'.join(path + (job,))} {source.where}: expected a "
                                   f"mapping of the job's settings, got {_kind(settings)}")
            else:
                self._free(tree, sources, path + (job,), self._no_typos(path + (job,), settings or {}, source),
                           source)

    def _no_typos(self, path: tuple[str, ...], settings: Mapping, source: Source) -> dict:
        """``settings`` without (and an error for) each key that is no job property but close to one:
        its other keys are the job's own settings, which only the job knows."""
        kept = {}
        for key, value in settings.items():
            close = difflib.get_close_matches(key, self.job_keys, 1, 0.8) if isinstance(key, str) else []
            if close and key not in self.job_keys:
                self.errors.append(f"unknown key '{'.'.join(path)}.{key}' {source.where}: no job property; "
                                   f"did you mean {close[0]}? (job properties: {_names(self.job_keys)}; "
                                   f"other keys are the job's own settings: rename it)")
            else:
                kept[key] = value
        return kept

    def _free(self, tree, sources, path, value, source) -> None:
        """Free keys: mappings merge key by key, anything else replaces what was there."""
        if not isinstance(value, Mapping):
            _set(tree, sources, path, value, source)
            return
        _container(tree, sources, path)
        for key, item in value.items():
            if isinstance(key, str):
                if path[1:2] != (JOBS,) and self._core4_job(path, key, item, source):
                    continue
                self._free(tree, sources, path + (key,), item, source)
            else:
                self._bad_key(".".join(path), key, source)

    def _bad_key(self, parent: str, key: Any, source: Source) -> None:
        self.errors.append(f"key {key!r} under '{parent}' {source.where}: expected a string key")


def _container(tree: dict, sources: dict, path: tuple[str, ...]) -> dict:
    """The mapping at `path`, created (replacing a leaf there) when needed."""
    node = tree
    for depth, key in enumerate(path):
        child = node.get(key)
        if not isinstance(child, dict):
            sources.pop(".".join(path[: depth + 1]), None)
            child = node[key] = {}
        node = child
    return node


def _set(tree: dict, sources: dict, path: tuple[str, ...], value: Any, source: Source) -> None:
    parent = _container(tree, sources, path[:-1])
    dotted = ".".join(path)
    if isinstance(parent.get(path[-1]), dict):  # a leaf replaces a whole sub-mapping
        for key in [k for k in sources if k.startswith(dotted + ".")]:
            del sources[key]
    parent[path[-1]] = value
    sources[dotted] = source
