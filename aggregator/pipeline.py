"""The one place that orders the stages.

One poll of one source::

    store.claim_due ─▶ fetch ─▶ parse ─▶ normalize ─▶ topics.match_all ─▶ stories.features
        ─▶ store.ingest (same GUID → same item; same URL / content → same story;
                         near-duplicate or cross-language copy → StoryIndex)
        ─▶ schedule (next poll: interval + jitter, or backoff / Retry-After on error)

Fetching, parsing and normalizing run in a bounded thread pool with a per-host limit; each
source's items and its new state are committed in one transaction. A source's failure is
recorded on the source and never stops the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import queue
import random
import socket
import threading
import time
from array import array
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aggregator import fetch as fetch_stage
from aggregator import schedule
from aggregator.errors import FetchError, ParseError, StoreError
from aggregator.store import IngestEntry, Store
from aggregator.types import (
    Config,
    ErrorKind,
    Fetched,
    FetchRequest,
    IngestCounts,
    NotModified,
    PollOutcome,
    PreparedFeed,
    PrepareJob,
    Source,
    SourceState,
    Topic,
    TopicHit,
)

if TYPE_CHECKING:  # the modules themselves load on first use: a round of 304s needs neither
    from aggregator.topics import CompiledTopic

log = logging.getLogger(__name__)

GONE_PAUSE = timedelta(days=3650)  # a 410 source is disabled; this only keeps next_poll sane
STORY_WINDOW = timedelta(hours=72)
PROCESS_POOL_MIN_SOURCES = 8  # smaller rounds parse in their polling threads
INDEX_SNAPSHOT_FORMAT = 1  # of Poller.save_index's file: a change makes the old ones unused
_SNAPSHOT_VERSION = (INDEX_SNAPSHOT_FORMAT, STORY_WINDOW.total_seconds())
RULES_SETTING = "topic_rules"  # fingerprint of the rules the stored membership follows


def utcnow() -> datetime:
    return datetime.now(UTC)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class PollReport:
    """One poll's result, for the summary line, logs and metrics."""

    source_id: str
    outcome: str  # "ok" | "not_modified" | "error" | "skipped"
    status: int | None = None
    counts: IngestCounts = field(default_factory=IngestCounts)
    error_kind: str | None = None
    error: str | None = None
    ms: int = 0
    permanent_url: str | None = None
    disabled: bool = False

    @property
    def failed(self) -> bool:
        return self.outcome == "error"


@dataclass(frozen=True)
class _Prepared:
    outcome: PollOutcome
    entries: tuple[IngestEntry, ...]
    report: PollReport
    skipped: int = 0  # entries the body lists as they were at the last ingest


