"""Parsing in worker processes: the same result as inline, and a stuck or dead parser is
that source's error, not the daemon's."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime

import pytest
from conftest import CIS_SECURITY, DATA

from aggregator import topics
from aggregator.errors import ParseError
from aggregator.pipeline import ParserPool
from aggregator.prepare import PrepareJob, prepare
from aggregator.types import ErrorKind, Source, Topic, TopicMatch

TOPIC = Topic(
    "cis-security",
    "CIS security",
    match=TopicMatch(any=tuple(CIS_SECURITY["match"]["any"]), none=("football",)),
)
NOW = datetime(2026, 11, 16, 12, 0, tzinfo=UTC)


def job(body: bytes, content_type: str = "application/rss+xml") -> PrepareJob:
    return PrepareJob(
        source=Source("belta-en", "http://belta.example/rss", "BELTA", language="en"),
        content=body,
        url="http://belta.example/rss",
        headers={"content-type": content_type},
        fetched_at=NOW,
    )


@pytest.fixture
def pool() -> ParserPool:
    p = ParserPool(2, (TOPIC,), [topics.compile_topic(TOPIC)])
    yield p
    p.close()


def test_worker_processes_give_the_inline_result(pool: ParserPool) -> None:
    body = (DATA / "feeds" / "belta-en.xml").read_bytes()
    inline = prepare(job(body), [topics.compile_topic(TOPIC)])
    in_worker = pool.run(job(body), timeout=60)
    assert in_worker == inline
    assert in_worker.entries[0].item.title.startswith("Secretaries of CSTO")
    assert [h.topic_id for e in in_worker.entries for h in e.hits] == ["cis-security"]


def test_not_a_feed_keeps_its_details_across_processes(pool: ParserPool) -> None:
    page = b'<html><head><link rel="alternate" type="application/rss+xml" href="/rss.xml"></head></html>'
    with pytest.raises(ParseError) as raised:
        pool.run(job(page, "text/html"), timeout=60)
    assert raised.value.kind == ErrorKind.NOT_A_FEED
    assert raised.value.advertised_url == "http://belta.example/rss.xml"


def test_a_parse_past_its_deadline_is_an_error_and_the_pool_recovers(pool: ParserPool) -> None:
    body = (DATA / "feeds" / "belta-en.xml").read_bytes()
    pool.run(job(body), timeout=60)  # warm: workers running
    big = body.replace(
        b"</channel>",
        b"".join(
            b"<item><title>Item %d about CIS</title><description>%s</description></item>"
            % (n, b"word " * 400)
            for n in range(3000)
        )
        + b"</channel>",
    )
    with pytest.raises(ParseError) as raised:
        pool.run(job(big), timeout=0.05)
    assert "parsing took longer than" in raised.value.message
    assert len(pool.run(job(body), timeout=60).entries) == 3  # a fresh pool took over


def test_a_worker_that_dies_is_an_error_and_the_pool_recovers(pool: ParserPool) -> None:
    body = (DATA / "feeds" / "belta-en.xml").read_bytes()
    pool.run(job(body), timeout=60)
    big = body.replace(
        b"</channel>",
        b"".join(
            b"<item><title>Item %d</title><description>%s</description></item>"
            % (n, b"word " * 400)
            for n in range(3000)
        )
        + b"</channel>",
    )

    def kill_workers() -> None:
        time.sleep(0.3)
        for process in list(pool._get()._processes.values()):
            os.kill(process.pid, signal.SIGKILL)  # as the kernel's OOM killer would

    killer = threading.Thread(target=kill_workers)
    killer.start()
    with pytest.raises(ParseError) as raised:
        pool.run(job(big), timeout=120)
    killer.join()
    assert raised.value.kind == ErrorKind.INTERNAL
    assert len(pool.run(job(body), timeout=60).entries) == 3
