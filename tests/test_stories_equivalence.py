"""Story features stay what the store already holds; the index keeps its answers at scale."""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from test_stories import ROOT, by_title, corpus, items  # noqa: F401 (fixtures)

from aggregator import stories
from aggregator.stories import StoryIndex, features
from aggregator.types import Item

# sha256 over features(item).to_bytes() for the labelled corpus, as computed before the
# numpy MinHash and the faster anchors: persisted features must not change
CORPUS_FEATURES_SHA256 = "1903b2ba4b1a5925f17dfe3798b3634fe9a0082d9ffa21fff58b6dee3b5bf35a"


def test_features_of_the_corpus_are_unchanged(items: list[Item]) -> None:  # noqa: F811
    digest = hashlib.sha256()
    for item in items:
        digest.update(features(item).to_bytes())
    assert digest.hexdigest() == CORPUS_FEATURES_SHA256


def test_signature_is_datasketch_minhash_bit_for_bit() -> None:
    datasketch = pytest.importorskip("datasketch")
    rng = random.Random(7)
    cases: list[list[int]] = [[], [0], [0xFFFFFFFF], list(range(50))]
    for _ in range(300):
        n = rng.choice([1, 2, 5, 20, 45, 80, 300])
        cases.append(sorted({rng.getrandbits(32) for _ in range(n)}))
    for hashes in cases:
        m = datasketch.MinHash(
            num_perm=stories.NUM_PERM,
            seed=stories.MINHASH_SEED,
            hashfunc=lambda x: x,
            scheme="affine32",
        )
        m.update_batch(hashes)
        expected = np.asarray(m.hashvalues, dtype="<u4").tobytes()
        assert stories.signature(hashes) == expected
        assert stories.signature(np.asarray(hashes, dtype="<u4")) == expected


