"""Polling survives the real web: the daemon's Poller against loopback servers and a real store.

Every test polls through :class:`aggregator.pipeline.Poller` with a real
:class:`aggregator.store.Store` (SQLite, and PostgreSQL when configured), as the daemon does,
and reads the result back from the store or from ``aggregator status``. The servers are real
HTTP servers on loopback addresses (127.0.0.1, 127.0.0.2, … are all loopback on Linux).
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, write_config
from sqlalchemy import create_engine, select

from aggregator.cli import main
from aggregator.config import load_config
from aggregator.pipeline import Poller, PollReport
from aggregator.store import Store, tables
from aggregator.types import SourceState

# --------------------------------------------------------------------------- loopback sites


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/rss+xml; charset=utf-8"


# A route is a fixed reply, or a function of the request that returns one (or None when it
# wrote the response itself, e.g. a trickle).
Route = Reply | Callable[["Handler"], Reply | None]


class InFlight:
    """Counts requests being served at the same time, and the most seen at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current = 0
        self.peak = 0

    def enter(self) -> None:
        with self.lock:
            self.current += 1
            self.peak = max(self.peak, self.current)

    def leave(self) -> None:
        with self.lock:
            self.current -= 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        site = self.server.site
        path = self.path.split("?")[0]
        with site.lock:
            site.requests.append((path, {k.lower(): v for k, v in self.headers.items()}))
        counters = [site.inflight, *([site.shared] if site.shared else [])]
        for counter in counters:
            counter.enter()
        try:
            if site.delay:
                time.sleep(site.delay)
            route = site.routes.get(path, Reply(404, b"not found", content_type="text/plain"))
            reply = route(self) if callable(route) else route
            if reply is not None:
                self.send(reply)
        finally:
            for counter in counters:
                counter.leave()

    def send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    site: Site


class Site:
    """A threaded HTTP/1.1 server on one loopback address that records what it was asked."""

    def __init__(
        self, host: str = "127.0.0.1", *, delay: float = 0.0, shared: InFlight | None = None
    ) -> None:
        self.host = host
        self.delay = delay
        self.shared = shared
        self.inflight = InFlight()
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.httpd = _HTTPServer((host, 0), Handler)
        self.httpd.site = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def hits(self, path: str) -> list[dict[str, str]]:
        """The headers of every request for ``path``."""
        with self.lock:
            return [headers for p, headers in self.requests if p == path]

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def sites() -> Iterator[Callable[..., Site]]:
    started: list[Site] = []

    def start(host: str = "127.0.0.1", **kwargs: Any) -> Site:
        site = Site(host, **kwargs)
        started.append(site)
        return site

    yield start
    for site in started:
        site.close()


def trickle(handler: Handler) -> None:
    """A 200 whose body comes one byte a second, until the client hangs up."""
    stopping = handler.server.site.stopping
    try:
        handler.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
            b"Content-Length: 100000\r\n\r\n<"
        )
        handler.wfile.flush()
        while not stopping.wait(1.0):
            handler.wfile.write(b" ")
            handler.wfile.flush()
    except OSError:
        return


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/feed.xml"


def rss(*titles: str, slug: str = "news") -> bytes:
    """A small RSS feed, one item per title, with links unique to ``slug``."""
    items = "".join(
        f"<item><title>{title}</title><link>https://agency.example.org/{slug}/{n}</link>"
        f"<guid>https://agency.example.org/{slug}/{n}</guid>"
        f"<description>{title}. Details follow.</description>"
        "<pubDate>Mon, 16 Nov 2026 06:30:00 GMT</pubDate></item>"
        for n, title in enumerate(titles)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>{slug}</title><link>https://agency.example.org/</link>{items}"
        "</channel></rss>"
    ).encode()


