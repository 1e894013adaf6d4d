"""The parser processes' side of :class:`aggregator.pipeline.ParserPool`.

Kept apart from the pure :mod:`aggregator.prepare` (this part watches the parent process)
and from :mod:`aggregator.pipeline` (a spawned worker imports this module, and should not
load the store, the fetcher and their libraries).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aggregator.types import PreparedFeed, PrepareJob, Topic

if TYPE_CHECKING:
    from aggregator.topics import CompiledTopic

_compiled: list[CompiledTopic] = []


def init_worker(topic_defs: tuple[Topic, ...], parent_pid: int | None = None) -> None:
    """Process-pool initializer: compile the topic rules once per worker.

    With ``parent_pid``, the worker exits when that process is gone: a daemon killed with
    SIGKILL cannot shut its pool down, and its workers must not live on.
    """
    from aggregator import topics

    _compiled[:] = [topics.compile_topic(t) for t in topic_defs]
    if parent_pid is not None:
        import threading

        threading.Thread(
            target=_exit_with_parent, args=(parent_pid,), name="parent-watch", daemon=True
        ).start()


def _exit_with_parent(pid: int) -> None:
    import os
    import time

    while True:
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass  # exists, owned by someone else: cannot be ours, but do not guess


def prepare_in_worker(job: PrepareJob) -> PreparedFeed:
    # imported here: the daemon imports this module to name these functions to its workers,
    # and does not itself need the parser
    from aggregator.prepare import prepare

    return prepare(job, _compiled)
