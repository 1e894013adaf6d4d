"""Start many short ``aggregator poll`` runs quickly, for the kill -9 tests.

Python and the project's imports (SciPy comes with the story index) cost about a second per
process; the kill tests start fifty polls each. This launcher imports everything once, then
forks one poll per request: each child is a separate process running the ``aggregator poll``
command (``aggregator.cli.main``) with its own database connections, so killing it with
SIGKILL is the same as killing a poll started from a shell.

Each child leads a process group of its own, which its parser processes join: a test kills
the group (``os.killpg``), as a crash of the machine or systemd's cgroup kill would.

Protocol on stdin/stdout, one line each: ``poll`` forks a poll and answers its pid (also its
process group); ``wait PID`` answers the child's exit status (negative: the signal that
killed it).

    python tests/poll_launcher.py -q --config DIR
"""

from __future__ import annotations

import os
import sys

# No BLAS worker threads: a forked child must not inherit a half-copied thread pool.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import aggregator.pipeline
import aggregator.stories
from aggregator import cli

assert aggregator.pipeline and aggregator.stories  # imported for the children


def main(poll_args: list[str]) -> None:
    for line in sys.stdin:
        command = line.split()
        if command == ["poll"]:
            pid = os.fork()
            if pid == 0:
                code = 70
                try:
                    os.setsid()
                    devnull = os.open(os.devnull, os.O_RDWR)
                    for fd in (0, 1, 2):  # stdin/stdout are the protocol's pipes
                        os.dup2(devnull, fd)
                    code = cli.main(["poll", *poll_args])
                finally:
                    os._exit(code)
            print(pid, flush=True)
        elif len(command) == 2 and command[0] == "wait":
            _, status = os.waitpid(int(command[1]), 0)
            print(os.waitstatus_to_exitcode(status), flush=True)
        else:
            print(f"unknown command: {line.strip()}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
