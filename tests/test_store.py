"""The store on real SQLite and real PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from aggregator.store import IngestEntry, Store
from aggregator.types import Item, PollOutcome, Source, TopicHit

NOW = datetime(2026, 11, 16, 12, 0, tzinfo=UTC)


def item(source: str, guid: str, url: str, title: str, *, minutes: int = 0) -> Item:
    when = NOW - timedelta(minutes=minutes)
    return Item(
        source_id=source,
        guid=guid,
        url=url,
        link=url,
        title=title,
        summary=f"{title} summary",
        content="",
        published=when,
        updated=when,
        content_hash=f"hash-{source}-{guid}",
    )


def ok(source: str, **kw: object) -> PollOutcome:
    return PollOutcome(source, NOW, NOW + timedelta(minutes=10), status=200, **kw)  # type: ignore[arg-type]


@pytest.fixture
def store(store_url: str) -> Store:
    s = Store(store_url)
    s.upgrade()
    s.sync_sources(
        [
            Source("belta", "http://belta.example/rss", "BELTA", priority=10),
            Source("tass", "http://tass.example/rss", "TASS", priority=5),
            Source("sputnik", "http://sputnik.example/rss", "Sputnik", priority=5),
        ],
        NOW,
    )
    yield s
    s.close()


def test_schema_comes_from_the_migration(store: Store, store_url: str) -> None:
    assert store.current_revision() == "0001"
    assert store.upgrade() is False  # already at head: nothing to do


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    store.upgrade()
    engine = store._engine
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    store.close()


def test_same_source_and_guid_is_never_inserted_twice(store: Store, store_url: str) -> None:
    first = store.ingest(ok("belta"), [IngestEntry(item("belta", "1", "http://n/1", "A"))], now=NOW)
    again = store.ingest(ok("belta"), [IngestEntry(item("belta", "1", "http://n/1", "A"))], now=NOW)
    assert (first.counts.new, again.counts.unchanged) == (1, 1)
    assert store.counts()["items"] == 1
    # The unique constraint holds even for a writer that skips the store's checks.
    engine = create_engine(store_url)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO items (source_id, guid, story_id, published_at, updated_at,"
                " first_seen_at) SELECT source_id, guid, story_id, published_at, updated_at,"
                " first_seen_at FROM items"
            )
        )
    engine.dispose()


def test_same_canonical_url_from_two_sources_is_one_story(store: Store) -> None:
    store.ingest(
        ok("tass"), [IngestEntry(item("tass", "t1", "http://n/1", "Copy", minutes=5))], now=NOW
    )
    result = store.ingest(
        ok("belta"), [IngestEntry(item("belta", "b1", "http://n/1", "Original"))], now=NOW
    )
    assert result.counts.duplicate == 1
    counts = store.counts()
    assert (counts["items"], counts["stories"]) == (2, 1)


def test_representative_is_highest_priority_then_earliest(store: Store) -> None:
    hits = (TopicHit("t", ("x",)),)
    store.ingest(
        ok("tass"),
        [IngestEntry(item("tass", "t1", "http://n/1", "TASS copy", minutes=30), hits)],
        now=NOW,
    )
    store.ingest(
        ok("sputnik"),
        [
            IngestEntry(
                replace(
                    item("sputnik", "s1", "http://n/1", "Sputnik copy", minutes=60),
                    link="http://sputnik.example/1",
                ),
                hits,
            )
        ],
        now=NOW,
    )
    page = store.topic_page("t", page=1, limit=10)
    assert page.stories[0].title == "Sputnik copy"  # same priority as TASS, earlier
    store.ingest(
        ok("belta"), [IngestEntry(item("belta", "b1", "http://n/1", "BELTA copy"), hits)], now=NOW
    )
    page = store.topic_page("t", page=1, limit=10)
    assert page.total == 1
    story = page.stories[0]
    assert story.title == "BELTA copy"  # higher priority wins even though it is the latest
    assert story.source_name == "BELTA"
    assert [c.source_name for c in story.related] == ["Sputnik"]  # TASS link equals BELTA's


def test_story_id_never_changes(store: Store) -> None:
    hits = (TopicHit("t", ()),)
    store.ingest(ok("tass"), [IngestEntry(item("tass", "t1", "http://n/1", "A"), hits)], now=NOW)
    before = store.topic_page("t", page=1, limit=10).stories[0].story_id
    store.ingest(ok("belta"), [IngestEntry(item("belta", "b1", "http://n/1", "B"), hits)], now=NOW)
    after = store.topic_page("t", page=1, limit=10).stories[0].story_id
    assert before == after and before.startswith("urn:uuid:")


def test_edits_are_bounded(store: Store) -> None:
    for n in range(10):
        store.ingest(
            ok("belta"), [IngestEntry(item("belta", "1", "http://n/1", f"Title v{n}"))], now=NOW
        )
    rows = store.all_items()
    assert len(rows) == 1
    assert rows[0]["title"] == "Title v5"  # five edits stored, then the item is frozen


def test_leases_split_sources_and_expire(store: Store) -> None:
    first = store.claim_due(NOW, owner="w1", lease_seconds=60)
    assert {s.id for s in first} == {"belta", "tass", "sputnik"}
    assert store.claim_due(NOW, owner="w2", lease_seconds=60) == []
    later = NOW + timedelta(seconds=61)
    taken_over = store.claim_due(later, owner="w2", lease_seconds=60)
    assert {s.id for s in taken_over} == {"belta", "tass", "sputnik"}
    # w1 comes back late: its result is not written over w2's lease.
    result = store.ingest(
        ok("belta"), [IngestEntry(item("belta", "1", "http://n/1", "A"))], owner="w1", now=later
    )
    assert result.lost_lease and store.counts()["items"] == 0


def test_poll_outcome_updates_state(store: Store) -> None:
    store.ingest(
        ok("belta", etag='"v1"', last_modified="Mon, 16 Nov 2026 10:00:00 GMT"), [], now=NOW
    )
    fail = PollOutcome(
        "belta",
        NOW,
        NOW + timedelta(hours=1),
        status=500,
        error_kind="server",
        error="HTTP 500 Internal Server Error",
    )
    store.ingest(fail, [], now=NOW)
    store.ingest(fail, [], now=NOW)
    state = store.source_state("belta")
    assert state is not None
    assert state.consecutive_errors == 2 and state.last_error == "HTTP 500 Internal Server Error"
    assert state.etag == '"v1"'  # validators survive errors
    gone = PollOutcome(
        "belta",
        NOW,
        NOW + timedelta(days=1),
        status=410,
        error_kind="gone",
        error="HTTP 410 Gone",
        disabled_reason="410 Gone",
    )
    store.ingest(gone, [], now=NOW)
    state = store.source_state("belta")
    assert state is not None and not state.enabled and state.disabled_reason == "410 Gone"
    assert "belta" not in {
        s.id for s in store.claim_due(NOW + timedelta(days=2), owner="w", lease_seconds=5)
    }
    moved = PollOutcome("tass", NOW, NOW, status=200, permanent_url="http://tass.example/new")
    store.ingest(moved, [], now=NOW)
    assert store.source_state("tass").effective_url == "http://tass.example/new"  # type: ignore[union-attr]


def test_retention_keeps_the_newest_of_every_topic(store: Store) -> None:
    hits = (TopicHit("t", ()),)
    old = [
        IngestEntry(
            item("belta", f"o{n}", f"http://n/o{n}", f"Old {n}", minutes=60 * 24 * 100 + n), hits
        )
        for n in range(5)
    ]
    store.ingest(ok("belta"), old, now=NOW)
    store.ingest(
        ok("tass"),
        [IngestEntry(item("tass", "x", "http://n/x", "Old untopical", minutes=60 * 24 * 100))],
        now=NOW,
    )
    store.ingest(
        ok("sputnik"), [IngestEntry(item("sputnik", "new", "http://n/new", "New"))], now=NOW
    )
    deleted = store.delete_older_than(NOW - timedelta(days=90), {"t": 3})
    assert deleted == 3  # two old topic stories beyond the newest 3, and the untopical one
    titles = {r["title"] for r in store.all_items()}
    assert titles == {"Old 0", "Old 1", "Old 2", "New"}
    assert store.execute_check() == []


def test_membership_recompute_replaces_window(store: Store) -> None:
    store.ingest(
        ok("belta"),
        [IngestEntry(item("belta", "1", "http://n/1", "A"), (TopicHit("t", ("a",)),))],
        now=NOW,
    )
    story_id = next(iter(store.match_rows(NOW - timedelta(days=1)))).story_id
    changed = store.replace_membership(
        ["t", "u"], {"u": {story_id: ("b",)}}, published_after=NOW - timedelta(days=1), now=NOW
    )
    assert changed == 2
    assert store.topic_page("t", page=1, limit=5).total == 0
    page = store.topic_page("u", page=1, limit=5)
    assert page.total == 1 and page.stories[0].matched_terms == ("b",)
    assert store.topic_version("u").version >= 1
