"""Scale-out: several workers on one database split the sources with leases, and nothing is
lost or stored twice when a worker is killed (kill -9) at any moment.

The worker tests run real ``aggregator run --role worker`` processes against PostgreSQL and
a loopback server of 300 generated feeds. The server is the judge of "exactly once per
round": a feed's content changes with every GET (GET k serves the items of rounds k-1 and
k), and the server keeps the time of every GET. After a poll the scheduler waits the
source's interval ± 10 % before polling it again, so with a 5 s interval two GETs of one
feed less than 4.5 s apart are one round fetched twice (two workers polled it), and a gap of
10 s or more (due after at most 5.5 s, then a whole 4.5 s round more) is a round in which
nobody fetched it.

The kill -9 test cuts fifty polls short in the middle of their ingests, on SQLite and on
PostgreSQL, and checks the store after each; the race test has two workers ingest copies of
one story at the same instant, a hundred times.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from conftest import CIS_SECURITY, write_config
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url

from aggregator.config import load_config
from aggregator.pipeline import Poller
from aggregator.store import IngestEntry, Store, tables
from aggregator.types import Item, PollOutcome, Source, TopicHit

PG_ENV = "AGGREGATOR_TEST_POSTGRES_URL"
ROOT = Path(__file__).resolve().parent.parent

INTERVAL = 5.0  # every source's interval in the worker tests
LEASE = 10.0
IN_FLIGHT = 0.5  # a killed worker's last request may reach the server this long after the kill
MIN_GAP = INTERVAL * 0.9 - 0.05  # the scheduler never polls a source sooner (clock slack)
# A source is due at most 1.1 intervals after its poll; 0.9 more is a whole round on top in
# which nobody fetched it. (Measured on 2 cores: gaps of 4.6-7.7 s, mean 5.6 s.)
MAX_GAP = INTERVAL * 1.1 + INTERVAL * 0.9

_databases = itertools.count()


# --------------------------------------------------------------------------- databases


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of the test's own, dropped afterwards.

    Worker processes keep connections open for the whole test, which conftest's
    ``store_url`` (it drops and recreates the shared schema per test) cannot allow.
    """
    base = os.environ.get(PG_ENV, "")
    if not base:
        pytest.skip(f"PostgreSQL not configured: set {PG_ENV} to run this case")
    name = f"agg_scale_{os.getpid()}_{next(_databases)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/data/agg.db"
    return str(request.getfixturevalue("pg_database"))


# --------------------------------------------------------------------------- feeds

_SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ta", "vo", "ri", "de", "ba", "zu", "pe", "go", "ly"]
_VOCABULARY = ["".join(random.Random(n).choices(_SYLLABLES, k=3 + n % 3)) for n in range(3000)]
BASE_TIME = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def words(seed: str, n: int = 40) -> str:
    """Text no other item resembles (so the near-duplicate index keeps stories apart)."""
    return " ".join(random.Random(seed).choices(_VOCABULARY, k=n))


class Entry:
    def __init__(self, guid: str, url: str, title: str, text: str, minutes: int) -> None:
        self.guid, self.url, self.title, self.text = guid, url, title, text
        self.published = BASE_TIME + timedelta(minutes=minutes)


def rss(entries: list[Entry]) -> bytes:
    body = "".join(
        f"<item><guid isPermaLink='false'>{e.guid}</guid><title>{escape(e.title)}</title>"
        f"<link>{escape(e.url)}</link><description>{escape(e.text)}</description>"
        f"<pubDate>{format_datetime(e.published)}</pubDate></item>"
        for e in entries
    )
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
        "<title>Agency</title><link>https://agency.example/</link>"
        f"<description>News</description>{body}</channel></rss>"
    ).encode()


