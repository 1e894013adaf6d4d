"""The store: the only place that talks SQL.

One code path serves both backends; the schema comes only from the Alembic migrations.

Durability. A poll's items and the source's new state are committed in one transaction: a
crash (kill -9 included) leaves either all of it or none of it, and the re-poll after a crash
stores nothing twice because ``(source_id, guid)`` and the story keys are unique.

SQLite (the embedded default, one worker process):

- ``journal_mode=WAL``: readers (the web server) never block the writer and a killed writer
  leaves no torn pages; the next connection rolls the log forward or discards the uncommitted
  tail.
- ``BEGIN IMMEDIATE`` for every write transaction: the write lock is taken up front, so two
  writers queue (``busy_timeout``) instead of one failing half-way when it upgrades a read
  lock. This also makes ``claim_due``'s select-then-update atomic, so leases work the same
  as on PostgreSQL.
- ``synchronous=NORMAL``: in WAL mode a commit survives a crash of the process (the OS has
  the pages); only a power loss or kernel crash can lose the last commits, never corrupt the
  file. ``FULL`` would fsync every commit, several times slower for a poll's many small
  writes; a feed re-serves what was lost, so NORMAL is the right trade here.
- ``foreign_keys=ON``, so a story cannot lose its items behind the store's back.

PostgreSQL (psycopg 3; production and scale-out): several worker processes share it.

- Sources are claimed with ``SELECT … FOR UPDATE SKIP LOCKED`` and leased (owner + expiry);
  a lease is extended by the poller's heartbeat and released when the poll's outcome is
  committed. ``ingest`` locks the source's row and checks it still holds the lease, so a poll
  whose lease was taken over is dropped and a claimer skips a source being written.
- Transactions run at READ COMMITTED: ``INSERT … ON CONFLICT DO NOTHING`` on a story key
  another transaction has just inserted waits for that transaction, and the next statement
  sees its row. Two workers ingesting copies of one story therefore end in one story: the
  later joins the earlier's story and deletes its own empty one.
- A unique-key race that still slips through (an ``IntegrityError``), a deadlock between
  two ingests or a serialization failure rolls the whole transaction back, and ``ingest``
  runs it again (it then sees the other worker's rows).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool, QueuePool
from sqlalchemy.types import Text

from aggregator.errors import StoreError
from aggregator.store import tables as t
from aggregator.types import (
    Copy,
    IngestCounts,
    Item,
    PollOutcome,
    Source,
    SourceState,
    StoryView,
    TopicHit,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

HEAD_REVISION = "0004"  # the newest migration; checked cheaply before importing Alembic
MAX_REVISIONS = 5  # edits stored per item: a feed that rewrites every item cannot churn forever
WRITE_ATTEMPTS = 8  # a write transaction is retried on a conflict with another worker
# PostgreSQL cannot index a value over ~2.7 KB, and (source_id, guid) is a unique index:
# longer GUIDs (some feeds use very long links) are stored as their digest.
MAX_GUID_BYTES = 1000
MIGRATION_LOCK = 0x61676772  # PostgreSQL advisory lock key held while migrating ("aggr")
PLACEHOLDER_BASE = 1 << 62  # ids of stories an ingest creates, until it inserts them
URL_KEY_CHARS = 590  # story_keys.key is VARCHAR(600): "url:" + this many characters
# SQLSTATEs of a transaction PostgreSQL aborted because of another one; running it again works.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STORE_ID_SETTING = "store_id"


def _ranked_copies() -> Any:
    """Each story's copies ranked for its representative: the source of highest priority,
    then the earliest published."""
    ic, sc = t.items.c, t.sources.c
    rank = func.row_number().over(
        partition_by=ic.story_id, order_by=(sc.priority.desc(), ic.published_at, ic.id)
    )
    ranked = (
        select(ic.story_id, ic.id, ic.published_at, rank.label("rank"))
        .join(t.sources, sc.id == ic.source_id)
        .where(ic.story_id.in_(bindparam("stories", expanding=True)))
        .subquery()
    )
    return select(ranked.c.story_id, ranked.c.id, ranked.c.published_at).where(ranked.c.rank == 1)


# Statements an ingest runs for every poll or story, built once: building one costs more
# than running a simple one (SQLite: ~42 µs a statement built and run, ~12 µs prebuilt).
_UID_OF_STORY = select(t.stories.c.uid).where(t.stories.c.id == bindparam("id"))
_STORY_OF_UID = select(t.stories.c.id).where(t.stories.c.uid == bindparam("uid"))
_STORY_OF_KEY = select(t.story_keys.c.story_id).where(t.story_keys.c.key == bindparam("key"))
_KEY_OWNERS = select(t.story_keys.c.key, t.story_keys.c.story_id).where(
    t.story_keys.c.key.in_(bindparam("keys", expanding=True))
)
# what ingest compares a feed's entry with, of the source's stored items
_STORED_ITEM = (
    t.items.c.id,
    t.items.c.story_id,
    t.items.c.title,
    t.items.c.summary,
    t.items.c.content,
    t.items.c.link,
    t.items.c.revisions,
)
_ITEMS_BY_GUID = select(t.items.c.guid, *_STORED_ITEM).where(
    t.items.c.source_id == bindparam("source"),
    t.items.c.guid.in_(bindparam("guids", expanding=True)),
)
_ITEMS_OF_STORIES = select(t.items.c.url, *_STORED_ITEM).where(
    t.items.c.source_id == bindparam("source"),
    t.items.c.story_id.in_(bindparam("stories", expanding=True)),
)
_LEASE_OWNER = select(t.sources.c.lease_owner).where(t.sources.c.id == bindparam("source"))
_LEASE_OWNER_LOCKED = _LEASE_OWNER.with_for_update()
_REPRESENTATIVES = _ranked_copies()


class StoryMatchLike(Protocol):
    story_key: str


class StoryFinder(Protocol):
    """The in-memory near-duplicate index (aggregator.stories.StoryIndex) as the store sees it."""

    def find_all(self, f: Any, /) -> Sequence[StoryMatchLike]: ...

    def add(self, story_key: str, f: Any, /) -> None: ...

    def merge(self, from_key: str, into_key: str, /) -> Any: ...


@dataclass(frozen=True)
class IngestEntry:
    item: Item
    hits: tuple[TopicHit, ...] = ()
    features: bytes | None = None  # persisted signature (aggregator.stories.StoryFeatures)
    story_features: Any = None  # the same, decoded, for the finder


@dataclass(frozen=True)
class IngestResult:
    counts: IngestCounts
    # (item id, story uid, features object) of the items inserted, to add to the index
    added: tuple[tuple[int, str, Any], ...] = ()
    lost_lease: bool = False


@dataclass(frozen=True)
class TopicPage:
    stories: tuple[StoryView, ...]
    total: int
    version: int
    updated: datetime


@dataclass(frozen=True)
class TopicVersion:
    version: int
    updated: datetime


@dataclass(frozen=True)
class MatchRow:
    """One stored item, for recomputing topic membership."""

    story_id: int
    source_id: str
    title: str
    summary: str
    content: str
    language: str | None
    published: datetime  # the story's


@dataclass
class _Pending:
    topics: set[str] = field(default_factory=set)


@dataclass
class _Batch:
    """What one ingest has decided so far, before it is written."""

    key_owner: dict[str, int] = field(default_factory=dict)  # stored and planned story keys
    new_keys: dict[str, int] = field(default_factory=dict)  # the planned ones
    planned: list[tuple[IngestEntry, str, int]] = field(default_factory=list)  # entry, guid, story
    copies: dict[int, int] = field(default_factory=dict)  # planned items per story
    choose: set[int] = field(default_factory=set)  # stories whose representative may change
    touched: set[int] = field(default_factory=set)  # stories with a new copy or an edit
    hits: list[tuple[int, tuple[TopicHit, ...]]] = field(default_factory=list)
    new_urls: set[str] = field(default_factory=set)
    uid_of: dict[int, str] = field(default_factory=dict)
    id_of_uid: dict[str, int | None] = field(default_factory=dict)
    # Stories this batch creates, by a placeholder id until they are inserted together.
    # Placeholders sort after every stored id and in creation order, so "the oldest story"
    # is still the smallest id.
    new_stories: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_placeholder: int = PLACEHOLDER_BASE

    def create(self, uid: str, published: datetime, now: datetime) -> int:
        story_id = self.next_placeholder
        self.next_placeholder += 1
        self.new_stories[story_id] = {
            "uid": uid,
            "published_at": published,
            "first_seen_at": now,
            "updated_at": now,
        }
        self.uid_of[story_id] = uid
        self.id_of_uid[uid] = story_id
        return story_id

    def remap(self, ids: Mapping[int, int], *, inserted: bool = False) -> None:
        """Re-file everything planned for the stories in ``ids`` under their new ids: a
        merge, or (``inserted``) placeholders replaced by their rows' ids."""

        def fix(story_id: int) -> int:
            return ids.get(story_id, story_id)

        self.key_owner = {k: fix(s) for k, s in self.key_owner.items()}
        self.new_keys = {k: fix(s) for k, s in self.new_keys.items()}
        self.planned = [(e, g, fix(s)) for e, g, s in self.planned]
        copies: dict[int, int] = {}
        for s, n in self.copies.items():
            copies[fix(s)] = copies.get(fix(s), 0) + n
        self.copies = copies
        self.choose = {fix(s) for s in self.choose}
        self.touched = {fix(s) for s in self.touched}
        self.hits = [(fix(s), h) for s, h in self.hits]
        self.id_of_uid = {u: None if s is None else fix(s) for u, s in self.id_of_uid.items()}
        uid_of = {s: u for s, u in self.uid_of.items() if s not in ids}
        if inserted:  # a placeholder's uid goes with its row; a merged story's is gone
            uid_of.update((ids[s], u) for s, u in self.uid_of.items() if s in ids)
        self.uid_of = uid_of


