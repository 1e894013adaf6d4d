"""Load the config directory into frozen :mod:`aggregator.types` records.

    aggregator.yaml (optional) ─┐
    sources.yaml    (required) ─┼─ read → YAML nodes → duplicate keys → pydantic → cross-checks → Config
    topics.yaml     (optional) ─┘

Every problem in the three files is collected and raised together as one
:class:`~aggregator.errors.ConfigError`; each problem names the file, the line of the YAML
node at fault (the key's line for an unknown or duplicate key, the value's line for a bad
value) and the key path, e.g. ``sources.yaml:12: sources[1]: unknown key 'intervall'``.

Rules beyond plain types:

- Source and topic ids are slugs (``^[a-z0-9][a-z0-9_-]*$``) and unique within their file.
- URLs are http(s) with a host. ``base_url`` is given a trailing ``/``.
- Durations are ``90s``, ``15m``, ``2h``, ``1d``, combinations such as ``1h30m``, or integer
  seconds; sizes are ``512KB``, ``10MB``, ``1GB`` (multiples of 1024, as are ``KiB`` …) or
  bytes. A source without ``interval``/``timeout``/``max_bytes`` takes them from ``defaults``.
- ``strip`` patterns and ``/…/`` topic terms must compile as regular expressions.
- A topic's ``sources`` must name sources of sources.yaml (enabled or not).
- A topic whose ``match.any`` is empty matches every item that passes its other rules
  (``match.all``, ``match.none``, ``sources``, ``tags``, ``languages``); a topic with none of
  ``match.any``, ``match.all``, ``sources``, ``tags``, ``languages`` would match everything
  and is rejected.

Only the three files are read: no clock, no store.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from aggregator import __version__
from aggregator.errors import ConfigError, ConfigProblem
from aggregator.types import Config, Defaults, Settings, Source, Topic, TopicMatch

__all__ = [
    "DEFAULT_USER_AGENT",
    "load_config",
    "parse_duration",
    "parse_size",
    "resolve_config_dir",
]

DEFAULT_USER_AGENT = f"aggregator/{__version__} (+https://github.com/agency-aggregator/aggregator)"
DEFAULT_CONFIG_DIR = "config"
CONFIG_ENV = "AGGREGATOR_CONFIG"
DATABASE_ENV = "AGGREGATOR_DATABASE_URL"

SETTINGS_FILE = "aggregator.yaml"
SOURCES_FILE = "sources.yaml"
TOPICS_FILE = "topics.yaml"

# --------------------------------------------------------------------------- public helpers


def resolve_config_dir(cli_value: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The config directory: ``--config`` value, else ``$AGGREGATOR_CONFIG``, else ``./config``."""
    env = os.environ if env is None else env
    chosen = cli_value or env.get(CONFIG_ENV) or DEFAULT_CONFIG_DIR
    return Path(chosen).expanduser()


