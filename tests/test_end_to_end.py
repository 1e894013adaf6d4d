"""The whole pipeline on real parts: loopback feeds → poll → store → topic → Atom."""

from __future__ import annotations

from pathlib import Path

import feedparser
import pytest
from conftest import CIS_SECURITY, DATA, FeedServer, write_config

from aggregator.cli import main
from aggregator.store import Store

FEEDS = DATA / "feeds"


@pytest.fixture
def two_agencies(tmp_path: Path, feed_server: FeedServer, store_url: str) -> Path:
    belta = feed_server.add("/belta.xml", (FEEDS / "belta-en.xml").read_bytes())
    tass = feed_server.add(
        "/tass.xml",
        (FEEDS / "tass-en.xml").read_bytes(),
        content_type="application/atom+xml",
    )
    return write_config(
        tmp_path / "config",
        settings={"database": store_url, "base_url": "http://feeds.example.org/"},
        sources=[
            {"id": "belta-en", "url": belta, "name": "BELTA", "priority": 10, "language": "en"},
            {"id": "tass-en", "url": tass, "name": "TASS", "priority": 5, "language": "en"},
        ],
        topics=[CIS_SECURITY],
    )


def _export(config: Path, out: Path, *extra: str) -> bytes:
    assert main(["export", "cis-security", "--config", str(config), "-o", str(out), *extra]) == 0
    return out.read_bytes()


def test_same_article_from_two_agencies_is_one_entry(
    two_agencies: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["poll", "--config", str(two_agencies)]) == 0
    summary = capsys.readouterr().out
    # Five items, one of them a second copy of a story (whichever agency came first).
    assert "total: 2 sources, 0 failed; 4 new, 1 duplicate" in summary

    feed = feedparser.parse(_export(two_agencies, tmp_path / "out.atom"))
    assert feed.bozo == 0
    titles = [e.title for e in feed.entries]
    # The CSTO story once; football is excluded by `none`; trade and ruble do not match.
    assert titles == ["Secretaries of CSTO Security Councils meet in Minsk"]
    entry = feed.entries[0]
    alternate = [link.href for link in entry.links if link.rel == "alternate"]
    related = [(link.href, link.get("title")) for link in entry.links if link.rel == "related"]
    # BELTA has the higher priority: its copy is the representative, tracking removed.
    assert alternate == ["https://news.example.org/politics/csto-secretaries-minsk-2026"]
    # TASS's copy has the same canonical link, so it adds no second link.
    assert related == []
    assert "Go back" not in entry.summary
    assert entry.published == "2026-11-16T06:30:00Z"


def test_second_poll_is_conditional_and_stores_nothing(
    two_agencies: Path,
    feed_server: FeedServer,
    store_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["poll", "--config", str(two_agencies)]) == 0
    first = _export(two_agencies, tmp_path / "first.atom")
    store = Store(store_url)
    before = store.counts()
    assert main(["poll", "--config", str(two_agencies)]) == 0
    assert "belta-en: not modified" in capsys.readouterr().out
    second_requests = feed_server.hits("/belta.xml")[1:]
    assert second_requests and second_requests[0].headers.get("if-none-match")
    assert store.counts() == before
    store.close()
    # Nothing changed: the exported document is byte-identical.
    assert _export(two_agencies, tmp_path / "second.atom") == first


