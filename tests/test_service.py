"""The daemon as admins run it: signals, reloads, systemd notify, logs, metrics, health,
the status page in a browser, the offline demo, retention and the poll progress bar.

Daemons run as real subprocesses (``python -m aggregator run``) on SQLite in tmp_path, fed
by real loopback HTTP servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import lxml.html
import pytest
import requests
import yaml
from conftest import (
    CHROMIUM,
    CIS_SECURITY,
    DATA,
    FeedServer,
    chromium,
    make_web_config,
    serve_app,
    write_config,
)
from lxml import etree
from prometheus_client.parser import text_string_to_metric_families

from aggregator.config import load_config
from aggregator.daemon import Daemon, DaemonOptions
from aggregator.pipeline import Poller
from aggregator.store import Store
from aggregator.web import AppState, create_app

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
ATOM = "{http://www.w3.org/2005/Atom}"
BELTA = (DATA / "feeds" / "belta-en.xml").read_bytes()
TASS = (DATA / "feeds" / "tass-en.xml").read_bytes()


# ----------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment for a child, without any systemd variables of our own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "AGGREGATOR_DATABASE_URL")
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not met within {timeout} s")


class Service:
    """``aggregator run`` as a subprocess; output (both streams) goes to a log file."""

    def __init__(
        self, config: Path, tmp_path: Path, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"daemon-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aggregator",
                "run",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{self.port}",
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env or child_env(),
        )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 30) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError("daemon exited:\n" + self.log())
            try:
                return requests.get(self.base + "/healthz", timeout=1).status_code in (200, 503)
            except requests.ConnectionError:
                return False

        wait_for(up, timeout, "daemon serving")

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, timeout=10)

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = self.get("/status?format=json").json()
        return data

    def polled(self, *source_ids: str) -> bool:
        by_id = {s["id"]: s for s in self.status()["sources"]}
        return all(by_id.get(sid, {}).get("last_polled_at") for sid in source_ids)

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Started services are killed at the end of the test, whatever happened."""
    started: list[Service] = []
    yield started
    for service in started:
        service.close()


def rss(items: list[tuple[str, str, str, datetime]]) -> bytes:
    """An RSS 2.0 feed of (guid, title, text, published) items."""
    body = "".join(
        f"<item><guid isPermaLink='false'>{g}</guid><title>{escape(title)}</title>"
        f"<link>https://agency.example/news/{g}</link>"
        f"<description>{escape(text)}</description>"
        f"<pubDate>{format_datetime(when)}</pubDate></item>"
        for g, title, text, when in items
    )
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
        "<title>Agency</title><link>https://agency.example/</link>"
        f"<description>News</description>{body}</channel></rss>"
    ).encode()


class SlowFeedServer:
    """Serves one feed whose body arrives in two halves, ``delay`` seconds apart."""

    def __init__(self, body: bytes, delay: float) -> None:
        self.requested = threading.Event()
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.requested.set()
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                half = len(body) // 2
                try:
                    self.wfile.write(body[:half])
                    self.wfile.flush()
                    server.release.wait(delay)
                    self.wfile.write(body[half:])
                except OSError:
                    pass  # the client went away

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/slow.xml"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def twenty_items() -> bytes:
    now = datetime.now(UTC)
    return rss(
        [
            (f"slow-{n}", f"Report {n} from the slow agency", f"Text {n} " * 20, now)
            for n in range(20)
        ]
    )


def items_of(db: Path, source_id: str) -> tuple[list[dict[str, Any]], list[str]]:
    store = Store(f"sqlite:///{db}")
    try:
        return [i for i in store.all_items() if i["source_id"] == source_id], store.execute_check()
    finally:
        store.close()


# ----------------------------------------------------------------------------- signals


