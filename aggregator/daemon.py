"""``aggregator run``: the scheduler and the HTTP server, their lifecycle and signals.

Start: open store → migrate → sync sources → recompute topic membership → load the story
index → scheduler jobs → HTTP server → ``READY=1`` to systemd. The jobs:

    poll        every ``scheduler.tick``: claim the due sources and poll them
    retention   daily: delete stories older than ``retention.days`` (never the newest
                ``limit`` of a topic), then VACUUM/ANALYZE as the store needs
    index       every 10 min: drop items older than the story window from the in-memory
                near-duplicate index and add what other workers stored
    config      every few seconds: reload when a config file changed
    watchdog    when systemd asks for one: ``WATCHDOG=1`` while the store answers and the
                poll job keeps ticking

SIGTERM/SIGINT stop scheduling, let in-flight polls finish (at most ``shutdown_grace``
seconds; each source commits as a whole, so cutting one short loses nothing), close the store
and exit 0; a second signal exits at once. SIGHUP or a changed config file reloads: the new
config is validated first and, if invalid, the old one stays and the ``FILE:LINE: message``
problems are logged and shown on /status; if valid, sources and topics are swapped in place.
"""

from __future__ import annotations

import contextlib
import gc
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
from aggregator.errors import AggregatorError, ConfigError, StoreError
from aggregator.pipeline import STORY_WINDOW, Poller, PollReport, utcnow
from aggregator.store import Store
from aggregator.types import Config, Settings
from aggregator.web import AppState, create_app

log = logging.getLogger(__name__)

CONFIG_FILES = ("aggregator.yaml", "sources.yaml", "topics.yaml")
INDEX_MAINTENANCE = timedelta(minutes=10)
RETENTION_EVERY = timedelta(hours=24)
RETENTION_FIRST = timedelta(minutes=1)  # after start: not in the way of the first poll round


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


def stall_after(settings: Settings) -> float:
    """Seconds without a poll-job tick after which the scheduler counts as stalled."""
    return max(120.0, 4 * settings.tick)


