"""HTTP: topic feeds, index, OPML, status, health and metrics (Starlette).

Rendered feeds are cached per (topic, format, page) and keyed by the topic's version. The
versions are refreshed by one query a second (and at once when this process ingests), so a
cached 200 or a 304 costs no database query.
"""

from __future__ import annotations

import contextlib
import gzip
import html
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from aggregator import __version__, feeds, metrics, publish
from aggregator.errors import StoreError
from aggregator.store import Store, TopicVersion
from aggregator.types import Config, SourceState

log = logging.getLogger(__name__)


@dataclass
class CachedFeed:
    version: int
    rendered: feeds.RenderedFeed
    gzipped: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)  # ETag, Last-Modified, caching


@dataclass
class AppState:
    """What the web app needs; the daemon swaps ``config`` on reload."""

    config: Config
    store: Store
    role: str = "all"
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    scheduler_heartbeat: float | None = None  # time.monotonic() of the last scheduler tick
    scheduler_stall_after: float = 120.0
    reload_error: str | None = None
    versions: dict[str, TopicVersion] = field(default_factory=dict)
    cache: dict[tuple[str, str, int], CachedFeed] = field(default_factory=dict)
    versions_checked: float = float("-inf")  # never: the first request reads them
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh_versions(self) -> None:
        versions = self.store.topic_versions()
        with self.lock:
            self.versions = versions
            self.versions_checked = time.monotonic()

    def set_config(self, config: Config) -> None:
        with self.lock:
            self.config = config
            self.cache.clear()


def _http_date(value: datetime) -> str:
    return format_datetime(value.astimezone(UTC), usegmt=True)


def _not_modified(request: Request, etag: str, updated: datetime) -> bool:
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return etag in tags or "*" in tags
    ims = request.headers.get("if-modified-since")
    if ims:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return updated.replace(microsecond=0) <= since
    return False


def create_app(state: AppState, *, refresh_interval: float = 1.0) -> Starlette:
    def refresh_due() -> bool:
        return time.monotonic() - state.versions_checked > refresh_interval

    def refresh_versions() -> None:
        # On a store error serve what we have; /healthz reports the store.
        with contextlib.suppress(StoreError):
            state.refresh_versions()

    async def topic_feed(request: Request) -> Response:
        # async, and the store is only touched in the thread pool on a miss: a cached 200 or
        # a 304 is answered on the event loop without a thread hop or a query.
        name = request.path_params["name"]
        topic_id, _, fmt = name.rpartition(".")
        try:
            page = int(request.query_params.get("page", "1"))
        except ValueError:
            return PlainTextResponse("bad page number\n", status_code=400)
        config = state.config
        topic = config.topic(topic_id)
        if topic is None or fmt not in feeds.FORMATS:
            return PlainTextResponse("no such topic\n", status_code=404)
        if refresh_due():
            await run_in_threadpool(refresh_versions)
        current = state.versions.get(topic_id)
        version = current.version if current else 0
        key = (topic_id, fmt, page)
        cached = state.cache.get(key)
        if cached is None or cached.version != version:
            try:
                rendered = await run_in_threadpool(
                    feeds.render_topic, state.store, config, topic_id, fmt, page
                )
            except feeds.PageNotFound:
                return PlainTextResponse("no such page\n", status_code=404)
            except StoreError as e:
                log.error("cannot render topic=%s: %s", topic_id, e)
                return PlainTextResponse("store unavailable\n", status_code=503)
            max_age = int(min(feeds.shortest_interval(config, topic), 3600))
            cached = CachedFeed(
                rendered.version,
                rendered,
                headers={
                    "ETag": rendered.etag,
                    "Last-Modified": _http_date(rendered.updated),
                    "Cache-Control": f"public, max-age={max_age}",
                    "Vary": "Accept-Encoding",
                },
            )
            if state.config is config:
                state.cache[key] = cached
        rendered = cached.rendered
        headers = dict(cached.headers)
        if _not_modified(request, rendered.etag, rendered.updated):
            return Response(status_code=304, headers=headers)
        body = rendered.body
        if "gzip" in request.headers.get("accept-encoding", "") and len(body) > 512:
            if cached.gzipped is None:
                cached.gzipped = await run_in_threadpool(gzip.compress, body, 6, mtime=0)
            body = cached.gzipped
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=rendered.media_type, headers=headers)

    def index(request: Request) -> Response:
        config = state.config
        summaries = []
        for topic in config.topics:
            try:
                v = state.store.topic_version(topic.id)
                count = state.store.topic_count(topic.id)
            except StoreError:
                v, count = None, 0
            updated = v.updated if v and v.version else None
            summaries.append(publish.TopicSummary(topic=topic, entries=count, updated=updated))
        body = publish.render_index_html(summaries, config.settings.base_url, version=__version__)
        return Response(body, media_type="text/html; charset=utf-8")

    def opml(request: Request) -> Response:
        config = state.config
        try:
            versions = state.store.topic_versions()
        except StoreError:
            versions = {}
        date = max((v.updated for v in versions.values()), default=datetime(1970, 1, 1, tzinfo=UTC))
        body = publish.render_opml(
            config.topics, config.settings.base_url, title="Topic feeds", date=date
        )
        return Response(body, media_type="text/x-opml; charset=utf-8")

    def healthz(request: Request) -> Response:
        problems = []
        try:
            state.store.ping()
            store_ok = True
        except StoreError as e:
            store_ok = False
            problems.append(str(e))
        scheduler_ok = True
        if state.role in ("all", "worker"):
            beat = state.scheduler_heartbeat
            scheduler_ok = beat is not None and (
                time.monotonic() - beat < state.scheduler_stall_after
            )
            if not scheduler_ok:
                problems.append("scheduler stalled")
        ok = store_ok and scheduler_ok
        body = {
            "status": "ok" if ok else "unavailable",
            "store": store_ok,
            "scheduler": scheduler_ok if state.role != "web" else None,
            "role": state.role,
            "version": __version__,
            "problems": problems,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    def status(request: Request) -> Response:
        try:
            states = state.store.source_states(state.clock())
        except StoreError as e:
            return PlainTextResponse(f"store unavailable: {e}\n", status_code=503)
        rows = sort_for_status(states)
        if request.query_params.get("format") == "json":
            return JSONResponse(
                {
                    "reload_error": state.reload_error,
                    "sources": [status_record(s) for s in rows],
                }
            )
        return Response(
            render_status_html(rows, state.reload_error, state.clock()),
            media_type="text/html; charset=utf-8",
        )

    def metrics_endpoint(request: Request) -> Response:
        config = state.config
        try:
            metrics.update_from_store(
                state.store.source_states(state.clock()),
                {t.id: state.store.topic_count(t.id) for t in config.topics},
            )
        except StoreError as e:
            # Still serve the counters: the scrape itself shows the store trouble by its gaps.
            log.warning("metrics: store unavailable: %s", e)
        metrics.CONFIG_RELOAD_FAILED.set(1 if state.reload_error else 0)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/", index),
        Route("/opml", opml),
        Route("/topics/{name}", topic_feed),
        Route("/status", status),
        Route("/healthz", healthz),
        Route("/metrics", metrics_endpoint),
    ]
    return Starlette(routes=routes, middleware=[Middleware(RequestMetrics)])