def test_sigterm_mid_poll_lets_the_poll_finish_and_exits_0(
    tmp_path: Path, services: list[Service]
) -> None:
    slow = SlowFeedServer(twenty_items(), delay=3)
    db = tmp_path / "data" / "agg.db"
    config = write_config(
        tmp_path / "config",
        settings={"database": f"sqlite:///{db}", "scheduler": {"tick": "1s"}},
        sources=[{"id": "slow", "url": slow.url, "timeout": "20s"}],
    )
    try:
        service = Service(config, tmp_path)
        services.append(service)
        assert slow.requested.wait(30), service.log()
        started = time.monotonic()
        assert service.terminate(timeout=30) == 0
        assert time.monotonic() - started < 30
    finally:
        slow.close()
    items, problems = items_of(db, "slow")
    assert len(items) == 20  # the in-flight poll finished and committed as a whole
    assert problems == []
    log = service.log()
    assert "signal SIGTERM: stopping" in log and "polled source=slow status=200" in log


def test_a_second_signal_exits_at_once_and_leaves_no_half_poll(
    tmp_path: Path, services: list[Service]
) -> None:
    slow = SlowFeedServer(twenty_items(), delay=60)
    db = tmp_path / "data" / "agg.db"
    config = write_config(
        tmp_path / "config",
        settings={"database": f"sqlite:///{db}", "scheduler": {"tick": "1s"}},
        sources=[{"id": "slow", "url": slow.url, "timeout": "50s"}],
    )
    try:
        service = Service(config, tmp_path)
        services.append(service)
        assert slow.requested.wait(30), service.log()
        service.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert service.proc.poll() is None  # still waiting for the in-flight poll
        started = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(timeout=5) == 1
        assert time.monotonic() - started < 3
    finally:
        slow.close()
    items, problems = items_of(db, "slow")
    assert items == [] and problems == []  # the cut poll left nothing behind
    assert "second signal: exiting now" in service.log()


# ----------------------------------------------------------------------------- reload


def replace_unnoticed(path: Path, text: str) -> None:
    """Rewrite a file keeping its size, inode and mtime, so only SIGHUP can reveal it."""
    st = path.stat()
    data = text.encode()
    assert len(data) < st.st_size
    data += b"#" * (st.st_size - len(data))  # padding inside a trailing YAML comment
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_sighup_with_a_broken_topics_file_keeps_the_old_config_until_it_is_fixed(
    tmp_path: Path, feed_server: FeedServer, services: list[Service]
) -> None:
    url = feed_server.add("/belta.xml", BELTA)
    config = write_config(
        tmp_path / "config",
        settings={"database": f"sqlite:///{tmp_path}/data/agg.db"},
        sources=[{"id": "belta-en", "url": url, "name": "BELTA", "interval": "1h"}],
        topics=[CIS_SECURITY],
    )
    service = Service(config, tmp_path)
    services.append(service)
    service.wait_ready()
    feed = "/topics/cis-security.atom"
    wait_for(lambda: b"Secretaries of CSTO" in service.get(feed).content, what="first poll")

    topics = config / "topics.yaml"
    replace_unnoticed(
        topics,
        "topics:\n"
        "  - id: cis-security\n"
        "    title: CIS security\n"
        "    match: {any: [CSTO]}\n"
        "    limt: 5\n",
    )
    service.proc.send_signal(signal.SIGHUP)
    error = "topics.yaml:5: topics[0]: unknown key 'limt' (did you mean 'limit'?)"
    wait_for(lambda: service.status()["reload_error"], 10, "reload error on /status")
    assert service.status()["reload_error"] == error
    page = service.get("/status").text
    assert page.index("Configuration not reloaded") < page.index("<table")
    assert "topics.yaml:5: topics[0]: unknown key &#x27;limt&#x27;" in page
    old = service.get(feed)
    assert old.status_code == 200 and b"Secretaries of CSTO" in old.content  # old rules
    assert f"config reload failed, keeping the previous config: {error}" in service.log()

    # Fixed, with a new topic: the file watcher reloads it; no signal, no restart.
    trade = {"id": "trade", "title": "Trade", "match": {"any": ["trade"]}}
    topics.write_text(yaml.safe_dump({"topics": [CIS_SECURITY, trade]}), encoding="utf-8")
    wait_for(lambda: service.get("/topics/trade.atom").status_code == 200, 15, "new topic")
    assert b"Belarus, Uzbekistan sign trade roadmap" in service.get("/topics/trade.atom").content
    assert service.status()["reload_error"] is None
    assert "Configuration not reloaded" not in service.get("/status").text
    assert service.proc.poll() is None
    assert "signal SIGHUP: reloading the config" in service.log()
    assert "config files changed: reloading" in service.log()
    assert service.terminate() == 0


