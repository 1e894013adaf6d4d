"""``aggregator topics explain``: which stored stories a topic matches, and why.

With ``--near`` it also lists stories that almost matched (an ``any`` term matched but a
``none`` term, a missing ``all`` term or a filter excluded them), so an admin can tune a
rule before deploying it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TextIO

from aggregator import topics
from aggregator.store import Store
from aggregator.types import Config, Topic


@dataclass(frozen=True)
class Verdict:
    story_id: int
    published: datetime
    title: str
    source_id: str
    matched: bool
    terms: tuple[str, ...]
    reason: str = ""


def explain_stories(store: Store, config: Config, topic: Topic, *, now: datetime) -> list[Verdict]:
    """Every story in the retention window that matches or nearly matches, newest first."""
    compiled = topics.compile_topic(topic)
    tags = {s.id: s.tags for s in config.sources}
    best: dict[int, Verdict] = {}
    since = now - timedelta(days=config.settings.retention_days)
    for row in store.match_rows(since):
        data = topics.MatchInput(
            title=row.title,
            summary=row.summary,
            content=row.content,
            source_id=row.source_id,
            source_tags=tags.get(row.source_id, ()),
            language=row.language,
        )
        result = topics.explain(compiled, data)
        if result is None:
            continue
        matched = isinstance(result, topics.Match)
        reason = "" if matched else getattr(result, "reason", "")
        verdict = Verdict(
            row.story_id, row.published, row.title, row.source_id, matched, result.terms, reason
        )
        current = best.get(row.story_id)
        if current is None or (matched and not current.matched):
            best[row.story_id] = verdict
        elif matched == current.matched:
            # Another copy of the same story: report the terms any copy matched.
            merged = current.terms + tuple(t for t in verdict.terms if t not in current.terms)
            best[row.story_id] = replace(current, terms=merged)
    return sorted(best.values(), key=lambda v: (v.published, v.story_id), reverse=True)


def explain_topic(
    store: Store,
    config: Config,
    topic: Topic,
    *,
    limit: int,
    near: bool,
    out: TextIO,
    now: datetime,
) -> None:
    verdicts = explain_stories(store, config, topic, now=now)
    matches = [v for v in verdicts if v.matched][:limit]
    out.write(f"topic {topic.id}: {sum(v.matched for v in verdicts)} matching stories")
    out.write(f" (newest {len(matches)} shown)\n")
    for v in matches:
        out.write(
            f"MATCH  {v.published:%Y-%m-%d %H:%M}  [{v.source_id}] {v.title}\n"
            f"       matched: {', '.join(v.terms)}\n"
        )
    if near:
        misses = [v for v in verdicts if not v.matched][:limit]
        out.write(f"\nnear misses: {sum(not v.matched for v in verdicts)}\n")
        for v in misses:
            out.write(
                f"NEAR   {v.published:%Y-%m-%d %H:%M}  [{v.source_id}] {v.title}\n"
                f"       matched: {', '.join(v.terms)}; {v.reason}\n"
            )