def _config_stamp(directory: str) -> tuple[tuple[str, int, int, int], ...]:
    stamp = []
    for name in CONFIG_FILES:
        try:
            st = (Path(directory) / name).stat()
            # The inode too: editors often save by writing a new file and renaming it.
            stamp.append((name, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            stamp.append((name, 0, -1, 0))
    return tuple(stamp)


@dataclass
class DaemonOptions:
    role: str = "all"  # all | worker | web
    tick_seconds: float | None = None  # overrides the config's scheduler.tick
    config_check_seconds: float = 3.0
    shutdown_grace: float = 30.0
    listen: str | None = None  # overrides the config's listen
    on_ready: Callable[[], None] | None = None  # called once serving and polling


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
        self.state = AppState(
            config=config,
            store=self.store,
            role=options.role,
            clock=clock,
            scheduler_stall_after=stall_after(config.settings),
        )
        self.scheduler: Any = None
        self.server: Any = None
        self.server_thread: threading.Thread | None = None
        # Held by a poll round, a reload and index maintenance: they never overlap, and
        # shutdown waits on it for the in-flight round.
        self._polling = threading.Lock()
        self._reloading = threading.Lock()
        self._config_stamp = _config_stamp(config.directory)
        self._tick = self.tick()

    @property
    def polls(self) -> bool:
        return self.options.role in ("all", "worker")

    def tick(self) -> float:
        return self.options.tick_seconds or self.config.settings.tick

    # ------------------------------------------------------------------ start / stop

    def run(self) -> int:
        _limit_malloc_arenas()
        self._install_signals()
        try:
            self._start()
        except BaseException:
            self.shutdown()
            raise
        # Modules, config, store and index live as long as the service: full collections
        # need not walk them again every time. (Garbage made so far is collected first:
        # frozen, it would stay.)
        gc.collect()
        gc.freeze()
        sd_notify("READY=1\nSTATUS=running")
        log.info(
            "aggregator running role=%s sources=%d topics=%d",
            self.options.role,
            len(self.config.sources),
            len(self.config.topics),
        )
        if self.options.on_ready is not None:
            self.options.on_ready()
        code = 0
        while not self.stop_event.wait(0.5):
            if self.server_thread is not None and not self.server_thread.is_alive():
                log.error("HTTP server stopped unexpectedly")
                code = 1
                break
        if not self.shutdown():
            # A poll outlived the grace period. Its transaction is all-or-nothing, so leave
            # now rather than wait for it (interpreter exit would join its thread).
            logging.shutdown()
            os._exit(code)
        return code

    def _start(self) -> None:
        self.store.upgrade(in_child=True)  # the migration tool stays out of the service
        if self.polls:
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

    def _install_signals(self) -> None:
        def on_stop(signum: int, _frame: FrameType | None) -> None:
            self.signals += 1
            if self.signals > 1:
                log.warning("second signal: exiting now")
                logging.shutdown()
                os._exit(1)
            log.info("signal %s: stopping", signal.Signals(signum).name)
            self.stop_event.set()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            log.info("signal SIGHUP: reloading the config")
            threading.Thread(target=self.reload, name="reload", daemon=True).start()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def shutdown(self) -> bool:
        """Stop everything; False when polls were still running after the grace period."""
        sd_notify("STOPPING=1")
        self.stop_event.set()
        if self.poller is not None:
            self.poller.stopping = True  # sources not started yet are left for next time
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        finished = self._polling.acquire(timeout=self.options.shutdown_grace)
        if finished:
            self._polling.release()
        else:
            log.warning(
                "polls still running after %.0f s: exiting without them",
                self.options.shutdown_grace,
            )
        if self.server is not None:
            self.server.should_exit = True
            if self.server_thread is not None:
                self.server_thread.join(timeout=10)
        if finished:
            if self.poller is not None:
                self.poller.save_index()  # the next start loads it instead of rebuilding it
                self.poller.close()
            self.store.close()
        log.info("stopped")
        return finished

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
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        # Uvicorn leaves signals alone outside the main thread: they stay ours.
        self.server_thread = threading.Thread(target=self.server.run, name="http", daemon=True)
        self.server_thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.server_thread.is_alive() or time.monotonic() > deadline:
                raise AggregatorError(f"cannot listen on {listen}")
            time.sleep(0.05)
        log.info("serving on http://%s/", listen)

    def _start_scheduler(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        # misfire_grace_time=None: a late run still runs (coalesced), never silently dropped.
        self.scheduler = BackgroundScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "misfire_grace_time": None}
        )
        now = datetime.now(UTC)
        self._tick = self.tick()
        if self.polls:
            # Two instances: the second returns at once while a long round runs, instead of
            # the scheduler warning on every tick that it skipped one.
            self.scheduler.add_job(
                self.poll_round,
                "interval",
                seconds=self._tick,
                id="poll",
                max_instances=2,
                next_run_time=now,
            )
            self.scheduler.add_job(
                self.retention,
                "interval",
                seconds=RETENTION_EVERY.total_seconds(),
                id="retention",
                next_run_time=now + RETENTION_FIRST,
            )
            self.scheduler.add_job(
                self.maintain_index,
                "interval",
                seconds=INDEX_MAINTENANCE.total_seconds(),
                id="index",
            )
        self.scheduler.add_job(
            self.check_config,
            "interval",
            seconds=self.options.config_check_seconds,
            id="config-watch",
        )
        interval = watchdog_interval()
        if interval is not None:
            self.scheduler.add_job(
                self.watchdog, "interval", seconds=interval, id="watchdog", next_run_time=now
            )
        self.scheduler.start()

    # ------------------------------------------------------------------ jobs

    def poll_round(self) -> list[PollReport]:
        if self.stop_event.is_set() or self.poller is None:
            return []
        if not self._polling.acquire(blocking=False):
            return []  # a round or a reload is still running; the next tick tries again
        reports: list[PollReport] = []
        try:
            self.state.scheduler_heartbeat = time.monotonic()
            now = self.clock()
            due = self.poller.claim_due(now)
            late = [(now - s.next_poll_at).total_seconds() for s in due if s.next_poll_at]
            metrics.SCHEDULER_LAG.set(max(0.0, *late) if late else 0.0)
            if due:
                reports = self.poller.poll_states(due, refill=self.poller.refill_due(now))
                self.state.refresh_versions()
                self.store.release_idle()
                _trim_heap()
                failed = sum(1 for r in reports if r.failed)
                sd_notify(
                    f"STATUS=running; last round {now:%H:%M:%S} UTC: "
                    f"{len(reports)} sources polled, {failed} failed"
                )
        except StoreError as e:
            log.error("poll round failed: %s", e)
        except Exception:  # the next tick must still run; systemd's watchdog sees a stall
            log.exception("poll round failed")
        finally:
            self._polling.release()
            self.state.scheduler_heartbeat = time.monotonic()
        return reports

    def retention(self) -> int:
        """Delete what is older than ``retention.days``; return the number of stories."""
        now = self.clock()
        cutoff = now - timedelta(days=self.config.settings.retention_days)
        keep = {t.id: t.limit for t in self.config.topics}
        try:
            deleted = self.store.delete_older_than(cutoff, keep, now=now)
            done = self.store.optimize()
        except StoreError as e:
            log.error("retention failed: %s", e)
            return 0
        log.info(
            "retention: deleted %d stories published before %s (%s)",
            deleted,
            cutoff.date(),
            done,
            extra={"event": "retention"},
        )
        if deleted:
            self.state.refresh_versions()
        return deleted

    def maintain_index(self) -> None:
        """Keep the near-duplicate index to the story window and in step with the store."""
        if self.poller is None or self.stop_event.is_set():
            return
        with self._polling:
            now = self.clock()
            try:
                # (first: a new daemon's first refresh may load the index the last one saved)
                added = self.poller.refresh_index(now)
            except StoreError as e:
                log.warning("story index refresh failed: %s", e)
                added = 0
            pruned = self.poller.index.prune(now - STORY_WINDOW)
        log.debug(
            "story index: %d pruned, %d added, %d kept", pruned, added, len(self.poller.index)
        )

    def watchdog(self) -> None:
        """Ping systemd only while the store answers and the poll job keeps ticking."""
        beat = self.state.scheduler_heartbeat
        stalled = beat is not None and time.monotonic() - beat > self.state.scheduler_stall_after
        if self.polls and stalled:
            log.warning("scheduler stalled: not pinging the watchdog")
            return
        try:
            self.store.ping()
        except StoreError as e:
            log.warning("store unreachable: not pinging the watchdog: %s", e)
            return
        sd_notify("WATCHDOG=1")

    def check_config(self) -> None:
        if _config_stamp(self.config.directory) != self._config_stamp:
            log.info("config files changed: reloading")
            self.reload()

    def reload(self) -> bool:
        """Validate and swap the config; keep the old one when the new one is invalid."""
        with self._reloading:
            self._config_stamp = _config_stamp(self.config.directory)
            sd_notify(
                f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
            )
            try:
                new = config_mod.load_config(self.config.directory)
            except ConfigError as e:
                return self._reload_failed(str(e), [str(p) for p in e.problems])
            self._warn_restart_needed(self.config.settings, new.settings)
            with self._polling:
                # Sources and the poller's config change together, so no round sees one
                # without the other.
                if self.poller is not None:
                    try:
                        self.store.sync_sources(new.sources, self.clock())
                    except StoreError as e:
                        return self._reload_failed(f"store error while reloading: {e}", [str(e)])
                    self.poller.set_config(new)
                self.config = new
                if self.poller is not None:
                    try:
                        changed = self.poller.recompute_topics()
                        log.info("topic membership recomputed (%d topics changed)", changed)
                    except StoreError as e:
                        log.error("topic membership not recomputed: %s", e)
                self.state.scheduler_heartbeat = time.monotonic()
            self.state.reload_error = None
            self.state.scheduler_stall_after = stall_after(new.settings)
            self.state.set_config(new)
            with contextlib.suppress(StoreError):
                self.state.refresh_versions()
            tick = self.tick()
            scheduling = self.scheduler is not None and self.scheduler.running
            if self.polls and scheduling and tick != self._tick:
                self._tick = tick
                self.scheduler.reschedule_job("poll", trigger="interval", seconds=tick)
            log.info(
                "config reloaded: sources=%d topics=%d",
                len(new.sources),
                len(new.topics),
                extra={"event": "config_reloaded"},
            )
            sd_notify("READY=1\nSTATUS=running")
            return True

    def _reload_failed(self, message: str, problems: list[str]) -> bool:
        self.state.reload_error = message
        for problem in problems:
            log.error(
                "config reload failed, keeping the previous config: %s",
                problem,
                extra={"event": "config_reload_failed"},
            )
        sd_notify("READY=1\nSTATUS=running; config reload failed, previous config in force")
        return False

    def _warn_restart_needed(self, old: Settings, new: Settings) -> None:
        for name in ("database", "listen"):
            if getattr(old, name) != getattr(new, name):
                log.warning("config: a change of %r takes effect only after a restart", name)

    def _on_report(self, report: PollReport) -> None:
        self.state.scheduler_heartbeat = time.monotonic()  # a long round is still progress
        metrics.POLLS.labels(report.source_id, report.outcome).inc()
        if report.outcome != "skipped":
            metrics.FETCH_SECONDS.observe(report.ms / 1000)
        metrics.ITEMS.labels("new").inc(report.counts.new)
        metrics.ITEMS.labels("updated").inc(report.counts.updated)
        metrics.ITEMS.labels("duplicate").inc(report.counts.duplicate)


# --------------------------------------------------------------------------- memory (glibc)


def _libc() -> Any:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _limit_malloc_arenas(arenas: int = 1) -> None:
    """Cap glibc's malloc arenas (as MALLOC_ARENA_MAX does) before the threads start: with
    one arena per polling thread, freed memory stays scattered and the daemon's RSS grows.
    One arena is enough: the threads allocate mostly while holding the GIL (measured: the
    footprint bench's daemon at 149-150 MB PSS with one arena, 154-162 MB with two)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return  # the admin chose
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-8, arenas)  # M_ARENA_MAX


def _trim_heap() -> None:
    """Give the heap a round's ingest freed back to the system (glibc keeps it otherwise)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
