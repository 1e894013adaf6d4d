"""The HTTP app on a real store: feeds, paging, conditional GET, index, OPML, status."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import feedparser
import pytest
import requests
from conftest import WEB_NOW as NOW
from conftest import make_web_config, serve_app
from lxml import etree

from aggregator.store import IngestEntry, Store
from aggregator.types import (
    Item,
    PollOutcome,
    TopicHit,
)
from aggregator.web import AppState, create_app


class Client:
    """requests against the app served by uvicorn on loopback."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()

    def get(self, path: str, headers: dict[str, str] | None = None) -> requests.Response:
        # Ask for identity unless a test asks otherwise, to see the raw body.
        sent = {"Accept-Encoding": "identity", **(headers or {})}
        return self.session.get(self.base + path, headers=sent, timeout=10)

    def head(self, path: str) -> requests.Response:
        return self.session.head(self.base + path, timeout=10)


@pytest.fixture
def client(app_state: AppState) -> Iterator[Client]:
    with serve_app(create_app(app_state)) as base:
        yield Client(base)


def test_paging_120_stories_by_50(client: Client) -> None:
    seen: list[str] = []
    sizes = []
    for page in (1, 2, 3):
        suffix = "" if page == 1 else f"?page={page}"
        response = client.get("/topics/cis.atom" + suffix)
        assert response.status_code == 200
        feed = feedparser.parse(response.content)
        assert feed.bozo == 0
        sizes.append(len(feed.entries))
        seen.extend(e.id for e in feed.entries)
        links = {link.rel: link.href for link in feed.feed.links}
        base = "http://feeds.example.org/topics/cis.atom"
        assert links["first"] == base
        assert links["self"] == base + suffix
        assert ("next" in links) == (page < 3)
        assert ("previous" in links) == (page > 1)
        if page == 2:
            assert links["next"] == base + "?page=3" and links["previous"] == base
    assert sizes == [50, 50, 20]
    assert len(seen) == len(set(seen)) == 120
    assert client.get("/topics/cis.atom?page=4").status_code == 404
    assert client.get("/topics/cis.atom?page=0").status_code == 404


def test_conditional_get_head_and_gzip(client: Client) -> None:
    first = client.get("/topics/cis.atom")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert first.headers["cache-control"] == "public, max-age=300"  # TASS polls every 5 min
    assert client.get("/topics/cis.atom", headers={"If-None-Match": etag}).status_code == 304
    assert (
        client.get("/topics/cis.atom", headers={"If-Modified-Since": modified}).status_code == 304
    )
    assert client.get("/topics/cis.atom", headers={"If-None-Match": '"other"'}).status_code == 200
    head = client.head("/topics/cis.atom")
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == etag
    zipped = client.get("/topics/cis.atom", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == first.content  # the client inflates it: the same document
    raw = gzip.compress(first.content)
    assert len(raw) < len(first.content)


def test_other_formats_and_unknown_topics(client: Client) -> None:
    rss = client.get("/topics/cis.rss")
    assert rss.headers["content-type"].startswith("application/rss+xml")
    assert feedparser.parse(rss.content).bozo == 0
    js = client.get("/topics/cis.json")
    assert js.json()["version"] == "https://jsonfeed.org/version/1.1"
    assert client.get("/topics/nope.atom").status_code == 404
    assert client.get("/topics/cis.xml").status_code == 404
    empty = client.get("/topics/empty.atom")
    assert empty.status_code == 200 and feedparser.parse(empty.content).entries == []


def test_cached_feed_changes_when_the_topic_changes(app_state: AppState, client: Client) -> None:
    first = client.get("/topics/cis.atom")
    later = NOW + timedelta(minutes=5)
    new = Item(
        "tass",
        "t1",
        "https://tass.example/1",
        "https://tass.example/1",
        "CIS newest",
        "",
        "",
        later,
        later,
        content_hash="t1",
    )
    app_state.store.ingest(
        PollOutcome("tass", later, later, status=200),
        [IngestEntry(new, (TopicHit("cis", ("CIS",)),))],
        now=later,
    )
    app_state.refresh_versions()
    second = client.get("/topics/cis.atom", headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 200
    assert feedparser.parse(second.content).entries[0].title == "CIS newest"


def test_index_and_opml(client: Client) -> None:
    index = client.get("/")
    assert index.headers["content-type"].startswith("text/html")
    doc = etree.HTML(index.content)
    alternates = doc.xpath('//head/link[@rel="alternate"][@type="application/atom+xml"]/@href')
    assert "http://feeds.example.org/topics/cis.atom" in alternates
    opml = etree.fromstring(client.get("/opml").content)
    urls = [o.get("xmlUrl") for o in opml.iter("outline")]
    assert urls == [
        "http://feeds.example.org/topics/cis.atom",
        "http://feeds.example.org/topics/empty.atom",
    ]


def test_status_and_health(client: Client, app_state: AppState) -> None:
    fail = PollOutcome(
        "tass",
        NOW,
        NOW + timedelta(hours=1),
        status=503,
        error_kind="rate_limited",
        error="HTTP 503 Service Unavailable",
    )
    app_state.store.ingest(fail, [], now=NOW)
    data = client.get("/status?format=json").json()
    assert [s["id"] for s in data["sources"]] == ["tass", "belta"]  # failing first
    assert data["sources"][0]["result"] == "failing: HTTP 503 Service Unavailable"
    html_page = client.get("/status").text
    assert "HTTP 503 Service Unavailable" in html_page
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["store"] is True
    metrics = client.get("/metrics").text
    assert 'aggregator_topic_stories{topic="cis"} 120.0' in metrics


def test_health_turns_503_when_the_store_is_gone(tmp_path: Path) -> None:
    db = tmp_path / "gone.db"
    store = Store(f"sqlite:///{db}")
    store.upgrade()
    state = AppState(config=make_web_config(f"sqlite:///{db}"), store=store, role="web")
    with serve_app(create_app(state)) as base:
        client = Client(base)
        assert client.get("/healthz").status_code == 200
        db.unlink()
        for extra in ("-wal", "-shm"):
            (tmp_path / f"gone.db{extra}").unlink(missing_ok=True)
        db.mkdir()  # a directory where the database was: unreadable as a database
        response = client.get("/healthz")
        assert response.status_code == 503 and response.json()["store"] is False
    store.close()


def test_cached_feed_and_304_cost_no_database_query(app_state: AppState) -> None:
    from sqlalchemy import event

    queries: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        queries.append(statement)

    engines = {app_state.store._engine, app_state.store._read_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        with serve_app(create_app(app_state, refresh_interval=3600)) as base:
            client = Client(base)
            first = client.get("/topics/cis.atom")
            assert first.status_code == 200 and queries  # the first render reads the store
            queries.clear()
            again = client.get("/topics/cis.atom")
            not_modified = client.get(
                "/topics/cis.atom", headers={"If-None-Match": first.headers["etag"]}
            )
            assert again.status_code == 200 and again.content == first.content
            assert not_modified.status_code == 304
            assert queries == [], queries
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)