class Poller:
    """Polls sources and keeps the story index; safe to use from one scheduler thread."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        owner: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        resolve: Callable[[str, int], list[str]] | None = None,
        public_addresses: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.owner = owner or default_owner()
        self.clock = clock
        self.rng = rng or random.Random()
        self.resolve = resolve
        self.public_addresses = public_addresses  # fetch's test hook: addresses taken as public
        self.session = fetch_stage.make_session()
        self._index: Any = None
        # ids of the items this process indexed as it stored them, since the last refresh
        # (a refresh reads only ids above the last one it saw: older ones are dropped)
        self._indexed = array("q")
        self._last_item_id = 0
        self._index_lock = threading.RLock()
        self._round_refreshed = False
        self._index_changes = 0  # entries added since the index was loaded or saved
        self._outcomes = _OutcomeWriter(store, self.owner)
        self.listeners: list[Callable[[PollReport], None]] = []
        self.stopping = False  # set on shutdown: sources not yet started are left for later
        self.set_config(config)

    def set_config(self, config: Config) -> None:
        self.config = config
        self.sources = {s.id: s for s in config.sources}
        self._compiled_topics: list[CompiledTopic] | None = None
        old = getattr(self, "parsers", None)
        if old is not None and old.topics == config.topics:
            return
        self.parsers = ParserPool(config.settings.processes, config.topics)
        if old is not None:
            old.close()

    def close(self) -> None:
        self.session.close()
        self.parsers.close()

    @property
    def compiled_topics(self) -> list[CompiledTopic]:
        if self._compiled_topics is None:
            from aggregator.topics import compile_topic

            self._compiled_topics = [compile_topic(t) for t in self.config.topics]
        return self._compiled_topics

    # ------------------------------------------------------------------ story index

    @property
    def index(self) -> Any:
        if self._index is None:
            from aggregator.stories import StoryIndex  # imports numpy: only when ingesting

            self._index = StoryIndex(window=STORY_WINDOW, secret=self._index_secret())
        return self._index

    def _index_secret(self) -> bytes | None:
        """The index's secret for its keys where it is saved (see :meth:`save_index`): the
        store's random id, so that every process on this store makes the same keys."""
        if self.store.index_snapshot_path() is None:
            return None  # a random one: the index lives and dies with this process
        return self.store.store_id().encode()

    def refresh_index(self, now: datetime | None = None) -> int:
        """Add items stored since the last refresh (by any worker) to the story index."""
        now = now or self.clock()
        with self._index_lock:
            if self._index is None:
                self._load_index_snapshot()
            last = self._last_item_id
            item_ids: list[int] = []
            own = set(self._indexed)

            def rows() -> Iterable[tuple[str, bytes]]:
                nonlocal last
                for item_id, uid, blob in self.store.features_since(
                    self._last_item_id, now - STORY_WINDOW
                ):
                    last = max(last, item_id)
                    if item_id not in own:
                        item_ids.append(item_id)
                        yield uid, blob

            # in bulk: a fresh process loads the whole window. Unreadable features are
            # skipped: such an item still dedups by URL and hash.
            readable = self.index.add_many(rows())
            added = [i for i, ok in zip(item_ids, readable, strict=True) if ok]
            self._last_item_id = last
            self._indexed = array("q", (i for i in own if i > last))
            self._index_changes += len(added)
        return len(added)

    def _load_index_snapshot(self) -> None:
        """Start from the index the last process saved (:meth:`save_index`), if it is this
        store's and readable; the refresh then reads only the items stored since. Anything
        else is logged and the index is built from the store as without one."""
        path = self.store.index_snapshot_path()
        if path is None or not path.exists():
            return
        import zipfile

        import numpy as np

        from aggregator.stories import StoryIndex

        try:
            with open(path, "rb") as file, np.load(file, allow_pickle=False) as data:
                meta = json.loads(data["meta"].tobytes())
                if (meta.get("format"), meta.get("window")) != _SNAPSHOT_VERSION:
                    log.info("story index snapshot %s is of another version: not used", path)
                    return
                last = int(meta["last_item_id"])
                if meta != self._snapshot_meta(last):
                    log.info("story index snapshot %s is not of this store: not used", path)
                    return
                index = StoryIndex(window=STORY_WINDOW, secret=self._index_secret())
                index.restore(data)
                own = data["own"]
                if own.dtype != np.int64 or own.ndim != 1:
                    raise ValueError("own item ids are not int64")
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
            log.warning("story index snapshot %s unreadable, building the index anew: %s", path, e)
            return
        self._index = index
        self._last_item_id = last
        self._indexed = array("q", own.tolist())
        self._index_changes = 0
        log.debug("story index: %d entries from %s, up to item %d", len(index), path, last)

    def _snapshot_meta(self, last: int) -> dict[str, Any]:
        """What a snapshot of the index up to item ``last`` says of itself: its version,
        the store it is of, and that item (a store restored or replaced since lacks it)."""
        item = self.store.item_key(last) if last else None
        return {
            "format": _SNAPSHOT_VERSION[0],
            "window": _SNAPSHOT_VERSION[1],
            "store": self.store.store_id(),
            "last_item_id": last,
            "item": list(item or ()),
        }

    def save_index(self, *, min_changes: int = 1000) -> bool:
        """Leave the story index beside the store for the next process (see
        :meth:`_load_index_snapshot`): a process polling once then loads it instead of
        reading the features of every item of the last days. Written when this process
        added at least ``min_changes`` entries (or a twentieth of it) since the index was
        loaded or saved; True when written."""
        path = self.store.index_snapshot_path()
        if path is None or self._index is None:
            return False
        import numpy as np

        with self._index_lock:
            index = self._index
            if self._index_changes < max(min_changes, len(index) // 20):
                return False
            try:
                # Up to date to the newest stored item: the loading process then reads only
                # what is stored after it (not past every item this one stored itself).
                self.refresh_index()
                meta = self._snapshot_meta(self._last_item_id)
            except StoreError as e:
                log.warning("story index not saved: %s", e)
                return False
            index.prune(self.clock() - STORY_WINDOW)  # what a fresh load would leave out
            arrays = index.snapshot()
            arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
            arrays["own"] = np.array(self._indexed, np.int64)
            # a new file, then renamed over the old one: a reader never sees half of one
            partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
            try:
                with open(partial, "wb") as f:
                    np.savez(f, **arrays)
                os.replace(partial, path)
            except OSError as e:
                log.warning("story index not saved to %s: %s", path, e)
                partial.unlink(missing_ok=True)
                return False
            self._index_changes = 0
        log.debug("story index: %d entries saved to %s", len(index), path)
        return True

    # ------------------------------------------------------------------ polling

    def poll_due(self, now: datetime | None = None) -> list[PollReport]:
        """Poll every source due at ``now``, leasing a few at a time (see :meth:`claim_due`)."""
        now = now or self.clock()
        return self.poll_states(self.claim_due(now), refill=self.refill_due(now))

    def claim_due(
        self, now: datetime, limit: int | None = None, exclude: Collection[str] = ()
    ) -> list[SourceState]:
        """Lease up to ``limit`` sources due at ``now`` that no other worker holds.

        By default twice the polling threads: a worker leases what it can start soon and
        comes back for more (:meth:`refill_due`), so workers sharing a store split a round
        between them instead of the first one to wake leasing all of it.
        """
        return self.store.claim_due(
            now,
            owner=self.owner,
            lease_seconds=self.lease_seconds(),
            limit=limit or 2 * self.config.settings.concurrency,
            exclude=exclude,
        )

    def refill_due(self, now: datetime) -> Callable[[int, Collection[str]], list[SourceState]]:
        """For :meth:`poll_states`: lease up to n more due sources, not those in flight."""
        return lambda n, in_flight: self.claim_due(now, n, in_flight)

    def poll_now(self, source_ids: Sequence[str] | None = None) -> list[PollReport]:
        """Poll the named (or all enabled) sources now, due or not."""
        return self.poll_states(self.claim_now(source_ids))

    def claim_now(self, source_ids: Sequence[str] | None = None) -> list[SourceState]:
        """Lease the named (or all enabled) sources for polling now, due or not."""
        only = list(source_ids) if source_ids else [s.id for s in self.config.sources if s.enabled]
        return self.store.claim_due(
            self.clock(),
            owner=self.owner,
            lease_seconds=self.lease_seconds(),
            limit=len(only) or 1,
            only=only,
            force=True,
        )

    def lease_seconds(self) -> float:
        """How long a claimed source stays ours; the heartbeat renews it during long polls."""
        return self.config.settings.lease

    def poll_states(
        self,
        states: Sequence[SourceState],
        *,
        progress: Callable[[PollReport], None] | None = None,
        refill: Callable[[int, Collection[str]], Sequence[SourceState]] | None = None,
    ) -> list[PollReport]:
        """Poll ``states``; with ``refill``, lease more as threads free up until none are due
        (a continuously fed pool: one slow source does not hold back the next lease)."""
        if not states:
            return []
        self._round_refreshed = False  # the index catches up before the round's first ingest
        settings = self.config.settings
        host_limits: dict[str, threading.Semaphore] = defaultdict(
            lambda: threading.Semaphore(settings.per_host)
        )
        limits_lock = threading.Lock()

        def host_limit(url: str) -> threading.Semaphore:
            with limits_lock:
                return host_limits[urlsplit(url).hostname or ""]

        reports: list[PollReport] = []
        workers = max(1, settings.concurrency if refill else min(settings.concurrency, len(states)))
        # Worker processes pay off for a big round (a cold start, many due sources); a few
        # sources are parsed in their polling thread.
        in_processes = len(states) >= PROCESS_POOL_MIN_SOURCES
        heartbeat = _LeaseHeartbeat(self, set())
        heartbeat.start()
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poll") as pool:
                in_flight: dict[Future[PollReport | _Pending], str] = {}
                # completions arrive here one by one (wait() on the whole set each time
                # costs a lock per future per call)
                finished: queue.SimpleQueue[Future[PollReport | _Pending]] = queue.SimpleQueue()

                def submit(batch: Sequence[SourceState]) -> None:
                    for state in _interleave_hosts(batch):
                        heartbeat.add(state.id)
                        limit = host_limit(state.effective_url)
                        future = pool.submit(self._poll_one, state, limit, in_processes)
                        in_flight[future] = state.id
                        future.add_done_callback(finished.put)

                submit(states)
                while in_flight:
                    future = finished.get()
                    del in_flight[future]
                    done = future.result()
                    # a poll without items is reported once its outcome is written
                    report = done.wait() if isinstance(done, _Pending) else done
                    heartbeat.done(report.source_id)
                    reports.append(report)
                    for listener in (*self.listeners, *([progress] if progress else [])):
                        listener(report)
                    if refill is not None and not self.stopping and len(in_flight) < workers:
                        submit(refill(2 * workers - len(in_flight), set(in_flight.values())))
        finally:
            heartbeat.stop()
            if self._index is not None:
                with self._index_lock:
                    self._index.settle()
            if in_processes:
                # between rounds the daemon holds no parser processes (their memory goes
                # back to the system); the next big round starts them again (~0.5 s)
                self.parsers.close()
        return sorted(reports, key=lambda r: r.source_id)

    def _poll_one(
        self, state: SourceState, limit: threading.Semaphore, in_processes: bool = False
    ) -> PollReport | _Pending:
        """Poll one source. A poll without items returns before its outcome is written (the
        thread goes on to the next source; the report waits for the write)."""
        source = self.sources.get(state.id)
        if source is None:
            return PollReport(state.id, "skipped", error="not in the config any more")
        if self.stopping:
            self.store.release(self.owner, [state.id])
            return PollReport(state.id, "skipped", error="shutting down")
        try:
            with limit:
                prepared = self._prepare(source, state, in_processes)
            if not prepared.entries:
                # 304s, failures, bodies with nothing new: one transaction for many sources
                slot = self._outcomes.submit(prepared.outcome)
                return _Pending(slot, lambda lost: self._finish(prepared, lost))
            else:
                # Ingest and index together: a copy ingested by the next thread must see
                # this one.
                with self._index_lock:
                    if not self._round_refreshed:
                        # only a round with new entries needs the index
                        self.refresh_index()
                        self._round_refreshed = True
                    result = self.store.ingest(
                        prepared.outcome,
                        prepared.entries,
                        finder=self._locked_index(),
                        owner=self.owner,
                        now=self.clock(),
                    )
                    self._mark_indexed(result.added)
        except StoreError as e:
            log.error("store error while polling source=%s: %s", state.id, e)
            return PollReport(state.id, "error", error_kind="store", error=str(e))
        except Exception as e:  # a bug in one source's processing must not stop the others
            log.exception("unexpected error while polling source=%s", state.id)
            self._record_internal_error(source, state, e)
            return PollReport(state.id, "error", error_kind=ErrorKind.INTERNAL, error=repr(e))
        return self._finish(prepared, result.lost_lease, result.counts)

    def _finish(
        self, prepared: _Prepared, lost_lease: bool, counts: IngestCounts | None = None
    ) -> PollReport:
        if lost_lease:
            return PollReport(
                prepared.report.source_id, "skipped", error="lease taken over by another worker"
            )
        counts = (counts or IngestCounts()) + IngestCounts(unchanged=prepared.skipped)
        report = replace(prepared.report, counts=counts)
        _log_report(report)
        return report

    def _record_internal_error(self, source: Source, state: SourceState, error: Exception) -> None:
        """Store the failure on the source with a backoff: status shows it, and the next tick
        does not poll the source again at once."""
        message = f"internal error: {error!r}"
        failed = self._failed(
            source, state, ErrorKind.INTERNAL, message, None, None, None, time.monotonic()
        )
        try:
            self.store.ingest(failed.outcome, (), owner=self.owner, now=self.clock())
        except Exception as e:  # the store may be what failed; the lease then runs out
            log.error("could not record the failure of source=%s: %s", state.id, e)

    def _mark_indexed(self, added: Sequence[tuple[int, str, Any]]) -> None:
        # The store added each new item to the index as it inserted it (see _Finder.add).
        with self._index_lock:
            self._indexed.extend(item_id for item_id, _uid, _f in added)
            self._index_changes += len(added)

    def _locked_index(self) -> Any:
        poller = self

        class _Finder:
            def find_all(self, f: Any) -> Any:
                with poller._index_lock:
                    return poller.index.find_all(f)

            def merge(self, from_key: str, into_key: str) -> Any:
                with poller._index_lock:
                    return poller.index.merge(from_key, into_key)

            def add(self, story_key: str, f: Any) -> None:
                with poller._index_lock:
                    poller.index.add(story_key, f)

        return _Finder()

    def _prepare(self, source: Source, state: SourceState, in_processes: bool) -> _Prepared:
        """Fetch, parse and normalize one source (no store access)."""
        started = time.monotonic()
        request = FetchRequest(
            url=state.effective_url,
            user_agent=self.config.settings.user_agent,
            etag=state.etag,
            last_modified=state.last_modified,
            timeout=source.timeout,
            connect_timeout=min(10.0, source.timeout),
            max_bytes=source.max_bytes,
            allow_private=source.allow_private,
        )
        try:
            response = fetch_stage.fetch(
                request,
                self.session,
                resolve=self.resolve,
                public_addresses=self.public_addresses,
                configured_url=state.url,
            )
        except FetchError as e:
            return self._failed(
                source, state, e.kind, e.message, e.status, e.retry_after, e.permanent_url, started
            )
        now = self.clock()
        ms = int((time.monotonic() - started) * 1000)
        if isinstance(response, NotModified):
            next_poll = schedule.next_poll_after_success(
                now,
                source.interval,
                self.rng,
                cache_hint=schedule.cache_hint_seconds(response.headers, now, None),
            )
            outcome = PollOutcome(
                source.id,
                now,
                next_poll,
                status=304,
                etag=response.etag or state.etag,
                last_modified=response.last_modified or state.last_modified,
                permanent_url=response.permanent_url,
                elapsed_ms=ms,
            )
            report = PollReport(
                source.id, "not_modified", 304, ms=ms, permanent_url=response.permanent_url
            )
            return _Prepared(outcome, (), report)
        assert isinstance(response, Fetched)
        job = PrepareJob(
            source=source,
            content=response.content,
            url=response.url,
            headers=dict(response.headers),
            fetched_at=now,
            tracking_params=self.config.settings.tracking_params,
            languages=self._languages(),
            known=state.entry_digests,
        )
        try:
            feed = self.parsers.run(
                job, timeout=max(30.0, 3 * source.timeout), inline=not in_processes
            )
        except ParseError as e:
            return self._failed(
                source,
                state,
                e.kind,
                e.message,
                response.status,
                None,
                response.permanent_url,
                started,
            )
        # (imported after the first parse is sent: the parser processes start meanwhile)
        from aggregator.stories import StoryFeatures

        entries = tuple(
            IngestEntry(e.item, e.hits, e.features, StoryFeatures.from_bytes(e.features))
            for e in feed.entries
        )
        next_poll = schedule.next_poll_after_success(
            now,
            source.interval,
            self.rng,
            cache_hint=schedule.cache_hint_seconds(response.headers, now, feed.ttl_seconds),
        )
        ms = int((time.monotonic() - started) * 1000)
        outcome = PollOutcome(
            source.id,
            now,
            next_poll,
            status=response.status,
            etag=response.etag,
            last_modified=response.last_modified,
            permanent_url=response.permanent_url,
            elapsed_ms=ms,
            entry_digests=feed.digests,
        )
        report = PollReport(
            source.id, "ok", response.status, ms=ms, permanent_url=response.permanent_url
        )
        return _Prepared(outcome, entries, report, feed.skipped)

    def _languages(self) -> tuple[str, ...]:
        langs = sorted({s.language for s in self.config.sources if s.language})
        return tuple(langs) if langs else ("en", "ru")

    def match_topics(
        self, source: Source, title: str, summary: str, content: str, language: str | None
    ) -> tuple[TopicHit, ...]:
        from aggregator.prepare import topic_hits

        return topic_hits(self.compiled_topics, source, title, summary, content, language)

    def _failed(
        self,
        source: Source,
        state: SourceState,
        kind: ErrorKind,
        message: str,
        status: int | None,
        retry_after: str | None,
        permanent_url: str | None,
        started: float,
    ) -> _Prepared:
        now = self.clock()
        ms = int((time.monotonic() - started) * 1000)
        disabled = "410 Gone: the feed was removed" if kind == ErrorKind.GONE else None
        if disabled:
            next_poll = now + GONE_PAUSE
        else:
            next_poll = schedule.next_poll_after_error(
                now, source.interval, state.consecutive_errors + 1, self.rng, retry_after
            )
        outcome = PollOutcome(
            source.id,
            now,
            next_poll,
            status=status,
            permanent_url=permanent_url,
            error_kind=str(kind),
            error=message,
            disabled_reason=disabled,
            elapsed_ms=ms,
        )
        report = PollReport(
            source.id,
            "error",
            status,
            error_kind=str(kind),
            error=message,
            ms=ms,
            permanent_url=permanent_url,
            disabled=disabled is not None,
        )
        return _Prepared(outcome, (), report)

    # ------------------------------------------------------------------ topics

    def rules_fingerprint(self) -> str:
        """What topic membership depends on: the topic rules and the sources' tags."""
        data = {
            "topics": [dataclasses.asdict(t) for t in self.config.topics],
            "tags": {s.id: list(s.tags) for s in self.config.sources},
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def recompute_topics(self, now: datetime | None = None, *, force: bool = False) -> int:
        """Recompute topic membership for the stories in the retention window.

        Skipped when the rules are the ones the stored membership was computed with: new
        items get their membership at ingest, so only a rule change needs the recompute.
        """
        fingerprint = self.rules_fingerprint()
        if not force and self.store.get_setting(RULES_SETTING) == fingerprint:
            return 0
        changed = self._recompute_topics(now or self.clock())
        self.store.set_setting(RULES_SETTING, fingerprint)
        return changed

    def _recompute_topics(self, now: datetime) -> int:
        since = now - timedelta(days=self.config.settings.retention_days)
        members: dict[str, dict[int, tuple[str, ...]]] = {t.id: {} for t in self.config.topics}
        story_hits: dict[int, list[TopicHit]] = {}
        for row in self.store.match_rows(since):
            source = self.sources.get(row.source_id) or Source(
                id=row.source_id, url="http://invalid/", name=row.source_id
            )
            hits = self.match_topics(source, row.title, row.summary, row.content, row.language)
            story_hits.setdefault(row.story_id, []).extend(hits)
        for story_id, all_hits in story_hits.items():
            for hit in all_hits:
                terms = members[hit.topic_id].get(story_id, ())
                merged = terms + tuple(term for term in hit.terms if term not in terms)
                members[hit.topic_id][story_id] = merged
        return self.store.replace_membership(
            [t.id for t in self.config.topics], members, published_after=since, now=now
        )


@dataclass
class _Slot:
    outcome: PollOutcome
    lost: bool = False
    error: StoreError | None = None
    written: threading.Event = field(default_factory=threading.Event)


class _Pending:
    """A poll whose outcome is queued for the next group commit."""

    def __init__(self, slot: _Slot, finish: Callable[[bool], PollReport]) -> None:
        self.slot = slot
        self.finish = finish

    def wait(self) -> PollReport:
        self.slot.written.wait()
        if self.slot.error is not None:
            source_id = self.slot.outcome.source_id
            log.error("store error while polling source=%s: %s", source_id, self.slot.error)
            return PollReport(source_id, "error", error_kind="store", error=str(self.slot.error))
        return self.finish(self.slot.lost)


class _OutcomeWriter:
    """Group commit for polls without items. A thread queues its outcome and goes on; if no
    other thread is writing, it writes everything queued in one transaction, and again
    while more arrives. A source's outcome is written before its report is."""

    def __init__(self, store: Store, owner: str) -> None:
        self.store = store
        self.owner = owner
        self._queue: list[_Slot] = []
        self._queue_lock = threading.Lock()
        self._flush_lock = threading.Lock()

    def submit(self, outcome: PollOutcome) -> _Slot:
        slot = _Slot(outcome)
        with self._queue_lock:
            self._queue.append(slot)
        while self._flush_lock.acquire(blocking=False):
            try:
                while batch := self._take():
                    self._write(batch)
            finally:
                self._flush_lock.release()
            with self._queue_lock:
                if not self._queue:
                    break
            # queued after the last take but before the release: nobody else will write it
        return slot

    def _take(self) -> list[_Slot]:
        with self._queue_lock:
            batch, self._queue = self._queue, []
        return batch

    def _write(self, batch: list[_Slot]) -> None:
        try:
            lost = self.store.record_outcomes([s.outcome for s in batch], owner=self.owner)
            for s in batch:
                s.lost = s.outcome.source_id in lost
        except Exception as e:  # each waiting report hears of it, whatever it was
            error = e if isinstance(e, StoreError) else StoreError(f"recording polls: {e!r}")
            for s in batch:
                s.error = error
        finally:
            for s in batch:
                s.written.set()


class ParserPool:
    """Runs :func:`aggregator.prepare.prepare` in worker processes (or inline).

    Worker processes use every core for the CPU-bound part of a poll and keep a hostile
    document away from the daemon: a parse past its deadline or a worker that dies is that
    source's error, and the pool is replaced.
    """

    def __init__(self, processes: int | None, topic_defs: tuple[Topic, ...]) -> None:
        self.processes = auto_processes() if processes is None else processes
        self.topics = topic_defs
        self._compiled: list[CompiledTopic] | None = None  # for inline runs
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn: the daemon has threads, and forking them is unsafe; and unlike a
                # forkserver, nothing stays behind once the pool is shut after a round.
                context = multiprocessing.get_context("spawn")
                from aggregator.parser_worker import init_worker

                self._pool = ProcessPoolExecutor(
                    max_workers=self.processes,
                    mp_context=context,
                    initializer=init_worker,
                    initargs=(self.topics, os.getpid()),
                )
            return self._pool

    def run(self, job: PrepareJob, *, timeout: float, inline: bool = False) -> PreparedFeed:
        if inline or self.processes == 0:
            from aggregator.prepare import prepare

            if self._compiled is None:
                from aggregator.topics import compile_topic

                self._compiled = [compile_topic(t) for t in self.topics]
            return prepare(job, self._compiled)
        from aggregator.parser_worker import prepare_in_worker

        pool = self._get()
        future = pool.submit(prepare_in_worker, job)
        try:
            return future.result(timeout=timeout)
        except FuturesTimeout as e:
            self._replace(pool)
            raise ParseError(ErrorKind.PARSE, f"parsing took longer than {timeout:.0f} s") from e
        except BrokenProcessPool as e:
            self._replace(pool)
            raise ParseError(ErrorKind.INTERNAL, "the parser process died (out of memory?)") from e

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is not broken:
                return  # another thread replaced it already
            self._pool = None
        for process in list(getattr(broken, "_processes", {}).values()):
            process.kill()  # a worker stuck in a parse never returns by itself
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            del pool
            _stop_resource_tracker()


def auto_processes() -> int:
    """``processes: auto``: a parser process per core but one, at least one and at most 4.

    In a big round the daemon's own process keeps a core busy too: one thread writes every
    item (story matching and the store) while others fetch. On 2 cores, two parser processes
    beside it made a cold round of 1,000 bench feeds ~4% slower than one (5 alternating
    runs each: 49.7 s against 48.0 s) and a round with 10% of them changed 2.31 s against
    2.23 s, and cost a process's memory.
    """
    return min(4, max(1, (os.cpu_count() or 1) - 1))


def _stop_resource_tracker() -> None:
    """Stop multiprocessing's resource tracker, a process (~10 MB) that spawning the pool
    started and that would outlive it. It watches the pool's semaphores, which are gone
    once the pool is collected; the next pool starts it again."""
    import gc
    from multiprocessing import resource_tracker

    gc.collect()  # the pool's queues and their semaphores, if a cycle still holds them
    stop = getattr(resource_tracker._resource_tracker, "_stop", None)  # CPython >= 3.11.?
    if stop is not None:
        stop()


class _LeaseHeartbeat(threading.Thread):
    """Extends the leases of sources still being polled, so a slow round keeps them."""

    def __init__(self, poller: Poller, pending: set[str]) -> None:
        super().__init__(name="lease-heartbeat", daemon=True)
        self.poller = poller
        self.pending = pending
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def add(self, source_id: str) -> None:
        with self.lock:
            self.pending.add(source_id)

    def done(self, source_id: str) -> None:
        with self.lock:
            self.pending.discard(source_id)

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        lease = self.poller.lease_seconds()
        while not self.stopped.wait(lease / 3):
            with self.lock:
                ids = list(self.pending)
            until = self.poller.clock() + timedelta(seconds=lease)
            try:
                self.poller.store.extend_leases(self.poller.owner, ids, until)
            except StoreError as e:
                log.warning("could not extend leases: %s", e)


def _interleave_hosts(states: Sequence[SourceState]) -> list[SourceState]:
    """Order sources round-robin by host so one big agency does not hold every worker."""
    by_host: dict[str, list[SourceState]] = defaultdict(list)
    for state in states:
        by_host[urlsplit(state.effective_url).hostname or ""].append(state)
    queues = list(by_host.values())
    ordered: list[SourceState] = []
    while queues:
        for host_queue in list(queues):
            ordered.append(host_queue.pop(0))
            if not host_queue:
                queues.remove(host_queue)
    return ordered


def _log_report(report: PollReport) -> None:
    c = report.counts
    extra = {
        "event": "polled",
        "source": report.source_id,
        "status": report.status,
        "outcome": report.outcome,
        "new": c.new,
        "updated": c.updated,
        "duplicate": c.duplicate,
        "unchanged": c.unchanged,
        "ms": report.ms,
        "error_class": report.error_kind,
    }
    if report.failed:
        log.warning(
            "polled source=%s status=%s error=%s message=%r ms=%d",
            report.source_id,
            report.status,
            report.error_kind,
            report.error,
            report.ms,
            extra=extra,
        )
    else:
        log.info(
            "polled source=%s status=%s new=%d updated=%d duplicate=%d unchanged=%d ms=%d",
            report.source_id,
            report.status,
            c.new,
            c.updated,
            c.duplicate,
            c.unchanged,
            report.ms,
            extra=extra,
        )


def summarize(reports: Iterable[PollReport]) -> IngestCounts:
    total = IngestCounts()
    for r in reports:
        total = total + r.counts
    return total
