"""The ``aggregator`` command line.

Exit codes: 0 success; 1 a poll had failing sources (the rest were still stored) or a
runtime error; 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from aggregator import __version__
from aggregator.errors import AggregatorError, ConfigError, StoreError
from aggregator.types import Config

log = logging.getLogger("aggregator")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


# ----------------------------------------------------------------------------- logging


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the structured fields a record carries."""

    FIELDS = (
        "event",
        "source",
        "status",
        "outcome",
        "new",
        "updated",
        "duplicate",
        "unchanged",
        "ms",
        "error_class",
    )

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in self.FIELDS:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def setup_logging(fmt: str, verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # through the handler, so JSON output stays one object a line
    for noisy in ("apscheduler", "urllib3", "uvicorn.error", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)


# ----------------------------------------------------------------------------- helpers


def load(args: argparse.Namespace) -> Config:
    from aggregator.config import load_config, resolve_config_dir

    return load_config(resolve_config_dir(args.config))


def open_store(config: Config) -> Any:
    from aggregator.store import Store

    store = Store(config.settings.database)
    store.upgrade()
    return store


def _fmt_time(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "—"
    delta = (value - now).total_seconds()
    when = "in " if delta > 0 else ""
    ago = "" if delta > 0 else " ago"
    seconds = abs(delta)
    if seconds < 90:
        span = f"{seconds:.0f}s"
    elif seconds < 5400:
        span = f"{seconds / 60:.0f}m"
    elif seconds < 172800:
        span = f"{seconds / 3600:.1f}h"
    else:
        span = f"{seconds / 86400:.0f}d"
    return f"{when}{span}{ago}"


def print_table(rows: Sequence[Sequence[str]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        out.write("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


# ----------------------------------------------------------------------------- commands


def cmd_check(args: argparse.Namespace) -> int:
    config = load(args)
    print(
        f"config ok: {len(config.sources)} sources, {len(config.topics)} topics "
        f"({config.directory})"
    )
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    config = load(args)
    from aggregator.store import Store

    store = Store(config.settings.database)
    applied = store.upgrade()
    print("database upgraded" if applied else "database already up to date", f"({store.safe_url})")
    store.close()
    return EXIT_OK


def cmd_poll(args: argparse.Namespace) -> int:
    config = load(args)
    unknown = [sid for sid in args.sources if config.source(sid) is None]
    if unknown:
        print(f"unknown source id: {', '.join(unknown)}", file=sys.stderr)
        return EXIT_CONFIG
    from aggregator.pipeline import Poller, summarize

    store = open_store(config)
    # What exists now (modules, the config, the store) lives as long as the process: out of
    # the collector's sight, the round's full collections and the one at exit skip it
    # (~0.2 s of a round of 1,000 sources). Garbage made so far goes first: frozen, it
    # would stay.
    gc.collect()
    gc.freeze()
    try:
        now = datetime.now(UTC)
        store.sync_sources(config.sources, now)
        poller = Poller(config, store)
        poller.recompute_topics(now)
        states = poller.claim_now(args.sources)
        wanted = args.sources or [s.id for s in config.sources if s.enabled]
        claimed = {s.id for s in states}
        skipped = {}
        for sid in wanted:
            if sid not in claimed:
                state = store.source_state(sid)
                reason = state.disabled_reason if state else None
                skipped[sid] = (
                    f"disabled: {reason}" if reason else "being polled by another process"
                )
        progress = _Progress(len(states)) if sys.stderr.isatty() and not args.quiet else None
        reports = poller.poll_states(states, progress=progress.step if progress else None)
        if progress:
            progress.done()
        poller.save_index()  # for the next run, which then reads only the newer items
        poller.close()
    finally:
        store.close()
    for sid, why in skipped.items():
        print(f"{sid}: skipped ({why})")
    failed = 0
    for r in reports:
        c = r.counts
        if r.failed:
            failed += 1
            status = f"HTTP {r.status}" if r.status else r.error_kind
            print(f"{r.source_id}: FAILED ({status}) {r.error}")
        elif r.outcome == "not_modified":
            print(f"{r.source_id}: not modified ({r.ms} ms)")
        elif r.outcome == "ok":
            print(
                f"{r.source_id}: {c.new} new, {c.duplicate} duplicate, {c.updated} updated, "
                f"{c.unchanged} unchanged ({r.ms} ms)"
            )
        else:
            print(f"{r.source_id}: skipped ({r.error})")
        if r.permanent_url:
            print(f"{r.source_id}: moved permanently to {r.permanent_url}")
        if r.disabled:
            print(f"{r.source_id}: disabled (410 Gone)")
    total = summarize(reports)
    print(
        f"total: {len(reports)} sources, {failed} failed; {total.new} new, "
        f"{total.duplicate} duplicate, {total.updated} updated, {total.unchanged} unchanged"
    )
    return EXIT_FAILED if failed else EXIT_OK


class _Progress:
    """A one-line progress bar with counts on the terminal (stderr), only when it is a TTY.

    Log lines go to the same terminal: a filter on the root handlers wipes the bar before a
    record is written, and the next step draws it again below the record.
    """

    width = 30

    def __init__(self, total: int) -> None:
        import threading

        self.total = total
        self.done_count = 0
        self.failed = 0
        self.new = 0
        self.duplicate = 0
        self.shown = False
        self.lock = threading.Lock()
        for handler in logging.getLogger().handlers:
            handler.addFilter(self._wipe)
        self._draw()

    def _wipe(self, record: logging.LogRecord) -> bool:
        with self.lock:
            if self.shown:
                sys.stderr.write("\r\x1b[K")
                self.shown = False
        return True

    def step(self, report: Any) -> None:
        with self.lock:
            self.done_count += 1
            self.failed += int(report.failed)
            self.new += report.counts.new
            self.duplicate += report.counts.duplicate
        self._draw()

    def _draw(self) -> None:
        with self.lock:
            filled = int(self.width * self.done_count / max(1, self.total))
            sys.stderr.write(
                f"\r\x1b[K[{'#' * filled}{'.' * (self.width - filled)}] "
                f"{self.done_count}/{self.total} sources  {self.new} new  "
                f"{self.duplicate} duplicate  {self.failed} failed"
            )
            sys.stderr.flush()
            self.shown = True

    def done(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self._wipe)
        with self.lock:
            if self.shown:
                sys.stderr.write("\n")
                sys.stderr.flush()
                self.shown = False


def cmd_export(args: argparse.Namespace) -> int:
    config = load(args)
    from aggregator import feeds

    if config.topic(args.topic) is None:
        print(f"unknown topic: {args.topic}", file=sys.stderr)
        return EXIT_CONFIG
    store = open_store(config)
    try:
        rendered = feeds.render_topic(store, config, args.topic, args.format, args.page)
    except feeds.PageNotFound:
        print(f"no page {args.page} in topic {args.topic}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        store.close()
    if args.output and args.output != "-":
        Path(args.output).write_bytes(rendered.body)
        print(f"wrote {args.output}: {rendered.total} stories", file=sys.stderr)
    else:
        sys.stdout.buffer.write(rendered.body)
        sys.stdout.flush()
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    config = load(args)
    from aggregator.web import describe, format_status_json, sort_for_status

    store = open_store(config)
    try:
        store.sync_sources(config.sources, datetime.now(UTC))
        now = datetime.now(UTC)
        states = sort_for_status(store.source_states(now))
    finally:
        store.close()
    if args.json:
        print(format_status_json(states, None))
        return EXIT_OK
    # The same columns as /status: failing sources first.
    rows = [
        ("SOURCE", "NAME", "URL", "LAST POLL", "HTTP", "RESULT", "ERRORS", "NEXT POLL", "ITEMS 24H")
    ]
    for s in states:
        result = describe(s)
        if s.effective_url != s.url:
            result += f" [moved to {s.effective_url}]"
        rows.append(
            (
                s.id,
                s.name,
                s.effective_url,
                _fmt_time(s.last_polled_at, now),
                str(s.last_status or "—"),
                result,
                str(s.consecutive_errors),
                "—" if s.disabled_reason else _fmt_time(s.next_poll_at, now),
                str(s.items_24h),
            )
        )
    print_table(rows)
    return EXIT_OK


def cmd_topics_explain(args: argparse.Namespace) -> int:
    config = load(args)
    topic = config.topic(args.topic)
    if topic is None:
        print(f"unknown topic: {args.topic}", file=sys.stderr)
        return EXIT_CONFIG
    from aggregator.explain import explain_topic

    store = open_store(config)
    try:
        explain_topic(
            store,
            config,
            topic,
            limit=args.limit,
            near=args.near,
            out=sys.stdout,
            now=datetime.now(UTC),
        )
    finally:
        store.close()
    return EXIT_OK


def cmd_import_opml(args: argparse.Namespace) -> int:
    from aggregator.opml import OpmlError, sources_yaml_from_opml

    try:
        text = sources_yaml_from_opml(Path(args.file).read_bytes())
    except OSError as e:
        print(f"{args.file}: {e.strerror}", file=sys.stderr)
        return EXIT_FAILED
    except OpmlError as e:
        print(f"{args.file}: {e}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(text)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    config = load(args)
    from aggregator.daemon import Daemon, DaemonOptions

    daemon = Daemon(config, DaemonOptions(role=args.role, listen=args.listen))
    return daemon.run()


def cmd_demo(args: argparse.Namespace) -> int:
    from aggregator.demo import run_demo

    return run_demo(port=args.port, listen=args.listen)


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="config directory (default: $AGGREGATOR_CONFIG or ./config)",
    )
    common.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=argparse.SUPPRESS,
        help="log format on stderr (json: one object per line)",
    )
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS)

    parser = argparse.ArgumentParser(
        prog="aggregator",
        description="Agency feed aggregator: one entry per story, clean topic feeds.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"aggregator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="run the daemon: scheduler + HTTP server")
    p.add_argument("--role", choices=("all", "worker", "web"), default="all")
    p.add_argument("--listen", metavar="HOST:PORT", help="override the config's listen address")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("poll", parents=[common], help="fetch enabled sources once now")
    p.add_argument("sources", nargs="*", metavar="SOURCE_ID")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_poll)

    p = sub.add_parser("check", parents=[common], help="validate the config directory")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("export", parents=[common], help="write a topic feed")
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument("-o", "--output", metavar="FILE")
    p.add_argument("--format", choices=("atom", "rss", "json"), default="atom")
    p.add_argument("--page", type=int, default=1)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("status", parents=[common], help="show every source's health")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("topics", parents=[common], help="work with topic rules")
    topics_sub = p.add_subparsers(dest="topics_command", required=True, metavar="COMMAND")
    e = topics_sub.add_parser(
        "explain", parents=[common], help="which stored stories match a topic, and why"
    )
    e.add_argument("topic", metavar="TOPIC")
    e.add_argument("--limit", type=int, default=20)
    e.add_argument("--near", action="store_true", help="also show near misses and why")
    e.set_defaults(func=cmd_topics_explain)

    p = sub.add_parser(
        "import-opml", parents=[common], help="print sources.yaml entries for an OPML file"
    )
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_import_opml)

    p = sub.add_parser("db", parents=[common], help="database maintenance")
    db_sub = p.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    u = db_sub.add_parser("upgrade", parents=[common], help="apply migrations")
    u.set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser("demo", parents=[common], help="run offline on bundled sample feeds")
    p.add_argument("--port", type=int, default=0, help="port for the sample feed server")
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.config = getattr(args, "config", None)
    args.log_format = getattr(args, "log_format", None) or os.environ.get(
        "AGGREGATOR_LOG_FORMAT", "text"
    )
    args.verbose = getattr(args, "verbose", 0) or 0
    setup_logging(args.log_format, args.verbose)
    try:
        return int(args.func(args))
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as e:
        print(f"store error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except AggregatorError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`aggregator status | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
