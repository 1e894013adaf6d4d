"""The story index a process leaves beside a SQLite store for the next one.

``aggregator poll`` run from a timer is a new process each time; instead of reading the
features of every item of the last days it loads the index the last run saved, then reads
only the items stored since. A snapshot that is unreadable, of another version or of
another store is not used: the index is then built from the store, and nothing is lost.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import FeedServer, write_config
from sqlalchemy import func, select

from aggregator.config import load_config
from aggregator.pipeline import Poller
from aggregator.store import Store, tables


def _rss(guid: str, link: str, title: str, text: str) -> str:
    published = format_datetime(datetime.now(UTC) - timedelta(hours=2))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Agency</title><link>https://agency.example/</link>
<item><title>{title}</title><link>{link}</link><guid isPermaLink="false">{guid}</guid>
<pubDate>{published}</pubDate><description>{text}</description></item>
</channel></rss>"""


TEXT = (
    "The Committee of Secretaries of Security Councils of the CSTO member states met in "
    "Minsk on Monday to discuss border security, joint exercises and the situation on the "
    "Tajik-Afghan border, the organisation's press service said."
)


@pytest.fixture
def agencies(tmp_path: Path, feed_server: FeedServer, sqlite_url: str) -> Path:
    """Two agencies with one story: the second one's copy is reworded and has its own URL,
    so only the near-duplicate index can tell it is the same story."""
    first = feed_server.add(
        "/a.xml",
        _rss(
            "a-1",
            "https://a.example/csto-minsk",
            "CSTO security council secretaries meet in Minsk",
            TEXT,
        ),
    )
    second = feed_server.add(
        "/b.xml",
        _rss(
            "b-1",
            "https://b.example/news/77",
            "CSTO Security Council secretaries meet in Minsk",
            TEXT.replace("on Monday", "on 30 November").replace("said", "reported"),
        ),
    )
    return write_config(
        tmp_path / "config",
        settings={"database": sqlite_url},
        sources=[
            {"id": "agency-a", "url": first, "name": "A", "language": "en"},
            {"id": "agency-b", "url": second, "name": "B", "language": "en"},
        ],
    )


def _poller(config_dir: Path) -> Poller:
    config = load_config(config_dir)
    store = Store(config.settings.database)
    store.upgrade()
    store.sync_sources(config.sources, datetime.now(UTC))
    return Poller(config, store)


def _poll_first_agency_and_save(config_dir: Path) -> Path:
    """Poll the first agency and save the index, in a process of its own (as the run
    before this one was: string hashes differ between processes)."""
    program = textwrap.dedent(
        f"""
        from datetime import UTC, datetime
        from pathlib import Path
        from aggregator.config import load_config
        from aggregator.pipeline import Poller
        from aggregator.store import Store

        config = load_config(Path({str(config_dir)!r}))
        store = Store(config.settings.database)
        store.upgrade()
        store.sync_sources(config.sources, datetime.now(UTC))
        poller = Poller(config, store)
        [report] = poller.poll_now(["agency-a"])
        assert report.counts.new == 1, report
        assert poller.save_index(min_changes=0)
        poller.close()
        print(store.index_snapshot_path())
        store.close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert path.exists()
    return path


def _poll_second_agency(config_dir: Path) -> tuple[int, int]:
    """(duplicates the second agency's poll found, stories stored)."""
    poller = _poller(config_dir)
    try:
        [report] = poller.poll_now(["agency-b"])
        with poller.store._read() as conn:
            stories = conn.execute(select(func.count()).select_from(tables.stories)).scalar_one()
        return report.counts.duplicate, stories
    finally:
        poller.close()
        poller.store.close()


def test_the_next_process_loads_the_saved_index_and_finds_the_copy(
    agencies: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _poll_first_agency_and_save(agencies)
    with np.load(path, allow_pickle=False) as saved:
        # up to the newest stored item: the next process reads nothing it already has
        assert json.loads(saved["meta"].tobytes())["last_item_id"] == 1
        assert saved["own"].tolist() == []
    caplog.set_level(logging.DEBUG, logger="aggregator.pipeline")
    assert _poll_second_agency(agencies) == (1, 1)
    assert f"story index: 1 entries from {path}, up to item 1" in caplog.text


def test_the_copy_is_found_without_a_snapshot_too(agencies: Path) -> None:
    path = _poll_first_agency_and_save(agencies)
    path.unlink()
    assert _poll_second_agency(agencies) == (1, 1)


@pytest.mark.parametrize("how", ["garbage", "cut in half", "of another store"])
def test_a_snapshot_that_does_not_fit_is_not_used_and_nothing_is_lost(
    agencies: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    path = _poll_first_agency_and_save(agencies)
    if how == "garbage":
        path.write_bytes(b"PK\x03\x04 not a snapshot")
    elif how == "cut in half":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        # a store made anew at the same path (its first item has the same id and GUID)
        other = tmp_path / "other"
        shutil.copytree(agencies, other)
        for leftover in other.glob("*.db*"):
            leftover.unlink()
        database = str(path).removesuffix("-index.npz")
        Path(database).unlink()
        _poll_first_agency_and_save(agencies)  # the new store's own snapshot…
        shutil.copy(path, tmp_path / "new.npz")
        Path(database).unlink()
        _poll_first_agency_and_save(agencies)  # …and a third store, given the second's
        shutil.copy(tmp_path / "new.npz", path)
    caplog.set_level(logging.INFO, logger="aggregator.pipeline")
    assert _poll_second_agency(agencies) == (1, 1)
    expected = "not of this store" if how == "of another store" else "unreadable"
    assert expected in caplog.text
    assert "entries from" not in caplog.text


def test_a_few_new_entries_do_not_rewrite_the_snapshot(agencies: Path) -> None:
    poller = _poller(agencies)
    try:
        [report] = poller.poll_now(["agency-a"])
        assert report.counts.new == 1
        assert not poller.save_index()  # by default at least 1,000 entries
        path = poller.store.index_snapshot_path()
        assert path is not None and not path.exists()
    finally:
        poller.close()
        poller.store.close()


def test_a_store_without_a_file_keeps_no_snapshot(store_url: str) -> None:
    store = Store(store_url)
    try:
        path = store.index_snapshot_path()
        assert (path is None) == (not store.is_sqlite)
    finally:
        store.close()
