"""Profile a module run in-process, every thread included.

    python -m bench.profile [--top N] [--out FILE.pstats] [--memory] -- MODULE [ARGS...]
    e.g. python -m bench.profile -- aggregator poll --config DIR -q

``python -m cProfile -m aggregator poll`` sees only the main thread, which waits while the
poll's thread pool does the work; here every thread started during the run gets its own
profiler (``Thread.run`` is wrapped for the run's duration) and the statistics are merged.
Times are each thread's CPU time (``time.thread_time``), so a thread waiting for the GIL or
the network is not charged: the table adds up to the CPU the run spent, not to wall time.

``--memory`` runs under tracemalloc instead and reports the peak and what is still
allocated at the end, by line.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import runpy
import sys
import threading
import time
from pathlib import Path


class AllThreads:
    """cProfile in every thread started while it is active, merged into one table."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self.lock = threading.Lock()
        self._run = threading.Thread.run

    def __enter__(self) -> AllThreads:
        original = self._run
        profiles, lock = self.profiles, self.lock

        def run(thread: threading.Thread) -> None:
            profile = cProfile.Profile(time.thread_time)
            with lock:
                profiles.append(profile)
            profile.enable()
            try:
                original(thread)
            finally:
                profile.disable()

        threading.Thread.run = run  # type: ignore[method-assign,assignment]
        main = cProfile.Profile(time.thread_time)
        self.profiles.insert(0, main)
        main.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        self.profiles[0].disable()
        threading.Thread.run = self._run  # type: ignore[method-assign]

    def stats(self) -> pstats.Stats:
        with self.lock:
            profiles = list(self.profiles)
        stats = pstats.Stats(profiles[0])
        for p in profiles[1:]:
            p.create_stats()
            if p.stats:
                stats.add(p)
        return stats


def short_paths(line: str) -> str:
    """Paths relative to the project, the standard library and the virtualenv."""
    import sysconfig

    root = str(Path(__file__).resolve().parent.parent) + "/"
    stdlib = sysconfig.get_paths()["stdlib"] + "/"
    return line.replace(root, "").replace(stdlib, "<stdlib>/").replace(sys.prefix, "<venv>")


def top(stats: pstats.Stats, sort: str, limit: int) -> str:
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats(sort).print_stats(limit)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    total = next((line.strip() for line in lines if "function calls" in line), "")
    body = [short_paths(line.rstrip()) for line in lines[start:] if line.strip()]
    return "\n".join([total, *body])


def _run_module(argv: list[str]) -> int:
    sys.argv = list(argv)
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    except KeyboardInterrupt:  # a server stopped with SIGINT (uvicorn re-raises it)
        return 130
    return 0


def profile(argv: list[str], limit: int, out: str | None) -> str:
    started = time.perf_counter()
    with AllThreads() as prof:
        code = _run_module(argv)
    wall = time.perf_counter() - started
    stats = prof.stats()
    if out:
        stats.dump_stats(out)
    return (
        f"python -m {short_paths(' '.join(argv))}: exit {code}, {wall:.1f} s wall under the profiler "
        f"(CPU time per function, all threads)\n"
        + "\n-- by cumulative time --\n"
        + top(stats, "cumulative", limit)
        + "\n\n-- by own time --\n"
        + top(stats, "tottime", limit)
    )


def memory(argv: list[str], limit: int) -> str:
    import gc
    import tracemalloc

    tracemalloc.start(1)
    code = _run_module(argv)
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")]
    )
    tracemalloc.stop()
    lines = [
        f"python -m {' '.join(argv)}: exit {code}; Python heap traced: "
        f"{current / 2**20:.1f} MB still allocated at the end, {peak / 2**20:.1f} MB at the peak",
        "",
        "-- still allocated at the end, by line --",
    ]
    for stat in snapshot.statistics("lineno")[:limit]:
        frame = stat.traceback[0]
        where = short_paths(f"{frame.filename}:{frame.lineno}")
        lines.append(f"{stat.size / 2**20:8.2f} MB {stat.count:9,} blocks  {where}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", help="also write the pstats file here")
    parser.add_argument("--memory", action="store_true", help="tracemalloc instead of cProfile")
    parser.add_argument("module", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    argv = args.module[1:] if args.module[:1] == ["--"] else args.module
    if not argv:
        parser.error("name the module to run, e.g. -- aggregator poll --config DIR")
    text = memory(argv, args.top) if args.memory else profile(argv, args.top, args.out)
    # stdout belongs to the profiled program; the report goes to stderr, last
    sys.stdout.flush()
    sys.stderr.write("\n=== profile ===\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
