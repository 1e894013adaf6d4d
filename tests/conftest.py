"""Shared fixtures: real stores (SQLite, and PostgreSQL when configured) and a loopback
feed server with ETag support that records what it was asked."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from aggregator.store import IngestEntry, Store
from aggregator.types import (
    Config,
    Item,
    PollOutcome,
    Settings,
    Source,
    Topic,
    TopicHit,
    TopicMatch,
)
from aggregator.web import AppState

DATA = Path(__file__).parent / "data"
PG_ENV = "AGGREGATOR_TEST_POSTGRES_URL"


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for a fresh, empty store, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    url = os.environ.get(PG_ENV, "")
    if not url:
        pytest.skip(f"PostgreSQL not configured: set {PG_ENV} to run this case")
    _reset_postgres(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store.db"


@dataclass
class Resource:
    body: bytes
    content_type: str = "application/rss+xml; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


class FeedServer:
    """A threaded HTTP server on 127.0.0.1 serving in-memory resources.

    Answers ``If-None-Match`` with 304 when the body's ETag matches, gzips when asked,
    and records every request (for "the server saw a conditional GET").
    """

    def __init__(self) -> None:
        self.resources: dict[str, Resource] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server.lock:
                    server.requests.append(Request("GET", self.path, headers))
                    resource = server.resources.get(self.path.split("?")[0])
                if resource is None:
                    self._send(404, b"not found", {"Content-Type": "text/plain"})
                    return
                etag = '"' + hashlib.sha1(resource.body).hexdigest()[:16] + '"'
                out_headers = {"Content-Type": resource.content_type, "ETag": etag}
                out_headers.update(resource.headers)
                if resource.status == 200 and headers.get("if-none-match") == etag:
                    self._send(304, b"", out_headers)
                    return
                body = resource.body
                if "gzip" in headers.get("accept-encoding", "") and resource.status == 200:
                    body = gzip.compress(body)
                    out_headers["Content-Encoding"] = "gzip"
                self._send(resource.status, body, out_headers)

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body:
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, path: str, body: bytes | str, **kwargs: Any) -> str:
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.resources[path] = Resource(body, **kwargs)
        return self.url(path)

    def hits(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.split("?")[0] == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    yield server
    server.close()


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium (Debian's package) with a fresh profile; raises on failure."""
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )


def write_config(
    directory: Path,
    *,
    sources: list[dict[str, Any]],
    topics: list[dict[str, Any]] | None = None,
    settings: dict[str, Any] | None = None,
) -> Path:
    """Write a config directory (the three YAML files) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "aggregator.yaml").write_text(
        yaml.safe_dump(settings or {}, allow_unicode=True), encoding="utf-8"
    )
    (directory / "sources.yaml").write_text(
        yaml.safe_dump({"sources": sources}, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    (directory / "topics.yaml").write_text(
        yaml.safe_dump({"topics": topics or []}, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    return directory


CIS_SECURITY = {
    "id": "cis-security",
    "title": "CIS security",
    "subtitle": "CSTO, CIS and Security Council news from regional agencies",
    "match": {
        "any": [
            "CSTO",
            "ОДКБ",
            "Collective Security Treaty",
            "CIS",
            "СНГ",
            "Security Council",
            "совет безопасности",
        ],
        "none": ["football", "футбол"],
    },
    "limit": 50,
}


# ----------------------------------------------------------------------------- web

WEB_NOW = datetime(2026, 11, 16, 12, 0, tzinfo=UTC)


def make_web_config(db: str) -> Config:
    return Config(
        settings=Settings(database=db, base_url="http://feeds.example.org/"),
        sources=(
            Source("belta", "http://belta.example/rss", "BELTA", interval=600, priority=10),
            Source("tass", "http://tass.example/rss", "TASS", interval=300),
        ),
        topics=(
            Topic("cis", "CIS security", "CSTO and CIS", TopicMatch(any=("CIS",)), limit=50),
            Topic("empty", "Nothing yet", match=TopicMatch(any=("zzz",))),
        ),
    )


@pytest.fixture
def app_state(store_url: str) -> Iterator[AppState]:
    """A web app state on a store holding 120 stories of topic 'cis' (and an empty topic)."""
    store = Store(store_url)
    store.upgrade()
    config = make_web_config(store_url)
    store.sync_sources(config.sources, WEB_NOW)
    entries = []
    for n in range(120):
        when = WEB_NOW - timedelta(minutes=n)
        entries.append(
            IngestEntry(
                Item(
                    source_id="belta",
                    guid=f"g{n}",
                    url=f"https://belta.example/news/{n}",
                    link=f"https://belta.example/news/{n}",
                    title=f"CIS story {n}",
                    summary=f"Summary {n}",
                    content=f"<p>Body {n}</p>",
                    published=when,
                    updated=when,
                    language="en",
                    content_hash=f"h{n}",
                ),
                (TopicHit("cis", ("CIS",)),),
            )
        )
    store.ingest(
        PollOutcome("belta", WEB_NOW, WEB_NOW + timedelta(minutes=10), status=200),
        entries,
        now=WEB_NOW,
    )
    state = AppState(config=config, store=store, role="web")
    yield state
    store.close()