def test_sources_added_and_removed_in_sources_yaml_apply_without_restart(
    tmp_path: Path, feed_server: FeedServer, services: list[Service]
) -> None:
    belta = feed_server.add("/belta.xml", BELTA)
    tass = feed_server.add("/tass.xml", TASS)
    config = write_config(
        tmp_path / "config",
        settings={"database": f"sqlite:///{tmp_path}/data/agg.db", "scheduler": {"tick": "1s"}},
        sources=[{"id": "belta-en", "url": belta, "interval": "2s"}],
        topics=[CIS_SECURITY],
    )
    service = Service(config, tmp_path)
    services.append(service)
    service.wait_ready()
    wait_for(lambda: feed_server.hits("/belta.xml"), 15, "belta polled")

    (config / "sources.yaml").write_text(
        yaml.safe_dump({"sources": [{"id": "tass-en", "url": tass, "interval": "10s"}]}),
        encoding="utf-8",
    )
    written = time.monotonic()
    wait_for(lambda: feed_server.hits("/tass.xml"), 15, "new source polled")
    assert time.monotonic() - written <= 10  # within its first interval
    wait_for(lambda: [s["id"] for s in service.status()["sources"]] == ["tass-en"], 10)
    polled_before = len(feed_server.hits("/belta.xml"))
    time.sleep(3)  # more than belta's interval and the tick
    assert len(feed_server.hits("/belta.xml")) == polled_before  # removed: no longer polled
    (tass_status,) = service.status()["sources"]
    assert tass_status["result"] == "ok (HTTP 200)" and tass_status["items_total"] == 2
    assert service.proc.poll() is None
    assert service.terminate() == 0


# ----------------------------------------------------------------------------- systemd


def test_systemd_notify_ready_watchdog_reload_and_stopping(
    tmp_path: Path, feed_server: FeedServer, services: list[Service]
) -> None:
    url = feed_server.add("/belta.xml", BELTA)
    config = write_config(
        tmp_path / "config",
        settings={"database": f"sqlite:///{tmp_path}/data/agg.db"},
        sources=[{"id": "belta-en", "url": url}],
    )
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(0.2)
        # WATCHDOG_PID unset: the watchdog is meant for whoever reads WATCHDOG_USEC.
        env = child_env(NOTIFY_SOCKET=str(path), WATCHDOG_USEC="1000000")
        service = Service(config, tmp_path, env=env)
        services.append(service)
        messages: list[str] = []

        def until(predicate: Callable[[list[str]], bool], what: str, timeout: float = 15) -> None:
            deadline = time.monotonic() + timeout
            while not predicate(messages):
                assert time.monotonic() < deadline, f"{what} not received: {messages}"
                with contextlib.suppress(TimeoutError):
                    messages.extend(sock.recv(4096).decode().splitlines())

        until(lambda m: "READY=1" in m, "READY=1", timeout=30)
        ready = messages.index("READY=1")
        assert requests.get(service.base + "/healthz", timeout=5).status_code == 200
        until(lambda m: m[ready:].count("WATCHDOG=1") >= 2, "two WATCHDOG=1")

        service.proc.send_signal(signal.SIGHUP)
        until(
            lambda m: "RELOADING=1" in m and "READY=1" in m[m.index("RELOADING=1") :],
            "RELOADING=1 then READY=1",
        )
        reloading = messages.index("RELOADING=1")
        assert messages[reloading + 1].startswith("MONOTONIC_USEC=")

        service.proc.send_signal(signal.SIGTERM)
        until(lambda m: "STOPPING=1" in m, "STOPPING=1")
        assert service.proc.wait(timeout=30) == 0


# ----------------------------------------------------------------------------- logs