_DURATION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION_RE = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?"
)


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"1h30m"``, ``"900"`` or ``900``.

    Units go from largest to smallest, each at most once; numbers may have a fraction
    (``"1.5h"``). Raises :class:`ValueError` naming the value otherwise.
    """
    bad = ValueError(f"bad duration {value!r} (use 90s, 15m, 2h, 1d or seconds)")
    if isinstance(value, bool):  # YAML's yes/no: an int subclass, never meant as seconds
        raise bad
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise bad
        return float(value)
    if not isinstance(value, str):
        raise bad
    text = value.strip().lower()
    if text.isdigit():
        return float(text)
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None:
        raise bad
    return sum(float(n) * _DURATION_UNITS[unit] for unit, n in match.groupdict().items() if n)


# Decimal-looking units are binary multiples too, so "10MB" is the 10 MiB default.
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


def parse_size(value: str | int) -> int:
    """Bytes in ``"512KB"``, ``"10MB"``, ``"1GB"``, ``"2MiB"``, ``"1.5 MB"`` or ``4096``.

    KB/MB/GB and KiB/MiB/GiB are all multiples of 1024. Raises :class:`ValueError` otherwise.
    """
    bad = ValueError(f"bad size {value!r} (use 512KB, 10MB, 1GB or bytes)")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, int):
        if value < 0:
            raise bad
        return value
    if not isinstance(value, str):
        raise bad
    match = _SIZE_RE.fullmatch(value.strip().lower())
    if match is None or match.group(2) not in _SIZE_UNITS:
        raise bad
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


# --------------------------------------------------------------------------- field checks
#
# Each raises PydanticCustomError so pydantic files the message under the field's location;
# the message goes through the context because templates would eat braces in regexes.


def _problem(message: str) -> PydanticCustomError:
    return PydanticCustomError("config", "{message}", {"message": message})


_SLUG_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_LANGUAGE_RE = re.compile(r"[a-z]{2}")


def _slug(value: str) -> str:
    if not _SLUG_RE.fullmatch(value):
        raise _problem(f"must be a slug (lowercase letters, digits, '-', '_'), got {value!r}")
    return value


def _text(value: str) -> str:
    if not value.strip():
        raise _problem("must not be empty")
    return value


def _language(value: str) -> str:
    if not _LANGUAGE_RE.fullmatch(value.lower()):
        raise _problem(f"must be a two-letter language code such as 'en' or 'ru', got {value!r}")
    return value.lower()


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return False
    return (
        parts.scheme.lower() in ("http", "https")
        and bool(parts.hostname)
        and not any(c.isspace() for c in value)
    )


def _http_url(value: str) -> str:
    if not _is_http_url(value):
        raise _problem(f"must be an http(s) URL: {value!r}")
    return value


def _base_url(value: str) -> str:
    _http_url(value)
    parts = urlsplit(value)
    if parts.query or parts.fragment:
        raise _problem(f"must not have a query or fragment: {value!r}")
    return value if value.endswith("/") else value + "/"


def _listen(value: str) -> str:
    host, _, port = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if (
        not host
        or (":" in host and not bracketed)
        or not port.isdigit()
        or not 0 <= int(port) <= 65535
    ):
        raise _problem(f"must be host:port such as 127.0.0.1:8080 or [::1]:8080, got {value!r}")
    return value


def _compile_error(pattern: str) -> str | None:
    """The re error for ``pattern``, or None when it compiles."""
    try:
        with warnings.catch_warnings():
            # "possible nested set" and the like: valid patterns, nothing to report
            warnings.simplefilter("ignore")
            re.compile(pattern)
    except re.error as e:
        return str(e)
    return None


def _regex(value: str) -> str:
    error = _compile_error(value)
    if error is not None:
        raise _problem(f"bad regular expression {value!r}: {error}")
    return value


def _term(value: str) -> str:
    term = value.strip()
    if not term.rstrip("*"):
        raise _problem(f"empty term {value!r}")
    if len(term) >= 2 and term.startswith("/") and term.endswith("/"):
        if len(term) == 2:
            raise _problem(f"empty regular expression {value!r}")
        error = _compile_error(term[1:-1])
        if error is not None:
            raise _problem(f"bad regular expression {value!r}: {error}")
    return term


def _duration(value: object) -> float:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise _problem(f"expected a duration such as 15m, got {_describe(value)}")
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise _problem(str(e)) from None
    if seconds <= 0:
        raise _problem(f"must be longer than zero, got {value!r}")
    return seconds


def _size(value: object) -> int:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise _problem(f"expected a size such as 10MB, got {_describe(value)}")
    try:
        size = parse_size(value)
    except ValueError as e:
        raise _problem(str(e)) from None
    if size <= 0:
        raise _problem(f"must be more than zero bytes, got {value!r}")
    return size


Slug = Annotated[str, AfterValidator(_slug)]
Text = Annotated[str, AfterValidator(_text)]
Language = Annotated[str, AfterValidator(_language)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
Regex = Annotated[str, AfterValidator(_regex)]
Term = Annotated[str, AfterValidator(_term)]
Duration = Annotated[float, PlainValidator(_duration)]
Size = Annotated[int, PlainValidator(_size)]
Count = Annotated[int, Field(ge=1)]

# --------------------------------------------------------------------------- file schemas


class _Model(BaseModel):
    # strict: YAML already gives real ints and bools, so "5" or "yes" in quotes is a mistake
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


_SETTINGS = Settings()
_DEFAULTS = Defaults()


class _DefaultsModel(_Model):
    interval: Duration = _DEFAULTS.interval
    timeout: Duration = _DEFAULTS.timeout
    max_bytes: Size = _DEFAULTS.max_bytes


class _RetentionModel(_Model):
    days: Count = _SETTINGS.retention_days


class _SchedulerModel(_Model):
    tick: Duration = _SETTINGS.tick
    lease: Duration = _SETTINGS.lease


class _SettingsFile(_Model):
    database: Text = _SETTINGS.database
    listen: Annotated[str, AfterValidator(_listen)] = _SETTINGS.listen
    base_url: Annotated[str, AfterValidator(_base_url)] = _SETTINGS.base_url
    user_agent: Text = DEFAULT_USER_AGENT
    defaults: _DefaultsModel = Field(default_factory=_DefaultsModel)
    retention: _RetentionModel = Field(default_factory=_RetentionModel)
    concurrency: Count = _SETTINGS.concurrency
    per_host: Count = _SETTINGS.per_host
    tracking_params: list[Text] = Field(default_factory=list)
    scheduler: _SchedulerModel = Field(default_factory=_SchedulerModel)
    # worker processes that parse feeds; "auto": one per CPU core but one, 1 to 4; 0: in-process
    processes: Annotated[int, Field(ge=0, le=64)] | Literal["auto"] = "auto"


class _SourceModel(_Model):
    id: Slug
    url: HttpUrl
    name: Text | None = None
    language: Language | None = None
    interval: Duration | None = None  # None: from defaults
    timeout: Duration | None = None
    max_bytes: Size | None = None
    priority: int = 0
    tags: list[Text] = Field(default_factory=list)
    enabled: bool = True
    strip: list[Regex] = Field(default_factory=list)
    allow_private: bool = False


class _SourcesFile(_Model):
    sources: list[_SourceModel]


class _MatchModel(_Model):
    any: list[Term] = Field(default_factory=list)
    all: list[Term] = Field(default_factory=list)
    none: list[Term] = Field(default_factory=list)


class _TopicModel(_Model):
    id: Slug
    title: Text
    subtitle: str = ""
    match: _MatchModel = Field(default_factory=_MatchModel)
    sources: list[str] = Field(default_factory=list)
    tags: list[Text] = Field(default_factory=list)
    languages: list[Language] = Field(default_factory=list)
    limit: int = Field(default=50, ge=1, le=1000)

    @model_validator(mode="after")
    def _selects_something(self) -> Self:
        if not (self.match.any or self.match.all or self.sources or self.tags or self.languages):
            raise _problem(
                "matches every item: give match.any terms or a sources, tags or languages filter"
            )
        return self


class _TopicsFile(_Model):
    topics: list[_TopicModel]


# --------------------------------------------------------------------------- reading YAML

Loc = Sequence[int | str]
_M = TypeVar("_M", bound=BaseModel)
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class _Document:
    """One config file as read: its node tree (for lines) and its plain data."""

    file: str
    present: bool = False
    root: yaml.Node | None = None
    data: Any = None
    parsed: bool = False  # the YAML was read without error
    problems: list[ConfigProblem] = field(default_factory=list)

    def add(self, line: int, message: str) -> None:
        self.problems.append(ConfigProblem(self.file, line, message))

    def line_of(self, loc: Loc, *, key: bool = False) -> int:
        node = _node_at(self.root, loc, key=key)
        return 0 if node is None else node.start_mark.line + 1


def _read(directory: Path, name: str, *, required: bool) -> _Document:
    doc = _Document(name)
    try:
        raw = (directory / name).read_bytes()
    except FileNotFoundError:
        if required:
            doc.add(0, f"file not found in {directory}")
        return doc
    except OSError as e:
        doc.add(0, f"cannot read: {e.strerror or e}")
        return doc
    doc.present = True
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        doc.add(line, f"not UTF-8 text: byte 0x{raw[e.start]:02x} cannot be decoded")
        return doc
    _parse(doc, text)
    return doc


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves dates as text.

    No key takes a date, and an impossible one ("2024-13-45") would otherwise fail in the
    constructor with no line to report.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

if hasattr(yaml, "CSafeLoader"):

    class _CLoader(yaml.CSafeLoader):
        """The same rules on libyaml's parser: a 1,000-source file loads ~10x faster."""

    _CLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers
    _FAST_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] | None = _CLoader
