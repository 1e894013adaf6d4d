"""Store scaling: the per-item cost of ingesting a fixed batch into stores of growing size.

A store is filled directly with SQL (:mod:`bench.bulk`) to 10k, 100k and 1M items; for each
size a copy of it ingests the same batches of corpus feeds through the real pipeline
(:mod:`bench.ingest_runner`), and the store's share of the time per item is compared.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import bulk, measure
from bench.corpus import Corpus
from bench.feedserver import ServerProcess
from bench.report import Results, Row, Target
from bench.sides import write_config

TOPICS = ("cis-security", "eurasian-economy")


def _copy_store(src: Path, dst: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{dst}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(src, dst)


def run(
    results: Results,
    corpus: Corpus,
    server: ServerProcess,
    workdir: Path,
    *,
    sizes: tuple[int, ...],
    batch_feeds: int,
    batches: int,
    profile: bool = False,
    log: Callable[[str], None],
) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    work_db = workdir / "work.db"
    base_db = workdir / "base.db"
    feeds = batch_feeds * (batches + 1)  # one more batch for a profile, if one is needed
    config = write_config(
        workdir / "config",
        corpus,
        server.urls(feeds),
        concurrency=1,
        database=f"sqlite:///{work_db}",
    )
    ids = [corpus.spec(f).id for f in range(feeds)]
    bulk.create_schema(config)
    shutil.move(work_db, base_db)
    now = datetime.now(UTC)
    per_size: dict[int, float] = {}
    for size in sizes:
        log(f"store: {size:,} stored items")
        bulk.add_bulk_items(base_db, size, now, TOPICS)
        _copy_store(base_db, work_db)
        outs = []
        for b in range(batches):
            server.set_round(0)
            m = measure.run(
                [
                    sys.executable,
                    "-m",
                    "bench.ingest_runner",
                    "--config",
                    str(config),
                    *ids[b * batch_feeds : (b + 1) * batch_feeds],
                ],
                env=measure.child_env(),
            )
            if m.returncode != 0:
                raise RuntimeError(f"ingest runner failed: {m.stderr[-3000:]}")
            outs.append(json.loads(m.stdout.strip().splitlines()[-1]))
        ingest_ms = measure.median([o["ingest_ms_per_item"] for o in outs])
        poll_ms = measure.median([o["poll_ms_per_item"] for o in outs])
        per_size[size] = ingest_ms
        base = per_size[sizes[0]]
        results.add(
            Row(
                "store scaling: ingest a fixed batch",
                f"{size:,}",
                "ours",
                {
                    "runs": str(len(outs)),
                    "batch items": f"{int(measure.median([o['items'] for o in outs])):,}",
                    "ingest ms/item": f"{ingest_ms:.2f}",
                    "whole poll ms/item": f"{poll_ms:.2f}",
                    f"vs {sizes[0]:,}": f"{ingest_ms / base:.2f}×",
                },
                "N = items already stored",
            )
        )
    small, large = sizes[0], sizes[-1]
    if profile and per_size[large] / per_size[small] > 1.5:
        log(f"profile: ingest at {large:,} stored items")
        server.set_round(0)
        text = _profile(config, ids[batches * batch_feeds :])
        results.profiles.append((f"ingest of a batch into a store of {large:,} items", text))
    for path in (work_db, base_db):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    results.target(
        Target(
            f"Per-item ingest cost at {large:,} stored items",
            f"{per_size[large]:.2f} ms vs {per_size[small]:.2f} ms at {small:,} = "
            f"{per_size[large] / per_size[small]:.2f}×",
            "≤ 1.5×",
            per_size[large] / per_size[small] <= 1.5,
        )
    )
    if len(sizes) > 2:
        mid = sizes[1]
        results.target(
            Target(
                f"Per-item ingest cost at {mid:,} stored items (issue #4)",
                f"{per_size[mid]:.2f} ms vs {per_size[small]:.2f} ms at {small:,} = "
                f"{per_size[mid] / per_size[small]:.2f}×",
                "< 1.5×",
                per_size[mid] / per_size[small] < 1.5,
            )
        )


def _profile(config: Path, ids: list[str]) -> str:
    import subprocess

    result = subprocess.run(
        [
            sys.executable, "-m", "bench.profile", "--top", "25", "--",
            "bench.ingest_runner", "--config", str(config), *ids,
        ],
        env=measure.child_env(),
        capture_output=True,
        text=True,
    )  # fmt: skip
    marker = "=== profile ==="
    return (
        result.stderr.split(marker, 1)[1].strip()
        if marker in result.stderr
        else result.stderr[-3000:]
    )
