"""Stores filled directly with SQL, for the scenarios that need many stored items fast.

The schema comes from the project's own migration (``aggregator db upgrade``); rows go in
through SQLite's own loops (a recursive CTE), a million items in well under a minute.
Bulk items are published 4–85 days ago: inside retention, outside the story index's
72-hour window, as most of a long-running store is.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import measure
from bench.corpus import Corpus, feed_items
from bench.sides import aggregator_cmd

BULK_SOURCES = 100


def create_schema(config: Path) -> None:
    result = subprocess.run(
        aggregator_cmd("db", "upgrade", "--config", str(config)),
        env=measure.child_env(),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"aggregator db upgrade failed: {result.stderr[-2000:]}")


def _sqlite_time(value: datetime) -> str:
    # the store keeps UTC datetimes naive in SQLite, in SQLAlchemy's text format
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-200000")
    return conn


def add_bulk_items(db: Path, upto: int, now: datetime, topic_ids: Iterable[str]) -> None:
    """Grow the bulk part of a store to ``upto`` items (one story each, two story keys)."""
    conn = connect(db)
    try:
        have = int(
            conn.execute("SELECT count(*) FROM items WHERE guid LIKE 'bulk-%'").fetchone()[0]
        )
        if have >= upto:
            return
        newest = now - timedelta(days=4)
        span = 81 * 86400  # seconds over which the bulk items are spread
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT OR IGNORE INTO sources (id, url, effective_url, name, priority, configured,"
            " enabled, consecutive_errors) VALUES (?, ?, ?, ?, 0, 0, 1, 0)",
            [
                (
                    f"bulk-{k}",
                    f"https://bulk{k}.example/rss",
                    f"https://bulk{k}.example/rss",
                    f"Bulk {k}",
                )
                for k in range(BULK_SOURCES)
            ],
        )
        params = {
            "first": have + 1,
            "last": upto,
            "newest": _sqlite_time(newest),
            "span": span,
            "upto": upto,
            "sources": BULK_SOURCES,
        }
        # ids above a safe offset keep bulk rows apart from the ones real ingests add
        conn.execute(
            """
            WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i < :last)
            INSERT INTO stories (id, uid, representative_item_id, published_at, first_seen_at,
                                 updated_at)
            SELECT 10000000 + i, 'urn:uuid:bulk-' || i, 10000000 + i,
                   strftime('%Y-%m-%d %H:%M:%f000', :newest, '-' || (i * :span / :upto) || ' seconds'),
                   :newest, :newest
            FROM n
            """,
            params,
        )
        conn.execute(
            """
            WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i < :last)
            INSERT INTO items (id, source_id, guid, story_id, url, link, title, summary, content,
                               published_at, updated_at, first_seen_at, language, author,
                               categories, enclosures, content_hash, features, revisions)
            SELECT 10000000 + i, 'bulk-' || (i % :sources), 'bulk-' || i, 10000000 + i,
                   'https://bulk' || (i % :sources) || '.example/news/' || i || '.html',
                   'https://bulk' || (i % :sources) || '.example/news/' || i || '.html',
                   'Bulk story ' || i || ' on trade, transport and the regional economy',
                   'The delegations discussed cooperation in trade and logistics, item ' || i
                     || '. The sides agreed to continue consultations on customs and transit, '
                     || 'and to prepare a joint programme for the next meeting.',
                   '',
                   strftime('%Y-%m-%d %H:%M:%f000', :newest, '-' || (i * :span / :upto) || ' seconds'),
                   strftime('%Y-%m-%d %H:%M:%f000', :newest, '-' || (i * :span / :upto) || ' seconds'),
                   :newest, CASE i % 2 WHEN 0 THEN 'en' ELSE 'ru' END, NULL, '[]', '[]',
                   lower(hex(randomblob(32))), NULL, 0
            FROM n
            """,
            params,
        )
        conn.execute(
            """
            INSERT INTO story_keys (key, story_id)
            SELECT 'url:' || url, story_id FROM items WHERE id > 10000000 + :first - 1
            UNION ALL
            SELECT 'hash:' || content_hash, story_id FROM items WHERE id > 10000000 + :first - 1
            """,
            {"first": have + 1},
        )
        for k, topic_id in enumerate(topic_ids):
            # one story in twenty belongs to each topic
            conn.execute(
                """
                INSERT INTO topic_stories (topic_id, story_id, terms, added_at)
                SELECT :topic, id, '["trade"]', first_seen_at FROM stories
                WHERE id > 10000000 + :first - 1 AND (id + :k) % 20 = 0
                """,
                {"topic": topic_id, "first": have + 1, "k": k},
            )
        conn.execute("COMMIT")
    finally:
        conn.close()


def add_story_items(
    db: Path, corpus: Corpus, stories: int, now: datetime, copies: float = 0.1
) -> tuple[int, int]:
    """Real-looking stories (title, clean summary, HTML content) from the corpus, published
    over the last week; ``copies`` of them carried by a second source.

    Returns (items added, feeds whose ids the items use: the config should list them).
    """
    from bench.corpus import feed_spec

    conn = connect(db)
    rows_sources = []
    items = []
    stories_rows = []
    keys = []
    story_id = 0
    item_id = 0
    f = 0
    while story_id < stories:
        spec = feed_spec(corpus.seed, f)
        rows_sources.append((spec.id, f"https://{spec.host}/rss/{f}", spec.id.upper()))
        for it in feed_items(corpus, f, 0):
            if story_id >= stories:
                break
            story_id += 1
            published = now - timedelta(seconds=(story_id * 7 * 86400) // stories)
            stories_rows.append((story_id, f"urn:uuid:story-{story_id}", _sqlite_time(published)))
            summary = _plain(it.html)
            n_copies = 2 if (story_id % int(1 / copies) == 0) else 1
            for c in range(n_copies):
                item_id += 1
                source = spec.id if c == 0 else feed_spec(corpus.seed, f + 2).id
                url = f"{it.link.split('?')[0]}" if c == 0 else f"{it.link.split('?')[0]}#copy"
                items.append(
                    (
                        item_id,
                        source,
                        f"{it.guid}#{c}",
                        story_id,
                        url,
                        it.title,
                        summary[:1000],
                        it.html,
                        _sqlite_time(published),
                        spec.language,
                    )
                )
                keys.append((f"url:{url}", story_id))
        f += 1
    for extra in range(f, f + 3):
        spec = feed_spec(corpus.seed, extra)
        rows_sources.append((spec.id, f"https://{spec.host}/rss/{extra}", spec.id.upper()))
    try:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT OR IGNORE INTO sources (id, url, effective_url, name, priority, configured,"
            " enabled, consecutive_errors) VALUES (?, ?, ?, ?, 0, 1, 1, 0)",
            [(i, u, u, n) for i, u, n in rows_sources],
        )
        conn.executemany(
            "INSERT INTO stories (id, uid, representative_item_id, published_at, first_seen_at,"
            " updated_at) VALUES (?, ?, NULL, ?, ?, ?)",
            [(sid, uid, p, p, p) for sid, uid, p in stories_rows],
        )
        conn.executemany(
            "INSERT INTO items (id, source_id, guid, story_id, url, link, title, summary, content,"
            " published_at, updated_at, first_seen_at, language, categories, enclosures,"
            " content_hash, revisions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', '[]',"
            " lower(hex(randomblob(32))), 0)",
            [
                (i, s, g, st, u, u, t, su, c, p, p, p, lang)
                for i, s, g, st, u, t, su, c, p, lang in items
            ],
        )
        conn.execute(
            "UPDATE stories SET representative_item_id = "
            "(SELECT min(id) FROM items WHERE items.story_id = stories.id)"
        )
        conn.executemany("INSERT OR IGNORE INTO story_keys (key, story_id) VALUES (?, ?)", keys)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return len(items), f + 3


def _plain(html: str) -> str:
    import re
    from html import unescape

    text = re.sub(r"<script.*?</script>", " ", html, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    return " ".join(unescape(text).split())


def count(db: Path, table: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def dumps(data: object) -> str:
    return json.dumps(data, default=str)
