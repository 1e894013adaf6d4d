"""The store on real SQLite and real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import DateTime, create_engine, event, text
from sqlalchemy.exc import IntegrityError

from aggregator.errors import StoreError
from aggregator.store import HEAD_REVISION, IngestEntry, Store
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
def store(store_url: str) -> Iterator[Store]:
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
    assert store.current_revision() == HEAD_REVISION
    assert store.upgrade() is False  # already at head: nothing to do


def test_a_service_migrates_in_a_child_process_and_never_loads_alembic(
    store_url: str,
) -> None:
    """The daemon's upgrade: done, and the migration tool's modules (~14 MB) stay out."""
    program = (
        "import sys\n"
        "from aggregator.store import HEAD_REVISION, Store\n"
        f"store = Store({store_url!r})\n"
        "assert store.upgrade(in_child=True) is True\n"
        "assert store.current_revision() == HEAD_REVISION\n"
        "assert store.upgrade(in_child=True) is False\n"
        "print(sorted(m for m in ('alembic', 'mako', 'pygments') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_migration_that_fails_in_the_child_is_a_store_error(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    store.upgrade()
    with store._engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreError, match="9999"):
        store.upgrade(in_child=True)
    store.close()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    store.upgrade()
    engine = store._engine
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
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


def test_one_ingest_chooses_each_storys_representative_among_its_own_copies(
    store: Store,
) -> None:
    """Several stories gaining copies in one poll: each gets its own best copy."""
    hits = (TopicHit("t", ("x",)),)
    store.ingest(
        ok("tass"),
        [
            IngestEntry(item("tass", "t1", "http://n/1", "TASS one", minutes=30), hits),
            IngestEntry(item("tass", "t2", "http://n/2", "TASS two", minutes=20), hits),
            IngestEntry(item("tass", "t3", "http://n/3", "TASS three", minutes=10), hits),
        ],
        now=NOW,
    )
    store.ingest(
        ok("belta"),
        [
            IngestEntry(item("belta", "b2", "http://n/2", "BELTA two", minutes=5), hits),
            IngestEntry(item("belta", "b1", "http://n/1", "BELTA one", minutes=1), hits),
        ],
        now=NOW,
    )
    page = store.topic_page("t", page=1, limit=10)
    by_title = {s.title: s for s in page.stories}
    assert page.total == 3
    assert sorted(by_title) == ["BELTA one", "BELTA two", "TASS three"]  # higher priority
    assert by_title["BELTA one"].published == NOW - timedelta(minutes=1)
    assert by_title["BELTA two"].published == NOW - timedelta(minutes=5)


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


# --------------------------------------------------------------------------- schema and plans


def test_both_backends_get_exactly_the_declared_schema(store: Store) -> None:
    """The migrations build what tables.py declares (types, indexes, constraints) on both."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    from aggregator.store import tables

    with store._engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, tables.metadata) == []
        inspector = inspect(conn)
        stamps = [
            (table, col["name"])
            for table in tables.metadata.tables
            for col in inspector.get_columns(table)
            if col["name"].endswith("_at")
        ]
        assert len(stamps) >= 10
        if not store.is_sqlite:
            # Every timestamp is TIMESTAMP WITH TIME ZONE on PostgreSQL.
            for table, name in stamps:
                col = next(c for c in inspector.get_columns(table) if c["name"] == name)
                assert isinstance(col["type"], DateTime) and col["type"].timezone, (table, name)
        indexes = {i["name"] for i in inspector.get_indexes("items")}
        assert "ix_items_source_seen" in indexes and "ix_items_url" not in indexes