def two_sources(tmp_path: Path, feed_server: FeedServer, **settings: Any) -> Path:
    url = feed_server.add("/belta.xml", BELTA)
    return write_config(
        tmp_path / "config",
        settings={"database": f"sqlite:///{tmp_path}/data/agg.db", **settings},
        sources=[
            {"id": "belta-en", "url": url, "name": "BELTA (English)", "interval": "1h"},
            {"id": "dead", "url": "http://127.0.0.1:9/rss", "name": "Dead", "timeout": "2s"},
        ],
        topics=[CIS_SECURITY],
    )


def test_json_logs_one_object_per_line_and_one_event_per_poll(
    tmp_path: Path, feed_server: FeedServer, services: list[Service]
) -> None:
    service = Service(two_sources(tmp_path, feed_server), tmp_path, "--log-format", "json")
    services.append(service)
    service.wait_ready()
    wait_for(lambda: service.polled("belta-en", "dead"), what="both polled")
    assert service.terminate() == 0

    records = [json.loads(line) for line in service.log().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    polls = {r["source"]: r for r in records if r.get("event") == "polled"}
    assert polls.keys() == {"belta-en", "dead"}
    ok, dead = polls["belta-en"], polls["dead"]
    assert ok["level"] == "info" and ok["status"] == 200 and ok["error_class"] is None
    assert (ok["new"], ok["updated"], ok["duplicate"]) == (3, 0, 0)
    assert isinstance(ok["ms"], int) and ok["ms"] >= 0
    assert dead["level"] == "warning" and dead["error_class"] == "connection"
    assert dead["status"] is None and dead["new"] == 0


# ----------------------------------------------------------------------------- metrics, health


def test_metrics_after_a_poll(
    tmp_path: Path, feed_server: FeedServer, services: list[Service]
) -> None:
    service = Service(two_sources(tmp_path, feed_server), tmp_path)
    services.append(service)
    service.wait_ready()
    wait_for(lambda: service.polled("belta-en", "dead"), what="both polled")
    assert service.get("/status").status_code == 200

    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(service.get("/metrics").text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)

    def value(name: str, **labels: str) -> float:
        found = [s.value for s in samples.get(name, []) if labels.items() <= s.labels.items()]
        assert found, f"no sample {name}{labels}"
        return float(sum(found))

    assert value("aggregator_polls_total", source="belta-en", outcome="ok") == 1
    assert value("aggregator_polls_total", source="dead", outcome="error") == 1
    assert value("aggregator_fetch_duration_seconds_count") == 2
    assert value("aggregator_fetch_duration_seconds_bucket", le="+Inf") == 2
    assert value("aggregator_items_total", kind="new") == 3
    assert value("aggregator_items_total", kind="updated") == 0
    assert value("aggregator_items_total", kind="duplicate") == 0
    assert value("aggregator_topic_stories", topic="cis-security") >= 1
    assert value("aggregator_source_consecutive_failures", source="dead") == 1
    assert value("aggregator_source_consecutive_failures", source="belta-en") == 0
    assert value("aggregator_scheduler_lag_seconds") >= 0
    last = value("aggregator_source_last_success_timestamp_seconds", source="belta-en")
    assert abs(last - time.time()) < 60
    assert value("aggregator_http_requests_total", route="/status", status="200") >= 1
    assert value("aggregator_config_reload_failed") == 0


def test_healthz_503_when_the_database_file_is_unreadable(
    tmp_path: Path, feed_server: FeedServer, services: list[Service]
) -> None:
    service = Service(two_sources(tmp_path, feed_server), tmp_path)
    services.append(service)
    service.wait_ready()
    wait_for(lambda: service.get("/healthz").status_code == 200, what="healthy")

    # Tests run as root, whom chmod 000 does not stop: put a directory where the database
    # file was, which no one can open as a database.
    db = tmp_path / "data" / "agg.db"
    moved = db.with_name("agg.db.moved")
    db.rename(moved)
    db.mkdir()
    health = service.get("/healthz")
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable" and health.json()["store"] is False
    assert service.get("/status").status_code == 503

    db.rmdir()
    moved.rename(db)
    wait_for(lambda: service.get("/healthz").status_code == 200, 10, "healthy again")
    assert service.terminate() == 0


def test_healthz_503_when_the_scheduler_stalled(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    store = Store(url)
    store.upgrade()
    state = AppState(config=make_web_config(url), store=store, role="all")
    state.scheduler_heartbeat = time.monotonic()
    with serve_app(create_app(state)) as base:
        assert requests.get(base + "/healthz", timeout=5).status_code == 200
        state.scheduler_heartbeat = time.monotonic() - state.scheduler_stall_after - 1
        health = requests.get(base + "/healthz", timeout=5)
        assert health.status_code == 503
        assert (
            health.json()["scheduler"] is False and "scheduler stalled" in health.json()["problems"]
        )
    store.close()


# ----------------------------------------------------------------------------- status page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_status_page_in_headless_chromium(
    tmp_path: Path, feed_server: FeedServer, services: list[Service]
) -> None:
    config = two_sources(tmp_path, feed_server)
    service = Service(config, tmp_path)
    services.append(service)
    service.wait_ready()
    wait_for(lambda: service.polled("belta-en", "dead"), what="both polled")
    sources = config / "sources.yaml"
    sources.write_text(sources.read_text().replace("timeout: 2s", "timeout: 2 seconds"))
    wait_for(lambda: service.status()["reload_error"], 15, "reload error")

    page = chromium(tmp_path, "--dump-dom", service.base + "/status").stdout
    dom = lxml.html.fromstring(page)
    (banner,) = dom.xpath("//*[@class='reload-error']")
    text = banner.text_content()
    assert re.search(r"sources\.yaml:\d+: sources\[1\]\.timeout: .*bad duration", text), text
    assert banner.xpath("following::table")  # the reload error is above the table
    rows = dom.xpath("//tbody/tr")
    assert [r.get("data-source") for r in rows] == ["dead", "belta-en"]  # failing first
    dead = [td.text_content() for td in rows[0].xpath("./td")]
    assert dead[0].startswith("Dead")
    assert dead[3].startswith("failing: connection refused") and "never succeeded" in dead[3]
    assert dead[4] == "1"  # errors in a row
    ok = [td.text_content() for td in rows[1].xpath("./td")]
    assert ok[3] == "ok (HTTP 200)" and ok[6] == "3"  # items in the last 24 h

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status.png"
    shot.unlink(missing_ok=True)
    chromium(
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1280,800",
        "--hide-scrollbars",
        service.base + "/status",
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert service.terminate() == 0


# ----------------------------------------------------------------------------- demo


def test_demo_serves_a_deduplicated_topic_feed_offline(tmp_path: Path) -> None:
    port = free_port()
    with (tmp_path / "demo.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "demo", "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=child_env(),
            cwd=tmp_path,
        )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout or ()])
    reader.start()
    try:
        feed_url = None
        deadline = time.monotonic() + 30
        while feed_url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, (tmp_path / "demo.log").read_text()
                continue
            match = re.search(r"http://\S+/topics/cis-security\.atom", line)
            feed_url = match.group(0) if match else None
        assert feed_url == f"http://127.0.0.1:{port}/topics/cis-security.atom"

        def entries() -> list[Any]:
            response = requests.get(feed_url, timeout=5)
            if response.status_code != 200:
                return []
            found = etree.fromstring(response.content).findall(f"{ATOM}entry")
            related = [e for e in found if e.find(f"{ATOM}link[@rel='related']") is not None]
            return found if related else []

        found = wait_for(entries, 15, "a topic feed with merged copies")
        alternates = [e.find(f"{ATOM}link[@rel='alternate']").get("href") for e in found]
        assert len(alternates) == len(set(alternates))  # each story once
        status = requests.get(f"http://127.0.0.1:{port}/status?format=json", timeout=5).json()
        assert all(s["url"].startswith("http://127.0.0.1:") for s in status["sources"])

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)  # ends at the end of the child's output
        if proc.stdout is not None:
            proc.stdout.close()


