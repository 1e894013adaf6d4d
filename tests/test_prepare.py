"""Parsing in worker processes: the same result as inline, and a stuck or dead parser is
that source's error, not the daemon's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

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
    p = ParserPool(2, (TOPIC,))
    yield p
    p.close()


def test_worker_processes_give_the_inline_result(pool: ParserPool) -> None:
    body = (DATA / "feeds" / "belta-en.xml").read_bytes()
    inline = prepare(job(body), [topics.compile_topic(TOPIC)])
    in_worker = pool.run(job(body), timeout=60)
    assert in_worker == inline
    assert in_worker.entries[0].item.title.startswith("Secretaries of CSTO")
    assert [h.topic_id for e in in_worker.entries for h in e.hits] == ["cis-security"]


def _children() -> set[int]:
    """Live child processes of this one (from /proc: what psutil would list)."""
    me = str(os.getpid())
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[1] == me and fields[0] != "Z":  # parent pid; not a zombie
                found.add(int(entry))
    return found


@pytest.mark.parametrize(("cores", "expected"), [(None, 1), (1, 1), (2, 1), (3, 2), (8, 4)])
def test_auto_leaves_a_core_to_the_daemon(
    monkeypatch: pytest.MonkeyPatch, cores: int | None, expected: int
) -> None:
    """`processes: auto` starts a parser process per core but one (the daemon's own process
    writes every item of a big round), at least one and at most 4; a number is kept."""
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert ParserPool(None, (TOPIC,)).processes == expected
    assert ParserPool(3, (TOPIC,)).processes == 3
    assert ParserPool(0, (TOPIC,)).processes == 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_closed_pool_leaves_no_process_behind() -> None:
    """Between rounds the daemon holds no parser processes, and no resource tracker either
    (spawning starts one; it would stay for the daemon's life). The next pool works."""
    before = _children()
    body = (DATA / "feeds" / "belta-en.xml").read_bytes()
    pool = ParserPool(2, (TOPIC,))
    try:
        assert pool.run(job(body), timeout=60).entries
        assert _children() - before  # the workers (and the tracker) are running
        pool.close()
        assert _children() - before == set()
        assert pool.run(job(body), timeout=60).entries  # a new round starts them again
    finally:
        pool.close()
    assert _children() - before == set()


def test_the_daemon_side_of_the_pool_never_loads_the_parser(tmp_path: Path) -> None:
    """The workers parse; the process sending them bodies (the daemon) keeps feedparser,
    the sanitizer and the normalizer out of its memory, and still gets every entry."""
    script = tmp_path / "sender.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from datetime import datetime, UTC
            from aggregator.pipeline import ParserPool
            from aggregator.types import PrepareJob, Source, Topic, TopicMatch

            if __name__ == "__main__":
                pool = ParserPool(2, (Topic("t", "T", match=TopicMatch(any=("CSTO",))),))
                body = open({str(DATA / "feeds" / "belta-en.xml")!r}, "rb").read()
                source = Source("belta-en", "http://belta.example/rss", "BELTA", language="en")
                job = PrepareJob(source, body, source.url, {{}}, datetime.now(UTC))
                feed = pool.run(job, timeout=60)
                pool.close()
                print(len(feed.entries), feed.entries[0].item.title[:11])
                loaded = ("feedparser", "nh3", "aggregator.parse", "aggregator.normalize")
                print(sorted(m for m in loaded if m in sys.modules))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["3 Secretaries", "[]"]


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


def test_workers_exit_when_the_daemon_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "owner.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from test_prepare import TOPIC, job, DATA
            from aggregator import topics
            from aggregator.pipeline import ParserPool

            if __name__ == "__main__":  # worker processes import this module too
                pool = ParserPool(2, (TOPIC,))
                pool.run(job((DATA / "feeds" / "belta-en.xml").read_bytes()), timeout=60)
                print(*[p.pid for p in pool._get()._processes.values()], flush=True)
                time.sleep(60)
            """
        )
    )
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    workers = [int(pid) for pid in owner.stdout.readline().split()]
    assert workers  # the pool starts workers as jobs come
    owner.kill()  # SIGKILL: no chance to shut the pool down
    owner.wait()
    owner.stdout.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): it has exited, it only waits to be reaped
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"
