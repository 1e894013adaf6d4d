"""Plain records passed between the pipeline stages.

Nothing here does I/O. Config records are produced by :mod:`aggregator.config`;
fetch, parse and normalize records flow through :mod:`aggregator.pipeline`;
story views are what :mod:`aggregator.publish` renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Defaults:
    interval: float = 15 * 60.0  # seconds
    timeout: float = 20.0  # total deadline for one fetch, seconds
    max_bytes: int = 10 * 1024 * 1024  # decompressed body cap


@dataclass(frozen=True)
class Settings:
    database: str = "sqlite:///data/aggregator.db"
    listen: str = "127.0.0.1:8080"
    base_url: str = "http://localhost:8080/"
    user_agent: str = ""
    defaults: Defaults = field(default_factory=Defaults)
    retention_days: int = 90
    concurrency: int = 16  # parallel fetches
    per_host: int = 2  # parallel fetches to one host
    tracking_params: tuple[str, ...] = ()  # extra query parameters to drop from URLs
    tick: float = 5.0  # how often the scheduler looks for due sources, seconds
    lease: float = 60.0  # how long a worker owns a claimed source without a heartbeat
    processes: int | None = None  # parser processes; None: one per core (at most 4); 0: inline


@dataclass(frozen=True)
class Source:
    id: str
    url: str
    name: str
    language: str | None = None
    interval: float = 15 * 60.0  # seconds (the default is filled in from Settings)
    timeout: float = 20.0
    max_bytes: int = 10 * 1024 * 1024
    priority: int = 0
    tags: tuple[str, ...] = ()
    enabled: bool = True
    strip: tuple[str, ...] = ()  # extra boilerplate line patterns (regular expressions)
    allow_private: bool = False


@dataclass(frozen=True)
class TopicMatch:
    any: tuple[str, ...] = ()
    all: tuple[str, ...] = ()
    none: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topic:
    id: str
    title: str
    subtitle: str = ""
    match: TopicMatch = field(default_factory=TopicMatch)
    sources: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    limit: int = 50


@dataclass(frozen=True)
class Config:
    settings: Settings
    sources: tuple[Source, ...]
    topics: tuple[Topic, ...]
    directory: str = "config"

    def source(self, source_id: str) -> Source | None:
        return next((s for s in self.sources if s.id == source_id), None)

    def topic(self, topic_id: str) -> Topic | None:
        return next((t for t in self.topics if t.id == topic_id), None)


# --------------------------------------------------------------------------- fetch


@dataclass(frozen=True)
class FetchRequest:
    url: str
    user_agent: str
    etag: str | None = None
    last_modified: str | None = None
    timeout: float = 20.0  # total deadline for the whole exchange, all redirects included
    connect_timeout: float = 10.0
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 10
    allow_private: bool = False


@dataclass(frozen=True)
class Fetched:
    """A 200 response with its body read in full (and decompressed)."""

    url: str  # the URL the body came from (after every redirect)
    status: int
    content: bytes
    headers: Mapping[str, str]  # lower-case names
    etag: str | None = None
    last_modified: str | None = None
    permanent_url: str | None = None  # new URL when every hop from the start was 301/308
    elapsed_ms: int = 0


@dataclass(frozen=True)
class NotModified:
    """A 304 response: nothing to parse."""

    url: str
    headers: Mapping[str, str]
    etag: str | None = None
    last_modified: str | None = None
    permanent_url: str | None = None
    elapsed_ms: int = 0


class ErrorKind(StrEnum):
    """Why a poll failed; stored on the source and shown in words by ``status``."""

    TIMEOUT = "timeout"
    DNS = "dns"
    CONNECTION = "connection"
    TLS = "tls"
    HTTP = "http"  # 4xx/5xx other than the ones below
    NOT_FOUND = "not_found"  # 404
    GONE = "gone"  # 410: the source is disabled
    RATE_LIMITED = "rate_limited"  # 429 / 503 with Retry-After
    SERVER = "server"  # 5xx
    TOO_LARGE = "too_large"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    BLOCKED = "blocked"  # redirect into a private network refused
    BAD_URL = "bad_url"
    NOT_A_FEED = "not_a_feed"
    PARSE = "parse"
    INTERNAL = "internal"


# --------------------------------------------------------------------------- parse


@dataclass(frozen=True)
class Enclosure:
    url: str
    type: str | None = None
    length: int | None = None


@dataclass(frozen=True)
class ParsedEntry:
    """One feed entry as the feed gave it (text still raw, HTML unsanitized)."""

    guid: str | None
    link: str | None  # absolute when the feed allowed it
    title: str  # may hold markup/entities
    summary: str  # raw HTML or text
    content: str  # raw HTML (the longest content block), "" when absent
    published: datetime | None = None  # aware, UTC
    updated: datetime | None = None  # aware, UTC
    published_raw: str | None = None  # the date text when no parser understood it
    author: str | None = None
    categories: tuple[str, ...] = ()
    language: str | None = None
    base: str | None = None  # xml:base in force for the entry
    enclosures: tuple[Enclosure, ...] = ()


@dataclass(frozen=True)
class ParsedFeed:
    title: str
    link: str | None
    language: str | None
    entries: tuple[ParsedEntry, ...]
    encoding: str = "utf-8"
    ttl_seconds: int | None = None  # RSS <ttl>
    warning: str | None = None  # recoverable problem (feedparser "bozo")
    # what the next body's items are checked against (aggregator.parse.parse_feed(known=)):
    # 8 bytes of the feed-level values, then 8 per item in body order; empty when unsure
    digests: bytes = b""
    skipped: int = 0  # items known from the last body: not parsed, not in ``entries``


# --------------------------------------------------------------------------- normalize


@dataclass(frozen=True)
class NormalizeOptions:
    """Per-source knobs for :func:`aggregator.normalize.normalize_entry`."""

    source_id: str
    source_language: str | None = None
    strip: tuple[str, ...] = ()  # extra boilerplate line patterns (regular expressions)
    tracking_params: tuple[str, ...] = ()  # extra query parameters to drop
    languages: tuple[str, ...] = ("en", "ru")  # candidates for language detection


@dataclass(frozen=True)
class Item:
    """A clean item ready to store."""

    source_id: str
    guid: str  # stable key within the source: GUID, else link, else content hash
    url: str  # canonical URL: the cross-source dedup key ("" when the entry has no link)
    link: str  # absolute link shown to readers (tracking parameters removed)
    title: str  # clean text
    summary: str  # clean text, boilerplate removed
    content: str  # sanitized HTML, boilerplate removed ("" when absent)
    published: datetime  # aware, UTC
    updated: datetime  # aware, UTC
    language: str | None = None
    author: str | None = None
    categories: tuple[str, ...] = ()
    enclosures: tuple[Enclosure, ...] = ()
    content_hash: str = ""  # hash of the normalized title + text, for exact-copy detection


# --------------------------------------------------------------------------- publish


@dataclass(frozen=True)
class Copy:
    """One source's copy of a story, as a link."""

    link: str
    source_name: str
    source_id: str
    title: str = ""
    language: str | None = None