class _KeyTaken(Exception):
    """A concurrent ingest took a story key this one planned to claim: run it again."""


def _outcome_values(outcome: PollOutcome) -> dict[str, Any]:
    """The columns of ``sources`` a poll outcome sets (a failure counts its errors up in SQL)."""
    c = t.sources.c
    values: dict[str, Any] = {
        "last_polled_at": outcome.polled_at,
        "next_poll_at": outcome.next_poll_at,
        "last_status": outcome.status,
        "lease_owner": None,
        "lease_expires_at": None,
    }
    if outcome.error_kind is None:
        values.update(
            consecutive_errors=0,
            last_error_kind=None,
            last_error=None,
            last_success_at=outcome.polled_at,
        )
        if outcome.etag is not None or outcome.last_modified is not None:
            values.update(etag=outcome.etag, last_modified=outcome.last_modified)
    else:
        values.update(
            consecutive_errors=c.consecutive_errors + 1,
            last_error_kind=outcome.error_kind,
            last_error=outcome.error,
        )
    if outcome.entry_digests is not None:
        values["entry_digests"] = outcome.entry_digests
    if outcome.permanent_url:
        values["effective_url"] = outcome.permanent_url
    if outcome.disabled_reason:
        values.update(enabled=False, disabled_reason=outcome.disabled_reason)
    return values


def _item_row(entry: IngestEntry, guid: str, story_id: int, now: datetime) -> dict[str, Any]:
    item = entry.item
    return {
        "source_id": item.source_id,
        "guid": guid,
        "story_id": story_id,
        "url": item.url,
        "link": item.link,
        "title": item.title,
        "summary": item.summary,
        "content": item.content,
        "published_at": item.published,
        "updated_at": item.updated,
        "first_seen_at": now,
        "language": item.language,
        "author": item.author,
        "categories": json.dumps(list(item.categories), ensure_ascii=False),
        "enclosures": json.dumps(
            [[e.url, e.type, e.length] for e in item.enclosures], ensure_ascii=False
        ),
        "content_hash": item.content_hash,
        "features": entry.features,
        "revisions": 0,
    }


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_path(url: str) -> Path | None:
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


