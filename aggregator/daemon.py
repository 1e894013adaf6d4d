"""``aggregator run``: the scheduler and the HTTP server, their lifecycle and signals.

Start: validate config → open store → migrate → sync sources → recompute topic membership →
scheduler jobs (poll due sources, retention, config watch, watchdog) → HTTP server →
``READY=1`` to systemd.

SIGTERM/SIGINT stop scheduling, let in-flight polls finish (bounded), close the store and
exit 0; a second signal exits at once. SIGHUP or a changed config file reloads: the new
config is validated first and, if invalid, the old one stays and the error is shown on
/status.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from aggregator import config as config_mod
from aggregator import metrics
from aggregator.errors import ConfigError, StoreError
from aggregator.pipeline import Poller, PollReport, utcnow
from aggregator.store import Store
from aggregator.types import Config
from aggregator.web import AppState, create_app

log = logging.getLogger(__name__)

CONFIG_FILES = ("aggregator.yaml", "sources.yaml", "topics.yaml")


def sd_notify(message: str) -> bool:
    """Send a message to systemd's notify socket, if there is one (sd_notify(3))."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as e:
        log.debug("sd_notify failed: %s", e)
        return False


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec, when the watchdog is on for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.5, int(usec) / 2_000_000)
    except ValueError:
        return None


def _config_stamp(directory: str) -> tuple[tuple[str, float, int], ...]:
    stamp = []
    for name in CONFIG_FILES:
        try:
            st = (Path(directory) / name).stat()
            stamp.append((name, st.st_mtime, st.st_size))
        except OSError:
            stamp.append((name, 0.0, -1))
    return tuple(stamp)


@dataclass
class DaemonOptions:
    role: str = "all"  # all | worker | web
    tick_seconds: float | None = None  # how often due sources are looked for (config: tick)
    config_check_seconds: float = 3.0
    shutdown_grace: float = 30.0
    listen: str | None = None  # overrides the config's listen