class RequestMetrics:
    """Counts requests by route and status (plain ASGI: no per-request task overhead)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        code = 500

        async def send_wrapper(message: Any) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            metrics.HTTP_REQUESTS.labels(_route_label(scope.get("path", "")), str(code)).inc()


def _route_label(path: str) -> str:
    if path.startswith("/topics/"):
        return "/topics/{id}"
    return path if path in ("/", "/opml", "/status", "/healthz", "/metrics") else "other"


# ----------------------------------------------------------------------------- status


def describe(state: SourceState) -> str:
    """A source's last result in words."""
    if state.disabled_reason:
        return f"disabled: {state.disabled_reason}"
    if not state.enabled:
        return "disabled in the config"
    if state.last_polled_at is None:
        return "not polled yet"
    if state.last_error_kind:
        return f"failing: {state.last_error or state.last_error_kind}"
    if state.last_status == 304:
        return "ok (not modified)"
    return f"ok (HTTP {state.last_status})"


def is_failing(state: SourceState) -> bool:
    return bool(state.last_error_kind or state.disabled_reason)


def sort_for_status(states: list[SourceState]) -> list[SourceState]:
    """Failing sources first (most errors in a row first), then the rest by id."""
    return sorted(states, key=lambda s: (not is_failing(s), -s.consecutive_errors, s.id))


def status_record(s: SourceState) -> dict[str, Any]:
    return {
        "id": s.id,
        "name": s.name,
        "url": s.url,
        "effective_url": s.effective_url,
        "redirected": s.effective_url != s.url,
        "enabled": s.enabled,
        "result": describe(s),
        "failing": is_failing(s),
        "last_status": s.last_status,
        "last_error_kind": s.last_error_kind,
        "last_error": s.last_error,
        "consecutive_errors": s.consecutive_errors,
        "last_polled_at": s.last_polled_at.isoformat() if s.last_polled_at else None,
        "last_success_at": s.last_success_at.isoformat() if s.last_success_at else None,
        "next_poll_at": s.next_poll_at.isoformat() if s.next_poll_at else None,
        "items_24h": s.items_24h,
        "items_total": s.items_total,
    }


