"""Time ``Poller.recompute_topics()`` on a store: once on empty membership, once again.

    python -m bench.topics_runner --config DIR

Prints a JSON summary: seconds for the first recompute (every membership row new, as after a
topic rule change) and for the second (nothing changed, as at a daemon's start).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from datetime import UTC, datetime

from aggregator.config import load_config
from aggregator.pipeline import Poller
from aggregator.store import Store


def recompute(poller: Poller, now: datetime) -> int:
    """A full recompute, even where the poller would skip it for unchanged rules."""
    if "force" in inspect.signature(poller.recompute_topics).parameters:
        return poller.recompute_topics(now, force=True)  # type: ignore[call-arg,unused-ignore]
    return poller.recompute_topics(now)  # a poller without the rules fingerprint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    config = load_config(args.config)
    store = Store(config.settings.database)
    store.upgrade()
    now = datetime.now(UTC)
    store.sync_sources(config.sources, now)
    poller = Poller(config, store)
    timings = []
    changed = []
    for _ in range(2):
        started = time.perf_counter()
        changed.append(recompute(poller, now))
        timings.append(time.perf_counter() - started)
    counts = store.counts()
    poller.close()
    store.close()
    print(
        json.dumps(
            {
                "first_s": timings[0],
                "again_s": timings[1],
                "changed": changed,
                "stories": counts["stories"],
                "items": counts["items"],
                "memberships": counts["topic_stories"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
