"""Topic membership recompute (issue #5): ``Poller.recompute_topics()`` on a 10k-story store
with the example config's topics. Each run starts from a fresh copy with no membership."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import bulk, measure
from bench.corpus import Corpus
from bench.report import Results, Row, Target
from bench.sides import write_config

LIMIT_S = 5.0


def build_store(corpus: Corpus, workdir: Path, stories: int) -> Path:
    """A config directory whose store holds ``stories`` stories; returns the config."""
    work_db = workdir / "topics.db"
    config = write_config(
        workdir / "config",
        corpus,
        ["http://127.0.0.1:9/"],
        concurrency=1,
        database=f"sqlite:///{work_db}",
    )
    bulk.create_schema(config)
    _, feeds = bulk.add_story_items(work_db, corpus, stories, datetime.now(UTC))
    # list the sources the items use, so topic filters on tags apply as configured
    write_config(
        workdir / "config",
        corpus,
        ["http://127.0.0.1:9/"] * feeds,
        concurrency=1,
        database=f"sqlite:///{work_db}",
    )
    shutil.copyfile(work_db, workdir / "topics-empty.db")
    return config


def run(
    results: Results,
    corpus: Corpus,
    workdir: Path,
    *,
    stories: int,
    runs: int,
    report: bool = True,
    log: Callable[[str], None],
) -> Path:
    """Returns the config directory, whose store then has its membership (for serving)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"topics: recompute on {stories:,} stories")
    config = build_store(corpus, workdir, stories)
    outs = []
    for _ in range(runs):
        shutil.copyfile(workdir / "topics-empty.db", workdir / "topics.db")
        for suffix in ("-wal", "-shm"):
            Path(f"{workdir / 'topics.db'}{suffix}").unlink(missing_ok=True)
        m = measure.run(
            [sys.executable, "-m", "bench.topics_runner", "--config", str(config)],
            env=measure.child_env(),
        )
        if m.returncode != 0:
            raise RuntimeError(f"topics runner failed: {m.stderr[-3000:]}")
        out = json.loads(m.stdout.strip().splitlines()[-1])
        out["rss"] = m.peak_rss_mb
        outs.append(out)
    if not report:
        return config
    first = measure.median([o["first_s"] for o in outs])
    again = measure.median([o["again_s"] for o in outs])
    o = outs[-1]
    results.add(
        Row(
            "topics: Poller.recompute_topics()",
            f"{o['stories']:,}",
            "ours",
            {
                "runs": str(len(outs)),
                "items": f"{o['items']:,}",
                "memberships": f"{o['memberships']:,}",
                "first s": f"{first:.2f}",
                "again s": f"{again:.2f}",
                "peak RSS MB": f"{measure.median([x['rss'] for x in outs]):.0f}",
            },
            "first: no membership stored; again: nothing changed",
        )
    )
    worst = max(first, again)
    results.target(
        Target(
            f"Membership recompute for {o['stories']:,} stories (issue #5)",
            f"{first:.2f} s (first), {again:.2f} s (again)",
            f"< {LIMIT_S:.0f} s",
            worst < LIMIT_S,
        )
    )
    return config