def _fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _relative(value: datetime, now: datetime) -> str:
    seconds = (value - now).total_seconds()
    span = abs(seconds)
    if span < 5:
        return "now"
    if span < 90:
        text = f"{span:.0f} s"
    elif span < 5400:
        text = f"{span / 60:.0f} min"
    elif span < 172800:
        text = f"{span / 3600:.1f} h"
    else:
        text = f"{span / 86400:.0f} days"
    return f"in {text}" if seconds > 0 else f"{text} ago"


def _time_cell(value: datetime | None, now: datetime | None) -> str:
    if value is None:
        return "—"
    when = html.escape(_fmt_time(value))
    relative = f'<div class="note">{_relative(value, now)}</div>' if now else ""
    return f'<time datetime="{value.isoformat()}">{when}</time>{relative}'


def render_status_html(
    states: list[SourceState], reload_error: str | None, now: datetime | None = None
) -> bytes:
    """The admin's status page: the config reload error on top, then failing sources first."""
    esc = html.escape
    rows = []
    for s in states:
        failing = is_failing(s)
        url = esc(s.effective_url)
        redirect = (
            f'<div class="note">moved permanently; configured as {esc(s.url)}</div>'
            if s.effective_url != s.url
            else ""
        )
        history = ""
        if failing and not s.disabled_reason:
            if s.last_success_at is None:
                success = "never succeeded"
            elif now is not None:
                success = f"last success {_relative(s.last_success_at, now)}"
            else:
                success = f"last success {_fmt_time(s.last_success_at)}"
            history = f'<div class="note">{esc(success)}</div>'
        next_poll = "—" if s.disabled_reason or not s.enabled else _time_cell(s.next_poll_at, now)
        rows.append(
            f'<tr class="{"failing" if failing else "ok"}" data-source="{esc(s.id)}">'
            f'<td>{esc(s.name or s.id)}<div class="note">{esc(s.id)}</div></td>'
            f'<td class="url"><a href="{url}">{url}</a>{redirect}</td>'
            f"<td>{_time_cell(s.last_polled_at, now)}</td>"
            f'<td class="result">{esc(describe(s))}{history}</td>'
            f'<td class="num">{s.consecutive_errors}</td>'
            f"<td>{next_poll}</td>"
            f'<td class="num">{s.items_24h}</td></tr>'
        )
    banner = (
        '<div class="reload-error" role="alert"><strong>Configuration not reloaded.</strong> '
        "The previous configuration is still in force. Fix these problems and save the file "
        f"(or send SIGHUP):<pre>{esc(reload_error)}</pre></div>"
        if reload_error
        else ""
    )
    failing_count = sum(1 for s in states if is_failing(s))
    summary = f"{len(states)} sources, " + (
        f'<span class="bad">{failing_count} failing</span>' if failing_count else "none failing"
    )
    if now is not None:
        summary += f" · as of {esc(_fmt_time(now))}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Source status</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5rem 2rem;color:#222;font-size:15px}}
h1{{font-size:1.5rem;margin:0 0 .5rem}}
table{{border-collapse:collapse;width:100%}}
th,td{{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #ddd;vertical-align:top}}
th{{background:#f4f4f4;font-weight:600;white-space:nowrap}}
td.num{{text-align:right}} td.url{{word-break:break-all;max-width:28rem}} time{{white-space:nowrap}}
tr.failing td{{background:#fdecea}} tr.failing .result{{color:#a40000;font-weight:600}}
.note{{color:#666;font-size:.85em;font-weight:normal}}
.bad{{color:#a40000;font-weight:600}}
.reload-error{{background:#fff4e5;border:2px solid #e08a00;padding:.6rem 1rem;margin-bottom:1rem}}
.reload-error pre{{margin:.5rem 0 0;white-space:pre-wrap;font-size:.95em}}
a{{color:#0645ad}}
</style></head><body>
<h1>Source status</h1>
{banner}
<p>{summary} · <a href="/">Topics</a> · <a href="/status?format=json">JSON</a></p>
<table><thead><tr><th>Source</th><th>URL</th><th>Last poll</th><th>Result</th>
<th>Errors in a row</th><th>Next poll</th><th>Items (24 h)</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""
    return page.encode("utf-8")


def format_status_json(states: list[SourceState], reload_error: str | None) -> str:
    return json.dumps(
        {"reload_error": reload_error, "sources": [status_record(s) for s in states]},
        ensure_ascii=False,
        indent=2,
    )
