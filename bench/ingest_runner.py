"""One batch through the real pipeline, timing the store's part of it.

    python -m bench.ingest_runner --config DIR SOURCE_ID...

Polls the named sources as ``aggregator poll`` does (sync, claim, ``Poller.poll_states``),
with the store's ``ingest`` timed per call, and prints a JSON summary. Run with
``concurrency: 1`` so the ingest time is the store's own, not a wait for its lock.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from datetime import UTC, datetime
from typing import Any

from aggregator.config import load_config
from aggregator.pipeline import Poller, summarize
from aggregator.store import Store


class TimedStore(Store):
    """The real store, with the time spent in :meth:`ingest` added up."""

    ingest_seconds = 0.0
    ingest_calls = 0

    def ingest(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().ingest(*args, **kwargs)
        finally:
            self.ingest_seconds += time.perf_counter() - started
            self.ingest_calls += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("sources", nargs="+")
    args = parser.parse_args()
    config = load_config(args.config)
    store = TimedStore(config.settings.database)
    store.upgrade()
    now = datetime.now(UTC)
    store.sync_sources(config.sources, now)
    poller = Poller(config, store)
    started = time.perf_counter()
    states = store.claim_due(
        now,
        owner=poller.owner,
        lease_seconds=poller.lease_seconds(),
        limit=len(args.sources),
        only=args.sources,
        force=True,
    )
    reports = poller.poll_states(states)
    poll_s = time.perf_counter() - started
    poller.close()
    store.close()
    counts = summarize(reports)
    items = counts.new + counts.duplicate + counts.updated + counts.unchanged
    print(
        json.dumps(
            {
                "sources": len(reports),
                "failed": sum(1 for r in reports if r.failed),
                "items": items,
                "new": counts.new,
                "duplicate": counts.duplicate,
                "ingest_s": store.ingest_seconds,
                "poll_s": poll_s,
                "ingest_ms_per_item": 1000 * store.ingest_seconds / max(1, items),
                "poll_ms_per_item": 1000 * poll_s / max(1, items),
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