else:  # PyYAML built without libyaml
    _FAST_LOADER = None


def _parse(doc: _Document, text: str) -> None:
    if _FAST_LOADER is not None and _parse_with(doc, text, _FAST_LOADER):
        return
    # The pure-Python loader reads what libyaml refuses, or words the problem with a line.
    doc.problems.clear()
    _parse_with(doc, text, _Loader)


def _parse_with(doc: _Document, text: str, loader_class: Any) -> bool:
    """Parse into ``doc``; False when the text is not valid YAML (problems added)."""
    try:
        loader = loader_class(text)  # checks the characters of the whole text
    except yaml.reader.ReaderError as e:
        line = text[: e.position].count("\n") + 1
        doc.add(line, f"invalid YAML: character #x{e.character:04x}: {e.reason}")
        return False
    try:
        doc.root = loader.get_single_node()
        if doc.root is not None:
            _check_duplicate_keys(doc, doc.root, (), set())
            doc.data = loader.construct_document(doc.root)
        doc.parsed = True
        return True
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = e.problem or e.context or "unreadable"
        if e.context and message.startswith("but "):
            message = f"{e.context} {message}"  # "expected a single document … but found …"
        doc.add(0 if mark is None else mark.line + 1, f"invalid YAML: {message}")
    except (yaml.YAMLError, ValueError) as e:
        # e.g. "!!int abc" or "2024-13-45": the constructor fails without a position
        doc.add(0, f"invalid YAML: {e}")
    finally:
        loader.dispose()
    return False