def test_a_dead_source_fails_the_poll_but_the_others_are_stored(
    tmp_path: Path, feed_server: FeedServer, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = feed_server.add("/belta.xml", (FEEDS / "belta-en.xml").read_bytes())
    config = write_config(
        tmp_path / "config",
        settings={"database": store_url},
        sources=[
            {"id": "good", "url": good},
            {"id": "dead", "url": "http://127.0.0.1:9/feed.xml", "timeout": "3s"},
            {"id": "missing", "url": feed_server.url("/nothing.xml")},
        ],
        topics=[CIS_SECURITY],
    )
    assert main(["poll", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "good: 3 new" in out
    assert "dead: FAILED" in out
    assert "missing: FAILED (HTTP 404)" in out
    store = Store(store_url)
    assert store.counts()["items"] == 3
    store.close()
    assert main(["status", "--config", str(config)]) == 0
    status = capsys.readouterr().out
    assert "failing" in status and "404" in status


def test_edited_item_updates_in_place(
    tmp_path: Path, feed_server: FeedServer, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (FEEDS / "belta-en.xml").read_text(encoding="utf-8")
    url = feed_server.add("/belta.xml", body)
    config = write_config(
        tmp_path / "config",
        settings={"database": store_url},
        sources=[{"id": "belta-en", "url": url}],
        topics=[CIS_SECURITY],
    )
    assert main(["poll", "--config", str(config)]) == 0
    feed_server.add("/belta.xml", body.replace("meet in Minsk", "met in Minsk on Monday"))
    assert main(["poll", "--config", str(config)]) == 0
    assert "1 updated" in capsys.readouterr().out
    feed = feedparser.parse(_export(config, tmp_path / "out.atom"))
    assert [e.title for e in feed.entries] == [
        "Secretaries of CSTO Security Councils met in Minsk on Monday"
    ]
    store = Store(store_url)
    assert store.counts()["items"] == 3
    store.close()


def test_unknown_source_on_the_command_line_is_a_usage_error(
    two_agencies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["poll", "nope", "--config", str(two_agencies)]) == 2
    assert "unknown source id: nope" in capsys.readouterr().err


def test_a_guid_that_changes_every_poll_is_still_one_item(
    tmp_path: Path, feed_server: FeedServer, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (FEEDS / "belta-en.xml").read_text(encoding="utf-8")
    url = feed_server.add("/belta.xml", body)
    config = write_config(
        tmp_path / "config",
        settings={"database": store_url},
        sources=[{"id": "belta-en", "url": url}],
        topics=[CIS_SECURITY],
    )
    for poll in range(3):
        # Some CMSs stamp a fresh GUID on every request for an unchanged article.
        feed_server.add("/belta.xml", body.replace("belta-164201", f"belta-164201-{poll}"))
        assert main(["poll", "--config", str(config)]) == 0
    assert "0 new, 0 duplicate, 0 updated, 3 unchanged" in capsys.readouterr().out
    store = Store(store_url)
    rows = store.all_items()
    store.close()
    assert len(rows) == 3  # the three articles, each once
    assert len({r["uid"] for r in rows}) == 3


def test_export_writes_the_bytes_the_server_sends(
    two_agencies: Path, store_url: str, tmp_path: Path
) -> None:
    import requests
    from conftest import serve_app

    from aggregator.config import load_config
    from aggregator.web import AppState, create_app

    assert main(["poll", "--config", str(two_agencies)]) == 0
    store = Store(store_url)
    state = AppState(config=load_config(two_agencies), store=store, role="web")
    try:
        with serve_app(create_app(state)) as base:
            for fmt in ("atom", "rss", "json"):
                exported = _export(two_agencies, tmp_path / f"out.{fmt}", "--format", fmt)
                served = requests.get(
                    f"{base}/topics/cis-security.{fmt}",
                    headers={"Accept-Encoding": "identity"},
                    timeout=10,
                )
                assert served.status_code == 200
                assert served.content == exported
    finally:
        store.close()


def test_changed_rules_apply_to_stored_stories_and_unchanged_rules_cost_nothing(
    two_agencies: Path, store_url: str, tmp_path: Path
) -> None:
    import yaml

    from aggregator.config import load_config
    from aggregator.pipeline import Poller

    assert main(["poll", "--config", str(two_agencies)]) == 0
    topics_file = two_agencies / "topics.yaml"
    data = yaml.safe_load(topics_file.read_text(encoding="utf-8"))
    data["topics"].append({"id": "markets", "title": "Markets", "match": {"any": ["ruble"]}})
    topics_file.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    # The feeds are unchanged (304): only the new rule can put the story in the topic.
    assert main(["poll", "--config", str(two_agencies)]) == 0
    assert (
        main(["export", "markets", "--config", str(two_agencies), "-o", str(tmp_path / "m")]) == 0
    )
    feed = feedparser.parse((tmp_path / "m").read_bytes())
    assert [e.title for e in feed.entries] == ["Moscow exchange: ruble firms against the dollar"]

    store = Store(store_url)
    poller = Poller(load_config(two_agencies), store)
    try:
        assert poller.recompute_topics() == 0  # the stored membership follows these rules
        assert poller.recompute_topics(force=True) == 0  # and a full recompute agrees
    finally:
        poller.close()
        store.close()