# ----------------------------------------------------------------------------- retention

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RETENTION_ITEMS = [
    ("csto-5d", "CSTO ministers meet in Yerevan", "Defence ministers of the CSTO met.", 5),
    ("csto-100d", "CSTO drills end near Dushanbe", "Joint exercise of the CSTO ended.", 100),
    ("csto-110d", "CSTO secretary general visits Bishkek", "Talks on the CSTO agenda.", 110),
    ("csto-120d", "CSTO council adopts budget", "The CSTO council approved spending.", 120),
    ("wheat-60d", "Kostanay wheat harvest beats forecast", "Farmers gathered grain.", 60),
    ("tram-200d", "New tram line opens in Almaty", "Passengers rode the first tram.", 200),
    ("chess-1d", "Minsk hosts chess festival", "Grandmasters played blitz games.", 1),
    ("air-2d", "Bishkek airport adds Istanbul routes", "Two carriers added flights.", 2),
]


def test_retention_deletes_old_items_but_keeps_each_topics_newest(
    tmp_path: Path, store_url: str, feed_server: FeedServer
) -> None:
    url = feed_server.add(
        "/agency.xml",
        rss([(g, t, x, NOW - timedelta(days=d)) for g, t, x, d in RETENTION_ITEMS]),
    )
    topic = {"id": "csto", "title": "CSTO", "match": {"any": ["CSTO"]}, "limit": 2}
    config = load_config(
        write_config(
            tmp_path / "config",
            settings={"database": store_url, "retention": {"days": 30}},
            sources=[{"id": "agency", "url": url}],
            topics=[topic],
        )
    )
    store = Store(store_url)
    store.upgrade()
    store.sync_sources(config.sources, NOW)
    poller = Poller(config, store, clock=lambda: NOW)
    assert poller.poll_now()[0].counts.new == len(RETENTION_ITEMS)
    version = store.topic_version("csto").version

    daemon = Daemon(config, DaemonOptions(), clock=lambda: NOW)
    daemon.poller = poller
    try:
        assert daemon.retention() == 4
        # The index job keeps the near-duplicate index to the story window (72 h).
        daemon.maintain_index()
        assert len(poller.index) == 2
    finally:
        poller.close()
        daemon.store.close()

    kept = sorted(i["guid"] for i in store.all_items())
    # Recent items stay; of the old ones only the topic's two newest stories stay.
    assert kept == ["air-2d", "chess-1d", "csto-100d", "csto-5d"]
    assert store.topic_count("csto") == 2
    assert store.topic_version("csto").version > version  # cached feed pages expire
    assert store.execute_check() == []
    store.close()


