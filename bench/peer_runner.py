"""The peer's side: lemon24's ``reader`` polling the corpus, run by the peer virtualenv's Python.

    peer_runner.py setup DB URLS_FILE      add the feeds to a new reader database
    peer_runner.py update DB WORKERS [ONLY_FILE]
                                           update_feeds(workers=W) once (only the feeds listed
                                           in ONLY_FILE, when given); print a JSON summary

Standard library and ``reader`` only: this file runs under Python >= 3.12, apart from the
project's environment.
"""

from __future__ import annotations

import json
import resource
import sys
import time

STARTED = time.perf_counter()

from reader import make_reader  # noqa: E402  (the import is part of the measured run)


def setup(db: str, urls_file: str) -> dict[str, object]:
    reader = make_reader(db)
    with open(urls_file, encoding="utf-8") as f:
        urls = [line.strip() for line in f if line.strip()]
    for url in urls:
        reader.add_feed(url, exist_ok=True)
    reader.close()
    return {"feeds": len(urls)}


def update(db: str, workers: int, only_file: str | None) -> dict[str, object]:
    reader = make_reader(db)
    if only_file:
        # a round over the feeds a cut round finished: the others sit this one out
        with open(only_file, encoding="utf-8") as f:
            only = {line.strip() for line in f if line.strip()}
        for feed in reader.get_feeds():
            if feed.url not in only:
                reader.disable_feed_updates(feed)
    begun = time.perf_counter()
    updated = not_modified = failed = new = modified = 0
    for result in reader.update_feeds_iter(scheduled=False, workers=workers):
        value = result.value
        if value is None:
            not_modified += 1
        elif isinstance(value, Exception):
            failed += 1
        else:
            updated += 1
            new += value.new
            modified += value.modified
    update_s = time.perf_counter() - begun
    entries = reader.get_entry_counts().total
    reader.close()
    return {
        "update_s": update_s,
        "process_s": time.perf_counter() - STARTED,
        "feeds_updated": updated,
        "feeds_not_modified": not_modified,
        "feeds_failed": failed,
        "entries_new": new,
        "entries_modified": modified,
        "entries_total": entries,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str]) -> int:
    if argv[1] == "setup":
        out = setup(argv[2], argv[3])
    elif argv[1] == "update":
        out = update(argv[2], int(argv[3]), argv[4] if len(argv) > 4 else None)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
