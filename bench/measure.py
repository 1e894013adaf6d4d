"""Running a measured child process: wall time, CPU time and peak RSS of its whole tree.

CPU comes from ``wait4``: on the child (which includes the descendants it waited for), and on
every descendant it left behind. A process pool's forkserver is never waited for by the
process that started it, so this process makes itself a child subreaper (Linux): orphans are
handed to it, and it waits for them after the child exits, counting their CPU too. Peak RSS
is the tree's, sampled with psutil every 20 ms and summed over the processes alive, and at
least the child's own ``ru_maxrss``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Measured:
    wall: float  # seconds
    cpu: float  # user + system seconds of the child and its waited-for descendants
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for our side's children: the project importable from this tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONHASHSEED", "0")
    if extra:
        env.update(extra)
    return env


def tree_rss(root: psutil.Process) -> int:
    """Bytes resident in a process and its descendants (those still alive)."""
    total = 0
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


_PR_SET_CHILD_SUBREAPER = 36
_subreaper = False


def become_subreaper() -> bool:
    """Have orphaned descendants re-parented to this process (Linux), once."""
    global _subreaper
    if not _subreaper and sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        _subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    return _subreaper


class _TreeSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.descendants: set[int] = set()
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while True:
            with contextlib.suppress(psutil.Error):
                children = root.children(recursive=True)
                self.descendants.update(p.pid for p in children)
                total = 0
                for p in [root, *children]:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
                self.peak = max(self.peak, total)
            if self.stopped.wait(0.02):
                return


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie another parent will reap counts as gone)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True


def _reap_orphans(pids: set[int], deadline: float) -> tuple[float, int]:
    """Wait for the descendants left behind (handed to us as their subreaper); kill those
    still running at ``deadline``. Returns their CPU seconds and largest maxrss."""
    cpu, maxrss = 0.0, 0
    pending = set(pids)
    killed = False
    give_up = deadline + 10
    while pending and time.perf_counter() < give_up:
        for pid in list(pending):
            try:
                done, _status, usage = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:
                # not our child (yet): its parent reaps it (and counts it), or it comes to us
                if _gone(pid):
                    pending.discard(pid)
                continue
            if done:
                pending.discard(pid)
                cpu += usage.ru_utime + usage.ru_stime
                maxrss = max(maxrss, usage.ru_maxrss * 1024)
        if pending and not killed and time.perf_counter() > deadline:
            # e.g. pool workers of a killed poll, blocked on a queue nobody will write to
            _kill(pending)
            killed = True
        if pending:
            time.sleep(0.01)
    return cpu, maxrss


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 900.0,
) -> Measured:
    """Run ``argv`` to its end (killed with its descendants at ``timeout``) and measure it.

    stdout and stderr go to files, not pipes: a descendant left running holds them open.
    """
    become_subreaper()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=out,
            stderr=err,
        )
        sampler = _TreeSampler(proc.pid)
        sampler.start()
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                _kill(sampler.descendants)
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stopped.set()
        sampler.join()
        # descendants still running (a pool's forkserver) are ours now: their CPU counts too
        orphan_cpu, orphan_rss = _reap_orphans(sampler.descendants, time.perf_counter() + 15)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    peak = max(usage.ru_maxrss * 1024, orphan_rss, sampler.peak)
    return Measured(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime + orphan_cpu,
        peak_rss_mb=peak / 2**20,
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr,
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cpu_seconds(pid: int) -> float:
    """CPU time so far of a running process (the feed server), user + system."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)
