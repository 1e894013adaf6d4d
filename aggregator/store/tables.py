"""Table definitions (SQLAlchemy Core). The schema itself is created only by the migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores them naive, PostgreSQL as timestamptz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

sources = Table(
    "sources",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("url", Text, nullable=False),
    Column("effective_url", Text, nullable=False),
    Column("name", Text, nullable=False, default=""),
    Column("priority", Integer, nullable=False, default=0),
    Column("configured", Boolean, nullable=False, default=True),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("disabled_reason", Text),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("next_poll_at", UTCDateTime),
    Column("last_polled_at", UTCDateTime),
    Column("last_success_at", UTCDateTime),
    Column("last_status", Integer),
    Column("last_error_kind", String(40)),
    Column("last_error", Text),
    Column("consecutive_errors", Integer, nullable=False, default=0),
    Column("lease_owner", String(200)),
    Column("lease_expires_at", UTCDateTime),
    # The last ingested body's entry digests (0004): unchanged entries skip normalizing.
    Column("entry_digests", LargeBinary),
    Index("ix_sources_next_poll", "next_poll_at"),
)

stories = Table(
    "stories",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uid", String(64), nullable=False, unique=True),
    Column("representative_item_id", Integer),
    Column("published_at", UTCDateTime, nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_stories_published", "published_at", "id"),
    Index("ix_stories_updated", "updated_at"),
)

items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source_id", String(100), ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
    Column("guid", Text, nullable=False),
    Column("story_id", Integer, ForeignKey("stories.id", ondelete="CASCADE"), nullable=False),
    Column("url", Text, nullable=False, default=""),
    Column("link", Text, nullable=False, default=""),
    Column("title", Text, nullable=False, default=""),
    Column("summary", Text, nullable=False, default=""),
    Column("content", Text, nullable=False, default=""),
    Column("published_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("language", String(16)),
    Column("author", Text),
    Column("categories", Text, nullable=False, default="[]"),  # JSON list
    Column("enclosures", Text, nullable=False, default="[]"),  # JSON list
    Column("content_hash", String(64), nullable=False, default=""),
    Column("features", LargeBinary),
    Column("revisions", Integer, nullable=False, default=0),
    UniqueConstraint("source_id", "guid", name="uq_items_source_guid"),
    Index("ix_items_story", "story_id"),
    Index("ix_items_published", "published_at"),
    # Per-source counts for status (items in total and in the last day) read this index
    # alone instead of every item row. (0002; it replaced an index on url that no query
    # used and that PostgreSQL cannot hold for URLs over ~2.7 KB.)
    Index("ix_items_source_seen", "source_id", "first_seen_at"),
)

# Keys that make two items one story: "url:<canonical url>" and "hash:<content hash>".
# The primary key is what makes concurrent ingests of two copies end in one story.
story_keys = Table(
    "story_keys",
    metadata,
    Column("key", String(600), primary_key=True),
    Column("story_id", Integer, ForeignKey("stories.id", ondelete="CASCADE"), nullable=False),
    Index("ix_story_keys_story", "story_id"),
)

topic_stories = Table(
    "topic_stories",
    metadata,
    Column("topic_id", String(100), primary_key=True),
    Column(
        "story_id",
        Integer,
        ForeignKey("stories.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("terms", Text, nullable=False, default="[]"),  # JSON list of matched terms
    Column("added_at", UTCDateTime, nullable=False),
    Index("ix_topic_stories_story", "story_id"),
)

# One row per topic: bumped whenever the topic's content changes, so a feed's ETag and
# "has anything changed" are one indexed read.
topic_versions = Table(
    "topic_versions",
    metadata,
    Column("topic_id", String(100), primary_key=True),
    Column("version", Integer, nullable=False, default=0),
    Column("updated_at", UTCDateTime, nullable=False),
)

# The store's own bookkeeping, e.g. the fingerprint of the topic rules membership was
# computed with.
settings = Table(
    "settings",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)