# ----------------------------------------------------------------------------- progress


def poll_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "aggregator", "poll", "--config", str(config)]


def test_poll_progress_bar_on_a_terminal_and_none_when_piped(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    config = write_config(
        tmp_path / "config",
        settings={"database": f"sqlite:///{tmp_path}/data/agg.db"},
        sources=[
            {"id": f"agency-{n}", "url": feed_server.add(f"/{n}.xml", BELTA)} for n in range(3)
        ],
    )
    piped = subprocess.run(
        poll_command(config), capture_output=True, text=True, env=child_env(), timeout=60
    )
    assert piped.returncode == 0, piped.stderr
    assert "total: 3 sources" in piped.stdout
    assert "\r" not in piped.stderr and "sources  " not in piped.stderr
    assert "polled source=agency-0" in piped.stderr  # the logs, without a bar

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        poll_command(config), stdout=subprocess.PIPE, stderr=slave, env=child_env(), text=True
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read_terminal() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    stdout, _ = proc.communicate(timeout=60)
    reader.join(timeout=10)
    os.close(master)
    terminal = b"".join(chunks).decode()
    assert proc.returncode == 0 and "total: 3 sources" in stdout
    assert "[" + "." * 30 + "] 0/3 sources" in terminal
    assert "[" + "#" * 30 + "] 3/3 sources  0 new  0 duplicate  0 failed" in terminal
    assert "polled source=agency-0 status=304" in terminal  # log lines still readable