class _Statements:
    """The SQL a store sends while a block runs (to explain the real queries)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen: list[tuple[str, Any]] = []

    def __enter__(self) -> _Statements:
        for engine in {self.store._engine, self.store._read_engine}:
            event.listen(engine, "before_cursor_execute", self._grab)
        return self

    def __exit__(self, *exc: object) -> None:
        for engine in {self.store._engine, self.store._read_engine}:
            event.remove(engine, "before_cursor_execute", self._grab)

    def _grab(self, _c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _m: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            self.seen.append((statement, params))


def _full_scans(store: Store, statements: list[tuple[str, Any]]) -> list[str]:
    """Statements whose plan reads a whole table instead of looking rows up in an index.

    A walk along an index without a condition counts as a full scan too, unless the statement
    has a LIMIT (the top-N walk of a topic page along stories' date index).
    """
    bad = []
    with store._engine.connect() as conn:
        if not store.is_sqlite:
            # The planner prefers a sequential scan on tables this small; forbidding it shows
            # whether an index can serve the query (it will be chosen on a big table).
            conn.exec_driver_sql("SET enable_seqscan = off")
        for statement, params in statements:
            limited = " LIMIT " in statement.upper()
            if store.is_sqlite:
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
                # a subquery's rows (a co-routine) are read as they come: no table is scanned
                subqueries = {
                    str(r[-1]).removeprefix("CO-ROUTINE ")
                    for r in rows
                    if str(r[-1]).startswith("CO-ROUTINE ")
                }
                scans = [
                    str(r[-1])
                    for r in rows
                    if str(r[-1]).startswith("SCAN ")
                    and str(r[-1]).removeprefix("SCAN ") not in subqueries
                    and not (limited and "INDEX" in str(r[-1]))
                ]
            else:
                plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params)
                scans = list(_pg_full_scans(plan.scalar_one()[0]["Plan"], limited))
            if scans:
                bad.append(" ".join(statement.split())[:120] + " -> " + "; ".join(scans))
        conn.rollback()
    return bad


def _pg_full_scans(node: dict[str, Any], limited: bool) -> Iterator[str]:
    kind = node["Node Type"]
    if "Relation Name" in node:
        table = node["Relation Name"]
        if kind == "Seq Scan":
            yield f"Seq Scan on {table}"
        elif kind in ("Index Scan", "Index Only Scan") and "Index Cond" not in node and not limited:
            yield f"{kind} on {table} without a condition"
    for child in node.get("Plans", ()):
        yield from _pg_full_scans(child, limited)


def test_hot_queries_are_served_by_indexes(store: Store) -> None:
    """claim_due, the (source, guid) and story-key lookups of ingest, and a topic page."""
    hits = (TopicHit("t", ("x",)),)
    for n in range(20):
        store.ingest(
            ok("tass"),
            [IngestEntry(item("tass", f"t{n}", f"http://n/{n}", f"Story {n}"), hits)],
            now=NOW,
        )
    with _Statements(store) as sql:
        claimed = store.claim_due(NOW, owner="w1", lease_seconds=60, limit=2)
        store.extend_leases("w1", [s.id for s in claimed], NOW + timedelta(seconds=90))
        store.ingest(
            ok("belta"),
            [IngestEntry(item("belta", "b1", "http://n/1", "Copy"), hits)],
            owner="w1",
            now=NOW,
        )
        store.ingest(
            ok("belta"),
            [IngestEntry(item("belta", "b1", "http://n/1", "Copy"), hits)],
            now=NOW,
        )
        page = store.topic_page("t", page=2, limit=5)
    assert page.total == 20 and len(page.stories) == 5
    assert len(sql.seen) > 15
    assert _full_scans(store, sql.seen) == []


def test_a_very_long_guid_and_url_are_stored_once(store: Store) -> None:
    """PostgreSQL cannot index values over ~2.7 KB; such an item must not fail its poll."""
    long_url = "http://agency.example/news?ref=" + "x9Qz" * 1500
    entry = IngestEntry(replace(item("belta", long_url, long_url, "Long"), content_hash="h-long"))
    first = store.ingest(ok("belta"), [entry], now=NOW)
    again = store.ingest(ok("belta"), [entry], now=NOW)
    assert (first.counts.new, again.counts.unchanged) == (1, 1)
    copy = IngestEntry(replace(item("tass", "t-long", long_url, "Long copy"), content_hash="h2"))
    assert store.ingest(ok("tass"), [copy], now=NOW).counts.duplicate == 1
    assert store.counts()["stories"] == 1
    assert store.execute_check() == []


def test_concurrent_first_start_migrates_once(store_url: str) -> None:
    """Workers starting together on an empty database all come up at the same revision."""
    stores = [Store(store_url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def start(s: Store) -> None:
        try:
            barrier.wait()
            s.upgrade()
            s.sync_sources([Source("belta", "http://belta.example/rss", "BELTA")], NOW)
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert {s.current_revision() for s in stores} == {HEAD_REVISION}
    assert stores[0].counts()["sources"] == 1
    for s in stores:
        s.close()


# --------------------------------------------------------------------------- leases


def test_heartbeat_keeps_a_lease_and_release_frees_it(store: Store) -> None:
    def claim(seconds: int, owner: str) -> set[str]:
        at = NOW + timedelta(seconds=seconds)
        return {s.id for s in store.claim_due(at, owner=owner, lease_seconds=60)}

    assert claim(0, "w1") == {"belta", "tass", "sputnik"}
    store.extend_leases("w1", ["belta"], NOW + timedelta(seconds=120))
    store.extend_leases("w2", ["tass"], NOW + timedelta(seconds=999))  # not w2's: no effect
    assert claim(59, "w2") == set()
    assert claim(90, "w2") == {"tass", "sputnik"}  # expired; belta's lease was extended
    store.release("w2", ["tass"])
    assert claim(91, "w3") == {"tass"}  # released: free at once, and still due
    assert claim(121, "w4") == {"belta"}


def test_polls_without_items_are_recorded_together_and_only_under_our_lease(
    store: Store,
) -> None:
    assert len(store.claim_due(NOW, owner="w1", lease_seconds=60)) == 3
    later = NOW + timedelta(seconds=61)
    assert [s.id for s in store.claim_due(later, owner="w2", lease_seconds=60, only=["tass"])]
    not_modified = ok("belta", etag='"v2"', last_modified=None)
    failed = PollOutcome(
        "sputnik", NOW, NOW + timedelta(hours=1), status=503, error_kind="server", error="503"
    )
    lost = store.record_outcomes([not_modified, failed, ok("tass", etag='"t"')], owner="w1")
    assert lost == {"tass"}  # w2 holds it now: w1's result is not written over its lease
    belta, sputnik, tass = (store.source_state(s) for s in ("belta", "sputnik", "tass"))
    assert belta is not None and (belta.etag, belta.last_status) == ('"v2"', 200)
    assert belta.next_poll_at == NOW + timedelta(minutes=10) and belta.consecutive_errors == 0
    assert sputnik is not None and (sputnik.consecutive_errors, sputnik.last_error) == (1, "503")
    assert tass is not None and tass.etag is None and tass.last_polled_at is None
    # the two recorded sources are released; tass stays w2's
    assert {s.id for s in store.claim_due(later, owner="w3", lease_seconds=60, force=True)} == {
        "belta",
        "sputnik",
    }


def test_a_poll_without_items_queues_its_outcome_and_goes_on_while_another_is_written(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poller's group commit: a thread that finds another one writing leaves its outcome
    queued and returns at once (to poll the next source); the writing thread writes the
    queue after its own batch, and each report waits for its outcome to be written."""
    from aggregator.pipeline import _OutcomeWriter

    assert len(store.claim_due(NOW, owner="w1", lease_seconds=60)) == 3
    writing, gate = threading.Event(), threading.Event()
    batches: list[list[str]] = []
    real = store.record_outcomes

    def slow_write(outcomes: list[PollOutcome], *, owner: str) -> set[str]:
        batches.append([o.source_id for o in outcomes])
        writing.set()
        assert gate.wait(10)  # the first write takes until the test opens the gate
        return real(outcomes, owner=owner)

    monkeypatch.setattr(store, "record_outcomes", slow_write)
    writer = _OutcomeWriter(store, "w1")
    first = threading.Thread(target=writer.submit, args=(ok("belta", etag='"belta"'),))
    first.start()
    assert writing.wait(10)

    queued = [writer.submit(ok(sid, etag=f'"{sid}"')) for sid in ("tass", "sputnik")]

    assert not any(slot.written.is_set() for slot in queued)  # returned without waiting
    gate.set()
    first.join(10)
    assert all(slot.written.wait(10) and not slot.lost for slot in queued)
    assert batches == [["belta"], ["tass", "sputnik"]]  # the queue went in one transaction
    for sid in ("belta", "tass", "sputnik"):
        state = store.source_state(sid)
        assert state is not None and state.etag == f'"{sid}"'


def test_a_failed_group_write_reaches_every_queued_poll(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the write raised, each poll in the batch is told (as a store error) instead
    of its report waiting forever."""
    from aggregator.pipeline import _OutcomeWriter, _Pending

    def broken(outcomes: list[PollOutcome], *, owner: str) -> set[str]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "record_outcomes", broken)
    writer = _OutcomeWriter(store, "w1")
    slot = writer.submit(ok("belta"))
    assert slot.written.is_set()
    report = _Pending(slot, lambda lost: pytest.fail("not a success")).wait()
    assert (report.outcome, report.error_kind) == ("error", "store")
    assert "disk on fire" in (report.error or "")


def test_recording_the_poll_releases_the_lease_until_the_next_poll(store: Store) -> None:
    assert len(store.claim_due(NOW, owner="w1", lease_seconds=60, only=["belta"])) == 1
    result = store.ingest(
        ok("belta"), [IngestEntry(item("belta", "1", "http://n/1", "A"))], owner="w1", now=NOW
    )
    assert not result.lost_lease
    state = store.source_state("belta")
    assert state is not None and state.next_poll_at == NOW + timedelta(minutes=10)
    # Released, but not due: nobody claims it until its next poll.
    later = NOW + timedelta(minutes=9)
    assert store.claim_due(later, owner="w2", lease_seconds=60, only=["belta"]) == []
    due = store.claim_due(NOW + timedelta(minutes=10), owner="w2", lease_seconds=60)
    assert "belta" in {s.id for s in due}


def test_concurrent_claims_never_hand_one_source_to_two_workers(store_url: str) -> None:
    """Four workers (own connections) claim at the same instant, twenty times over."""
    setup = Store(store_url)
    setup.upgrade()
    setup.sync_sources(
        [Source(f"s{n:02}", f"http://h.example/{n}", f"S{n}") for n in range(30)], NOW
    )
    workers = [Store(store_url) for _ in range(4)]
    for round_no in range(20):
        now = NOW + timedelta(minutes=round_no)
        barrier = threading.Barrier(len(workers))
        got: dict[str, list[str]] = {}

        def claim(
            n: int,
            s: Store,
            now: datetime = now,
            barrier: threading.Barrier = barrier,
            got: dict[str, list[str]] = got,
        ) -> None:
            barrier.wait()
            got[f"w{n}"] = [
                x.id for x in s.claim_due(now, owner=f"w{n}", lease_seconds=30, limit=10)
            ]

        threads = [threading.Thread(target=claim, args=(n, s)) for n, s in enumerate(workers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        claimed = [sid for ids in got.values() for sid in ids]
        assert len(claimed) == len(set(claimed)) == 30, got
        for owner, ids in got.items():
            setup.release(owner, ids)
    for s in (setup, *workers):
        s.close()


# --------------------------------------------------------------------------- consistency


def test_execute_check_names_each_kind_of_damage(store: Store, store_url: str) -> None:
    store.ingest(
        ok("tass"), [IngestEntry(item("tass", "1", "http://n/1", "A"), (TopicHit("t"),))], now=NOW
    )
    store.ingest(ok("belta"), [IngestEntry(item("belta", "2", "http://n/2", "B"))], now=NOW)
    assert store.execute_check() == []
    engine = create_engine(store_url)
    with engine.begin() as conn:
        if store.is_sqlite:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        # Point the first item's URL key at the second story, and orphan a third story.
        conn.execute(
            text(
                "UPDATE story_keys SET story_id = (SELECT story_id FROM items WHERE guid = '2')"
                " WHERE key = 'url:http://n/1'"
            )
        )
        conn.execute(
            text(
                "INSERT INTO stories (uid, published_at, first_seen_at, updated_at)"
                " SELECT 'urn:uuid:orphan', published_at, first_seen_at, updated_at FROM stories"
                " WHERE id = (SELECT min(id) FROM stories)"
            )
        )
        conn.execute(text("DELETE FROM topic_versions"))
    engine.dispose()
    problems = store.execute_check()
    assert "1 stories without items" in problems
    assert "1 stories whose representative is not one of their items" in problems
    assert "1 items whose URL or content key does not point at their story" in problems
    assert "1 topics with stories but no version" in problems


def test_match_rows_give_each_storys_representative_first(store: Store) -> None:
    """What `topics explain` shows for a story is its representative, whoever came first."""
    store.ingest(ok("tass"), [IngestEntry(item("tass", "t1", "http://n/1", "TASS copy"))], now=NOW)
    store.ingest(ok("belta"), [IngestEntry(item("belta", "b1", "http://n/1", "BELTA"))], now=NOW)
    rows = list(store.match_rows(NOW - timedelta(days=1)))
    assert [r.title for r in rows] == ["BELTA", "TASS copy"]
