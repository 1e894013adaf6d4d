"""The labeled corpus through the real product: served as agency feeds, polled, stored.

tests/test_stories.py measures the stories stage alone; this measures what a reader gets:
normalization, the store's exact keys and the near-duplicate index together.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import CIS_SECURITY, write_config
from test_stories import (
    CORPUS,
    CROSS_PRECISION,
    CROSS_RECALL,
    SAME_PRECISION,
    SAME_RECALL,
    pairwise,
)

from aggregator.cli import main
from aggregator.demo import DemoFeedServer, DemoItem, build_feeds
from aggregator.store import Store


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, Any]]:
    with CORPUS.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_corpus_through_the_pipeline_meets_the_floors(
    corpus: list[dict[str, Any]],
    tmp_path: Path,
    store_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dates = [datetime.fromisoformat(r["published"]) for r in corpus]
    shift = datetime.now(UTC) - timedelta(hours=1) - max(dates)
    items = [
        DemoItem(
            r["source"],
            r["source_name"],
            r["language"],
            r["url"],
            r["guid"],
            r["title"],
            r["summary"],
            (d + shift).astimezone(UTC),
        )
        for r, d in zip(corpus, dates, strict=True)
    ]
    server = DemoFeedServer(build_feeds(items))
    server.start()
    try:
        names = {r["source"]: (r["source_name"], r["language"]) for r in corpus}
        config = write_config(
            tmp_path / "config",
            settings={"database": store_url},
            sources=[
                {
                    "id": sid,
                    "url": f"http://127.0.0.1:{server.port}/{sid}.xml",
                    "name": name,
                    "language": lang,
                }
                for sid, (name, lang) in sorted(names.items())
            ],
            topics=[CIS_SECURITY],
        )
        assert main(["poll", "--config", str(config)]) == 0
    finally:
        server.stop()
    out = capsys.readouterr().out
    store = Store(store_url)
    stored = {(r["source_id"], r["guid"]): r["uid"] for r in store.all_items()}
    assert store.execute_check() == []
    store.close()
    assert len(stored) == len(corpus), out
    story_ids: dict[str, int] = {}
    labels = [
        story_ids.setdefault(stored[(r["source"], r["guid"])], len(story_ids)) for r in corpus
    ]
    m = pairwise(corpus, labels)
    report = (
        f"corpus through the pipeline: same-language P={m['same']['precision']:.3f} "
        f"R={m['same']['recall']:.3f}; cross-language P={m['cross']['precision']:.3f} "
        f"R={m['cross']['recall']:.3f}; {len(story_ids)} stories for "
        f"{len({r['story'] for r in corpus})} gold stories"
    )
    print(report)
    assert m["same"]["precision"] >= SAME_PRECISION, report
    assert m["same"]["recall"] >= SAME_RECALL, report
    assert m["cross"]["precision"] >= CROSS_PRECISION, report
    assert m["cross"]["recall"] >= CROSS_RECALL, report


class IndexFinder:
    """The real story index, in the shape the store calls it."""

    def __init__(self) -> None:
        from aggregator.stories import StoryIndex

        self.index = StoryIndex()

    def find_all(self, f: Any) -> Any:
        return self.index.find_all(f)

    def add(self, key: str, f: Any) -> None:
        self.index.add(key, f)

    def merge(self, old: str, new: str) -> int:
        return self.index.merge(old, new)


@pytest.mark.parametrize("one_poll", [False, True], ids=["three polls", "one poll"])
def test_a_copy_bridging_two_stories_merges_them(
    store_url: str, one_poll: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from aggregator.store import IngestEntry
    from aggregator.stories import features
    from aggregator.types import Item, PollOutcome, Source, TopicHit

    now = datetime(2026, 11, 16, 12, 0, tzinfo=UTC)
    store = Store(store_url)
    store.upgrade()
    store.sync_sources(
        [
            Source("a", "http://a/", "A"),
            Source("b", "http://b/", "B"),
            Source("c", "http://c/", "C"),
        ],
        now,
    )
    finder = IndexFinder()

    batch: list[IngestEntry] = []

    def ingest(source: str, title: str, summary: str, topic: str, hours_ago: int) -> None:
        """One poll of ``source`` with this item, or (one_poll) one more entry of a feed
        that carries all three copies (the merge then happens inside one ingest)."""
        when = now - timedelta(hours=hours_ago)
        item = Item(
            source,
            title,
            f"http://{source}/{len(title)}",
            f"http://{source}/x",
            title,
            summary,
            "",
            when,
            when,
            language="en",
            content_hash=hashlib.sha256(title.encode()).hexdigest(),
        )
        f = features(item)
        entry = IngestEntry(item, (TopicHit(topic, ()),), f.to_bytes(), f)
        if one_poll:
            batch.append(entry)
            return
        store.ingest(PollOutcome(source, now, now, status=200), [entry], finder=finder, now=now)

    # Two reworded copies eight hours apart, too different to be told one story...
    ingest(
        "a",
        "CSTO foreign ministers meet in Bishkek to discuss border security",
        "The Council of Foreign Ministers of the CSTO met in Bishkek on Tuesday to discuss "
        "border security.",
        "t1",
        8,
    )
    ingest(
        "b",
        "Kyrgyz capital hosts CSTO ministerial talks on the Tajik-Afghan border",
        "Ministers from the bloc member states held talks in Bishkek on the situation at the "
        "Tajik-Afghan border.",
        "t2",
        0,
    )
    first = {r["uid"] for r in store.all_items()}
    if one_poll:
        first = {"(two stories created inside the one poll)"}
    # ...and a third copy close to both: it shows they are one story.
    ingest(
        "c",
        "CSTO foreign ministers discuss Tajik-Afghan border security in Bishkek",
        "The CSTO foreign ministers met in Bishkek to discuss border security and the "
        "situation at the Tajik-Afghan border.",
        "t1",
        4,
    )
    if one_poll:
        store.ingest(PollOutcome("a", now, now, status=200), batch, finder=finder, now=now)
    uids = {r["uid"] for r in store.all_items()}
    assert len(uids) == 1  # merged
    survivor = uids.pop()
    if not one_poll:
        assert len(first) == 2 and survivor in first  # an existing id survives
    assert store.counts()["stories"] == 1
    assert any(r.getMessage().startswith("merged story") for r in caplog.records)
    assert store.execute_check() == []
    for topic in ("t1", "t2"):  # memberships of both stories now point at the survivor
        page = store.topic_page(topic, page=1, limit=10)
        assert [s.story_id for s in page.stories] == [survivor]
    store.close()