class Feeds:
    """A loopback server of generated feeds ``/f/<n>.xml`` that records every GET.

    ``content(feed, k)`` gives the entries of the feed's k-th GET (1-based). ``served``
    holds the GUIDs each feed sent in a complete response.
    """

    def __init__(self, count: int, content: Callable[[int, int], list[Entry]]) -> None:
        self.count = count
        self.content = content
        self.lock = threading.Lock()
        self.gets: dict[int, list[float]] = {n: [] for n in range(count)}
        self.served: dict[int, set[str]] = {n: set() for n in range(count)}
        feeds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1].removesuffix(".xml")
                if not self.path.startswith("/f/") or not name.isdigit():
                    self.send_error(404)
                    return
                n = int(name)
                with feeds.lock:
                    feeds.gets[n].append(time.time())
                    entries = feeds.content(n, len(feeds.gets[n]))
                body = rss(entries)
                etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("ETag", etag)
                    self.end_headers()
                    self.wfile.write(body)
                    self.wfile.flush()
                except OSError:
                    return  # the worker was killed mid-response: nothing was served
                with feeds.lock:
                    feeds.served[n].update(e.guid for e in entries)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # many workers connect at once

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.port}/f/{n:03}.xml"

    def source_id(self, n: int) -> str:
        return f"f{n:03}"

    def total_gets(self) -> int:
        with self.lock:
            return sum(len(g) for g in self.gets.values())

    def get_times(self) -> dict[int, list[float]]:
        with self.lock:
            return {n: list(g) for n, g in self.gets.items()}

    def served_keys(self) -> set[tuple[str, str]]:
        with self.lock:
            return {(self.source_id(n), g) for n, guids in self.served.items() for g in guids}

    def wait(self, condition: Callable[[dict[int, list[float]]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self.get_times()):
            if time.monotonic() > deadline:
                raise AssertionError("the feed server did not see the expected GETs in time")
            time.sleep(0.1)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def round_content(n: int, k: int) -> list[Entry]:
    """GET k of feed n: the items of rounds k-1 and k (a missed commit is re-served once)."""
    entries = []
    for r in (k - 1, k):
        guid = f"f{n:03}-r{r}"
        topical = "CSTO " if (n + r) % 5 == 0 else ""
        entries.append(
            Entry(
                guid,
                f"https://agency{n % 7}.example/news/{guid}",
                f"{topical}{words(guid, 8)}",
                words(guid),
                n + r,
            )
        )
    return entries


@pytest.fixture
def feeds() -> Iterator[Feeds]:
    server = Feeds(300, round_content)
    yield server
    server.close()


# --------------------------------------------------------------------------- workers


class Worker:
    """``aggregator run --role worker`` as a separate process, leading its own process group
    (with its parser processes)."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log_path = log
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aggregator",
                "run",
                "--role",
                "worker",
                "--config",
                str(config),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.owner = f"{socket.gethostname()}:{self.proc.pid}"  # the lease owner it uses

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        kill_group(self.proc.pid)  # anything of it still running
        self.log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9 of the worker and its parser processes at once."""
        kill_group(self.proc.pid)
        self.proc.wait()

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def polls(self) -> int:
        return self.text().count("polled source=")


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def worker_config(tmp_path: Path, feeds: Feeds, database: str) -> Path:
    return write_config(
        tmp_path / "config",
        settings={
            "database": database,
            "scheduler": {"tick": "1s", "lease": f"{LEASE:.0f}s"},
            "concurrency": 8,
            "per_host": 8,  # every feed is on 127.0.0.1
        },
        sources=[
            {"id": feeds.source_id(n), "url": feeds.url(n), "interval": "5s", "timeout": "5s"}
            for n in range(feeds.count)
        ],
        topics=[CIS_SECURITY],
    )


def every_feed_fetched(times: int, after: float = 0.0) -> Callable[[dict[int, list[float]]], bool]:
    return lambda gets: all(sum(t > after for t in g) >= times for g in gets.values())


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def leases_of(store: Store, owner: str) -> dict[str, datetime]:
    c = tables.sources.c
    with store._read() as conn:
        rows = conn.execute(select(c.id, c.lease_expires_at).where(c.lease_owner == owner))
        return {r.id: r.lease_expires_at for r in rows}


def assert_stored_once(store: Store, feeds: Feeds) -> None:
    """The store holds every item any feed served, each once, and is consistent."""
    stored = [(r["source_id"], r["guid"]) for r in store.all_items()]
    assert len(stored) == len(set(stored))
    served = feeds.served_keys()
    assert set(stored) == served, (
        f"lost: {sorted(served - set(stored))[:5]} extra: {sorted(set(stored) - served)[:5]}"
    )
    assert store.execute_check() == []


# --------------------------------------------------------------------------- (a) and (b)


@pytest.mark.slow
@pytest.mark.postgres
def test_three_workers_fetch_every_feed_exactly_once_per_round(
    tmp_path: Path, feeds: Feeds, pg_database: str
) -> None:
    """Three workers, 300 feeds polled every 5 s: no feed is fetched twice in a round or
    skipped in one, and the store holds every item served, once."""
    config = worker_config(tmp_path, feeds, pg_database)
    workers = [Worker(config, tmp_path / f"worker{i}.log") for i in range(3)]
    try:
        # They start together on an empty database: one migrates it, all sync the sources.
        feeds.wait(every_feed_fetched(1), timeout=90)
        feeds.wait(every_feed_fetched(3), timeout=60)  # and at least two rounds more
    finally:
        codes = [w.stop() for w in workers]
    logs = [w.text() for w in workers]
    assert codes == [0, 0, 0], logs
    for log in logs:
        assert "Traceback" not in log and "ERROR" not in log, log
    times = feeds.get_times()
    for n, got in times.items():
        assert min(gaps(got)) >= MIN_GAP, f"feed {n} fetched twice in one round: {got}"
        assert max(gaps(got)) < MAX_GAP, f"feed {n} missed a round: {gaps(got)}"
    polls = [w.polls() for w in workers]
    assert sum(polls) >= 3 * feeds.count
    # Every worker takes a share. (Not an even one: a worker claims all that is due at its
    # tick, so the first to start takes the whole first round.)
    assert min(polls) >= feeds.count // 10, polls
    store = Store(pg_database)
    assert_stored_once(store, feeds)
    store.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_a_killed_workers_sources_are_taken_over_when_its_leases_expire(
    tmp_path: Path, feeds: Feeds, pg_database: str
) -> None:
    """A worker killed mid-round (with its parser processes): nobody touches its sources
    until its leases expire, the others take them over at their next tick, and what it had
    fetched but not stored is stored by them."""
    config = worker_config(tmp_path, feeds, pg_database)
    workers = [Worker(config, tmp_path / f"worker{i}.log") for i in range(3)]
    victim, survivors = workers[0], workers[1:]
    try:
        # Past the first round: an item is served by two consecutive GETs of its feed, so
        # one fetch the victim takes down with it loses nothing, except in a feed's very
        # first GET (round_content)
        feeds.wait(every_feed_fetched(2), timeout=90)
        store = Store(pg_database)
        deadline = time.monotonic() + 30
        while len(leases_of(store, victim.owner)) < 3:  # mid-round: it holds sources
            assert time.monotonic() < deadline, "the worker never held leases"
            time.sleep(0.01)
        victim.kill()
        killed_at = time.time()
        orphaned = leases_of(store, victim.owner)
        assert orphaned
        expiry = max(orphaned.values()).timestamp()
        assert killed_at < expiry <= killed_at + LEASE + 0.1
        # Everything, the orphaned sources included, goes on being polled by the others.
        feeds.wait(every_feed_fetched(1, after=expiry + 1.0), timeout=60)
    finally:
        codes = [w.stop() for w in survivors]
        victim.stop()
    try:
        assert codes == [0, 0], [w.text() for w in survivors]
        for w in survivors:
            assert "Traceback" not in w.text() and "ERROR" not in w.text(), w.text()
        times = feeds.get_times()
        by_id = {feeds.source_id(n): n for n in times}
        for source_id, until in orphaned.items():
            # A request the victim sent just before it died can reach the feed server a little
            # after the kill (more so on a busy machine): those are the victim's, not a takeover.
            after_kill = [t for t in times[by_id[source_id]] if t > killed_at + IN_FLIGHT]
            # Nobody touched it while the dead worker's lease ran; then it was taken over at
            # the next tick.
            assert after_kill[0] >= until.timestamp() - 0.05, (source_id, after_kill, until)
            assert after_kill[0] <= until.timestamp() + 1.0 + 2.0, (source_id, after_kill, until)
        for n, got in times.items():
            assert min(gaps(got)) >= MIN_GAP, f"feed {n} fetched twice in one round: {got}"
            if feeds.source_id(n) not in orphaned:
                assert max(gaps(got)) < MAX_GAP, f"feed {n} missed a round: {gaps(got)}"
        assert_stored_once(store, feeds)  # what the dead worker fetched was re-served and stored
    finally:
        store.close()


# --------------------------------------------------------------------------- (c) kill -9


class Editions:
    """30 feeds in three desks of ten; each edition, one desk's feeds gain two stories.

    Within a desk, feeds j and j+5 carry copies of the same stories (same link and text).
    Feeds keep every item they ever listed (nothing can scroll away unstored), and the
    desks not updated answer 304 to the poll's conditional GET.
    """

    FEEDS = 30
    PER_EDITION = 2

    def __init__(self) -> None:
        self.edition = 0

    def stories(self) -> int:
        """How many stories the feeds hold so far."""
        return 5 * (3 + self.edition) * self.PER_EDITION

    def content(self, n: int, _k: int) -> list[Entry]:
        desk, pair = divmod(n, 10)
        pair %= 5
        entries = []
        for e in range(self.edition + 1):
            if e > 0 and e % 3 != desk:
                continue
            for m in range(self.PER_EDITION):
                story = f"e{e}-d{desk}-p{pair}-{m}"
                topical = "CSTO " if (e + pair + m) % 3 == 0 else ""
                entries.append(
                    Entry(
                        f"{story}-f{n}",
                        f"https://news.example/{e}/{desk}/{pair}/{m}",
                        f"{topical}{words(story, 8)}",
                        words(story),
                        e,
                    )
                )
        return entries


class Launcher:
    """tests/poll_launcher.py: forks one ``aggregator poll`` run per call, imports done."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "poll_launcher.py"),
                "-q",
                "--config",
                str(config),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _ask(self, line: str) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def poll(self) -> int:
        return self._ask("poll")

    def wait(self, pid: int) -> int:
        return self._ask(f"wait {pid}")

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


def wait_for_leases_to_expire(store: Store) -> None:
    with store._read() as conn:
        until = conn.execute(select(func.max(tables.sources.c.lease_expires_at))).scalar()
    if until is not None:
        time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds() + 0.01))


def running(pid: int) -> bool:
    """Whether a child of the launcher is still running (not exited, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_kill_9_at_random_moments_never_loses_or_duplicates_an_item(
    tmp_path: Path, database: str
) -> None:
    """Fifty polls, each killed at a random moment while it ingests, each followed by a
    check of the store; then one poll runs to the end and must find everything."""
    rng = random.Random(7)
    editions = Editions()
    feeds = Feeds(Editions.FEEDS, editions.content)
    config = write_config(
        tmp_path / "config",
        # A short lease: the next run can take over the killed run's sources soon. Parsing
        # stays in the polling process (processes: 0): a parser pool would only add its
        # start-up to each of the hundred runs, and it holds no store state (the worker
        # tests above run with the pool).
        settings={
            "database": database,
            "scheduler": {"lease": "0.3s"},
            "per_host": 8,
            "processes": 0,
        },
        sources=[{"id": feeds.source_id(n), "url": feeds.url(n)} for n in range(Editions.FEEDS)],
        topics=[CIS_SECURITY],
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    launcher = Launcher(config, env)
    store = Store(database)
    store.upgrade()  # aggregator db upgrade
    mid_ingest = pid = 0
    try:
        for _ in range(50):
            editions.edition += 1
            before = item_count(store)
            pid = launcher.poll()
            deadline = time.monotonic() + 30
            while running(pid) and item_count(store) == before:  # its first commit
                assert time.monotonic() < deadline, "the poll stored nothing"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.03))  # somewhere in its remaining ingests
            if running(pid):
                kill_group(pid)  # the poll and its parser processes
            killed = launcher.wait(pid) == -signal.SIGKILL
            # The next start finds a consistent store holding only what was served, once.
            assert store.execute_check() == []  # SQLite's integrity_check included
            stored = [(r["source_id"], r["guid"]) for r in store.all_items()]
            assert len(stored) == len(set(stored))
            assert set(stored) <= feeds.served_keys()
            mid_ingest += killed and len(stored) < len(feeds.served_keys())
            wait_for_leases_to_expire(store)  # so the next run polls every source
        print(f"{mid_ingest} of 50 runs killed mid-ingest")
        assert mid_ingest >= 35  # most runs died with items fetched but not yet stored
        command = [sys.executable, "-m", "aggregator", "poll", "-q", "--config", str(config)]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
        assert f"total: {Editions.FEEDS} sources, 0 failed" in done.stdout.decode()
        assert_stored_once(store, feeds)
        # The copies of each story are one story, whatever the kills interrupted.
        assert store.counts()["stories"] == editions.stories()
    finally:
        if pid:
            kill_group(pid)
        launcher.close()
        store.close()
        feeds.close()


def item_count(store: Store) -> int:
    return store.counts()["items"]


# --------------------------------------------------------------------------- (d) races


NOW = datetime(2026, 11, 16, 12, 0, tzinfo=UTC)


def copy(source: str, n: int, url: str, content_hash: str) -> IngestEntry:
    item = Item(
        source_id=source,
        guid=f"{source}-{n}",
        url=url,
        link=url,
        title=f"Summit {n}",
        summary=f"Summit {n} text",
        content="",
        published=NOW - timedelta(minutes=n),
        updated=NOW - timedelta(minutes=n),
        content_hash=content_hash,
    )
    return IngestEntry(item, (TopicHit("cis-security", ("CSTO",)),))


def test_two_workers_ingesting_one_story_at_the_same_moment_make_one_story(
    store_url: str,
) -> None:
    """100 times, two workers (own connections) ingest copies of one story at once."""
    workers = {"tass": Store(store_url), "belta": Store(store_url)}
    first = workers["tass"]
    first.upgrade()
    first.sync_sources([Source(s, f"http://{s}.example/rss", s) for s in workers], NOW)
    results: dict[str, list[Any]] = {s: [] for s in workers}
    errors: list[BaseException] = []

    def ingest(source: str, barrier: threading.Barrier, entry: IngestEntry) -> None:
        try:
            barrier.wait()
            outcome = PollOutcome(source, NOW, NOW + timedelta(minutes=5), status=200)
            results[source].append(workers[source].ingest(outcome, [entry], now=NOW))
        except BaseException as e:  # reported in the test's thread
            errors.append(e)

    for n in range(100):
        barrier = threading.Barrier(2)
        threads = []
        for source in workers:
            # Even rounds: the same link. Odd rounds: other links, the same text.
            url = f"https://news.example/{n}" + ("" if n % 2 == 0 else f"?via={source}")
            entry = copy(source, n, url, f"hash-{n}")
            threads.append(threading.Thread(target=ingest, args=(source, barrier, entry)))
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert errors == []
    by_round: dict[int, set[str]] = {}
    for row in first.all_items():
        by_round.setdefault(int(row["guid"].rsplit("-", 1)[1]), set()).add(row["uid"])
    assert len(by_round) == 100
    assert all(len(uids) == 1 for uids in by_round.values())  # both copies, one story
    counts = first.counts()
    assert (counts["items"], counts["stories"]) == (200, 100)
    outcomes = Counter((r.counts.new, r.counts.duplicate) for rs in results.values() for r in rs)
    assert outcomes == {(1, 0): 100, (0, 1): 100}  # one started it, the other joined
    assert first.topic_count("cis-security") == 100
    assert first.execute_check() == []
    if not first.is_sqlite:
        # The race really ran: in many rounds both created a story and the later one
        # deleted its own (its id is a gap). SQLite's BEGIN IMMEDIATE queues them instead.
        with first._read() as conn:
            top = conn.execute(select(func.max(tables.stories.c.id))).scalar_one()
        assert top - 100 >= 10
    for s in workers.values():
        s.close()


# --------------------------------------------------------------------------- heartbeat


class SlowFeed:
    """One feed that answers after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        body = rss([Entry("slow-1", "https://slow.example/1", "Slow news", words("slow"), 0)])

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/slow.xml"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_poll_longer_than_the_lease_keeps_its_source(tmp_path: Path, store_url: str) -> None:
    """The heartbeat renews the lease while the fetch runs: no other worker takes over."""
    slow = SlowFeed(delay=2.5)
    config = load_config(
        write_config(
            tmp_path / "config",
            settings={"database": store_url, "scheduler": {"lease": "1s"}},
            sources=[{"id": "slow", "url": slow.url}],
        )
    )
    store, other = Store(store_url), Store(store_url)
    store.upgrade()
    store.sync_sources(config.sources, datetime.now(UTC))
    poller = Poller(config, store, owner="w1")
    claimed = poller.claim_now()
    assert [s.id for s in claimed] == ["slow"]
    reports: list[Any] = []
    polling = threading.Thread(target=lambda: reports.extend(poller.poll_states(claimed)))
    polling.start()
    taken = []
    while polling.is_alive():  # another worker tries to take the source all along
        now = datetime.now(UTC)
        claims = other.claim_due(now, owner="w2", lease_seconds=1, only=["slow"], force=True)
        # once the poll has committed, the source is free again: only earlier takes count
        taken += [s for s in claims if s.last_polled_at is None]
        time.sleep(0.1)
    polling.join()
    assert taken == []
    assert [(r.source_id, r.outcome, r.counts.new) for r in reports] == [("slow", "ok", 1)]
    state = store.source_state("slow")
    assert state is not None and state.last_status == 200
    assert other.claim_due(datetime.now(UTC), owner="w2", lease_seconds=1, force=True)  # freed
    poller.close()
    for s in (store, other):
        s.close()
    slow.close()