def _check_duplicate_keys(doc: _Document, node: yaml.Node, loc: Loc, seen: set[int]) -> None:
    """Report repeated keys in one mapping, which YAML would silently collapse to the last."""
    if id(node) in seen:  # aliases may share (or loop back to) a node
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                line = key.start_mark.line + 1
                if key.value in first:
                    message = f"duplicate key {key.value!r} (first at line {first[key.value]})"
                    doc.add(line, _prefixed(loc, message))
                else:
                    first[key.value] = line
            _check_duplicate_keys(doc, value, (*loc, str(key.value)), seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(doc, item, (*loc, index), seen)


def _node_at(root: yaml.Node | None, loc: Loc, *, key: bool = False) -> yaml.Node | None:
    """The node at ``loc`` (the key node of the last step when ``key``), else the deepest found."""
    node = root
    for depth, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            # the last pair wins, as in the constructed data (merged pairs come first)
            pairs = [(k, v) for k, v in node.value if getattr(k, "value", None) == str(part)]
            if not pairs:
                return node
            key_node, value_node = pairs[-1]
            node = key_node if key and depth == len(loc) - 1 else value_node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


# --------------------------------------------------------------------------- messages


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _prefixed(loc: Loc, message: str) -> str:
    return f"{_path(loc)}: {message}" if loc else message


def _describe(value: object) -> str:
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return str(value)


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "float_type": "a number",
}