class Daemon:
    def __init__(
        self,
        config: Config,
        options: DaemonOptions,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.options = options
        self.clock = clock
        self.store = Store(config.settings.database)
        self.stop_event = threading.Event()
        self.signals = 0
        self.poller: Poller | None = None
        self.state = AppState(config=config, store=self.store, role=options.role, clock=clock)
        self.scheduler: Any = None
        self.server: Any = None
        self.server_thread: threading.Thread | None = None
        self._polling = threading.Lock()
        self._config_stamp = _config_stamp(config.directory)

    # ------------------------------------------------------------------ start / stop

    def run(self) -> int:
        self._install_signals()
        self.store.upgrade()
        if self.options.role in ("all", "worker"):
            self.store.sync_sources(self.config.sources, self.clock())
            self.poller = Poller(self.config, self.store, clock=self.clock)
            self.poller.listeners.append(self._on_report)
            changed = self.poller.recompute_topics()
            log.info("topic membership recomputed (%d topics changed)", changed)
            self.poller.refresh_index()
        self.state.refresh_versions()
        self._start_scheduler()
        if self.options.role in ("all", "web"):
            self._start_server()
        sd_notify("READY=1\nSTATUS=running")
        log.info(
            "aggregator running role=%s sources=%d topics=%d",
            self.options.role,
            len(self.config.sources),
            len(self.config.topics),
        )
        while not self.stop_event.wait(0.5):
            if self.server_thread is not None and not self.server_thread.is_alive():
                log.error("HTTP server stopped unexpectedly")
                self.stop_event.set()
                self.shutdown()
                return 1
        self.shutdown()
        return 0

    def _install_signals(self) -> None:
        def on_stop(signum: int, _frame: FrameType | None) -> None:
            self.signals += 1
            if self.signals > 1:
                log.warning("second signal: exiting now")
                os._exit(1)
            log.info("signal %s: stopping", signal.Signals(signum).name)
            self.stop_event.set()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            threading.Thread(target=self.reload, name="reload", daemon=True).start()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def shutdown(self) -> None:
        sd_notify("STOPPING=1")
        if self.poller is not None:
            self.poller.stopping = True
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        # Let an in-flight poll round finish: it commits each source as a whole.
        if self._polling.acquire(timeout=self.options.shutdown_grace):
            self._polling.release()
        else:
            log.warning("polls still running after %.0f s; exiting", self.options.shutdown_grace)
        if self.server is not None:
            self.server.should_exit = True
            if self.server_thread is not None:
                self.server_thread.join(timeout=10)
        if self.poller is not None:
            self.poller.close()
        self.store.close()
        log.info("stopped")

    def _start_server(self) -> None:
        import uvicorn

        listen = self.options.listen or self.config.settings.listen
        host, _, port = listen.rpartition(":")
        app = create_app(self.state)
        config = uvicorn.Config(
            app,
            host=host.strip("[]") or "127.0.0.1",
            port=int(port),
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        # Uvicorn leaves signals alone outside the main thread: they stay ours.
        self.server_thread = threading.Thread(target=self.server.run, name="http", daemon=True)
        self.server_thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            if not self.server_thread.is_alive():
                raise StoreError(f"cannot listen on {listen}")
            time.sleep(0.05)
        log.info("serving on http://%s/", listen)

    def _start_scheduler(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.scheduler = BackgroundScheduler(timezone=UTC)
        if self.options.role in ("all", "worker"):
            self.scheduler.add_job(
                self.poll_round,
                "interval",
                seconds=self.options.tick_seconds or self.config.settings.tick,
                id="poll",
                max_instances=1,
                coalesce=True,
                next_run_time=datetime.now(UTC),
            )
            self.scheduler.add_job(
                self.retention,
                "interval",
                hours=24,
                id="retention",
                max_instances=1,
                coalesce=True,
                next_run_time=datetime.now(UTC) + timedelta(minutes=1),
            )
        self.scheduler.add_job(
            self.check_config,
            "interval",
            seconds=self.options.config_check_seconds,
            id="config-watch",
            max_instances=1,
            coalesce=True,
        )
        interval = watchdog_interval()
        self.scheduler.add_job(
            self.watchdog,
            "interval",
            seconds=interval or 10.0,
            id="watchdog",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )
        self.scheduler.start()

    # ------------------------------------------------------------------ jobs

    def poll_round(self) -> None:
        if self.stop_event.is_set() or self.poller is None:
            return
        self.state.scheduler_heartbeat = time.monotonic()
        with self._polling:
            now = self.clock()
            try:
                due = self.store.claim_due(
                    now,
                    owner=self.poller.owner,
                    lease_seconds=self.poller.lease_seconds(),
                    limit=5000,
                )
                if due:
                    lag = (
                        max((now - s.next_poll_at).total_seconds() for s in due if s.next_poll_at)
                        if any(s.next_poll_at for s in due)
                        else 0.0
                    )
                    metrics.SCHEDULER_LAG.set(max(0.0, lag))
                    self.poller.poll_states(due)
                    self.state.refresh_versions()
            except StoreError as e:
                log.error("poll round failed: %s", e)
        self.state.scheduler_heartbeat = time.monotonic()

    def retention(self) -> None:
        now = self.clock()
        cutoff = now - timedelta(days=self.config.settings.retention_days)
        keep = {t.id: t.limit for t in self.config.topics}
        try:
            deleted = self.store.delete_older_than(cutoff, keep)
        except StoreError as e:
            log.error("retention failed: %s", e)
            return
        if deleted:
            log.info("retention deleted %d stories older than %s", deleted, cutoff.date())
            self.state.refresh_versions()

    def watchdog(self) -> None:
        """Ping systemd only while the store answers and the scheduler is ticking."""
        beat = self.state.scheduler_heartbeat
        stalled = beat is not None and time.monotonic() - beat > self.state.scheduler_stall_after
        if self.options.role in ("all", "worker") and stalled:
            log.warning("scheduler stalled: not pinging the watchdog")
            return
        try:
            self.store.ping()
        except StoreError as e:
            log.warning("store unreachable: not pinging the watchdog: %s", e)
            return
        if self.options.role == "web":
            self.state.scheduler_heartbeat = time.monotonic()
        sd_notify("WATCHDOG=1")

    def check_config(self) -> None:
        stamp = _config_stamp(self.config.directory)
        if stamp != self._config_stamp:
            self._config_stamp = stamp
            log.info("config files changed: reloading")
            self.reload()

    def reload(self) -> bool:
        """Validate and swap the config; keep the old one when the new one is invalid."""
        sd_notify("RELOADING=1")
        try:
            new = config_mod.load_config(self.config.directory)
        except ConfigError as e:
            self.state.reload_error = str(e)
            for problem in e.problems:
                log.error("config reload failed: %s", problem)
            sd_notify("READY=1\nSTATUS=running (config reload failed)")
            return False
        self._config_stamp = _config_stamp(self.config.directory)
        with self._polling:
            self.config = new
            if self.poller is not None:
                self.store.sync_sources(new.sources, self.clock())
                self.poller.set_config(new)
                changed = self.poller.recompute_topics()
                log.info("topic membership recomputed (%d topics changed)", changed)
        self.state.reload_error = None
        self.state.set_config(new)
        self.state.refresh_versions()
        log.info("config reloaded: sources=%d topics=%d", len(new.sources), len(new.topics))
        sd_notify("READY=1\nSTATUS=running")
        return True

    def _on_report(self, report: PollReport) -> None:
        self.state.scheduler_heartbeat = time.monotonic()  # a long round is still progress
        metrics.POLLS.labels(report.source_id, report.outcome).inc()
        metrics.FETCH_SECONDS.observe(report.ms / 1000)
        metrics.ITEMS.labels("new").inc(report.counts.new)
        metrics.ITEMS.labels("updated").inc(report.counts.updated)
        metrics.ITEMS.labels("duplicate").inc(report.counts.duplicate)
        if report.failed:
            metrics.CONSECUTIVE_FAILURES.labels(report.source_id).inc()
        elif report.outcome in ("ok", "not_modified"):
            metrics.CONSECUTIVE_FAILURES.labels(report.source_id).set(0)
            metrics.LAST_SUCCESS.labels(report.source_id).set(time.time())
