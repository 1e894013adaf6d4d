"""Results: table rows, target lines (PASS/FAIL) and RESULTS.md."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    n: str  # feeds, stored items or requests, as text
    side: str
    cells: dict[str, str]
    note: str = ""


@dataclass
class Target:
    name: str
    measured: str  # what was measured, in words and numbers
    goal: str
    passed: bool | None  # None: could not be measured
    note: str = ""

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "N/A"}[self.passed]

    def line(self) -> str:
        note = f" ({self.note})" if self.note else ""
        return f"{self.verdict}  {self.name}: {self.measured}; target {self.goal}{note}"


@dataclass
class Results:
    mode: str
    started: datetime
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profiles: list[tuple[str, str]] = field(default_factory=list)  # (title, text)
    elapsed: float = 0.0

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(format_row(row), flush=True)

    def target(self, target: Target) -> None:
        self.targets.append(target)
        print(target.line(), flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"note: {text}", flush=True)


COLUMNS = (
    "runs",
    "workers",
    "wall s",
    "CPU s",
    "peak RSS MB",
    "items stored",
    "items/s",
    "feeds/s",
    "server CPU",
)


def format_row(row: Row) -> str:
    cells = "  ".join(f"{k}={v}" for k, v in row.cells.items())
    note = f"  [{row.note}]" if row.note else ""
    return f"{row.scenario:<28} {row.n:>7} {row.side:<8} {cells}{note}"


def _table(rows: list[Row]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        for key in row.cells:
            if key not in columns:
                columns.append(key)
    header = ["scenario", "N", "side", *columns, "note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = [row.scenario, row.n, row.side, *(row.cells.get(c, "") for c in columns), row.note]
        lines.append("| " + " | ".join(v.replace("|", "/") for v in values) + " |")
    return lines


def tables(results: Results) -> list[str]:
    """One table per group of scenarios that share columns."""
    groups: dict[str, list[Row]] = {}
    for row in results.rows:
        groups.setdefault(row.scenario.split(":")[0], []).append(row)
    out: list[str] = []
    for name, rows in groups.items():
        out += [f"### {name}", "", *_table(rows), ""]
    return out


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()} (ours)"
    )


def git_revision(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    rev = out.stdout.strip() or "unknown"
    return rev + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def markdown(results: Results, *, root: Path, command: str, context: list[str]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{command}` on {results.started:%Y-%m-%d %H:%M} UTC "
        f"({results.mode} mode, {results.elapsed / 60:.1f} min), revision {git_revision(root)}.",
        "",
        f"Machine: {machine()}.",
        *context,
        "",
        "## Targets",
        "",
        "```",
        *(t.line() for t in results.targets),
        "```",
        "",
        "## Measurements",
        "",
        *tables(results),
    ]
    if results.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in results.notes), ""]
    if results.profiles:
        lines += ["## Profiles of the targets that fail", ""]
        for title, text in results.profiles:
            lines += [f"### {title}", "", "```", text.rstrip(), "```", ""]
    lines += [
        "## Reproduce",
        "",
        "```sh",
        "pip install '.[bench]'        # psutil; wrk comes from Debian's packages when missing",
        "python -m bench all           # ~15 min on 2 cores; `--quick` for a 2-minute smoke run",
        "```",
        "",
        "Each scenario also runs alone: `python -m bench poll|store|serve|footprint|topics`.",
        "",
    ]
    return "\n".join(lines)


def now() -> datetime:
    return datetime.now(UTC)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
