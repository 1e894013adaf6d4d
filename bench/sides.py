"""The two pollers under test, behind one small interface.

``Ours`` runs ``aggregator poll --config DIR`` as a user does (a fresh process per round,
SQLite store, ``concurrency`` = the worker count). ``Peer`` runs lemon24's ``reader``
``update_feeds(workers=W)`` in its own Python >= 3.12 virtualenv (``bench/.peer-venv``),
made and filled by :func:`ensure_peer_venv`.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import measure
from bench.corpus import Corpus

BENCH = Path(__file__).resolve().parent
PEER_VENV = BENCH / ".peer-venv"
PEER_REQUIREMENT = "reader>=3.27"
EXAMPLE_TOPICS = measure.ROOT / "config" / "topics.yaml"


CUT = -9  # the exit code of a round killed at its time cap


@dataclass(frozen=True)
class PollRun:
    side: str
    workers: str  # ours: "THREADS/PROCESSES" (concurrency/processes); reader: W
    measured: measure.Measured
    items_total: int  # items stored after the round
    feeds_ok: int  # 200 and parsed
    feeds_not_modified: int
    feeds_failed: int
    detail: dict[str, Any]

    @property
    def cut(self) -> bool:
        return self.measured.returncode == CUT

    @property
    def feeds_polled(self) -> int:
        return self.feeds_ok + self.feeds_not_modified + self.feeds_failed


def cut_run(side: str, workers: str, m: measure.Measured, items: int) -> PollRun:
    return PollRun(side, workers, m, items, 0, 0, 0, {"cut": True})


# ----------------------------------------------------------------------------- ours


def write_config(
    directory: Path,
    corpus: Corpus,
    urls: list[str],
    *,
    concurrency: int,
    processes: int | str = "auto",
    database: str | None = None,
    listen: str = "127.0.0.1:8080",
    per_host: int = 2,
) -> Path:
    """A config directory for the corpus feeds, with the example config's topics."""
    directory.mkdir(parents=True, exist_ok=True)
    settings = {
        "database": database or f"sqlite:///{directory / 'store.db'}",
        "listen": listen,
        "base_url": f"http://{listen}/",
        "concurrency": concurrency,
        "processes": processes,
        "per_host": per_host,
        "defaults": {"interval": "15m", "timeout": "30s", "max_bytes": "10MB"},
        "tracking_params": ["ref"],
    }
    sources = []
    for f, url in enumerate(urls):
        spec = corpus.spec(f)
        sources.append(
            {
                "id": spec.id,
                "url": url,
                "name": spec.id.upper(),
                "language": spec.language,
                "priority": f % 10,
                "tags": ["agency", spec.language],
            }
        )
    (directory / "aggregator.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    (directory / "sources.yaml").write_text(
        yaml.safe_dump({"sources": sources}, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    shutil.copyfile(EXAMPLE_TOPICS, directory / "topics.yaml")
    return directory


def set_setting(config: Path, key: str, value: Any) -> None:
    """Change one key of a config directory's aggregator.yaml."""
    path = config / "aggregator.yaml"
    settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    settings[key] = value
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")


def aggregator_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "aggregator", *args]


_TOTAL = re.compile(
    r"total: (\d+) sources, (\d+) failed; (\d+) new, (\d+) duplicate, (\d+) updated, (\d+) unchanged"
)


class Ours:
    name = "ours"

    def __init__(self, workdir: Path, corpus: Corpus, urls: list[str], workers: str) -> None:
        self.workdir = workdir
        self.workers = workers
        threads, _, processes = workers.partition("/")
        self.config = write_config(
            workdir / "config",
            corpus,
            urls,
            concurrency=int(threads),
            processes=int(processes) if processes.isdigit() else processes or "auto",
        )
        self.db = self.config / "store.db"
        # Untimed setup, as a user has it before polling: schema migrated, sources synced.
        result = subprocess.run(
            aggregator_cmd("status", "--config", str(self.config)),
            env=measure.child_env(),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"aggregator status failed: {result.stderr[-2000:]}")

    def finished(self) -> list[str]:
        """Sources polled successfully so far (a cut round leaves the rest unpolled)."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT id FROM sources WHERE last_success_at IS NOT NULL")
            return sorted(r[0] for r in rows)

    def poll(self, *, timeout: float = 900.0, only: list[str] | None = None) -> PollRun:
        """One ``aggregator poll`` round; killed at ``timeout`` (what it committed stays)."""
        m = measure.run(
            aggregator_cmd("poll", "--config", str(self.config), "-q", *(only or ())),
            env=measure.child_env(),
            timeout=timeout,
        )
        if m.returncode == CUT:
            return cut_run(self.name, self.workers, m, count_rows(self.db, "items"))
        lines = m.stdout.splitlines()
        not_modified = sum(1 for line in lines if ": not modified (" in line)
        failed_lines = [line for line in lines if ": FAILED" in line]
        ok = sum(1 for line in lines if re.search(r": \d+ new, ", line))
        detail: dict[str, Any] = {}
        total = _TOTAL.search(m.stdout)
        if total:
            keys = ("sources", "failed", "new", "duplicate", "updated", "unchanged")
            detail = dict(zip(keys, (int(g) for g in total.groups()), strict=True))
        if m.returncode not in (0, 1) or total is None:
            raise RuntimeError(
                f"aggregator poll exited {m.returncode}: {m.stderr[-3000:]}{m.stdout[-1000:]}"
            )
        if failed_lines:
            detail["failures"] = failed_lines[:5]
        return PollRun(
            self.name,
            self.workers,
            m,
            count_rows(self.db, "items"),
            ok,
            not_modified,
            len(failed_lines),
            detail,
        )


def count_rows(db: Path, table: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# ----------------------------------------------------------------------------- the peer


def _python_version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    major, minor = out.stdout.split()
    return int(major), int(minor)


def find_peer_python() -> str:
    """A Python >= 3.12 for the peer: $BENCH_PEER_PYTHON, python3.12/3.13 on PATH, or pyenv's."""
    candidates = [os.environ.get("BENCH_PEER_PYTHON", "")]
    for name in ("python3.12", "python3.13"):
        candidates.append(shutil.which(name) or "")
    roots = [os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv")]
    for root in filter(None, roots):
        for version in ("3.12", "3.13"):
            candidates += sorted(glob.glob(f"{root}/versions/{version}*/bin/python{version}"))
    candidates += ["/usr/bin/python3.12", "/usr/bin/python3.13", "/usr/local/bin/python3.12"]
    for python in filter(None, candidates):
        found = _python_version(python)
        if found and found >= (3, 12):
            return python
    raise RuntimeError("the peer needs Python >= 3.12 (set BENCH_PEER_PYTHON to one)")


def peer_python() -> Path:
    return PEER_VENV / "bin" / "python"


def peer_python_version() -> str:
    version = _python_version(str(peer_python()))
    return f"Python {version[0]}.{version[1]}" if version else "Python ?"


def peer_version() -> str | None:
    python = peer_python()
    if not python.exists():
        return None
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('reader'))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_peer_venv(log: Any = print) -> str:
    """Make ``bench/.peer-venv`` with reader in it, once; return reader's version."""
    version = peer_version()
    if version:
        return version
    python = find_peer_python()
    log(f"making the peer virtualenv with {python} and installing {PEER_REQUIREMENT} …")
    subprocess.run([python, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
    subprocess.run(
        [str(peer_python()), "-m", "pip", "install", "-q", PEER_REQUIREMENT],
        check=True,
    )
    version = peer_version()
    if not version:
        raise RuntimeError("reader did not install into the peer virtualenv")
    return version


class Peer:
    name = "reader"

    def __init__(self, workdir: Path, corpus: Corpus, urls: list[str], workers: str) -> None:
        del corpus
        self.workdir = workdir
        self.workers = workers
        workdir.mkdir(parents=True, exist_ok=True)
        self.db = workdir / "reader.sqlite"
        urls_file = workdir / "urls.txt"
        urls_file.write_text("\n".join(urls) + "\n", encoding="utf-8")
        result = subprocess.run(
            [
                str(peer_python()),
                str(BENCH / "peer_runner.py"),
                "setup",
                str(self.db),
                str(urls_file),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"reader setup failed: {result.stderr[-2000:]}")

    def finished(self) -> list[str]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT url FROM feeds WHERE last_updated IS NOT NULL")
            return sorted(r[0] for r in rows)

    def poll(self, *, timeout: float = 900.0, only: list[str] | None = None) -> PollRun:
        argv = [str(peer_python()), str(BENCH / "peer_runner.py"), "update", str(self.db)]
        argv.append(str(self.workers))
        if only is not None:
            only_file = self.workdir / "only.txt"
            only_file.write_text("\n".join(only) + "\n", encoding="utf-8")
            argv.append(str(only_file))
        m = measure.run(argv, timeout=timeout)
        if m.returncode == CUT:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
                items = int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])
            return cut_run(self.name, self.workers, m, items)
        if m.returncode != 0:
            raise RuntimeError(f"reader update exited {m.returncode}: {m.stderr[-3000:]}")
        detail = json.loads(m.stdout.strip().splitlines()[-1])
        return PollRun(
            self.name,
            self.workers,
            m,
            int(detail["entries_total"]),
            int(detail["feeds_updated"]),
            int(detail["feeds_not_modified"]),
            int(detail["feeds_failed"]),
            detail,
        )