# --------------------------------------------------------------------------- the daemon's parts


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Rig:
    config_dir: Path
    store: Store
    poller: Poller

    def state(self, source_id: str) -> SourceState:
        state = self.store.source_state(source_id)
        assert state is not None
        return state

    def titles(self, source_id: str) -> list[str]:
        return [i["title"] for i in self.store.all_items() if i["source_id"] == source_id]

    def poll(self, *source_ids: str) -> dict[str, PollReport]:
        return {r.source_id: r for r in self.poller.poll_now(list(source_ids) or None)}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """Build the daemon's parts on a config directory: config → Store → Poller."""
    made: list[Rig] = []

    def build(
        url: str,
        sources: list[dict[str, Any]],
        *,
        settings: dict[str, Any] | None = None,
        clock: Clock | None = None,
        **poller_options: Any,
    ) -> Rig:
        config_dir = write_config(
            tmp_path / f"config{len(made)}",
            settings={"database": url, **(settings or {})},
            sources=sources,
        )
        config = load_config(config_dir)
        clock = clock or Clock()
        store = Store(url)
        store.upgrade()
        store.sync_sources(config.sources, clock())
        poller = Poller(config, store, clock=clock, **poller_options)
        made.append(Rig(config_dir, store, poller))
        return made[-1]

    yield build
    for r in made:
        r.poller.close()
        r.store.close()


