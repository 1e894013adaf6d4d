"""Topic feed documents: store → publish, shared by the server and ``aggregator export``.

Both call :func:`render_topic`, so the exported file and the served body are the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from aggregator import __version__, publish
from aggregator.store import Store
from aggregator.types import Config, FeedPage, Topic

FORMATS = ("atom", "rss", "json")


class PageNotFound(LookupError):
    """The topic does not exist, or the page is past the last one."""


@dataclass(frozen=True)
class RenderedFeed:
    body: bytes
    media_type: str
    version: int
    updated: datetime
    etag: str  # strong: a hash of the body
    total: int
    pages: int


def pages_for(total: int, limit: int) -> int:
    return max(1, -(-total // limit))


def render_topic(store: Store, config: Config, topic_id: str, fmt: str, page: int) -> RenderedFeed:
    topic = config.topic(topic_id)
    if topic is None or fmt not in FORMATS:
        raise PageNotFound(topic_id)
    if page < 1:
        raise PageNotFound(f"{topic_id} page {page}")
    source_urls = {s.id: s.url for s in config.sources}
    data = store.topic_page(topic.id, page=page, limit=topic.limit, source_urls=source_urls)
    pages = pages_for(data.total, topic.limit)
    if page > pages:
        raise PageNotFound(f"{topic_id} page {page}")
    feed_page = FeedPage(
        topic=topic,
        base_url=config.settings.base_url,
        stories=data.stories,
        updated=data.updated,
        page=page,
        pages=pages,
        generator_version=__version__,
    )
    body = publish.render(feed_page, fmt)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return RenderedFeed(
        body=body,
        media_type=publish.MEDIA_TYPES[fmt],
        version=data.version,
        updated=data.updated,
        etag=etag,
        total=data.total,
        pages=pages,
    )


def shortest_interval(config: Config, topic: Topic) -> float:
    """The shortest poll interval among the sources a topic can draw from (for max-age)."""
    chosen = [
        s.interval
        for s in config.sources
        if s.enabled
        and (not topic.sources or s.id in topic.sources)
        and (not topic.tags or set(s.tags) & set(topic.tags))
    ]
    return min(chosen, default=config.settings.defaults.interval)
