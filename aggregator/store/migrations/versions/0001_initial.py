"""Initial schema: sources, stories, items, story keys, topic membership.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from aggregator.store.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("effective_url", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("configured", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("disabled_reason", sa.Text),
        sa.Column("etag", sa.Text),
        sa.Column("last_modified", sa.Text),
        sa.Column("next_poll_at", UTCDateTime),
        sa.Column("last_polled_at", UTCDateTime),
        sa.Column("last_success_at", UTCDateTime),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error_kind", sa.String(40)),
        sa.Column("last_error", sa.Text),
        sa.Column("consecutive_errors", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(200)),
        sa.Column("lease_expires_at", UTCDateTime),
    )
    op.create_index("ix_sources_next_poll", "sources", ["next_poll_at"])
    op.create_table(
        "stories",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uid", sa.String(64), nullable=False, unique=True),
        sa.Column("representative_item_id", sa.Integer),
        sa.Column("published_at", UTCDateTime, nullable=False),
        sa.Column("first_seen_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_stories_published", "stories", ["published_at", "id"])
    op.create_index("ix_stories_updated", "stories", ["updated_at"])
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "source_id",
            sa.String(100),
            sa.ForeignKey("sources.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("guid", sa.Text, nullable=False),
        sa.Column(
            "story_id",
            sa.Integer,
            sa.ForeignKey("stories.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("url", sa.Text, nullable=False, server_default=""),
        sa.Column("link", sa.Text, nullable=False, server_default=""),
        sa.Column("title", sa.Text, nullable=False, server_default=""),
        sa.Column("summary", sa.Text, nullable=False, server_default=""),
        sa.Column("content", sa.Text, nullable=False, server_default=""),
        sa.Column("published_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("first_seen_at", UTCDateTime, nullable=False),
        sa.Column("language", sa.String(16)),
        sa.Column("author", sa.Text),
        sa.Column("categories", sa.Text, nullable=False, server_default="[]"),
        sa.Column("enclosures", sa.Text, nullable=False, server_default="[]"),
        sa.Column("content_hash", sa.String(64), nullable=False, server_default=""),
        sa.Column("features", sa.LargeBinary),
        sa.Column("revisions", sa.Integer, nullable=False, server_default="0"),
        sa.UniqueConstraint("source_id", "guid", name="uq_items_source_guid"),
    )
    op.create_index("ix_items_story", "items", ["story_id"])
    op.create_index("ix_items_published", "items", ["published_at"])
    op.create_index("ix_items_url", "items", ["url"])
    op.create_table(
        "story_keys",
        sa.Column("key", sa.String(600), primary_key=True),
        sa.Column(
            "story_id",
            sa.Integer,
            sa.ForeignKey("stories.id", ondelete="CASCADE"),
            nullable=False,
        ),
    )
    op.create_index("ix_story_keys_story", "story_keys", ["story_id"])
    op.create_table(
        "topic_stories",
        sa.Column("topic_id", sa.String(100), primary_key=True),
        sa.Column(
            "story_id",
            sa.Integer,
            sa.ForeignKey("stories.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("terms", sa.Text, nullable=False, server_default="[]"),
        sa.Column("added_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_topic_stories_story", "topic_stories", ["story_id"])
    op.create_table(
        "topic_versions",
        sa.Column("topic_id", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    for table in ("topic_versions", "topic_stories", "story_keys", "items", "stories", "sources"):
        op.drop_table(table)
