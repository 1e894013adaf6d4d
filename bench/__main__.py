"""``python -m bench all|poll|store|serve|footprint|topics [--quick]``: see bench/README.md."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import footprint, poll, serve, sides, store_scaling, topics
from bench.corpus import Corpus, base_time
from bench.feedserver import ServerProcess
from bench.measure import ROOT, child_env
from bench.report import Results, log, markdown, now

BENCH = Path(__file__).resolve().parent
SCENARIOS = ("all", "poll", "store", "serve", "footprint", "topics")


@dataclass(frozen=True)
class Plan:
    poll: poll.PollPlan
    store_sizes: tuple[int, ...]
    store_batch_feeds: int
    store_batches: int
    topic_stories: int
    topic_runs: int
    serve_seconds: float
    footprint_sources: int
    footprint_cap: float
    profile_cold_feeds: int
    profile_memory_feeds: int


FULL = Plan(
    poll=poll.FULL,
    store_sizes=(10_000, 100_000, 1_000_000),
    store_batch_feeds=20,
    store_batches=3,
    topic_stories=10_000,
    topic_runs=3,
    serve_seconds=5.0,
    footprint_sources=1000,
    footprint_cap=150.0,
    profile_cold_feeds=20,
    profile_memory_feeds=60,
)
QUICK = Plan(
    poll=poll.QUICK,
    store_sizes=(1_000, 10_000, 50_000),
    store_batch_feeds=5,
    store_batches=1,
    topic_stories=2_000,
    topic_runs=1,
    serve_seconds=2.0,
    footprint_sources=60,
    footprint_cap=60.0,
    profile_cold_feeds=10,
    profile_memory_feeds=20,
)


def make_workdir(chosen: str | None) -> Path:
    """Stores live on tmpfs when there is one: both sides CPU-bound, not waiting on fsync."""
    if chosen:
        path = Path(chosen)
        path.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="run-", dir=path))
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 8 * 2**30:
        return Path(tempfile.mkdtemp(prefix="aggregator-bench-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="aggregator-bench-"))


def _profile(argv: list[str], top: int = 25, timeout: float = 600) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bench.profile", "--top", str(top), "--", *argv],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    marker = "=== profile ==="
    if marker not in result.stderr:
        return f"profiling failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
    return result.stderr.split(marker, 1)[1].strip()


def _failed(results: Results, prefix: str) -> bool:
    return any(t.passed is False and t.name.startswith(prefix) for t in results.targets)


def profiles(
    results: Results,
    plan: Plan,
    corpus: Corpus,
    server: ServerProcess | None,
    workdir: Path,
    kept: dict[str, Path],
    topics_config: Path | None,
) -> None:
    """Profiles of our side for the targets that failed (CPU time per function)."""
    if server is not None and any(
        _failed(results, p) for p in ("Cold poll", "Unchanged round", "Mutated round")
    ):
        n = plan.profile_cold_feeds
        log(f"profile: cold poll of {n} feeds")
        server.set_round(0)
        # processes 0: the parsing runs in the poll's threads, where the profiler sees it
        fresh = sides.Ours(workdir / "profile-cold", corpus, server.urls(n), "16/0")
        text = _profile(["aggregator", "poll", "--config", str(fresh.config), "-q"])
        results.profiles.append((f"`aggregator poll`, cold round, {n} feeds", text))
        if _failed(results, "Cold poll"):
            results.profiles.append(_stage_costs(corpus, server, workdir, plan.poll.sizes[-1]))
        size = plan.poll.sizes[0]
        store = kept.get(f"ours-{size}")
        if store is not None:
            config = store / "config"
            sides.set_setting(config, "processes", 0)
            # the kept store last saw round 1: round 1 again is all 304, round 2 moves 10%
            for round_, what in ((1, "unchanged round (304)"), (2, "10%-mutated round")):
                log(f"profile: {what}, {size} feeds")
                server.set_round(round_)
                text = _profile(["aggregator", "poll", "--config", str(config), "-q"])
                results.profiles.append((f"`aggregator poll`, {what}, {size} feeds", text))
            server.set_round(0)
    if topics_config is not None and _failed(results, "Membership recompute"):
        log("profile: topics recompute")
        shutil.copyfile(
            topics_config.parent / "topics-empty.db", topics_config.parent / "topics.db"
        )
        text = _profile(["bench.topics_runner", "--config", str(topics_config)])
        results.profiles.append(("`Poller.recompute_topics()`", text))
    if topics_config is not None and (
        _failed(results, "Cached topic feed") or _failed(results, "Topic feed 304")
    ):
        results.profiles.append(("the real app under load", _profile_app(topics_config)))
    if server is not None and _failed(results, "aggregator run RSS"):
        n = plan.profile_memory_feeds
        log(f"profile: memory held after a round of {n} feeds")
        server.set_round(0)
        fresh = sides.Ours(workdir / "profile-memory", corpus, server.urls(n), "16/auto")
        results.profiles.append(
            (
                f"memory: what the poller holds after a cold round of {n} feeds (tracemalloc)",
                _run_runner("bench.memory_runner", fresh.config),
            )
        )


def _run_runner(module: str, config: Path) -> str:
    """What ``python -m MODULE --config CONFIG`` prints (the end of its errors if it fails)."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--config", str(config)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    return result.stdout if result.returncode == 0 else result.stderr[-3000:]