class Store:
    """SQL storage for sources, items, stories and topic membership."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = _is_sqlite(url)
        self._lock = threading.Lock()  # one writer per process; SQLite serializes anyway
        try:
            if self.is_sqlite:
                path = _sqlite_path(url)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                self._engine = self._sqlite_engine(immediate=True)
                self._read_engine = self._sqlite_engine(immediate=False)
            else:
                # READ COMMITTED whatever the server's default: the story-key race resolution
                # relies on each statement seeing what other transactions committed.
                self._engine = create_engine(
                    url,
                    pool_pre_ping=True,
                    pool_size=5,
                    max_overflow=10,
                    isolation_level="READ COMMITTED",
                )
                self._read_engine = self._engine
        except (SQLAlchemyError, OSError, ImportError) as e:
            raise StoreError(f"cannot open database {self.safe_url}: {e}") from e

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def _sqlite_engine(self, *, immediate: bool) -> Engine:
        if ":memory:" in self.url:
            pooling: dict[str, Any] = {}
        elif immediate:
            # The writer keeps one connection (writes take self._lock, one at a time): a new
            # one per transaction costs a file open, the PRAGMAs and a schema read, ~1 ms
            # of a small ingest. Other connections are closed after use.
            pooling = {"poolclass": QueuePool, "pool_size": 1, "max_overflow": 8}
        else:
            pooling = {"poolclass": NullPool}
        engine = create_engine(
            self.url, connect_args={"timeout": 30, "check_same_thread": False}, **pooling
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event below issue BEGIN itself.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            # NORMAL survives a crash of the process; FULL would also survive power loss
            # (see the module docstring).
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._engine.dispose()
        if self._read_engine is not self._engine:
            self._read_engine.dispose()

    def release_idle(self) -> None:
        """Close the connection the writer keeps (and its page cache, up to 2 MB): for a
        daemon between rounds. The next write opens one again."""
        if self.is_sqlite and ":memory:" not in self.url:
            self._engine.dispose()

    def ping(self) -> None:
        """Raise StoreError unless the database answers and has our schema."""
        try:
            with self._read_engine.connect() as conn:
                conn.execute(select(func.count()).select_from(t.topic_versions)).scalar()
        except SQLAlchemyError as e:
            raise StoreError(f"database unreachable: {e.__class__.__name__}: {e}") from e

    def current_revision(self) -> str | None:
        try:
            with self._read_engine.connect() as conn:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except OperationalError:
            return None
        except SQLAlchemyError as e:
            if "alembic_version" in str(e):
                return None
            raise StoreError(f"database unreachable: {e}") from e

    def upgrade(self, *, in_child: bool = False) -> bool:
        """Apply pending migrations; return True when something was applied.

        With ``in_child``, they run in a short-lived child process: Alembic and what it
        loads (Mako, Pygments) take ~14 MB that a long-running process would keep.
        """
        if self.current_revision() == HEAD_REVISION:
            return False
        if in_child and ":memory:" not in self.url:
            return self._upgrade_in_child()
        from alembic import command  # costs ~0.25 s: only when a migration is due
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        try:
            with self._engine.begin() as conn:
                if not self.is_sqlite:
                    # Workers starting together on a new database migrate it once: the others
                    # wait here, then find it at head. (SQLite: BEGIN IMMEDIATE serializes.)
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                    )
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except SQLAlchemyError as e:
            raise StoreError(f"migration failed: {e}") from e
        log.info("database upgraded to revision %s", HEAD_REVISION)
        return True

    def _upgrade_in_child(self) -> bool:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # the caller may have threads
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(
            target=_upgrade_child, args=(self.url, sender), name="aggregator-migrate"
        )
        child.start()
        sender.close()
        try:
            result = receiver.recv()  # whether it migrated, or what went wrong
        except EOFError:
            result = f"the migration process died (exit code {child.exitcode})"
        finally:
            receiver.close()
            child.join()
        if isinstance(result, str):
            raise StoreError(result)
        if result:
            log.info("database upgraded to revision %s", HEAD_REVISION)
        return bool(result)

    def _write(self) -> Any:
        return self._engine.begin()

    def _retrying(self, what: str, work: Callable[[Connection], _T]) -> _T:
        """Run ``work`` in one write transaction; run it again on a conflict with another
        worker (the rollback undid all of it, and the next attempt sees their rows)."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self._lock, self._write() as conn:
                    return work(conn)
            except (SQLAlchemyError, _KeyTaken) as e:
                if isinstance(e, SQLAlchemyError) and not _is_conflict(e):
                    raise StoreError(f"{what} failed: {e.__class__.__name__}: {e}") from e
                log.debug("%s conflicted with another worker, retrying: %r", what, e)
                if attempt == WRITE_ATTEMPTS - 1:
                    raise StoreError(f"{what} kept conflicting: {e!r}") from e
            time.sleep(random.uniform(0, 0.01 * 2**attempt))  # let the other one finish
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[Connection]:
        """One write transaction of this process, with database errors as StoreError."""
        try:
            with self._lock, self._write() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise StoreError(f"{what} failed: {e.__class__.__name__}: {e}") from e

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        # Readers see one error family: an unreachable database is a StoreError (a 503).
        try:
            with self._read_engine.connect() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise StoreError(f"database unreachable: {e.__class__.__name__}: {e}") from e

    # ------------------------------------------------------------------ sources

    def sync_sources(self, sources: Sequence[Source], now: datetime) -> None:
        """Bring the sources table in line with the config; state of kept sources survives."""
        wanted = {s.id: s for s in sources}

        def work(conn: Connection) -> None:
            # Workers starting together may insert the same new source: the loser's
            # IntegrityError reruns this, and it then updates the row instead.
            existing = {r.id: r for r in conn.execute(select(t.sources))}
            for source in sources:
                row = existing.get(source.id)
                if row is None:
                    conn.execute(
                        insert(t.sources).values(
                            id=source.id,
                            url=source.url,
                            effective_url=source.url,
                            name=source.name,
                            priority=source.priority,
                            configured=True,
                            enabled=source.enabled,
                            next_poll_at=now,
                            consecutive_errors=0,
                        )
                    )
                    continue
                values: dict[str, Any] = {
                    "name": source.name,
                    "priority": source.priority,
                    "configured": True,
                }
                if row.url != source.url:
                    # The admin changed the URL: forget redirects, validators and a 410.
                    values.update(
                        url=source.url,
                        effective_url=source.url,
                        etag=None,
                        last_modified=None,
                        disabled_reason=None,
                        consecutive_errors=0,
                        next_poll_at=now,
                    )
                    values["enabled"] = source.enabled
                elif row.disabled_reason is None:
                    values["enabled"] = source.enabled
                if not row.configured:
                    values["next_poll_at"] = now
                if any(getattr(row, k) != v for k, v in values.items()):
                    # a restart with an unchanged config writes nothing here
                    conn.execute(
                        update(t.sources).where(t.sources.c.id == source.id).values(values)
                    )
            gone = [sid for sid in existing if sid not in wanted]
            if gone:
                conn.execute(
                    update(t.sources)
                    .where(t.sources.c.id.in_(gone))
                    .values(configured=False, lease_owner=None)
                )

        self._retrying("syncing sources", work)

    def source_states(self, now: datetime, *, configured_only: bool = True) -> list[SourceState]:
        day_ago = now - timedelta(days=1)
        with self._read() as conn:
            counts = {
                r.source_id: (r.total, r.recent or 0)
                for r in conn.execute(
                    select(
                        t.items.c.source_id,
                        func.count().label("total"),
                        func.sum(case((t.items.c.first_seen_at >= day_ago, 1), else_=0)).label(
                            "recent"
                        ),
                    ).group_by(t.items.c.source_id)
                )
            }
            query = select(t.sources).order_by(t.sources.c.id)
            if configured_only:
                query = query.where(t.sources.c.configured.is_(True))
            rows = list(conn.execute(query))
        return [_state(r, *counts.get(r.id, (0, 0))) for r in rows]

    def source_state(self, source_id: str) -> SourceState | None:
        with self._read() as conn:
            row = conn.execute(select(t.sources).where(t.sources.c.id == source_id)).first()
        return None if row is None else _state(row, 0, 0)

    def claim_due(
        self,
        now: datetime,
        *,
        owner: str,
        lease_seconds: float,
        limit: int = 1000,
        only: Collection[str] | None = None,
        force: bool = False,
        exclude: Collection[str] = (),
    ) -> list[SourceState]:
        """Lease the sources due at ``now`` (or the ``only`` ones, due or not, with ``force``).

        A leased source is skipped by other workers until its lease expires, so each due
        source is fetched once per round however many workers run.
        """
        c = t.sources.c
        free = or_(c.lease_owner.is_(None), c.lease_expires_at < now, c.lease_owner == owner)
        query = select(t.sources).where(c.configured.is_(True), c.enabled.is_(True), free)
        if only is not None:
            query = query.where(c.id.in_(list(only)))
        if exclude:  # our own leases in flight (a lease of ours counts as free otherwise)
            query = query.where(c.id.not_in(list(exclude)))
        if not force:
            query = query.where(or_(c.next_poll_at.is_(None), c.next_poll_at <= now))
        query = query.order_by(c.next_poll_at, c.id).limit(limit)
        if not self.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        expires = now + timedelta(seconds=lease_seconds)
        with self._writing("claiming sources") as conn:
            rows = list(conn.execute(query))
            if rows:
                conn.execute(
                    update(t.sources)
                    .where(c.id.in_([r.id for r in rows]))
                    .values(lease_owner=owner, lease_expires_at=expires)
                )
        return [_state(r, 0, 0) for r in rows]

    def extend_leases(self, owner: str, source_ids: Collection[str], until: datetime) -> None:
        if not source_ids:
            return
        c = t.sources.c
        with self._writing("extending leases") as conn:
            conn.execute(
                update(t.sources)
                .where(c.id.in_(list(source_ids)), c.lease_owner == owner)
                .values(lease_expires_at=until)
            )

    def release(self, owner: str, source_ids: Collection[str]) -> None:
        if not source_ids:
            return
        c = t.sources.c
        with self._writing("releasing sources") as conn:
            conn.execute(
                update(t.sources)
                .where(c.id.in_(list(source_ids)), c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    # ------------------------------------------------------------------ ingest

    def ingest(
        self,
        outcome: PollOutcome,
        entries: Sequence[IngestEntry],
        *,
        finder: StoryFinder | None = None,
        owner: str | None = None,
        now: datetime,
    ) -> IngestResult:
        """Store a poll's items and the source's new state in one transaction.

        With ``owner``, nothing is written unless that worker still holds the source's lease
        (``lost_lease``). A conflict with a concurrent writer (the same story key, rows locked
        in the other order) rolls the transaction back and it runs again.
        """

        def work(conn: Connection) -> IngestResult:
            if owner is not None and not self._still_owner(conn, outcome.source_id, owner):
                # Our lease expired and another worker took the source: its poll wins.
                return IngestResult(IngestCounts(), lost_lease=True)
            pending = _Pending()
            counts = IngestCounts()
            added: list[tuple[int, str, Any]] = []
            if entries:
                counts = self._ingest_batch(
                    conn, outcome.source_id, entries, finder, now, pending, added
                )
            self._record_outcome(conn, outcome)
            self._bump_topics(conn, pending.topics, now)
            return IngestResult(counts, tuple(added))

        return self._retrying(f"ingest of {outcome.source_id}", work)

    def record_outcomes(self, outcomes: Sequence[PollOutcome], *, owner: str) -> set[str]:
        """Store several item-less polls (304s, failures) in one transaction; return the ids
        whose lease ``owner`` no longer held (nothing is written for those)."""
        c = t.sources.c
        ids = sorted({o.source_id for o in outcomes})

        def work(conn: Connection) -> set[str]:
            query = select(c.id, c.lease_owner).where(c.id.in_(ids))
            if not self.is_sqlite:
                query = query.with_for_update()  # as in ingest: held until commit
            owners = {row.id: row.lease_owner for row in conn.execute(query)}
            lost = {sid for sid in ids if owners.get(sid, owner) not in (None, owner)}
            # Outcomes that set the same columns share one multi-row UPDATE (a round of
            # 304s is one or two); a failure counts its errors up in SQL, one at a time.
            groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for outcome in outcomes:
                if outcome.source_id in lost:
                    continue
                if outcome.error_kind is not None:
                    self._record_outcome(conn, outcome)
                    continue
                values = _outcome_values(outcome)
                row = {f"b_{k}": v for k, v in values.items()}
                groups.setdefault(tuple(values), []).append({"b_id": outcome.source_id, **row})
            for columns, rows in groups.items():
                conn.execute(
                    update(t.sources)
                    .where(c.id == bindparam("b_id"))
                    .values({k: bindparam(f"b_{k}") for k in columns}),
                    rows,
                )
            return lost

        return self._retrying("recording polls", work) if ids else set()

    def _still_owner(self, conn: Connection, source_id: str, owner: str) -> bool:
        # PostgreSQL: hold the source's row until commit, so a worker whose claim runs
        # meanwhile skips it (SKIP LOCKED) instead of taking over a poll being written.
        # (On SQLite, BEGIN IMMEDIATE already excludes every other writer.)
        query = _LEASE_OWNER if self.is_sqlite else _LEASE_OWNER_LOCKED
        row = conn.execute(query, {"source": source_id}).first()
        return row is not None and row.lease_owner in (None, owner)

    def _ingest_batch(
        self,
        conn: Connection,
        source_id: str,
        entries: Sequence[IngestEntry],
        finder: StoryFinder | None,
        now: datetime,
        pending: _Pending,
        added: list[tuple[int, str, Any]],
    ) -> IngestCounts:
        """One poll's entries with a handful of statements, not a few per entry.

        The stored state is read at once (rows by GUID, owners of every story key); each
        entry's story is decided in feed order against that state plus the entries before
        it; then items, keys, topic hits and story updates are written in bulk. Only a new
        story (its id is needed at once) and a copy joining a stored story (its uid, for the
        index) cost a statement of their own.
        """
        batch = _Batch()
        guids = [stored_guid(e.item.guid) for e in entries]
        existing = self._rows_by_guid(conn, source_id, guids)
        fresh = [e for e, g in zip(entries, guids, strict=True) if g not in existing]
        batch.key_owner = self._key_owners(conn, {k for e in fresh for k in _story_keys(e.item)})
        by_url = self._rows_by_url(conn, source_id, fresh, batch.key_owner)
        counts = IngestCounts()
        updates: list[dict[str, Any]] = []
        for entry, guid in zip(entries, guids, strict=True):
            item = entry.item
            row = existing.get(guid)
            if row is None and item.url:
                # A feed that invents a new GUID on every poll of the same article: the same
                # source and canonical URL is the same item, not a new copy each poll.
                row = by_url.get(item.url)
                if row is None and item.url in batch.new_urls:
                    counts = counts + IngestCounts(unchanged=1)  # listed twice in this poll
                    continue
            if row is not None:
                changed = (row.title, row.summary, row.content, row.link) != (
                    item.title,
                    item.summary,
                    item.content,
                    item.link,
                )
                if not changed or row.revisions >= MAX_REVISIONS:
                    counts = counts + IngestCounts(unchanged=1)
                    continue
                updates.append(
                    {
                        "b_id": row.id,
                        "b_title": item.title,
                        "b_summary": item.summary,
                        "b_content": item.content,
                        "b_link": item.link,
                        "b_updated": item.updated,
                        "b_categories": json.dumps(list(item.categories), ensure_ascii=False),
                        "b_revisions": row.revisions + 1,
                    }
                )
                batch.hits.append((row.story_id, entry.hits))
                batch.touched.add(row.story_id)
                counts = counts + IngestCounts(updated=1)
                continue
            created = self._plan_new(conn, batch, entry, guid, finder, now, pending)
            if item.url:
                batch.new_urls.add(item.url)
            counts = counts + (IngestCounts(new=1) if created else IngestCounts(duplicate=1))
        self._write_batch(conn, batch, updates, now, pending, added)
        return counts

    def _plan_new(
        self,
        conn: Connection,
        batch: _Batch,
        entry: IngestEntry,
        guid: str,
        finder: StoryFinder | None,
        now: datetime,
        pending: _Pending,
    ) -> bool:
        """Decide the story of a new item (creating or merging stories as needed); True when
        it starts a new story."""
        item = entry.item
        keys = _story_keys(item)
        story_id = next((batch.key_owner[k] for k in keys if k in batch.key_owner), None)
        merge_ids: list[int] = []
        if story_id is None and finder is not None and entry.story_features is not None:
            matched = {
                sid
                for m in finder.find_all(entry.story_features)
                if (sid := self._batch_story_by_uid(conn, batch, m.story_key)) is not None
            }
            if matched:
                # A copy that matches several stories shows they are one: the oldest keeps
                # its id and the others are merged into it.
                story_id = min(matched)
                merge_ids = sorted(matched - {story_id})
        created = story_id is None
        if story_id is None:
            story_id = batch.create(f"urn:uuid:{uuid.uuid4()}", item.published, now)
        for key in keys:
            if key not in batch.key_owner:
                batch.key_owner[key] = story_id
                batch.new_keys[key] = story_id
        for loser in merge_ids:
            if loser in batch.new_stories:
                # created by this batch: nothing of it is stored yet, and no other worker
                # has seen its uid
                loser_uid = batch.uid_of[loser]
                survivor_uid = self._batch_uid(conn, batch, story_id)
                del batch.new_stories[loser]
                if finder is not None:
                    finder.merge(loser_uid, survivor_uid)
                log.info("merged story %s into %s", loser_uid, survivor_uid)
            else:
                # (a stored loser means a stored survivor: stored ids are the smaller)
                self._merge_story(conn, loser, story_id, finder, pending)
            batch.remap({loser: story_id})
        batch.planned.append((entry, guid, story_id))
        batch.copies[story_id] = batch.copies.get(story_id, 0) + 1
        if not created or merge_ids:
            batch.touched.add(story_id)
            batch.choose.add(story_id)
        batch.hits.append((story_id, entry.hits))
        if finder is not None and entry.story_features is not None:
            # Visible at once to the next item of this batch: an agency's follow-up of its
            # own story then joins it (a rolled-back add only points at a missing story).
            finder.add(self._batch_uid(conn, batch, story_id), entry.story_features)
        return created

    def _write_batch(
        self,
        conn: Connection,
        batch: _Batch,
        updates: list[dict[str, Any]],
        now: datetime,
        pending: _Pending,
        added: list[tuple[int, str, Any]],
    ) -> None:
        if batch.new_stories:
            # Rows are matched to what was inserted by their unique uid (or GUID, below),
            # not by order: then the rows go in one multi-row INSERT, not one each.
            placeholders = sorted(batch.new_stories)
            sc = t.stories.c
            rows = conn.execute(
                insert(t.stories).returning(sc.id, sc.uid),
                [batch.new_stories[p] for p in placeholders],
            ).all()
            story_ids = {str(row.uid): int(row.id) for row in rows}
            batch.remap(
                {p: story_ids[batch.new_stories[p]["uid"]] for p in placeholders},
                inserted=True,
            )
            batch.new_stories = {}
        if batch.new_keys:
            claims = sorted(batch.new_keys.items())
            conn.execute(
                self._insert_ignore_stmt(t.story_keys, ["key"]),
                [{"key": k, "story_id": s} for k, s in claims],
            )
            if not self.is_sqlite:
                # A concurrent ingest committed one of these keys for another story after
                # our lookup (the insert waited for it): run the whole ingest again, and
                # it then joins that story as if it had come first. (SQLite has one writer.)
                owners = self._key_owners(conn, {k for k, _ in claims})
                if any(owners.get(k) != s for k, s in claims):
                    raise _KeyTaken()
        if batch.planned:
            ic = t.items.c
            rows = conn.execute(
                insert(t.items).returning(ic.id, ic.guid),
                [_item_row(entry, guid, sid, now) for entry, guid, sid in batch.planned],
            ).all()
            item_ids = {str(row.guid): int(row.id) for row in rows}  # one source's GUIDs
            single = []
            for entry, guid, story_id in batch.planned:
                item_id = item_ids[guid]
                added.append(
                    (item_id, self._batch_uid(conn, batch, story_id), entry.story_features)
                )
                if story_id not in batch.choose and batch.copies.get(story_id) == 1:
                    # a new story's only copy is its representative
                    single.append({"b_story": story_id, "b_item": item_id})
            if single:
                sc = t.stories.c
                conn.execute(
                    update(t.stories)
                    .where(sc.id == bindparam("b_story"))
                    .values(representative_item_id=bindparam("b_item")),
                    single,
                )
        self._choose_representatives(
            conn, sorted(batch.choose | {s for s, n in batch.copies.items() if n > 1})
        )
        if updates:
            ic = t.items.c
            conn.execute(
                update(t.items)
                .where(ic.id == bindparam("b_id"))
                .values(
                    title=bindparam("b_title"),
                    summary=bindparam("b_summary"),
                    content=bindparam("b_content"),
                    link=bindparam("b_link"),
                    updated_at=bindparam("b_updated"),
                    categories=bindparam("b_categories"),
                    revisions=bindparam("b_revisions"),
                ),
                updates,
            )
        hit_rows: dict[tuple[str, int], dict[str, Any]] = {}
        for sid, hits in batch.hits:
            for hit in hits:
                hit_rows.setdefault(
                    (hit.topic_id, sid),
                    {
                        "topic_id": hit.topic_id,
                        "story_id": sid,
                        "terms": json.dumps(list(hit.terms), ensure_ascii=False),
                        "added_at": now,
                    },
                )
                pending.topics.add(hit.topic_id)
        if hit_rows:
            conn.execute(
                self._insert_ignore_stmt(t.topic_stories, ["topic_id", "story_id"]),
                list(hit_rows.values()),
            )
        touched = sorted({s for s in batch.touched})
        if touched:
            sc, ts = t.stories.c, t.topic_stories.c
            conn.execute(
                update(t.stories).where(sc.id == bindparam("b_story")).values(updated_at=now),
                [{"b_story": s} for s in touched],
            )
            for chunk in _chunks(touched, 500):
                pending.topics.update(
                    conn.execute(
                        select(ts.topic_id).distinct().where(ts.story_id.in_(chunk))
                    ).scalars()
                )

    def _rows_by_guid(
        self, conn: Connection, source_id: str, guids: Sequence[str]
    ) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for chunk in _chunks(sorted(set(guids)), 500):
            rows = conn.execute(_ITEMS_BY_GUID, {"source": source_id, "guids": chunk})
            found.update((row.guid, row) for row in rows)
        return found

    def _key_owners(self, conn: Connection, keys: Collection[str]) -> dict[str, int]:
        owners: dict[str, int] = {}
        for chunk in _chunks(sorted(keys), 500):
            rows = conn.execute(_KEY_OWNERS, {"keys": chunk})
            owners.update((row.key, int(row.story_id)) for row in rows)
        return owners

    def _rows_by_url(
        self,
        conn: Connection,
        source_id: str,
        entries: Sequence[IngestEntry],
        key_owner: Mapping[str, int],
    ) -> dict[str, Any]:
        """Stored items of this source by canonical URL, for entries whose URL key is known."""
        stories = {
            key_owner[key]
            for e in entries
            if e.item.url and (key := _story_keys(e.item)[0]) in key_owner
        }
        if not stories:
            return {}
        urls = {e.item.url for e in entries if e.item.url}
        found: dict[str, Any] = {}
        for chunk in _chunks(sorted(stories), 500):
            for row in conn.execute(_ITEMS_OF_STORIES, {"source": source_id, "stories": chunk}):
                if row.url in urls:
                    found.setdefault(row.url, row)
        return found

    def _batch_story_by_uid(self, conn: Connection, batch: _Batch, uid: str) -> int | None:
        if uid not in batch.id_of_uid:
            found, own = self._story_by_uid(conn, uid)
            batch.id_of_uid[uid] = found
            if found is not None and own:
                batch.uid_of.setdefault(found, uid)  # then _batch_uid needs no statement
        return batch.id_of_uid[uid]

    def _batch_uid(self, conn: Connection, batch: _Batch, story_id: int) -> str:
        if story_id not in batch.uid_of:
            batch.uid_of[story_id] = conn.execute(_UID_OF_STORY, {"id": story_id}).scalar_one()
        return batch.uid_of[story_id]

    def _insert_ignore_stmt(self, table: Any, keys: list[str]) -> Any:
        """INSERT … ON CONFLICT DO NOTHING on both backends (values given at execution)."""
        if self.is_sqlite:
            from sqlalchemy.dialects import sqlite

            return sqlite.insert(table).on_conflict_do_nothing(index_elements=keys)
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)

    def _story_by_uid(self, conn: Connection, uid: str) -> tuple[int | None, bool]:
        """The story with this uid (and True), or the one it was merged into (and False)."""
        found = conn.execute(_STORY_OF_UID, {"uid": uid}).scalar()
        if found is not None:
            return int(found), True
        found = conn.execute(_STORY_OF_KEY, {"key": "alias:" + uid}).scalar()
        return (None if found is None else int(found)), False

    def _merge_story(
        self,
        conn: Connection,
        loser: int,
        survivor: int,
        finder: StoryFinder | None,
        pending: _Pending,
    ) -> None:
        """Move every copy, key and topic membership of story ``loser`` to ``survivor``."""
        st, ts = t.stories.c, t.topic_stories.c
        loser_uid = conn.execute(_UID_OF_STORY, {"id": loser}).scalar_one()
        survivor_uid = conn.execute(_UID_OF_STORY, {"id": survivor}).scalar_one()
        conn.execute(update(t.items).where(t.items.c.story_id == loser).values(story_id=survivor))
        conn.execute(
            update(t.story_keys).where(t.story_keys.c.story_id == loser).values(story_id=survivor)
        )
        for row in conn.execute(
            select(ts.topic_id, ts.terms, ts.added_at).where(ts.story_id == loser)
        ).all():
            pending.topics.add(row.topic_id)
            self._insert_ignore(
                conn,
                t.topic_stories,
                {
                    "topic_id": row.topic_id,
                    "story_id": survivor,
                    "terms": row.terms,
                    "added_at": row.added_at,
                },
                ["topic_id", "story_id"],
            )
        conn.execute(delete(t.topic_stories).where(ts.story_id == loser))
        conn.execute(delete(t.stories).where(st.id == loser))
        # Other workers' indexes may still name the old uid: keep it as an alias.
        self._claim_key(conn, "alias:" + loser_uid, survivor)
        if finder is not None:
            finder.merge(loser_uid, survivor_uid)
        log.info("merged story %s into %s", loser_uid, survivor_uid)

    def _claim_key(self, conn: Connection, key: str, story_id: int) -> int:
        """Insert the key for this story unless it exists; return the story that owns it."""
        inserted = self._insert_ignore(
            conn,
            t.story_keys,
            {"key": key, "story_id": story_id},
            ["key"],
            returning=t.story_keys.c.story_id,
        )
        if inserted is not None:
            return int(inserted)  # ours: no second statement needed
        return int(conn.execute(_STORY_OF_KEY, {"key": key}).scalar_one())

    def _choose_representatives(self, conn: Connection, story_ids: Sequence[int]) -> None:
        """Each story's representative copy (from the source of highest priority, then the
        earliest published) and its time as the story's: one query per 500 stories."""
        rows: list[dict[str, Any]] = []
        for chunk in _chunks(story_ids, 500):
            rows.extend(
                {"b_story": row.story_id, "b_item": row.id, "b_published": row.published_at}
                for row in conn.execute(_REPRESENTATIVES, {"stories": chunk})
            )
        if rows:
            conn.execute(
                update(t.stories)
                .where(t.stories.c.id == bindparam("b_story"))
                .values(
                    representative_item_id=bindparam("b_item"),
                    published_at=bindparam("b_published"),
                ),
                sorted(rows, key=lambda row: row["b_story"]),
            )

    def _insert_ignore(
        self,
        conn: Connection,
        table: Any,
        values: dict[str, Any],
        keys: list[str],
        *,
        returning: Any = None,
    ) -> Any:
        """INSERT … ON CONFLICT DO NOTHING on both backends; with ``returning``, the value of
        that column for an inserted row, or None when the row existed."""
        if self.is_sqlite:
            from sqlalchemy.dialects import sqlite

            stmt: Any = sqlite.insert(table)
        else:
            from sqlalchemy.dialects import postgresql

            stmt = postgresql.insert(table)
        stmt = stmt.values(values).on_conflict_do_nothing(index_elements=keys)
        if returning is None:
            conn.execute(stmt)
            return None
        return conn.execute(stmt.returning(returning)).scalar()

    def _bump_topics(self, conn: Connection, topic_ids: Collection[str], now: datetime) -> None:
        c = t.topic_versions.c
        bump = update(t.topic_versions).values(version=c.version + 1, updated_at=now)
        for topic_id in sorted(topic_ids):  # one order in every worker: no deadlock here
            if conn.execute(bump.where(c.topic_id == topic_id)).rowcount == 0:
                # A new topic. Another worker may be creating its row too: insert or wait for
                # theirs, then bump, so neither change goes without its own version.
                self._insert_ignore(
                    conn,
                    t.topic_versions,
                    {"topic_id": topic_id, "version": 0, "updated_at": now},
                    ["topic_id"],
                )
                conn.execute(bump.where(c.topic_id == topic_id))

    def _record_outcome(self, conn: Connection, outcome: PollOutcome) -> None:
        c = t.sources.c
        conn.execute(
            update(t.sources).where(c.id == outcome.source_id).values(_outcome_values(outcome))
        )

    # ------------------------------------------------------------------ index sync

    def features_since(
        self, after_item_id: int, published_after: datetime
    ) -> Iterator[tuple[int, str, bytes]]:
        """(item id, story uid, features) of items newer than an id, for the story index."""
        ic = t.items.c
        query = (
            select(ic.id, t.stories.c.uid, ic.features)
            .join(t.stories, t.stories.c.id == ic.story_id)
            .where(ic.id > after_item_id, ic.published_at >= published_after)
            .where(ic.features.is_not(None))
            .order_by(ic.id)
        )
        with self._read() as conn:
            # fetched a few thousand rows at a time: a fresh process reads the whole window
            result = conn.execution_options(yield_per=4096).execute(query)
            for rows in result.partitions():
                for item_id, uid, blob in rows:
                    yield item_id, uid, blob if type(blob) is bytes else bytes(blob)

    def index_snapshot_path(self) -> Path | None:
        """Where a process leaves the story index for the next one to load: beside a SQLite
        file. (PostgreSQL serves long-running workers, which keep theirs in memory.)"""
        path = _sqlite_path(self.url) if self.is_sqlite else None
        return None if path is None else path.with_name(path.name + "-index.npz")

    def item_key(self, item_id: int) -> tuple[str, str] | None:
        """(source id, GUID) of a stored item: to tell that a store is the one a snapshot
        of the story index was taken from, and not restored or replaced since."""
        ic = t.items.c
        with self._read() as conn:
            row = conn.execute(select(ic.source_id, ic.guid).where(ic.id == item_id)).first()
        return None if row is None else (str(row.source_id), str(row.guid))

    def store_id(self) -> str:
        """A random id of this store, made on first use (a new store gets a new one)."""
        found = self.get_setting(STORE_ID_SETTING)
        if found is None:
            with self._writing("naming the store") as conn:
                self._insert_ignore(
                    conn,
                    t.settings,
                    {"key": STORE_ID_SETTING, "value": str(uuid.uuid4())},
                    ["key"],
                )
            found = self.get_setting(STORE_ID_SETTING)
        assert found is not None
        return found

    # ------------------------------------------------------------------ settings

    def get_setting(self, key: str) -> str | None:
        with self._read() as conn:
            value = conn.execute(select(t.settings.c.value).where(t.settings.c.key == key)).scalar()
        return None if value is None else str(value)

    def set_setting(self, key: str, value: str) -> None:
        with self._lock, self._write() as conn:
            done = conn.execute(
                update(t.settings).where(t.settings.c.key == key).values(value=value)
            ).rowcount
            if not done:
                self._insert_ignore(conn, t.settings, {"key": key, "value": value}, ["key"])

    # ------------------------------------------------------------------ topics

    def topic_version(self, topic_id: str) -> TopicVersion:
        c = t.topic_versions.c
        with self._read() as conn:
            row = conn.execute(
                select(c.version, c.updated_at).where(c.topic_id == topic_id)
            ).first()
        if row is None:
            return TopicVersion(0, EPOCH)
        return TopicVersion(int(row.version), row.updated_at)

    def topic_versions(self) -> dict[str, TopicVersion]:
        c = t.topic_versions.c
        with self._read() as conn:
            rows = conn.execute(select(c.topic_id, c.version, c.updated_at)).all()
        return {r.topic_id: TopicVersion(int(r.version), r.updated_at) for r in rows}

    def topic_count(self, topic_id: str) -> int:
        with self._read() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(t.topic_stories)
                    .where(t.topic_stories.c.topic_id == topic_id)
                ).scalar_one()
            )

    def topic_page(
        self,
        topic_id: str,
        *,
        page: int,
        limit: int,
        source_urls: Mapping[str, str] | None = None,
    ) -> TopicPage:
        """Newest-first stories of a topic with every copy of each, for one page."""
        ts, st = t.topic_stories.c, t.stories.c
        with self._read() as conn:
            version = conn.execute(
                select(t.topic_versions.c.version, t.topic_versions.c.updated_at).where(
                    t.topic_versions.c.topic_id == topic_id
                )
            ).first()
            total = int(
                conn.execute(
                    select(func.count()).select_from(t.topic_stories).where(ts.topic_id == topic_id)
                ).scalar_one()
            )
            story_rows = conn.execute(
                select(st.id, st.uid, st.representative_item_id, st.published_at, ts.terms)
                .join(t.topic_stories, ts.story_id == st.id)
                .where(ts.topic_id == topic_id)
                .order_by(st.published_at.desc(), st.id.desc())
                .limit(limit)
                .offset((page - 1) * limit)
            ).all()
            views = self._story_views(conn, story_rows, source_urls or {})
        return TopicPage(
            stories=tuple(views),
            total=total,
            version=int(version.version) if version else 0,
            updated=version.updated_at if version else EPOCH,
        )

    def _story_views(
        self, conn: Connection, story_rows: Sequence[Any], source_urls: Mapping[str, str]
    ) -> list[StoryView]:
        if not story_rows:
            return []
        ic, sc = t.items.c, t.sources.c
        by_story: dict[int, list[Any]] = {}
        for row in conn.execute(
            select(
                ic.id,
                ic.story_id,
                ic.source_id,
                ic.link,
                ic.title,
                ic.summary,
                ic.content,
                ic.published_at,
                ic.updated_at,
                ic.language,
                ic.author,
                ic.categories,
                sc.name,
                sc.effective_url,
            )
            .join(t.sources, sc.id == ic.source_id)
            .where(ic.story_id.in_([r.id for r in story_rows]))
            .order_by(sc.priority.desc(), ic.published_at, ic.id)
        ):
            by_story.setdefault(row.story_id, []).append(row)
        views = []
        for srow in story_rows:
            copies = by_story.get(srow.id, [])
            if not copies:
                continue
            rep = next((c for c in copies if c.id == srow.representative_item_id), copies[0])
            related: list[Copy] = []
            seen = {rep.link}
            for c in copies:
                if c.id == rep.id or c.link in seen:
                    continue
                seen.add(c.link)
                related.append(Copy(c.link, c.name, c.source_id, c.title, c.language))
            updated = max(c.updated_at for c in copies)
            views.append(
                StoryView(
                    story_id=srow.uid,
                    title=rep.title,
                    summary=rep.summary,
                    content=rep.content,
                    link=rep.link,
                    published=srow.published_at,
                    updated=max(updated, srow.published_at),
                    source_id=rep.source_id,
                    source_name=rep.name,
                    source_url=source_urls.get(rep.source_id, rep.effective_url),
                    language=rep.language,
                    author=rep.author,
                    categories=tuple(json.loads(rep.categories or "[]")),
                    related=tuple(related),
                    matched_terms=tuple(json.loads(srow.terms or "[]")),
                )
            )
        return views

    def match_rows(self, published_after: datetime) -> Iterator[MatchRow]:
        """Every item of the stories in the window, to recompute topic membership.

        A story's representative comes first, then its other copies in the order stored.
        """
        ic = t.items.c
        query = (
            select(
                ic.story_id,
                ic.source_id,
                ic.title,
                ic.summary,
                ic.content,
                ic.language,
                t.stories.c.published_at,
            )
            .join(t.stories, t.stories.c.id == ic.story_id)
            .where(t.stories.c.published_at >= published_after)
            .order_by(ic.story_id, ic.id != t.stories.c.representative_item_id, ic.id)
        )
        with self._read() as conn:
            for r in conn.execute(query):
                yield MatchRow(
                    r.story_id,
                    r.source_id,
                    r.title,
                    r.summary,
                    r.content,
                    r.language,
                    r.published_at,
                )

    def replace_membership(
        self,
        topic_ids: Collection[str],
        members: Mapping[str, Mapping[int, tuple[str, ...]]],
        *,
        published_after: datetime,
        now: datetime,
    ) -> int:
        """Set the membership of stories in the window to ``members``; drop removed topics.

        Returns the number of topics whose membership changed (their version is bumped).
        """
        ts = t.topic_stories.c
        window = select(t.stories.c.id).where(t.stories.c.published_at >= published_after)

        def work(conn: Connection) -> int:
            changed: set[str] = set()
            stale = (
                conn.execute(
                    select(ts.topic_id).distinct().where(ts.topic_id.not_in(list(topic_ids)))
                )
                .scalars()
                .all()
            )
            if stale:
                conn.execute(delete(t.topic_stories).where(ts.topic_id.in_(stale)))
                conn.execute(delete(t.topic_versions).where(t.topic_versions.c.topic_id.in_(stale)))
            for topic_id in topic_ids:
                wanted = members.get(topic_id, {})
                current = {
                    r.story_id: r.terms
                    for r in conn.execute(
                        select(ts.story_id, ts.terms).where(
                            ts.topic_id == topic_id, ts.story_id.in_(window)
                        )
                    )
                }
                drop = [sid for sid in current if sid not in wanted]
                if drop:
                    for chunk in _chunks(drop, 500):
                        conn.execute(
                            delete(t.topic_stories).where(
                                ts.topic_id == topic_id, ts.story_id.in_(chunk)
                            )
                        )
                rows = [
                    {
                        "topic_id": topic_id,
                        "story_id": sid,
                        "terms": json.dumps(list(terms), ensure_ascii=False),
                        "added_at": now,
                    }
                    for sid, terms in wanted.items()
                    if sid not in current
                ]
                if rows:
                    conn.execute(insert(t.topic_stories), rows)
                for sid, terms in wanted.items():
                    encoded = json.dumps(list(terms), ensure_ascii=False)
                    if sid in current and current[sid] != encoded:
                        conn.execute(
                            update(t.topic_stories)
                            .where(ts.topic_id == topic_id, ts.story_id == sid)
                            .values(terms=encoded)
                        )
                if drop or rows:
                    changed.add(topic_id)
            known = set(conn.execute(select(t.topic_versions.c.topic_id)).scalars().all())
            changed.update(tid for tid in topic_ids if tid not in known)
            self._bump_topics(conn, changed, now)
            return len(changed)

        return self._retrying("replacing topic membership", work)

    # ------------------------------------------------------------------ retention

    def delete_older_than(
        self, cutoff: datetime, keep_newest: Mapping[str, int], *, now: datetime | None = None
    ) -> int:
        """Delete stories (and their items) published before ``cutoff``, except the newest
        ``keep_newest[topic]`` stories of every topic. Returns the number of stories deleted.
        With ``now``, the topics that lost stories get a new version (cached pages expire)."""
        st, ts = t.stories.c, t.topic_stories.c

        def work(conn: Connection) -> int:
            keep: set[int] = set()
            for topic_id, limit in keep_newest.items():
                keep.update(
                    conn.execute(
                        select(st.id)
                        .join(t.topic_stories, ts.story_id == st.id)
                        .where(ts.topic_id == topic_id)
                        .order_by(st.published_at.desc(), st.id.desc())
                        .limit(limit)
                    ).scalars()
                )
            old = [
                sid
                for sid in conn.execute(select(st.id).where(st.published_at < cutoff)).scalars()
                if sid not in keep
            ]
            for chunk in _chunks(old, 500):
                if now is not None:
                    touched = conn.execute(
                        select(ts.topic_id).distinct().where(ts.story_id.in_(chunk))
                    ).scalars()
                    self._bump_topics(conn, set(touched), now)
                conn.execute(delete(t.topic_stories).where(ts.story_id.in_(chunk)))
                conn.execute(delete(t.story_keys).where(t.story_keys.c.story_id.in_(chunk)))
                conn.execute(delete(t.items).where(t.items.c.story_id.in_(chunk)))
                conn.execute(delete(t.stories).where(st.id.in_(chunk)))
            return len(old)

        return self._retrying("retention", work)

    def optimize(self, *, vacuum_ratio: float = 0.25) -> str:
        """Refresh the planner's statistics after deletions; say what was done.

        SQLite: ``PRAGMA optimize``, and ``VACUUM`` only when at least ``vacuum_ratio`` of
        the file is free pages (it rewrites the whole file). PostgreSQL: ``ANALYZE``;
        autovacuum reclaims the space.
        """
        import sqlite3

        try:
            if not self.is_sqlite:
                with self._write() as conn:
                    conn.execute(text("ANALYZE"))
                return "analyze"
            with self._lock:
                # The raw connection is in autocommit mode (see _sqlite_engine): VACUUM cannot
                # run inside the transaction SQLAlchemy would begin.
                raw = self._engine.raw_connection()
                try:
                    cursor = raw.cursor()
                    pages = cursor.execute("PRAGMA page_count").fetchone()[0]
                    free = cursor.execute("PRAGMA freelist_count").fetchone()[0]
                    done = "optimize"
                    if pages and free / pages >= vacuum_ratio:
                        cursor.execute("VACUUM")
                        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                        done = "vacuum+optimize"
                    cursor.execute("PRAGMA optimize")
                    cursor.close()
                finally:
                    raw.close()
            return done
        except (SQLAlchemyError, sqlite3.Error) as e:  # the raw connection raises sqlite3's
            raise StoreError(f"optimize failed: {e}") from e

    def counts(self) -> dict[str, int]:
        with self._read() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for name, table in (
                    ("sources", t.sources),
                    ("items", t.items),
                    ("stories", t.stories),
                    ("topic_stories", t.topic_stories),
                )
            }

    def all_items(self) -> list[dict[str, Any]]:
        """Every stored item (id, source, guid, story uid), for checks and tests."""
        ic = t.items.c
        with self._read() as conn:
            rows = conn.execute(
                select(ic.id, ic.source_id, ic.guid, ic.url, ic.title, t.stories.c.uid)
                .join(t.stories, t.stories.c.id == ic.story_id)
                .order_by(ic.id)
            ).all()
        return [dict(r._mapping) for r in rows]

    def execute_check(self) -> list[str]:
        """Problems found by the database's own integrity check (SQLite) and by ours.

        Ours: every story has items and its representative is one of them; every item,
        story key and topic membership belongs to an existing story; each item's primary
        story key (URL, else content hash) exists and points at the item's story; every
        topic with stories has a version row. An empty list means a consistent store.
        """
        st, ic, ks, ts = t.stories.c, t.items.c, t.story_keys.c, t.topic_stories.c
        url_key = literal("url:", Text) + func.substr(ic.url, 1, URL_KEY_CHARS, type_=Text)
        hash_key = literal("hash:", Text) + ic.content_hash
        primary_key = case((ic.url != "", url_key), else_=hash_key)
        checks = [
            (
                "stories without items",
                select(func.count()).select_from(t.stories).where(~st.id.in_(select(ic.story_id))),
            ),
            (
                "stories whose representative is not one of their items",
                select(func.count())
                .select_from(t.stories)
                .where(
                    or_(
                        st.representative_item_id.is_(None),
                        ~st.representative_item_id.in_(select(ic.id).where(ic.story_id == st.id)),
                    )
                ),
            ),
            (
                "items of a missing story",
                select(func.count()).select_from(t.items).where(~ic.story_id.in_(select(st.id))),
            ),
            (
                "story keys of a missing story",
                select(func.count())
                .select_from(t.story_keys)
                .where(~ks.story_id.in_(select(st.id))),
            ),
            (
                "topic memberships of a missing story",
                select(func.count())
                .select_from(t.topic_stories)
                .where(~ts.story_id.in_(select(st.id))),
            ),
            (
                "items whose URL or content key does not point at their story",
                select(func.count())
                .select_from(t.items)
                .where(or_(ic.url != "", ic.content_hash != ""))
                .where(
                    ~select(ks.key)
                    .where(ks.key == primary_key, ks.story_id == ic.story_id)
                    .exists()
                ),
            ),
            (
                "topics with stories but no version",
                select(func.count(ts.topic_id.distinct())).where(
                    ~ts.topic_id.in_(select(t.topic_versions.c.topic_id))
                ),
            ),
        ]
        problems: list[str] = []
        with self._read() as conn:
            if self.is_sqlite:
                result = conn.execute(text("PRAGMA integrity_check")).scalars().all()
                if result != ["ok"]:
                    problems.extend(str(r) for r in result)
            for label, query in checks:
                count = int(conn.execute(query).scalar_one())
                if count:
                    problems.append(f"{count} {label}")
        return problems