def status_rows(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """``aggregator status`` as a user runs it: each source's row of the table, by id."""
    capsys.readouterr()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert main(["status", "--config", str(config_dir)]) == 0
    finally:
        # The CLI installs its own log handler on this test's captured stderr.
        root.handlers[:], root.level = handlers, level
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["SOURCE", "NAME", "URL", "LAST", "POLL"]
    return {line.split()[0]: line for line in lines[2:] if line.strip()}


def stored_text(url: str) -> str:
    """Every value of every item and source row in the database, as one text."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = [*conn.execute(select(tables.items)), *conn.execute(select(tables.sources))]
    finally:
        engine.dispose()
    return "\n".join(str(value) for row in rows for value in row)


# --------------------------------------------------------------------------- 1. concurrency


def test_one_agency_never_gets_more_than_two_requests_at_once(
    sites: Callable[..., Site], rig: Callable[..., Rig], sqlite_url: str
) -> None:
    site = sites(delay=0.2)
    sources = []
    for n in range(40):
        site.routes[f"/feed{n}.xml"] = Reply(body=rss(f"Story {n}", slug=f"s{n}"))
        sources.append({"id": f"feed-{n:02d}", "url": site.url(f"/feed{n}.xml")})
    r = rig(sqlite_url, sources)  # defaults: concurrency 16, per_host 2

    reports = r.poll()

    assert [rep.outcome for rep in reports.values()] == ["ok"] * 40
    assert len(site.requests) == 40
    assert site.inflight.peak == 2  # in parallel, but never more than per_host
    assert r.store.counts()["items"] == 40


def test_several_agencies_are_polled_in_parallel_within_the_pool_size(
    sites: Callable[..., Site], rig: Callable[..., Rig], sqlite_url: str
) -> None:
    total = InFlight()
    hosts = [sites(f"127.0.0.{n}", delay=0.2, shared=total) for n in range(1, 5)]
    sources = []
    for h, site in enumerate(hosts):
        for n in range(10):
            site.routes[f"/feed{n}.xml"] = Reply(body=rss(f"Story {h} {n}", slug=f"h{h}n{n}"))
            sources.append({"id": f"host{h}-{n}", "url": site.url(f"/feed{n}.xml")})
    r = rig(sqlite_url, sources, settings={"concurrency": 5, "per_host": 2})

    reports = r.poll()

    assert all(rep.outcome == "ok" for rep in reports.values()) and len(reports) == 40
    assert all(site.inflight.peak <= 2 for site in hosts)
    assert 2 < total.peak <= 5


# --------------------------------------------------------------------------- 2. deadline


def test_a_trickling_source_times_out_at_its_deadline_without_holding_up_the_others(
    sites: Callable[..., Site], rig: Callable[..., Rig], sqlite_url: str
) -> None:
    site = sites()
    site.routes["/slow.xml"] = trickle
    # "belta" sorts first, so the slow source is among the first to take a slot on the host.
    sources: list[dict[str, Any]] = [{"id": "belta", "url": site.url("/slow.xml"), "timeout": 4}]
    for n in range(20):
        site.routes[f"/feed{n}.xml"] = Reply(body=rss(f"Story {n}", slug=f"s{n}"))
        sources.append({"id": f"tass-{n:02d}", "url": site.url(f"/feed{n}.xml")})
    r = rig(sqlite_url, sources)
    finished: dict[str, float] = {}
    committed: dict[str, bool] = {}

    def on_report(report: PollReport) -> None:
        finished[report.source_id] = time.monotonic() - started
        # Read back through the store: the poll is committed, not just done.
        committed[report.source_id] = r.state(report.source_id).last_polled_at is not None

    r.poller.listeners.append(on_report)
    started = time.monotonic()
    reports = r.poll()

    # The slow source held one of the host's two slots while the others went through the other.
    assert [path for path, _ in site.requests].index("/slow.xml") < 5
    good = [sid for sid in reports if sid != "belta"]
    assert all(reports[sid].outcome == "ok" for sid in good)
    assert all(committed[sid] for sid in good)
    assert max(finished[sid] for sid in good) < 4.0  # all stored before the slow one's deadline
    assert r.store.counts()["items"] == 20

    slow = reports["belta"]
    assert slow.error_kind == "timeout"
    assert 3.0 <= finished["belta"] <= 5.0
    assert 3000 <= slow.ms <= 5000
    state = r.state("belta")
    assert state.last_error_kind == "timeout"
    assert state.last_error is not None and "timed out" in state.last_error


# --------------------------------------------------------------------------- 3. redirects


@pytest.mark.parametrize("status", [301, 308])
def test_permanent_redirect_moves_the_source_and_the_next_poll_goes_to_the_new_url(
    status: int,
    sites: Callable[..., Site],
    rig: Callable[..., Rig],
    store_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = sites()
    site.routes["/old.xml"] = Reply(status, headers={"Location": "/new.xml"})
    site.routes["/new.xml"] = Reply(body=rss("CSTO drills begin"))
    r = rig(store_url, [{"id": "belta", "url": site.url("/old.xml")}])

    first = r.poll()["belta"]
    assert first.outcome == "ok" and first.permanent_url == site.url("/new.xml")
    state = r.state("belta")
    assert state.url == site.url("/old.xml")
    assert state.effective_url == site.url("/new.xml")
    assert r.titles("belta") == ["CSTO drills begin"]

    assert r.poll()["belta"].outcome == "ok"
    assert len(site.hits("/old.xml")) == 1
    assert len(site.hits("/new.xml")) == 2

    row = status_rows(r.config_dir, capsys)["belta"]
    assert f"[moved to {site.url('/new.xml')}]" in row


def test_temporary_redirect_is_followed_but_the_source_keeps_its_url(
    sites: Callable[..., Site],
    rig: Callable[..., Rig],
    store_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = sites()
    site.routes["/feed.xml"] = Reply(302, headers={"Location": "/today.xml"})
    site.routes["/today.xml"] = Reply(body=rss("CSTO drills begin"))
    r = rig(store_url, [{"id": "belta", "url": site.url("/feed.xml")}])

    assert r.poll()["belta"].outcome == "ok"
    assert r.titles("belta") == ["CSTO drills begin"]
    assert r.state("belta").effective_url == site.url("/feed.xml")
    r.poll()
    assert len(site.hits("/feed.xml")) == 2

    assert "moved" not in status_rows(r.config_dir, capsys)["belta"]


def test_redirect_from_a_public_site_into_loopback_is_refused_unless_allowed(
    sites: Callable[..., Site],
    rig: Callable[..., Rig],
    store_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    origin = sites("127.0.0.2")  # plays a public agency site
    inside = sites("127.0.0.1")
    inside.routes["/admin.xml"] = Reply(body=rss("Internal memo"))
    origin.routes["/a.xml"] = Reply(302, headers={"Location": inside.url("/admin.xml")})
    origin.routes["/b.xml"] = Reply(302, headers={"Location": inside.url("/admin.xml")})
    r = rig(
        store_url,
        [
            {"id": "guarded", "url": origin.url("/a.xml", host="agency.example")},
            {
                "id": "trusted",
                "url": origin.url("/b.xml", host="agency.example"),
                "allow_private": True,
            },
        ],
        resolve=lambda host, port: {"agency.example": ["127.0.0.2"]}[host],
        public_addresses=frozenset({"127.0.0.2"}),
    )

    reports = r.poll()

    assert reports["guarded"].error_kind == "blocked"
    assert r.state("guarded").last_error_kind == "blocked"
    assert r.titles("guarded") == []
    assert reports["trusted"].outcome == "ok"
    assert r.titles("trusted") == ["Internal memo"]
    assert len(inside.hits("/admin.xml")) == 1  # only the trusted source reached it
    rows = status_rows(r.config_dir, capsys)
    assert "redirect to private address 127.0.0.1 refused" in rows["guarded"]


def test_private_source_moved_to_another_private_url_is_still_fetched(
    sites: Callable[..., Site], rig: Callable[..., Rig], store_url: str
) -> None:
    first = sites("127.0.0.1")
    second = sites("127.0.0.2")
    first.routes["/old.xml"] = Reply(301, headers={"Location": second.url("/feed.xml")})
    second.routes["/feed.xml"] = Reply(body=rss("Intranet bulletin"))
    r = rig(store_url, [{"id": "intranet", "url": first.url("/old.xml")}])

    assert r.poll()["intranet"].outcome == "ok"
    assert r.state("intranet").effective_url == second.url("/feed.xml")
    second_poll = r.poll()["intranet"]

    assert not second_poll.failed
    assert r.titles("intranet") == ["Intranet bulletin"]
    assert len(second.hits("/feed.xml")) == 2
    assert len(first.hits("/old.xml")) == 1


def test_moved_public_source_is_refused_when_its_new_host_turns_private(
    sites: Callable[..., Site], rig: Callable[..., Rig], store_url: str
) -> None:
    origin = sites("127.0.0.2")
    moved = sites("127.0.0.3")
    origin.routes["/rss"] = Reply(301, headers={"Location": moved.url("/rss", host="new.example")})
    moved.routes["/rss"] = Reply(body=rss("CSTO drills begin"))
    names = {"agency.example": ["127.0.0.2"], "new.example": ["127.0.0.3"]}
    sources = [{"id": "belta", "url": origin.url("/rss", host="agency.example")}]
    public = rig(
        store_url,
        sources,
        resolve=lambda host, port: names[host],
        public_addresses=frozenset({"127.0.0.2", "127.0.0.3"}),
    )
    assert public.poll()["belta"].outcome == "ok"
    assert public.state("belta").effective_url == moved.url("/rss", host="new.example")

    # The new host's address is now a private one: the admin configured a public URL, so
    # the moved source may not reach into the private network.
    later = rig(
        store_url,
        sources,
        resolve=lambda host, port: names[host],
        public_addresses=frozenset({"127.0.0.2"}),
    )
    report = later.poll()["belta"]

    assert report.error_kind == "blocked"
    assert len(moved.hits("/rss")) == 1


# --------------------------------------------------------------------------- 4. status codes


def test_gone_feed_is_disabled_and_never_polled_again(
    sites: Callable[..., Site],
    rig: Callable[..., Rig],
    store_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = sites()
    site.routes["/gone.xml"] = Reply(410, b"gone", content_type="text/plain")
    clock = Clock()
    r = rig(store_url, [{"id": "closed", "url": site.url("/gone.xml")}], clock=clock)

    assert r.poll()["closed"].disabled
    state = r.state("closed")
    assert state.enabled is False
    assert state.disabled_reason is not None and state.disabled_reason.startswith("410 Gone")

    far = clock() + timedelta(days=36500)
    assert r.store.claim_due(far, owner="other", lease_seconds=60) == []
    assert (
        r.store.claim_due(far, owner="other", lease_seconds=60, only=["closed"], force=True) == []
    )
    assert r.poll("closed") == {}
    assert len(site.hits("/gone.xml")) == 1
    assert "disabled: 410 Gone" in status_rows(r.config_dir, capsys)["closed"]


def test_retry_after_is_honoured_in_seconds_and_as_a_date(
    sites: Callable[..., Site], rig: Callable[..., Rig], store_url: str
) -> None:
    clock = Clock()
    later = clock() + timedelta(hours=3)
    site = sites()
    cases = {
        "limited-seconds": (429, "120", clock() + timedelta(seconds=120)),
        "busy-seconds": (503, "120", clock() + timedelta(seconds=120)),
        "limited-date": (429, format_datetime(later, usegmt=True), later),
        "busy-date": (503, format_datetime(later, usegmt=True), later),
    }
    sources = []
    for sid, (status, retry_after, _) in cases.items():
        site.routes[f"/{sid}"] = Reply(status, b"slow down", {"Retry-After": retry_after})
        # A short interval: the backoff alone would poll again within 20 s.
        sources.append({"id": sid, "url": site.url(f"/{sid}"), "interval": "10s"})
    r = rig(store_url, sources, clock=clock, rng=random.Random(1))

    reports = r.poll()

    for sid, (status, _, not_before) in cases.items():
        assert reports[sid].error_kind == "rate_limited"
        state = r.state(sid)
        assert state.last_status == status and state.last_error_kind == "rate_limited"
        assert state.next_poll_at is not None and state.next_poll_at >= not_before, sid
        assert state.enabled


def test_a_failing_server_is_polled_less_and_less_often_but_never_given_up(
    sites: Callable[..., Site], rig: Callable[..., Rig], store_url: str
) -> None:
    site = sites()
    site.routes["/feed.xml"] = Reply(500, b"oops", content_type="text/plain")
    clock = Clock()
    r = rig(
        store_url,
        [{"id": "flaky", "url": site.url("/feed.xml"), "interval": "60s"}],
        clock=clock,
        rng=random.Random(3),
    )
    delays = []
    for errors in range(1, 6):
        due = r.state("flaky").next_poll_at
        assert due is not None
        clock.now = max(clock.now, due)
        reports = r.poller.poll_due()
        assert [rep.error_kind for rep in reports] == ["server"]
        state = r.state("flaky")
        assert state.consecutive_errors == errors
        assert state.next_poll_at is not None and state.last_polled_at is not None
        delay = (state.next_poll_at - state.last_polled_at).total_seconds()
        assert 60 <= delay <= 60 * 2**errors  # full jitter within a doubling window
        delays.append(delay)

    assert len(site.hits("/feed.xml")) == 5
    assert delays[-1] > 4 * delays[0]
    assert sum(delays[3:]) > sum(delays[:2]) * 2
    state = r.state("flaky")
    assert state.enabled and state.disabled_reason is None


# --------------------------------------------------------------------------- 5. conditional GET


def test_not_modified_stores_nothing_and_validators_go_back_verbatim(
    sites: Callable[..., Site], rig: Callable[..., Rig], store_url: str
) -> None:
    etag = 'W/"belta-2026-11-16"'
    modified = "Mon, 16 Nov 2026 06:30:00 GMT"
    body = rss("CSTO drills begin", "Trade talks in Minsk")
    validators = {"ETag": etag, "Last-Modified": modified}

    def conditional(handler: Handler) -> Reply:
        if handler.headers.get("If-None-Match") == etag:
            return Reply(304, b"", validators)
        return Reply(200, body, validators)

    site = sites()
    site.routes["/feed.xml"] = conditional
    r = rig(store_url, [{"id": "belta", "url": site.url("/feed.xml")}])

    assert r.poll()["belta"].counts.new == 2
    state = r.state("belta")
    assert (state.etag, state.last_modified) == (etag, modified)
    before = r.store.counts()

    second = r.poll()["belta"]

    assert second.outcome == "not_modified" and second.status == 304
    assert (second.counts.new, second.counts.updated, second.counts.unchanged) == (0, 0, 0)
    sent = site.hits("/feed.xml")[1]
    assert sent["if-none-match"] == etag
    assert sent["if-modified-since"] == modified
    assert r.store.counts() == before
    assert r.state("belta").etag == etag and r.state("belta").last_status == 304


def test_a_changed_feed_prepares_only_its_new_and_edited_entries(
    sites: Callable[..., Site], rig: Callable[..., Rig], store_url: str
) -> None:
    """Items listed again byte for byte are known by their digest and not parsed or
    normalized again; an edited or new item is, and a changed source option makes every
    item new. (The digests: 8 bytes of the feed-level values, then 8 per item.)"""
    site = sites()
    site.routes["/feed.xml"] = Reply(200, rss("CSTO drills begin", "Trade talks in Minsk"))
    r = rig(store_url, [{"id": "belta", "url": site.url("/feed.xml")}])
    assert r.poll()["belta"].counts.new == 2
    assert len(r.state("belta").entry_digests) == 8 + 2 * 8

    site.routes["/feed.xml"] = Reply(
        200, rss("CSTO drills begin", "Trade talks in Minsk end", "Harvest is over")
    )
    report = r.poll()["belta"].counts
    assert (report.new, report.updated, report.unchanged) == (1, 1, 1)
    assert sorted(r.titles("belta")) == [
        "CSTO drills begin",
        "Harvest is over",
        "Trade talks in Minsk end",
    ]
    assert len(r.state("belta").entry_digests) == 8 + 3 * 8

    # the digest covers the source's options too: with a new strip pattern, nothing is
    # taken as known, and the stored items are compared again (and found unchanged)
    r2 = rig(
        store_url,
        [{"id": "belta", "url": site.url("/feed.xml"), "strip": ["Details follow"]}],
    )
    again = r2.poll()["belta"].counts
    assert again.unchanged == 0 and again.updated == 3


# --------------------------------------------------------------------------- 6. encodings


def russian_feed(declaration: str | None) -> str:
    body = (DATA / "parse" / "russian.xml").read_text(encoding="utf-8")
    prolog = f' encoding="{declaration}"' if declaration else ""
    return f'<?xml version="1.0"{prolog}?>\n' + body


def test_russian_feed_reads_the_same_whatever_its_encoding(
    sites: Callable[..., Site], rig: Callable[..., Rig], store_url: str
) -> None:
    site = sites()
    plain = "application/rss+xml"
    variants = {
        "http-1251": (russian_feed(None).encode("cp1251"), f"{plain}; charset=windows-1251"),
        "prolog-1251": (russian_feed("windows-1251").encode("cp1251"), plain),
        "bare-1251": (russian_feed(None).encode("cp1251"), plain),
        "bare-koi8": (russian_feed(None).encode("koi8_r"), plain),
    }
    for sid, (body, content_type) in variants.items():
        site.routes[f"/{sid}.xml"] = Reply(body=body, content_type=content_type)
    r = rig(store_url, [{"id": sid, "url": site.url(f"/{sid}.xml")} for sid in variants])

    reports = r.poll()

    expected = [
        "Совет безопасности ОДКБ обсудил ситуацию на границе",
        "Лукашенко провёл встречу с делегацией Казахстана",
    ]
    for sid in variants:
        assert reports[sid].outcome == "ok", reports[sid]
        assert r.titles(sid) == expected, sid


# --------------------------------------------------------------------------- 7. hostile bodies


def test_html_page_is_reported_as_not_a_feed_naming_the_advertised_feed(
    sites: Callable[..., Site], rig: Callable[..., Rig], store_url: str
) -> None:
    site = sites()
    site.routes["/news"] = Reply(
        body=(DATA / "parse" / "page_with_feed.html")
        .read_bytes()
        .replace(b"/rss/all.xml", b"/feed.xml"),
        content_type="text/html; charset=utf-8",
    )
    r = rig(store_url, [{"id": "homepage", "url": site.url("/news")}])

    report = r.poll()["homepage"]

    state = r.state("homepage")
    assert report.error_kind == state.last_error_kind == "not_a_feed"
    assert state.last_error is not None and state.last_error.startswith("not a feed")
    assert site.url("/feed.xml") in state.last_error
    assert r.titles("homepage") == []


def test_external_entities_never_leak_a_local_file_into_the_store(
    sites: Callable[..., Site], rig: Callable[..., Rig], store_url: str, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    marker = "SECRET-MARKER-7f3a91"
    secret.write_text(marker, encoding="utf-8")
    payload = (
        (DATA / "parse" / "xxe.xml")
        .read_text(encoding="utf-8")
        .replace("file:///etc/passwd", secret.as_uri())
        .replace("file:///etc/hostname", secret.as_uri())
    )
    site = sites()
    site.routes["/feed.xml"] = Reply(body=payload.encode())
    r = rig(store_url, [{"id": "hostile", "url": site.url("/feed.xml")}])

    report = r.poll()["hostile"]

    assert report.outcome in ("ok", "error")
    assert r.state("hostile").last_polled_at is not None
    assert marker not in stored_text(store_url)


def test_billion_laughs_ends_quickly_without_expanding(
    sites: Callable[..., Site], rig: Callable[..., Rig], store_url: str
) -> None:
    site = sites()
    site.routes["/feed.xml"] = Reply(body=(DATA / "parse" / "billion_laughs.xml").read_bytes())
    r = rig(store_url, [{"id": "laughs", "url": site.url("/feed.xml")}])

    started = time.monotonic()
    report = r.poll()["laughs"]

    assert time.monotonic() - started < 2.0
    assert report.failed or report.counts.new <= 1
    assert "lollollol" not in stored_text(store_url)
    assert r.state("laughs").last_polled_at is not None


# --------------------------------------------------------------------------- 8. status in words


def test_status_tells_every_kind_of_failure_in_words(
    sites: Callable[..., Site],
    rig: Callable[..., Rig],
    sqlite_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = sites("127.0.0.1")
    origin = sites("127.0.0.2")  # plays a public agency site
    site.routes["/slow.xml"] = trickle
    site.routes["/gone.xml"] = Reply(410)
    site.routes["/limited.xml"] = Reply(429, headers={"Retry-After": "120"})
    site.routes["/busy.xml"] = Reply(503, headers={"Retry-After": "120"})
    site.routes["/page.html"] = Reply(
        body=(DATA / "parse" / "page_with_feed.html").read_bytes(), content_type="text/html"
    )
    site.routes["/old.xml"] = Reply(301, headers={"Location": "/new.xml"})
    site.routes["/new.xml"] = Reply(body=rss("CSTO drills begin"))
    site.routes["/admin.xml"] = Reply(body=rss("Internal memo"))
    origin.routes["/rss"] = Reply(302, headers={"Location": site.url("/admin.xml")})
    r = rig(
        sqlite_url,
        [
            {"id": "slow", "url": site.url("/slow.xml"), "timeout": 1},
            {"id": "missing", "url": site.url("/missing.xml")},
            {"id": "gone", "url": site.url("/gone.xml")},
            {"id": "limited", "url": site.url("/limited.xml"), "interval": "10s"},
            {"id": "busy", "url": site.url("/busy.xml"), "interval": "10s"},
            {"id": "refused", "url": closed_port_url()},
            {"id": "page", "url": site.url("/page.html")},
            {"id": "blocked", "url": origin.url("/rss", host="agency.example")},
            {"id": "moved", "url": site.url("/old.xml")},
        ],
        resolve=lambda host, port: {"agency.example": ["127.0.0.2"]}[host],
        public_addresses=frozenset({"127.0.0.2"}),
    )
    r.poll()

    rows = status_rows(r.config_dir, capsys)

    assert "timed out after 1.0 s" in rows["slow"]
    assert "404 Not Found" in rows["missing"]
    assert "disabled: 410 Gone" in rows["gone"]
    assert "429 Too Many Requests" in rows["limited"] and "in 2m" in rows["limited"]
    assert "503 Service Unavailable" in rows["busy"] and "in 2m" in rows["busy"]
    assert "connection refused" in rows["refused"]
    assert "not a feed" in rows["page"] and site.url("/rss/all.xml") in rows["page"]
    assert "redirect to private address 127.0.0.1 refused" in rows["blocked"]
    assert "ok (HTTP 200)" in rows["moved"] and f"moved to {site.url('/new.xml')}" in rows["moved"]
    # Failing sources come first, so an admin sees them without scrolling.
    assert list(rows)[-1] == "moved"


# --------------------------------------------------------------------------- 9. isolation


def test_a_source_that_breaks_processing_is_recorded_and_the_others_are_stored(
    sites: Callable[..., Site],
    rig: Callable[..., Rig],
    store_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # .NET's DateTime.MinValue in Moscow time, as some CMSs write an unset date: it lies
    # before the first representable UTC instant.
    bad = rss("CSTO drills begin").replace(
        b"Mon, 16 Nov 2026 06:30:00 GMT", b"0001-01-01T00:00:00+03:00"
    )
    site = sites()
    site.routes["/bad.xml"] = Reply(body=bad)
    sources: list[dict[str, Any]] = [{"id": "broken", "url": site.url("/bad.xml")}]
    for n in range(3):
        site.routes[f"/good{n}.xml"] = Reply(body=rss(f"Story {n}", slug=f"g{n}"))
        sources.append({"id": f"good-{n}", "url": site.url(f"/good{n}.xml")})
    clock = Clock()
    r = rig(store_url, sources, clock=clock)

    reports = r.poll()

    for n in range(3):
        assert reports[f"good-{n}"].outcome == "ok"
        assert r.titles(f"good-{n}") == [f"Story {n}"]
    state = r.state("broken")
    # Whatever happened is on the source, and it is not retried at once on the next tick.
    assert state.last_polled_at is not None
    assert state.next_poll_at is not None and state.next_poll_at > clock()
    assert r.poller.poll_due() == []
    if reports["broken"].failed:
        assert state.last_error_kind == "internal"
        assert "failing" in status_rows(r.config_dir, capsys)["broken"]
    else:
        assert r.titles("broken") == ["CSTO drills begin"]