def _keys_of(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the schema allows at ``loc`` (a mapping), for "did you mean" hints."""
    current: Any = model
    for part in loc:
        if isinstance(part, str):
            fields = getattr(current, "model_fields", None)
            if not fields or part not in fields:
                return []
            current = fields[part].annotation
        # peel list[X] and X | None down to X
        while typing.get_origin(current) is not None:
            args = [a for a in typing.get_args(current) if a is not type(None)]
            current = args[0] if args else None
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _from_pydantic(
    doc: _Document, error: ErrorDetails, schema: type[BaseModel], shape: str
) -> None:
    loc = error["loc"]
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        name = str(loc[-1])
        message = f"unknown key {name!r}"
        close = difflib.get_close_matches(name, _keys_of(schema, loc[:-1]), n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        doc.add(doc.line_of(loc, key=True), _prefixed(loc[:-1], message))
        return
    if kind == "missing":
        doc.add(doc.line_of(loc[:-1]), _prefixed(loc[:-1], f"missing required key {loc[-1]!r}"))
        return
    if not loc and kind == "model_type":
        got = "an empty file" if value is None else _describe(value)
        doc.add(doc.line_of(loc), f"expected {shape}, got {got}")
        return
    if kind == "config":
        message = error["msg"]
    elif kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}, got {_describe(value)}"
        if kind == "string_type" and isinstance(value, int | float):
            message += " (put it in quotes)"
    elif kind == "greater_than_equal":
        message = f"must be at least {error.get('ctx', {}).get('ge')}, got {_describe(value)}"
    elif kind == "less_than_equal":
        message = f"must be at most {error.get('ctx', {}).get('le')}, got {_describe(value)}"
    else:
        message = f"{error['msg'].lower()}, got {_describe(value)}"
    doc.add(doc.line_of(loc), _prefixed(loc, message))


def _validate(doc: _Document, schema: type[_M], shape: str) -> _M | None:
    try:
        return schema.model_validate(doc.data)
    except ValidationError as e:
        for error in e.errors(include_url=False):
            _from_pydantic(doc, error, schema, shape)
        return None


# --------------------------------------------------------------------------- cross-checks


def _check_unique_ids(doc: _Document, key: str, what: str) -> set[str]:
    """Report repeated ids in the ``key`` list; return every id written there."""
    first: dict[str, int] = {}
    entries = doc.data.get(key) if isinstance(doc.data, dict) else None
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        ident = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(ident, str):
            continue
        line = doc.line_of((key, index, "id"))
        if ident in first:
            message = f"duplicate {what} id {ident!r} (first at line {first[ident]})"
            doc.add(line, _prefixed((key, index, "id"), message))
        else:
            first[ident] = line
    return set(first)


def _check_topic_sources(doc: _Document, source_ids: set[str]) -> None:
    topics = doc.data.get("topics") if isinstance(doc.data, dict) else None
    for t_index, topic in enumerate(topics if isinstance(topics, list) else []):
        wanted = topic.get("sources") if isinstance(topic, dict) else None
        for s_index, ident in enumerate(wanted if isinstance(wanted, list) else []):
            if isinstance(ident, str) and ident not in source_ids:
                loc = ("topics", t_index, "sources", s_index)
                doc.add(doc.line_of(loc), _prefixed(loc, f"unknown source id {ident!r}"))


# --------------------------------------------------------------------------- building records


def _settings(model: _SettingsFile, env: Mapping[str, str]) -> Settings:
    return Settings(
        database=env.get(DATABASE_ENV) or model.database,
        listen=model.listen,
        base_url=model.base_url,
        user_agent=model.user_agent,
        defaults=Defaults(
            interval=model.defaults.interval,
            timeout=model.defaults.timeout,
            max_bytes=model.defaults.max_bytes,
        ),
        retention_days=model.retention.days,
        concurrency=model.concurrency,
        per_host=model.per_host,
        tracking_params=tuple(model.tracking_params),
        tick=model.scheduler.tick,
        lease=model.scheduler.lease,
        processes=None if model.processes == "auto" else model.processes,
    )


def _source(model: _SourceModel, defaults: Defaults) -> Source:
    return Source(
        id=model.id,
        url=model.url,
        name=model.name or model.id,
        language=model.language,
        interval=defaults.interval if model.interval is None else model.interval,
        timeout=defaults.timeout if model.timeout is None else model.timeout,
        max_bytes=defaults.max_bytes if model.max_bytes is None else model.max_bytes,
        priority=model.priority,
        tags=tuple(model.tags),
        enabled=model.enabled,
        strip=tuple(model.strip),
        allow_private=model.allow_private,
    )


def _topic(model: _TopicModel) -> Topic:
    return Topic(
        id=model.id,
        title=model.title,
        subtitle=model.subtitle,
        match=TopicMatch(
            any=tuple(model.match.any), all=tuple(model.match.all), none=tuple(model.match.none)
        ),
        sources=tuple(model.sources),
        tags=tuple(model.tags),
        languages=tuple(model.languages),
        limit=model.limit,
    )


def load_config(directory: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate ``directory``; raise :class:`ConfigError` with every problem found.

    ``env`` (default: ``os.environ``) may set ``AGGREGATOR_DATABASE_URL``, which wins over
    ``database`` in aggregator.yaml.
    """
    env = os.environ if env is None else env
    path = Path(directory)
    settings_doc = _read(path, SETTINGS_FILE, required=False)
    sources_doc = _read(path, SOURCES_FILE, required=True)
    topics_doc = _read(path, TOPICS_FILE, required=False)

    settings_model: _SettingsFile | None = _SettingsFile()
    if settings_doc.parsed and settings_doc.data is not None:
        settings_model = _validate(settings_doc, _SettingsFile, "a mapping of settings")
    elif settings_doc.present and not settings_doc.parsed:
        settings_model = None

    sources_model = None
    if sources_doc.parsed:
        sources_model = _validate(sources_doc, _SourcesFile, "a mapping with a 'sources:' list")
    source_ids = _check_unique_ids(sources_doc, "sources", "source")

    topics_model: _TopicsFile | None = _TopicsFile(topics=[])
    if topics_doc.parsed and topics_doc.data is not None:
        topics_model = _validate(topics_doc, _TopicsFile, "a mapping with a 'topics:' list")
        _check_unique_ids(topics_doc, "topics", "topic")
        if sources_doc.parsed:  # else every reference would look unknown
            _check_topic_sources(topics_doc, source_ids)
    elif topics_doc.present and not topics_doc.parsed:
        topics_model = None

    problems = [
        problem
        for doc in (settings_doc, sources_doc, topics_doc)
        for problem in sorted(doc.problems, key=lambda p: p.line)
    ]
    if problems or settings_model is None or sources_model is None or topics_model is None:
        raise ConfigError(problems)

    settings = _settings(settings_model, env)
    return Config(
        settings=settings,
        sources=tuple(_source(s, settings.defaults) for s in sources_model.sources),
        topics=tuple(_topic(t) for t in topics_model.topics),
        directory=str(directory),
    )
