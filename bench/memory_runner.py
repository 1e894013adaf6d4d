"""What a daemon's poller keeps after a full round, by line (tracemalloc).

    python -m bench.memory_runner --config DIR [--top N]

Does what ``aggregator run`` does before and during its first round (migrate, sync, recompute
topics, load the story index, poll every source) and, with the poller still alive as in the
daemon, reports the Python heap still allocated and its peak, by line.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tracemalloc
from datetime import UTC, datetime

from aggregator.config import load_config
from aggregator.pipeline import Poller
from aggregator.store import Store
from aggregator.types import Config
from bench.profile import short_paths


def daemon_poller(config_dir: str) -> tuple[Config, Store, Poller]:
    """The config, store and poller as ``aggregator run`` has them before its first round:
    schema migrated, sources synced, topic membership recomputed."""
    config = load_config(config_dir)
    store = Store(config.settings.database)
    store.upgrade()
    now = datetime.now(UTC)
    store.sync_sources(config.sources, now)
    poller = Poller(config, store)
    poller.recompute_topics(now)
    return config, store, poller


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    tracemalloc.start(1)
    config, store, poller = daemon_poller(args.config)
    now = datetime.now(UTC)
    poller.refresh_index()
    states = store.claim_due(
        now,
        owner=poller.owner,
        lease_seconds=poller.lease_seconds(),
        limit=len(config.sources),
        force=True,
    )
    reports = poller.poll_states(states)
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")]
    )
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        f"{len(reports)} sources polled; peak RSS {rss:.0f} MB (under tracemalloc); Python heap "
        f"traced: {current / 2**20:.1f} MB held after the round with the poller alive, "
        f"{peak / 2**20:.1f} MB at the peak",
        "",
        "-- held after the round, by line --",
    ]
    for stat in snapshot.statistics("lineno")[: args.top]:
        frame = stat.traceback[0]
        where = short_paths(f"{frame.filename}:{frame.lineno}")
        lines.append(f"{stat.size / 2**20:8.2f} MB {stat.count:9,} blocks  {where}")
    print("\n".join(lines))
    poller.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