def _story_keys(item: Item) -> list[str]:
    """The keys that make two items one story; the first (URL, else content hash) is the
    item's primary key and always points at the item's own story."""
    keys = []
    if item.url:
        keys.append("url:" + item.url[:URL_KEY_CHARS])
    if item.content_hash:
        keys.append("hash:" + item.content_hash)
    return keys


def stored_guid(guid: str) -> str:
    """The GUID as the items table keeps it: a very long one as its SHA-256 digest."""
    raw = guid.encode("utf-8")
    if len(raw) <= MAX_GUID_BYTES:
        return guid
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _is_conflict(e: SQLAlchemyError) -> bool:
    """A clash with a concurrent transaction that running ours again resolves."""
    if isinstance(e, IntegrityError):
        return True
    return getattr(getattr(e, "orig", None), "sqlstate", None) in _RETRY_SQLSTATES


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _state(row: Any, items_total: int, items_24h: int) -> SourceState:
    return SourceState(
        id=row.id,
        url=row.url,
        effective_url=row.effective_url,
        name=row.name,
        enabled=bool(row.enabled),
        etag=row.etag,
        last_modified=row.last_modified,
        next_poll_at=row.next_poll_at,
        last_polled_at=row.last_polled_at,
        last_success_at=row.last_success_at,
        last_status=row.last_status,
        last_error_kind=row.last_error_kind,
        last_error=row.last_error,
        consecutive_errors=int(row.consecutive_errors or 0),
        disabled_reason=row.disabled_reason,
        items_total=int(items_total),
        items_24h=int(items_24h),
        entry_digests=getattr(row, "entry_digests", None) or b"",
    )


def _upgrade_child(url: str, sender: Any) -> None:
    """Run the migrations in this (child) process; send whether it migrated (another
    worker may have done it meanwhile), or the error message."""
    try:
        store = Store(url)
        try:
            applied = store.upgrade()
        finally:
            store.close()
    except StoreError as e:
        sender.send(str(e))
    except Exception as e:  # anything else is reported the same way, not as a traceback
        sender.send(f"migration failed: {e.__class__.__name__}: {e}")
    else:
        sender.send(applied)
    finally:
        sender.close()
