"""Rebuilding the story index from stored features in bulk: the same index, row by row."""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_stories import corpus, items  # noqa: F401 (fixtures)

from aggregator import stories
from aggregator.pipeline import Poller
from aggregator.stories import StoryFeatures, StoryIndex, StoryMatch, features
from aggregator.types import Config, Item, Settings

Row = tuple[str, bytes]


def _variants(originals: list[Item], per_item: int) -> list[Item]:
    """Copies of each item as agencies make them: same URL or text again, reworded titles,
    shortened leads, a missing language; spread over several days."""
    out = list(originals)
    rng = random.Random(5)
    for k in range(per_item):
        for n, item in enumerate(originals):
            words = item.title.split()
            if k % 3 == 0 and len(words) > 3:
                words.pop(rng.randrange(len(words)))
            elif k % 3 == 1:
                rng.shuffle(words)
            published = item.published + timedelta(hours=rng.uniform(-90, 90))
            out.append(
                replace(
                    item,
                    guid=f"{item.guid}/{k}",
                    url=item.url if k % 4 == 0 else f"{item.url}?v={k}",
                    content_hash=item.content_hash if k % 4 == 1 else f"h{k}-{n}",
                    title=" ".join(words),
                    summary=item.summary[: rng.choice([80, 200, 10_000])],
                    language=None if k % 5 == 4 else item.language,
                    published=published,
                    updated=published,
                )
            )
    return out


def _stored(ingested: list[Item]) -> list[Row]:
    """(story key, stored features) in ingest order, the story keys as a live index gives."""
    index = StoryIndex()
    rows = []
    for k, item in enumerate(sorted(ingested, key=lambda it: (it.published, it.guid))):
        f = features(item)
        match = index.find(f)
        key = match.story_key if match else f"s{k}"
        index.add(key, f)
        rows.append((key, f.to_bytes()))
    return rows


@pytest.fixture(scope="module")
def rows(items: list[Item]) -> list[Row]:  # noqa: F811
    return _stored(_variants(items, 8))  # ~3000 rows


def _one_by_one(rows: list[Row]) -> StoryIndex:
    index = StoryIndex()
    for key, blob in rows:
        index.add(key, StoryFeatures.from_bytes(blob))
    return index


def _queries(rows: list[Row]) -> Iterator[StoryFeatures]:
    """Each stored item, a copy under a new URL, and an edited copy that has to be found by
    its text or anchors."""
    rng = random.Random(9)
    for _, blob in rows:
        f = StoryFeatures.from_bytes(blob)
        yield f
        yield replace(f, url=f.url + "#copy")
        yield replace(
            f,
            url=f.url + "#edited",
            content_hash="edited",
            published=f.published + timedelta(hours=rng.uniform(-30, 30)),
        )


def _answers(index: StoryIndex, queries: list[StoryFeatures]) -> list[list[StoryMatch]]:
    return [index.find_all(f) for f in queries]


def test_bulk_load_answers_every_query_as_adding_row_by_row(
    rows: list[Row], monkeypatch: pytest.MonkeyPatch
) -> None:
    queries = list(_queries(rows))
    expected = _answers(_one_by_one(rows), queries)
    reasons = {m.reason for matches in expected for m in matches}
    assert reasons == {"url", "hash", "near", "cross"}  # every rule is exercised
    assert sum(len(m) > 1 for m in expected) > 0  # and items bridging stories

    bulk = StoryIndex()
    assert bulk.add_many(iter(rows)) == [True] * len(rows)
    assert len(bulk) == len(rows)
    assert _answers(bulk, queries) == expected

    # in several calls of several chunks each, as a daemon catches up
    monkeypatch.setattr(stories, "_LOAD_CHUNK", 97)
    parts = StoryIndex()
    for start, end in [(0, 1000), (1000, 1001), (1001, 1500), (1500, len(rows))]:
        assert all(parts.add_many(rows[start:end]))
    assert _answers(parts, queries) == expected


