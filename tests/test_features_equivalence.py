"""Shortcuts in story features give what the longer way gives.

Each test runs a quick path of aggregator.stories and the plain computation it stands for
on generated text: normalization after replacing compatibility characters, the month-first
date search tried only where an English month name is a word, the casefolded-word sets,
the cached amounts, the name key, the shingle hash cache and the MinHash signature.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import stories

PIECES = (
    "May", "may", "MAY", "мая", "Мая", "май", "September", "sept", "Sept.", "SEP", "Dec",
    "of", "th", "-го", "сентября", "Марта", "march", "Jun", "june", "Mayor", "Маяк",
    "2", "12", "31", "2025", "1,500", "7.5", "3 400", "3\u00a0400", "0",
    "Lukashenko", "Лукашенко", "Токаевым", "Tokayev's", "O'Neil", "д’Артаньян", "x'may",
    "may'", "мая’", "'", "’", "ı", "İ", "ё", "Ё", "ß", "ǅ", "ﬁ", "ͅ", "Ⅻ", "²", "_", "k",
    "thousand", "тыс.", "ОДКБ", "CSTO", "UN", "Минске", "Moscow", "Алма-Ата",
    "May 5", "Sept. 12", "june 3-4", "DEC 31st", "5 May", "2 сентября", "Oct  7th",
)  # fmt: skip
JOINERS = (
    "", " ", "  ", ". ", ", ", "-", "–", ":", "\n", "\t", "\u00a0", "\u202f", "\u2009",
    "…", "№", "!", "? ", "; ", "(", ")", "/", "\u0301", "%",
)  # fmt: skip

pieces = st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(JOINERS)), max_size=14)


@st.composite
def texts(draw: Any) -> str:
    return "".join(piece + joiner for piece, joiner in draw(pieces))


any_text = st.one_of(texts(), st.text(max_size=40))


@settings(max_examples=400, deadline=None)
@given(any_text)
def test_clean_is_nfkc_then_boilerplate(text: str) -> None:
    plain = stories._BOILERPLATE.sub("", unicodedata.normalize("NFKC", text))
    assert stories._clean(text) == plain


def test_replaced_characters_are_their_own_decompositions() -> None:
    """Replacing them by their NFKD form leaves NFKC's result alone: plain starters only."""
    for c, plain in stories._COMPATIBLE:
        assert plain == unicodedata.normalize("NFKD", c)
        assert all(unicodedata.combining(ch) == 0 for ch in plain)


def _month_first_plain(text: str) -> tuple[str, set[str]]:
    out: set[str] = set()
    return stories._date_anchors(text, out), out


@settings(max_examples=600, deadline=None)
@given(texts())
def test_dates_are_found_where_the_month_words_say(text: str) -> None:
    text = stories._clean(text).replace("ё", "е")
    words = stories._split_words(text)
    exact = any(c in text for c in stories._FOLD_MISMATCH)
    found, english = stories._month_words(text, words)
    plain, plain_out = _month_first_plain(text)
    if exact:
        return  # no shortcuts then
    if not found:
        assert plain == text and not plain_out
    else:
        out: set[str] = set()
        assert stories._date_anchors(text, out, english) == plain
        assert out == plain_out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.text(min_size=1, max_size=6), max_size=8))
def test_casefolded_sets(words: list[str]) -> None:
    words = [w for w in words if "\n" not in w]
    assert stories._casefold_set(set(words)) == {w.casefold() for w in words}


def test_casefolding_makes_no_apostrophes() -> None:
    """Month names are looked for in apostrophe-split words before or after casefolding."""
    for c in range(sys.maxunicode + 1):
        ch = chr(c)
        if ch not in "'’":
            assert "'" not in ch.casefold() and "’" not in ch.casefold(), hex(c)


def _numbers_plain(text: str, language: str) -> set[str]:
    out: set[str] = set()

    def pair(m: re.Match[str]) -> str:
        out.add(f"s:{int(m.group(1))}-{int(m.group(2))}")
        return " "

    text = stories._PAIR.sub(pair, text)
    pattern = stories._NUM_RU if language == "ru" else stories._NUM_EN
    for m in pattern.finditer(text):
        value = stories._number(m.group(1), m.group(2), bool(m.group(3)))
        if "." in value:
            out.add(f"n:{value}")
            continue
        n = int(value)
        if 1900 <= n <= 2100:
            out.add(f"y:{n}")
        elif n >= 100:
            out.add(f"n:{n}")
        elif n >= 10:
            out.add(f"m:{n}")
    return out


@settings(max_examples=400, deadline=None)
@given(any_text, st.sampled_from(["en", "ru", ""]))
def test_number_anchors(text: str, language: str) -> None:
    out: set[str] = set()
    stories._number_anchors(text, language, out)
    assert out == _numbers_plain(text, language)


def _name_key_plain(word: str) -> str:
    w = word.casefold().replace("ё", "е")
    if stories._CYRILLIC.search(w):
        latin = next((v for k, v in stories._EXONYMS.items() if w.startswith(k)), None)
        if latin is None:
            if len(w) > 5:
                w = stories._RU_ENDINGS.sub("", w)
            latin = w.translate(stories._TRANSLIT)
        w = latin
    elif w.endswith(("'s", "’s")):
        w = w[:-2]
    for a, b in stories._SOUNDS:
        w = w.replace(a, b)
    w = w.translate(stories._DROP).lower()
    w = re.sub(r"(.)\1+", r"\1", w)
    if len(w) < stories._NAME_MIN_LEN or not w.isalpha():
        return ""
    return w[: stories._NAME_KEY_LEN]


name_words = st.one_of(
    st.sampled_from(PIECES),
    st.text(alphabet="абвгдеёжзийклмнопрстуфхцчшщъыьэюяАЛМТКыимо\n'’-", max_size=12),
    st.text(max_size=10),
).map(lambda w: w + "ем\n" if w.startswith("Ал") else w)


@settings(max_examples=500, deadline=None)
@given(name_words)
def test_name_key(word: str) -> None:
    assert stories.name_key.__wrapped__(word) == _name_key_plain(word)


@settings(max_examples=200, deadline=None)
@given(any_text, any_text, st.sampled_from(["en", "ru", "kk", ""]))
def test_shingle_hash_cache(title: str, summary: str, language: str) -> None:
    plain = stories.shingle_hashes(stories._shingles(title, summary, language))
    assert stories._shingle_hashes(title, summary, language) == plain
    assert stories._shingle_hashes(title, summary, language) == plain  # from the cache


def _signature_plain(hashes: list[int]) -> bytes:
    if not hashes:
        return np.full(stories.NUM_PERM, 0xFFFFFFFF, dtype="<u4").tobytes()
    a, b = stories._minhash_permutations()
    h = np.asarray(hashes, dtype=np.uint32)
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    h = h ^ (h >> np.uint32(16))
    out: bytes = (np.multiply.outer(h, a) + b).min(axis=0).astype("<u4").tobytes()
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 0xFFFFFFFF), max_size=60, unique=True).map(sorted))
def test_signature(hashes: list[int]) -> None:
    array = np.asarray(hashes, dtype="<u4")
    assert stories.signature(hashes) == _signature_plain(hashes)
    assert stories.signature(array) == _signature_plain(hashes)
    assert array.tolist() == hashes  # not mixed in place
