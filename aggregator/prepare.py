"""The CPU-bound middle of a poll: bytes → parse → normalize → topics → story features.

Pure: no I/O, no clock (``fetched_at`` is passed in). The pipeline runs :func:`prepare` in
a pool of worker processes, so parsing uses every core and a hostile document's time and
memory stay out of the daemon; with ``processes: 0`` it runs in the polling thread.
"""

from __future__ import annotations

from collections.abc import Sequence

from aggregator import normalize, parse, topics
from aggregator.types import (
    NormalizeOptions,
    PreparedEntry,
    PreparedFeed,
    PrepareJob,
    Source,
    TopicHit,
)

__all__ = ["PrepareJob", "PreparedEntry", "PreparedFeed", "prepare", "topic_hits"]


def topic_hits(
    compiled: Sequence[topics.CompiledTopic],
    source: Source,
    title: str,
    summary: str,
    content: str,
    language: str | None,
) -> tuple[TopicHit, ...]:
    data = topics.MatchInput(
        title=title,
        summary=summary,
        content=content,
        source_id=source.id,
        source_tags=source.tags,
        language=language,
    )
    return tuple(TopicHit(m.topic_id, m.terms) for m in topics.match_all(compiled, data))


def prepare(job: PrepareJob, compiled: Sequence[topics.CompiledTopic]) -> PreparedFeed:
    """Parse and clean one feed body; raises ParseError when it is not a feed."""
    from aggregator.stories import features as story_features

    source = job.source
    options = NormalizeOptions(
        source_id=source.id,
        source_language=source.language,
        strip=source.strip,
        tracking_params=job.tracking_params,
        languages=job.languages,
    )
    # Items listed again as they were (stored already, or dropped before) are not parsed
    # again; the options are in their digests, so a changed option makes every item new.
    salt = repr(options).encode("utf-8", "surrogatepass")
    feed = parse.parse_feed(
        job.content, url=job.url, headers=job.headers, known=job.known, salt=salt
    )
    entries: list[PreparedEntry] = []
    seen: set[str] = set()
    for raw in feed.entries:
        item = normalize.normalize_entry(
            raw, feed, options, fetched_at=job.fetched_at, feed_url=job.url
        )
        if item is None or item.guid in seen:
            continue  # a feed listing one GUID twice stores it once
        seen.add(item.guid)
        hits = topic_hits(compiled, source, item.title, item.summary, item.content, item.language)
        entries.append(PreparedEntry(item, hits, story_features(item).to_bytes()))
    return PreparedFeed(tuple(entries), feed.ttl_seconds, feed.warning, feed.digests, feed.skipped)