def test_a_bulk_loaded_index_then_lives_on_as_any_other(rows: list[Row]) -> None:
    """Adds, prunes (forgotten entries dropped, entries renumbered) and merges after a load."""
    first = StoryFeatures.from_bytes(rows[0][1])
    old = [
        replace(
            first,
            url=f"{first.url}?old={k}",
            content_hash=f"old{k}",
            published=first.published - timedelta(days=30, minutes=k),
        )
        for k in range(5000)
    ]
    half = len(rows) // 2
    loaded = [(f"old{k % 7}", f.to_bytes()) for k, f in enumerate(old)] + rows[:half]
    one, bulk = _one_by_one(loaded), StoryIndex()
    bulk.add_many(loaded)
    for index in (one, bulk):
        for key, blob in rows[half:]:
            index.add(key, StoryFeatures.from_bytes(blob))
        assert index.prune(first.published - timedelta(days=1)) == len(old)
        cutoff = StoryFeatures.from_bytes(rows[half][1]).published - timedelta(hours=40)
        assert index.prune(cutoff) > 0
        index.merge(rows[-1][0], rows[0][0])
        assert index.find(old[0]) is None
    assert len(one) == len(bulk)
    queries = list(_queries(rows))
    assert _answers(bulk, queries) == _answers(one, queries)


def test_a_restart_midway_through_the_corpus_clusters_it_the_same(
    items: list[Item],  # noqa: F811
) -> None:
    """The labelled corpus, its index rebuilt from the stored rows halfway through."""
    ordered = sorted(range(len(items)), key=lambda k: (items[k].published, k))
    labels = [0] * len(items)
    index, stored, stories_made = StoryIndex(), [], 0
    for n, k in enumerate(ordered):
        if n == len(ordered) // 2:
            index = StoryIndex()
            assert all(index.add_many(stored))
        f = features(items[k])
        match = index.find(f)
        if match is None:
            key, stories_made = str(stories_made), stories_made + 1
        else:
            key = match.story_key
        index.add(key, f)
        stored.append((key, f.to_bytes()))
        labels[k] = int(key)
    assert labels == stories.cluster(items)


# --------------------------------------------------------------------------- snapshots


SECRET = b"the store's id"  # the index saved and the one loading it share it


