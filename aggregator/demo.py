"""``aggregator demo``: the daemon on bundled sample agency feeds, offline.

The sample copy (``aggregator/demo_data/items.jsonl``) was written for this project: English
and Russian items from several agency-like sources, with cross-agency and cross-language
copies of the same stories, tracking parameters and boilerplate trailers. It is served as
RSS/Atom feeds (one of them in windows-1251) from a loopback HTTP server; a temporary config
points the daemon at them.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import yaml

DEMO_TOPICS: list[dict[str, Any]] = [
    {
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
    },
    {
        "id": "eurasian-economy",
        "title": "Eurasian economy",
        "subtitle": "EAEU integration and trade",
        "match": {
            "any": [
                "EAEU",
                "ЕАЭС",
                "Eurasian Economic Union",
                "Евразийский экономический союз",
                "trade",
                "товарооборот",
            ]
        },
    },
]


@dataclass(frozen=True)
class DemoItem:
    source: str
    source_name: str
    language: str
    url: str
    guid: str
    title: str
    summary: str
    published: datetime


def load_items(now: datetime) -> list[DemoItem]:
    """The bundled items, their dates shifted so the newest is an hour old."""
    text = (resources.files("aggregator") / "demo_data" / "items.jsonl").read_text("utf-8")
    raw = [json.loads(line) for line in text.splitlines() if line.strip()]
    dates = [datetime.fromisoformat(r["published"]) for r in raw]
    shift = now - timedelta(hours=1) - max(dates)
    return [
        DemoItem(
            source=r["source"],
            source_name=r["source_name"],
            language=r["language"],
            url=r["url"],
            guid=r["guid"],
            title=r["title"],
            summary=r["summary"],
            published=(d + shift).astimezone(UTC),
        )
        for r, d in zip(raw, dates, strict=True)
    ]


def _summary_html(summary: str) -> str:
    return "".join(f"<p>{escape(line)}</p>" for line in summary.split("\n") if line.strip())


def render_rss(name: str, link: str, language: str, items: list[DemoItem]) -> str:
    entries = []
    for it in sorted(items, key=lambda i: i.published, reverse=True):
        entries.append(
            "<item>"
            f"<title>{escape(it.title)}</title>"
            f"<link>{escape(it.url)}</link>"
            f'<guid isPermaLink="false">{escape(it.guid)}</guid>'
            f"<pubDate>{format_datetime(it.published)}</pubDate>"
            f"<description>{escape(_summary_html(it.summary))}</description>"
            "</item>"
        )
    return (
        f'<rss version="2.0"><channel><title>{escape(name)}</title><link>{escape(link)}</link>'
        f"<description>{escape(name)}</description><language>{language}</language>"
        + "".join(entries)
        + "</channel></rss>"
    )


def render_atom(name: str, link: str, language: str, items: list[DemoItem]) -> str:
    entries = []
    newest = max(i.published for i in items)
    for it in sorted(items, key=lambda i: i.published, reverse=True):
        entries.append(
            "<entry>"
            f"<title>{escape(it.title)}</title>"
            f"<id>{escape(it.guid)}</id>"
            f'<link rel="alternate" href="{escape(it.url)}"/>'
            f"<published>{it.published.isoformat()}</published>"
            f"<updated>{it.published.isoformat()}</updated>"
            f'<summary type="html">{escape(_summary_html(it.summary))}</summary>'
            "</entry>"
        )
    return (
        f'<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="{language}">'
        f"<title>{escape(name)}</title><id>{escape(link)}</id>"
        f'<link rel="alternate" href="{escape(link)}"/><updated>{newest.isoformat()}</updated>'
        + "".join(entries)
        + "</feed>"
    )


def build_feeds(items: list[DemoItem]) -> dict[str, tuple[bytes, str]]:
    """path -> (body, content type) for every demo source."""
    by_source: dict[str, list[DemoItem]] = defaultdict(list)
    for it in items:
        by_source[it.source].append(it)
    feeds: dict[str, tuple[bytes, str]] = {}
    for n, (source, group) in enumerate(sorted(by_source.items())):
        first = group[0]
        link = f"https://{source}.example/"
        if first.language == "ru" and n % 2 == 0:
            # Russian agencies often serve windows-1251, declared only in the prolog.
            body = render_rss(first.source_name, link, first.language, group)
            data = ('<?xml version="1.0" encoding="windows-1251"?>' + body).encode(
                "cp1251", "xmlcharrefreplace"
            )
            feeds[f"/{source}.xml"] = (data, "application/rss+xml")
        elif n % 3 == 1:
            body = render_atom(first.source_name, link, first.language, group)
            data = ('<?xml version="1.0" encoding="utf-8"?>' + body).encode()
            feeds[f"/{source}.xml"] = (data, "application/atom+xml; charset=utf-8")
        else:
            body = render_rss(first.source_name, link, first.language, group)
            data = ('<?xml version="1.0" encoding="utf-8"?>' + body).encode()
            feeds[f"/{source}.xml"] = (data, "application/rss+xml; charset=utf-8")
    return feeds


class DemoFeedServer:
    """Serves the demo feeds on 127.0.0.1 with ETag/304."""

    def __init__(self, feeds: dict[str, tuple[bytes, str]], port: int = 0) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                found = feeds.get(self.path.split("?")[0])
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, content_type = found
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_demo_config(
    directory: Path, server_port: int, items: list[DemoItem], listen: str
) -> Path:
    names: dict[str, tuple[str, str]] = {}
    for it in items:
        names.setdefault(it.source, (it.source_name, it.language))
    sources = [
        {
            "id": source,
            "url": f"http://127.0.0.1:{server_port}/{source}.xml",
            "name": name,
            "language": language,
            "interval": "5m",
            "priority": 10 - n,
            "tags": ["agency", "demo"],
        }
        for n, (source, (name, language)) in enumerate(sorted(names.items()))
    ]
    directory.mkdir(parents=True, exist_ok=True)
    settings = {
        "database": f"sqlite:///{directory}/data/demo.db",
        "listen": listen,
        "base_url": f"http://{listen}/",
    }
    (directory / "aggregator.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    (directory / "sources.yaml").write_text(
        yaml.safe_dump({"sources": sources}, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    (directory / "topics.yaml").write_text(
        yaml.safe_dump({"topics": DEMO_TOPICS}, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    return directory


def run_demo(*, port: int = 0, listen: str = "127.0.0.1:8080") -> int:
    """Serve the sample feeds, run the daemon on them and print the URLs to open."""
    from aggregator.config import load_config
    from aggregator.daemon import Daemon, DaemonOptions

    items = load_items(datetime.now(UTC))
    server = DemoFeedServer(build_feeds(items), port)
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="aggregator-demo-") as tmp:
            config = load_config(write_demo_config(Path(tmp), server.port, items, listen))
            base = config.settings.base_url
            topics = "".join(
                f"  {base}topics/{t['id']}.atom  ({t['title']})\n" for t in DEMO_TOPICS
            )

            def announce() -> None:
                # Printed once the server answers, so every URL works when it is read.
                print(
                    f"Demo: {len(items)} sample items from {len(config.sources)} agency feeds, "
                    f"served on http://127.0.0.1:{server.port}/\n"
                    f"Open:\n"
                    f"  {base}  (topics, with subscribe links)\n"
                    f"{topics}"
                    f"  {base}status  (every source's health)\n"
                    f"Press Ctrl-C to stop.",
                    flush=True,
                )

            daemon = Daemon(config, DaemonOptions(role="all", tick_seconds=1.0, on_ready=announce))
            return daemon.run()
    finally:
        server.stop()