def test_ingesting_imports_neither_datasketch_nor_scipy() -> None:
    code = """
import sys
from datetime import UTC, datetime
from aggregator.stories import StoryIndex, features
from aggregator.types import Item
t = datetime(2025, 9, 2, tzinfo=UTC)
item = Item("s", "g", "https://x.example/a/1234567", "https://x.example/a/1234567",
            "Lukashenko meets CSTO Secretary General", "Talks in Minsk on 2 September. 5.4%",
            "", t, t, "en", content_hash="h")
index = StoryIndex()
f = features(item)
index.find_all(f)
index.add("s1", f)
print(sorted(m for m in ("datasketch", "scipy") if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# The patterns as they were before they were rewritten to start at a digit.
_DAYS = r"(\d{1,2})(?:\s*[-–]\s*(\d{1,2}))?(?:st|nd|rd|th|-?го)?"
_BEFORE = {
    "_DATE_DAY_FIRST": re.compile(
        rf"\b{_DAYS}\s+(?:of\s+)?(?:{stories._MONTH_EN}|{stories._MONTH_RU})\b", re.IGNORECASE
    ),
    "_PAIR": re.compile(r"(?<![\d.,])(\d{1,2})\s?[-:–]\s?(\d{1,2})(?![\d.,%])"),
    "_NUM_EN": re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?:\s*(thousand|k)\b)?"),
    "_NUM_RU": re.compile(
        r"(?<![\w.,])(\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?!\d)|\d+)(?:[,.](\d+))?(?:\s*(тыс)\.?)?"
    ),
}
_PIECES = [
    *"0123456789",
    "12", "2025", "1,500", "3 400", "3\u00a0400", "7.5", "7,5", " ", "  ", "-", "–", ":", ".",
    ",", "%", "x", "_", "k", "thousand", "тыс", "тыс.", "th", "-го", "of", "May", "мая",
    "September", "сентября", "Sept.", "a", "Б", "\n",
]  # fmt: skip


@pytest.mark.parametrize("name", sorted(_BEFORE))
def test_rewritten_patterns_find_what_the_originals_found(name: str) -> None:
    before, after = _BEFORE[name], getattr(stories, name)
    rng = random.Random(name)
    for _ in range(4000):
        text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 14)))

        def spans(pattern: re.Pattern[str], text: str = text) -> list[Any]:
            return [(m.span(), m.groups()) for m in pattern.finditer(text)]

        assert spans(after) == spans(before), repr(text)
        assert after.sub("#", text) == before.sub("#", text), repr(text)


def test_casefolded_text_holds_what_a_case_insensitive_pattern_matches() -> None:
    """The shortcuts look for casefolded literals before running IGNORECASE patterns."""
    letters = set("".join(w for _, _, literals in stories._ORG_PHRASES for w in literals))
    letters |= set("".join(stories._MONTH_WORDS))
    letters -= set(" ")
    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000)
    for letter in sorted(letters):
        for ch in set(re.findall(re.escape(letter), every, re.IGNORECASE)):
            assert ch.casefold() == letter or ch in stories._FOLD_MISMATCH, (letter, ch)


def test_anchors_of_tricky_text_are_what_they_were() -> None:
    """Sentence starts, apostrophes, dotless capitals, grouped thousands (pinned outputs)."""
    en = (
        "Talks were held. Tokayev met Mirziyoyev on 12 May's sidelines of the "
        "Collective Security Treaty Organization, UNİTED NATİONS said; Aliyev's "
        "aide cited 1,500 thousand and 7.5%. Sentence start.\nMeeting ended"
    )
    assert stories.anchors("Summit", en, "en") == {
        "a:csto", "a:un", "d:05-12", "n:1500000", "n:7.5", "p:klktv", "p:mrzv", "p:trt",
    }  # fmt: skip
    ru = (
        "Встреча прошла. Президент Токаев принял Мирзиёева 5 мая’ в Астане; ОДКБ и "
        "Организации Объединенных Наций. 3 400 тыс. и 2:1"
    )
    assert stories.anchors("Саммит", ru, "ru") == {
        "a:csto", "a:un", "d:05-05", "n:3400000", "p:bdn", "p:mrzv", "p:stn", "p:tkv", "s:2-1",
    }  # fmt: skip


# --------------------------------------------------------------------------- index at scale


def _copies(f: stories.StoryFeatures, n: int, step: timedelta) -> list[stories.StoryFeatures]:
    """``n`` distinct copies of ``f`` (own URL and hash), ``step`` apart."""
    return [
        replace(f, url=f"{f.url}?copy={k}", content_hash=f"h{k}", published=f.published + k * step)
        for k in range(n)
    ]


def test_index_forgets_in_bulk_and_keeps_answering(items: list[Item]) -> None:  # noqa: F811
    ordered = sorted(items, key=lambda it: it.published)
    base = features(ordered[0])
    index = StoryIndex(window=timedelta(days=400))
    filler = _copies(base, 6000, timedelta(minutes=1))
    for k, f in enumerate(filler):
        index.add(f"old{k % 7}", f)
    kept = [features(it) for it in ordered[1:80]]
    for k, f in enumerate(kept):
        index.add(f"s{k}", replace(f, published=filler[-1].published + timedelta(minutes=k + 1)))
    gone = index.prune(filler[-1].published + timedelta(seconds=1))
    assert gone == len(filler) and len(index) == len(kept)
    assert index.find(filler[10]) is None  # URL and hash forgotten, text too old
    for k, f in enumerate(kept):
        match = index.find(replace(f, published=filler[-1].published))
        assert match is not None and match.story_key == f"s{k}" and match.reason == "url"
    assert index.merge("s1", "s0") == 1
    match = index.find(replace(kept[1], published=filler[-1].published))
    assert match is not None and match.story_key == "s0"


def test_a_reworded_copy_is_found_among_items_sharing_its_common_words(
    corpus: list[dict[str, Any]],  # noqa: F811
    items: list[Item],  # noqa: F811
) -> None:
    story = by_title(corpus, items, "Belarus-Russia trade up 5.4%")
    index = StoryIndex(max_shingle_posting=3, max_shingle_candidates=2)
    words = story.title.split()
    for k in range(40):  # same common words, other figures and names
        rng = random.Random(k)
        title = " ".join(rng.sample(words, len(words))) + f" {k}.{k}% Zorbek{k}"
        filler = replace(story, title=title, url=f"https://x.example/{k}", content_hash=f"f{k}")
        index.add(f"filler{k}", features(filler))
    index.add("trade", features(story))
    edited = replace(
        story,
        url="https://eng.belta.by/economics/view/belarus-russia-trade-grows-172999-2025/",
        title="Belarus-Russia trade grows 5.4% in seven months",
        content_hash="edited",
    )
    match = index.find(features(edited))
    assert match is not None and (match.story_key, match.reason) == ("trade", "near")
