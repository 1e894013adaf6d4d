"""Storage: the only package that imports SQLAlchemy."""

from aggregator.store.store import (
    HEAD_REVISION,
    IngestEntry,
    IngestResult,
    MatchRow,
    Store,
    TopicPage,
    TopicVersion,
)

__all__ = [
    "HEAD_REVISION",
    "IngestEntry",
    "IngestResult",
    "MatchRow",
    "Store",
    "TopicPage",
    "TopicVersion",
]