@dataclass(frozen=True)
class StoryView:
    """A story as a topic feed shows it: the representative item plus the other copies."""

    story_id: str  # stable, e.g. "urn:uuid:…"
    title: str
    summary: str
    content: str  # sanitized HTML
    link: str  # the representative's link
    published: datetime
    updated: datetime
    source_id: str
    source_name: str
    source_url: str  # the representative's feed URL
    language: str | None = None
    author: str | None = None
    categories: tuple[str, ...] = ()
    related: tuple[Copy, ...] = ()
    matched_terms: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeedPage:
    """One page of a topic feed, everything a renderer needs (no clock, no store)."""

    topic: Topic
    base_url: str  # public prefix, ends with "/"
    stories: tuple[StoryView, ...]
    updated: datetime  # newest change in the topic (a fixed epoch when empty)
    page: int = 1
    pages: int = 1
    generator_version: str = ""


# --------------------------------------------------------------------------- store


@dataclass(frozen=True)
class SourceState:
    """A source's polling state as the store keeps it."""

    id: str
    url: str  # as configured
    effective_url: str  # after permanent redirects (301/308); equals url otherwise
    name: str = ""
    enabled: bool = True
    etag: str | None = None
    last_modified: str | None = None
    next_poll_at: datetime | None = None
    last_polled_at: datetime | None = None
    last_success_at: datetime | None = None
    last_status: int | None = None  # HTTP status of the last poll, None when no response
    last_error_kind: str | None = None
    last_error: str | None = None
    consecutive_errors: int = 0
    disabled_reason: str | None = None  # e.g. "410 Gone" — the source is no longer polled
    items_total: int = 0
    items_24h: int = 0
    # ParsedFeed.digests of the last feed body ingested: an item listed again unchanged is
    # not parsed or normalized again
    entry_digests: bytes = b""


@dataclass(frozen=True)
class PollOutcome:
    """What one poll did to a source's state; stored in the same transaction as its items."""

    source_id: str
    polled_at: datetime
    next_poll_at: datetime
    status: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    permanent_url: str | None = None  # set after a 301/308 chain
    error_kind: str | None = None
    error: str | None = None
    disabled_reason: str | None = None  # set on 410 Gone
    elapsed_ms: int = 0
    entry_digests: bytes | None = None  # of the body ingested; None keeps the stored ones


@dataclass(frozen=True)
class TopicHit:
    """An item's match with a topic, computed before ingest and stored against its story."""

    topic_id: str
    terms: tuple[str, ...] = ()


@dataclass(frozen=True)
class IngestCounts:
    new: int = 0  # items that started a new story
    duplicate: int = 0  # new items that joined an existing story (another copy)
    updated: int = 0  # items edited in place
    unchanged: int = 0  # items already stored as they are

    def __add__(self, other: IngestCounts) -> IngestCounts:
        return IngestCounts(
            self.new + other.new,
            self.duplicate + other.duplicate,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
        )


# --------------------------------------------------------------------------- prepare
# (here, not in aggregator.prepare: the daemon sends and receives these without loading
# the parser and its libraries, which run in the parser processes)


@dataclass(frozen=True)
class PrepareJob:
    source: Source
    content: bytes
    url: str  # the URL the body came from
    headers: Mapping[str, str]
    fetched_at: datetime
    tracking_params: tuple[str, ...] = ()
    languages: tuple[str, ...] = ("en", "ru")
    known: bytes = b""  # ParsedFeed.digests of the last body ingested


@dataclass(frozen=True)
class PreparedEntry:
    item: Item
    hits: tuple[TopicHit, ...]
    features: bytes  # aggregator.stories.StoryFeatures.to_bytes()


@dataclass(frozen=True)
class PreparedFeed:
    entries: tuple[PreparedEntry, ...]
    ttl_seconds: int | None = None
    warning: str | None = None
    digests: bytes = b""  # ParsedFeed.digests: what the next body is checked against
    skipped: int = 0  # entries known unchanged, not prepared again