def _stage_costs(corpus: Corpus, server: ServerProcess, workdir: Path, n: int) -> tuple[str, str]:
    """The CPU each stage of a cold round costs per item, and the ceilings that follow."""
    log(f"profile: cost per item by stage, cold round of {n} feeds")
    server.set_round(0)
    fresh = sides.Ours(workdir / "profile-stages", corpus, server.urls(n), "1/0")
    text = _run_runner("bench.stages_runner", fresh.config)
    return (f"cost per item by stage, cold round of {n} feeds (`bench/stages_runner.py`)", text)


def _profile_app(config: Path) -> str:
    port = serve.free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "bench.profile", "--top", "25", "--",
            "bench.serve_runner", "app", "--config", str(config), "--port", str(port),
        ],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/topics/{serve.TOPIC}.atom"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        wrk = shutil.which("wrk")
        if wrk:
            subprocess.run(
                [wrk, "-t1", "-c16", "-d5s", "-H", "Accept-Encoding: gzip", url],
                capture_output=True,
            )
        else:
            serve._python_load(url, {"Accept-Encoding": "gzip"}, 5)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    marker = "=== profile ==="
    return err.split(marker, 1)[1].strip() if marker in err else err[-3000:]


def context_lines(
    results: Results, plan: Plan, server: ServerProcess | None, workdir: Path, peer: str | None
) -> list[str]:
    lines = [""]
    if server is not None:
        for n in plan.poll.sizes:
            c = server.corpus_stats(n)
            lines.append(
                f"Corpus at N={n:,}: {c['items']:,} items, {c['bytes'] / 2**20:.1f} MB "
                f"({c['gzip_bytes'] / 2**20:.1f} MB gzipped); RSS 2.0 / Atom / RDF, English and "
                "Russian, a third of the Russian RSS/RDF feeds in windows-1251, ~10% cross-feed "
                "copies (`bench/corpus.py`, seed 1)."
            )
    if peer:
        lines.append(
            f"Peer: lemon24's reader {peer} (`update_feeds(workers=W, scheduled=False)`) in "
            f"`bench/.peer-venv` ({sides.peer_python_version()}); ours: `aggregator poll` on "
            f"Python {sys.version.split()[0]}, SQLite. Each round is a fresh process for both "
            "sides; wall, CPU (user+system of the process tree) and peak RSS are the process's."
        )
    on_tmpfs = str(workdir).startswith("/dev/shm")
    lines.append(
        f"Stores: SQLite files in {'tmpfs (/dev/shm)' if on_tmpfs else workdir.parent}"
        + (", so neither side waits on fsync and both are CPU-bound" if on_tmpfs else "")
        + "; the feed server is a separate process on 127.0.0.1–127.0.0.20 (one address per "
        "agency), its CPU shown per round."
    )
    load = os.getloadavg()
    lines.append(
        f"Load average when the run ended: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} "
        "(other work on the machine shares its 2 cores and shows up as noise)."
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmarks: ours against reader, and our own targets."
    )
    parser.add_argument("scenario", choices=SCENARIOS, nargs="?", default="all")
    parser.add_argument("--quick", action="store_true", help="small N, one run: a smoke run")
    parser.add_argument(
        "--out", help="write the results here (default for a full `all`: bench/RESULTS.md)"
    )
    parser.add_argument("--workdir", help="where stores go (default: a new dir in /dev/shm)")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiles of failures")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else FULL
    mode = "quick" if args.quick else "full"
    results = Results(mode, now())
    started = time.perf_counter()
    wanted = set(SCENARIOS[1:]) if args.scenario == "all" else {args.scenario}
    workdir = make_workdir(args.workdir)
    log(f"bench: {mode} {args.scenario}; stores in {workdir}")
    feeds = max(
        *plan.poll.sizes,
        plan.footprint_sources,
        plan.store_batch_feeds * (plan.store_batches + 1),
        plan.profile_cold_feeds,
    )
    corpus = Corpus(args.seed, feeds, base_time(datetime.now(UTC)))
    server: ServerProcess | None = None
    peer: str | None = None
    topics_config: Path | None = None
    kept: dict[str, Path] = {}
    try:
        if wanted & {"poll", "store", "footprint"}:
            log(f"bench: starting the feed server ({feeds:,} feeds) …")
            server = ServerProcess(corpus)
        if "poll" in wanted:
            assert server is not None
            peer = sides.ensure_peer_venv(log)
            polled = poll.run(results, corpus, server, workdir / "poll", plan.poll, log)
            kept = polled["keep"]
        if "store" in wanted:
            assert server is not None
            store_scaling.run(
                results,
                corpus,
                server,
                workdir / "store",
                sizes=plan.store_sizes,
                batch_feeds=plan.store_batch_feeds,
                batches=plan.store_batches,
                profile=not args.no_profile,
                log=log,
            )
        if wanted & {"topics", "serve"}:
            topics_config = topics.run(
                results,
                corpus,
                workdir / "topics",
                stories=plan.topic_stories,
                runs=plan.topic_runs if "topics" in wanted else 1,
                report="topics" in wanted,
                log=log,
            )
        if "serve" in wanted:
            assert topics_config is not None
            serve.run(results, topics_config, workdir, seconds=plan.serve_seconds, log=log)
        if "footprint" in wanted:
            assert server is not None
            footprint.run(
                results,
                corpus,
                server,
                workdir / "footprint",
                sources=plan.footprint_sources,
                cap=plan.footprint_cap,
                log=log,
            )
        if not args.no_profile:
            profiles(results, plan, corpus, server, workdir, kept, topics_config)
        context = context_lines(results, plan, server, workdir, peer)
    finally:
        if server is not None:
            server.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results.elapsed = time.perf_counter() - started

    print("\n" + "\n".join(_final_lines(results)))
    target_file: str | None = args.out
    if target_file is None and args.scenario == "all" and not args.quick:
        target_file = str(BENCH / "RESULTS.md")
    if target_file:
        command = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
        Path(target_file).write_text(
            markdown(results, root=ROOT, command=command.strip(), context=context),
            encoding="utf-8",
        )
        log(f"bench: wrote {target_file}")
    log(f"bench: done in {results.elapsed / 60:.1f} min")
    return 1 if any(t.passed is False for t in results.targets) else 0


def _final_lines(results: Results) -> list[str]:
    from bench.report import tables

    return [*tables(results), *(t.line() for t in results.targets)]


if __name__ == "__main__":
    sys.exit(main())
