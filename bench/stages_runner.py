"""The CPU cost per item of each stage of a cold round: what bounds it on this machine.

    python -m bench.stages_runner --config DIR [--cores N]

Runs a cold round the way ``aggregator poll`` does (migrate, sync, claim every source, poll)
in this process, with one polling thread and no parser processes, so that every stage runs in
that one thread one after the other and each is charged its own CPU time
(``time.thread_time``): fetch, parse, normalize, topics, story features, and within the
store's ingest, story matching and the writes. In a real round the first five run in the
parser processes (and the polling threads) on every core, and the ingest in one writing
thread; the report turns the figures into the two ceilings that follow for a round's rate.
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aggregator import fetch, normalize, parse, prepare, stories
from aggregator.pipeline import Poller
from aggregator.store import Store
from bench.memory_runner import daemon_poller

# (label, owner of the attribute, attribute): the functions the pipeline calls through their
# module or class at call time, so a wrapper put there sees every call
STAGES: tuple[tuple[str, Any, str], ...] = (
    ("fetch", fetch, "fetch"),
    ("parse", parse, "parse_feed"),
    ("normalize", normalize, "normalize_entry"),
    ("topics", prepare, "topic_hits"),
    ("story features", stories, "features"),
    ("story matching", stories.StoryIndex, "find_all"),
    ("story matching", stories.StoryIndex, "add"),
    ("story matching", stories.StoryIndex, "merge"),
    ("ingest", Store, "ingest"),
    ("poll", Poller, "_poll_one"),
)
PARALLEL = ("fetch", "parse", "normalize", "topics", "story features")  # any core
WRITER = ("story matching", "store writes")  # the one writing thread


@contextmanager
def charged(spent: dict[str, float]) -> Iterator[None]:
    """Charge each stage's CPU time (of the calling thread) to its label while active, and
    the garbage collector's to "garbage collection" instead of the stage it interrupted
    (here the parsing's garbage is collected in the writer's process too)."""
    collecting = [0.0]

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            collecting[0] = time.thread_time()
        else:
            spent["garbage collection"] += time.thread_time() - collecting[0]

    saved = []
    for label, owner, name in STAGES:
        original = getattr(owner, name)
        saved.append((owner, name, original))
        setattr(owner, name, _timed(label, original, spent))
    gc.callbacks.append(on_gc)
    try:
        yield
    finally:
        gc.callbacks.remove(on_gc)
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def _timed(label: str, function: Callable[..., Any], spent: dict[str, float]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started, collected = time.thread_time(), spent["garbage collection"]
        try:
            return function(*args, **kwargs)
        finally:
            elapsed = time.thread_time() - started
            spent[label] += elapsed - (spent["garbage collection"] - collected)

    return timed


def cold_round(config_dir: str) -> tuple[dict[str, float], int, float]:
    """(CPU seconds by stage, items stored, wall seconds) of one cold round."""
    config, store, poller = daemon_poller(config_dir)
    if config.settings.concurrency != 1 or config.settings.processes != 0:
        raise SystemExit("the config must poll with concurrency 1 and processes 0")
    states = poller.claim_now(None)
    gc.collect()
    gc.freeze()  # as `aggregator poll` does before its round
    spent: dict[str, float] = defaultdict(float)
    started = time.perf_counter()
    with charged(spent):
        poller.poll_states(states)
    wall = time.perf_counter() - started
    poller.close()
    store.close()
    path = config.settings.database.removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        (items,) = conn.execute("SELECT count(*) FROM items").fetchone()
    spent["store writes"] = spent["ingest"] - spent["story matching"]
    spent["other"] = spent["poll"] - spent["ingest"] - sum(spent[s] for s in PARALLEL)
    spent["poll"] += spent["garbage collection"]  # the thread's CPU, collections included
    return spent, int(items), wall


def report(spent: dict[str, float], items: int, wall: float, cores: int) -> str:
    def us(seconds: float) -> float:
        return seconds / items * 1e6

    parallel = sum(spent[s] for s in PARALLEL) + spent["other"]
    writer = sum(spent[s] for s in WRITER)
    collected = spent["garbage collection"]
    lines = [
        f"cold round, {items:,} items, one polling thread, no parser processes: "
        f"{wall:.1f} s wall, {spent['poll']:.1f} s of the thread's CPU",
        "",
        f"{'stage':<18} {'CPU µs/item':>11}  runs in",
    ]
    for label in (*PARALLEL, "other", *WRITER):
        where = "the writing thread" if label in WRITER else "parser processes / poll threads"
        lines.append(f"{label:<18} {us(spent[label]):>11.0f}  {where}")
    total = parallel + writer + collected
    lines += [
        f"{'garbage collection':<18} {us(collected):>11.0f}  every process (here all in one)",
        f"{'all':<18} {us(total):>11.0f}",
        "",
        "Ceilings on a round's rate that follow (items/s), before any waiting:",
        f"- all of it spread over {cores} cores: {items / total * cores:,.0f}",
        f"- the writing thread alone (story matching + store writes, one at a time, "
        f"no collections): {items / writer:,.0f}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    spent, items, wall = cold_round(args.config)
    if not items:
        print("no items were stored: is the feed server up?", file=sys.stderr)
        return 1
    print(report(spent, items, wall, args.cores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