def _through_a_file(arrays: dict[str, Any]) -> Any:
    """The arrays as a process saving them and another loading them sees them."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    return np.load(buffer, allow_pickle=False)


def _lived(rows: list[Row]) -> StoryIndex:
    """An index with a history: loaded, added to, pruned (renumbered), merged."""
    half = len(rows) // 2
    index = StoryIndex(secret=SECRET)
    index.add_many(rows[:half])
    for key, blob in rows[half:]:
        index.add(key, StoryFeatures.from_bytes(blob))
    cutoff = StoryFeatures.from_bytes(rows[half][1]).published - timedelta(hours=40)
    assert index.prune(cutoff) > 0
    index.merge(rows[-1][0], rows[0][0])
    return index


def test_a_snapshot_restores_the_index_that_took_it(rows: list[Row]) -> None:
    original = _lived(rows)
    restored = StoryIndex(secret=SECRET)
    restored.restore(_through_a_file(original.snapshot()))
    queries = list(_queries(rows))
    assert len(restored) == len(original)
    assert _answers(restored, queries) == _answers(original, queries)
    # and it lives on the same: more adds (a new language too), a prune, a merge
    extra = [
        (f"late{k}", replace(StoryFeatures.from_bytes(blob), url=f"https://late.example/{k}"))
        for k, (_, blob) in enumerate(rows[:300])
    ]
    extra.append(("kk", replace(extra[0][1], language="kk", url="https://kk.example/")))
    for index in (original, restored):
        for key, f in extra:
            index.add(key, f)
        index.prune(StoryFeatures.from_bytes(rows[len(rows) // 2][1]).published)
        index.merge("late1", "late2")
    assert len(restored) == len(original)
    queries += [f for _, f in extra]
    assert _answers(restored, queries) == _answers(original, queries)


def test_a_snapshot_from_another_process_answers_the_same(rows: list[Row], tmp_path: Path) -> None:
    """Saved by one process, loaded by another: the string keys of the postings must be the
    same in both (Python's own string hash is not). With another secret it is refused."""
    (tmp_path / "rows.pickle").write_bytes(pickle.dumps(rows))
    program = textwrap.dedent(
        f"""
        import pickle
        import numpy as np
        from aggregator.stories import StoryIndex

        rows = pickle.loads(open({str(tmp_path / "rows.pickle")!r}, "rb").read())
        index = StoryIndex(secret=b"store one")
        index.add_many(rows)
        with open({str(tmp_path / "index.npz")!r}, "wb") as f:
            np.savez(f, **index.snapshot())
        """
    )
    env = {**os.environ, "PYTHONHASHSEED": "1"}  # whatever this process's is: not it
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    here = StoryIndex(secret=b"store one")
    here.add_many(rows)
    queries = list(_queries(rows))
    expected = _answers(here, queries)
    assert {m.reason for matches in expected for m in matches} == {"url", "hash", "near", "cross"}
    with np.load(tmp_path / "index.npz", allow_pickle=False) as saved:
        loaded = StoryIndex(secret=b"store one")
        loaded.restore(saved)
        assert _answers(loaded, queries) == expected
        with pytest.raises(ValueError, match="another secret"):
            StoryIndex(secret=b"store two").restore(saved)


def _broken(arrays: dict[str, Any], how: str) -> dict[str, Any]:
    broken = dict(arrays)
    if how == "a posting missing":
        del broken["anchor_ids_0"]
    elif how == "shingles cut short":
        broken["pool"] = arrays["pool"][:-10]
    elif how == "a posting unsorted":
        broken["shingle_keys_0"] = arrays["shingle_keys_0"][::-1].copy()
    elif how == "a posting past the entries":
        ids = arrays["url_ids_0"].copy()
        ids[0] = len(arrays["published"])
        broken["url_ids_0"] = ids
    elif how == "an unknown language":
        language = arrays["language"].copy()
        language[0] = 999
        broken["language"] = language
    elif how == "story keys cut short":
        broken["story"] = arrays["story"][:-3]
    elif how == "one story key too few":
        broken["story"] = stories._pack(stories._unpack(arrays["story"])[:-1])
    elif how == "a column of another type":
        broken["tokens"] = arrays["tokens"].astype(np.int64)
    elif how == "a wrong count of live entries":
        broken["live"] = arrays["live"] + 1
    elif how == "strings not UTF-8":
        packed = arrays["languages"].copy()
        packed[-1] = 0xFF
        broken["languages"] = packed
    return broken


@pytest.mark.parametrize(
    "how",
    [
        "a posting missing",
        "shingles cut short",
        "a posting unsorted",
        "a posting past the entries",
        "an unknown language",
        "story keys cut short",
        "one story key too few",
        "a column of another type",
        "a wrong count of live entries",
        "strings not UTF-8",
    ],
)
def test_a_broken_snapshot_is_refused_and_the_index_left_as_it_was(
    rows: list[Row], how: str
) -> None:
    arrays = _lived(rows).snapshot()
    index = StoryIndex(secret=SECRET)
    index.add_many(rows[:200])
    queries = list(_queries(rows[:300]))
    before = _answers(index, queries)
    index.restore(_through_a_file(arrays))  # whole, it would do
    index = StoryIndex(secret=SECRET)
    index.add_many(rows[:200])
    with pytest.raises(ValueError) as refused:
        index.restore(_through_a_file(_broken(arrays, how)))
    assert "secret" not in str(refused.value)
    assert len(index) == 200
    assert _answers(index, queries) == before


# --------------------------------------------------------------------------- unreadable rows


def _blob(payload: bytes, *, version: int = 1, micros: int = 1_700_000_000_000_000) -> bytes:
    shingles = struct.pack("<6I", 1, 2, 3, 4, 5, 6)
    head = struct.pack("<2sBqHH", b"SF", version, micros, stories.NUM_PERM, 6)
    return head + bytes(4 * stories.NUM_PERM) + shingles + payload


def _payload(*fields: Any, **dumps: Any) -> bytes:
    return json.dumps(list(fields), **dumps).encode("utf-8")


@pytest.mark.parametrize("chunk", [1, 5, stories._LOAD_CHUNK])
def test_rows_from_bytes_refuses_are_skipped_and_the_others_kept(
    rows: list[Row], chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stories, "_LOAD_CHUNK", chunk)  # 1: each row is checked alone
    good = _blob(_payload("en", "https://x.example/1", "h1", "", ["p:lksnk", "n:5.4"]))
    odd_but_valid = [
        _blob(_payload("en", 'https://x.example/"q"\\', "h2", "", ["d:09-02"])),  # escapes
        _blob(_payload("ru", "https://x.example/3", "h3", "", ["p:мнск"], ensure_ascii=True)),
        _blob(_payload("en", "https://x.example/4", "h4", "k", ["n:100"], indent=1)),
        _blob(_payload("", "", "", "", [])),
    ]
    unreadable = [
        b"",
        b"SF",
        b"XX" + good[2:],
        _blob(_payload("en", "u", "h", "", []), version=2),
        _blob(_payload("en", "u", "h", "", []), micros=1 << 62),  # after year 9999
        good[:-1],
        _blob(b""),
        _blob(b'"abcde"'),
        _blob(_payload(1, "u", "h", "", [])),
        _blob(_payload("en", "u", "h", "", [""])),
        _blob(_payload("en", "u", "h", "", ["p:x", 5])),
        _blob(_payload("en", "u", "h", "", "n:5")),
        _blob(_payload("en", "u", "h", [])),
        _blob(b'["en","u","h","",["\xff"]]'),
    ]
    for blob in unreadable:
        with pytest.raises(ValueError):
            StoryFeatures.from_bytes(blob)
    mixed = [*rows[:300], *((f"bad{k}", b) for k, b in enumerate(unreadable)), *rows[300:600]]
    mixed += [(f"odd{k}", b) for k, b in enumerate(odd_but_valid)]
    mixed += [("good", good), *rows[600:900]]
    readable = [not key.startswith("bad") for key, _ in mixed]

    index = StoryIndex()
    assert index.add_many(mixed) == readable
    kept = [row for row, ok in zip(mixed, readable, strict=True) if ok]
    assert len(index) == len(kept)
    queries = list(_queries(kept))
    assert _answers(index, queries) == _answers(_one_by_one(kept), queries)
    match = index.find(StoryFeatures.from_bytes(odd_but_valid[0]))
    assert match == StoryMatch("odd0", "url", 1.0)


def test_nothing_is_added_when_reading_the_rows_fails(rows: list[Row]) -> None:
    def failing() -> Iterator[Row]:
        yield from rows[:10]
        raise OSError("connection lost")

    index = StoryIndex()
    with pytest.raises(OSError):
        index.add_many(failing())
    assert len(index) == 0
    assert index.find(StoryFeatures.from_bytes(rows[0][1])) is None


# --------------------------------------------------------------------------- the poller


class _Store:
    """What refresh_index reads of the store: features of the items after an id."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str, bytes]] = []
        self.asked: list[int] = []
        self.fail_after: int | None = None

    def index_snapshot_path(self) -> None:
        return None  # as for a store of no file: the index comes from the rows alone

    def features_since(
        self, after_item_id: int, published_after: datetime
    ) -> Iterator[tuple[int, str, bytes]]:
        self.asked.append(after_item_id)
        for n, row in enumerate(r for r in self.items if r[0] > after_item_id):
            if self.fail_after is not None and n >= self.fail_after:
                raise OSError("connection lost")
            yield row


def test_refresh_index_loads_each_stored_item_once(rows: list[Row]) -> None:
    store = _Store()
    poller = Poller(Config(Settings(), (), ()), store)  # type: ignore[arg-type]
    now = datetime(2100, 1, 1, tzinfo=UTC)
    try:
        store.items = [(5, "bad", b"SF not features")]
        store.items += [(10 + k, key, blob) for k, (key, blob) in enumerate(rows[:500])]
        store.fail_after = 100
        with pytest.raises(OSError):
            poller.refresh_index(now)
        assert len(poller.index) == 0
        store.fail_after = None
        assert poller.refresh_index(now) == 500
        assert store.asked == [0, 0]  # the failed refresh is done again in full
        assert len(poller.index) == 500

        poller._mark_indexed([(600, "live", None)])  # added by this process as it ingested
        store.items += [
            (k, key, blob) for k, (key, blob) in zip(range(600, 700), rows[500:600], strict=True)
        ]
        assert poller.refresh_index(now) == 99
        assert store.asked[-1] == 509
        assert len(poller.index) == 599
        assert poller.refresh_index(now) == 0
        assert store.asked[-1] == 699
        f = StoryFeatures.from_bytes(rows[550][1])
        assert poller.index.find(f) == StoryMatch(rows[550][0], "url", 1.0)
    finally:
        poller.close()
