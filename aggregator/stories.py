"""Story assignment: which existing story does an incoming item belong to?

Agencies republish one story under new URLs and reworded titles, often once in English and
once in Russian. Readers want each story once, so every new item is matched against the
recent items of the index and either joins a story or starts one::

    Item --features()--> StoryFeatures --to_bytes()--> store (computed once, at ingest)
                              |
                              v
    StoryIndex.find(f): same canonical URL        -> "url"   (any age still in the index)
                        same content hash         -> "hash"  (any age still in the index)
                        near-duplicate text       -> "near"  (same language, within window)
                        cross-language anchors    -> "cross" (en <-> ru, within cross_window)
    StoryIndex.add(story_key, f);  StoryIndex.prune(before)

Near-duplicates: stemmed word shingles of title + lead, found through an inverted index of
the shingle hashes and verified by their exact Jaccard (see StoryIndex). Amounts and dates
that disagree veto a match: consecutive daily rate notes share almost every word. Cross-language: numbers, dates, acronyms (ОДКБ = CSTO) and transliterated
names reduced to consonant keys (Лукашенко = Lukashenko), with a conservative threshold.

Precision comes first: a wrong merge hides a story from readers, while a missed merge only
shows it twice. Everything here is pure: no I/O and no clock. The persisted features keep
a 128-value MinHash signature (datasketch's affine32 scheme, computed here with numpy alone:
datasketch pulls in scipy, ~0.5 s and ~40 MB).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import struct
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import chain, islice
from typing import Any, NamedTuple, cast
from urllib.parse import urlsplit

import numpy as np
import Stemmer

from aggregator.types import Item

__all__ = [
    "CopyInfo",
    "StoryFeatures",
    "StoryIndex",
    "StoryMatch",
    "choose_representative",
    "cluster",
    "features",
]

NUM_PERM = 128  # MinHash values: 64 left pairs at J 0.27-0.45 out of the LSH buckets
MINHASH_SEED = 1
LEAD_CHARS = 300  # of the summary, after the title, for near-duplicate shingles
ANCHOR_CHARS = 1200  # of the summary, for cross-language anchors
NAMES_PENALTY = 0.05  # extra similarity needed when two texts name different people/places
MIN_TOKENS = 4  # fewer distinct shingles than this: too little text to call a near-duplicate

_FORMAT_VERSION = 1
_MAGIC = b"SF"
# magic, version, published (µs since the epoch), MinHash values, shingle hashes
_HEADER = struct.Struct("<2sBqHH")
# the same, to read the headers of many rows at once (StoryIndex.add_many)
_HEADER_DTYPE = np.dtype(
    [("magic", "S2"), ("version", "u1"), ("published", "<i8"), ("perms", "<u2"), ("count", "<u2")]
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class StoryFeatures:
    """Everything the index needs about one item; persisted by the store as bytes."""

    language: str  # "en", "ru", … or "" when unknown
    published: datetime  # aware, UTC
    url: str  # canonical URL, "" when the item has none
    content_hash: str
    signature: bytes  # NUM_PERM little-endian uint32 MinHash values, for the LSH buckets
    shingles: bytes  # sorted distinct little-endian uint32 hashes of the shingles
    anchors: frozenset[str]  # language-neutral evidence: "n:29.6", "d:09-02", "p:lksnk", "a:csto"
    url_key: str = ""  # host + article number shared by an agency's language editions

    @property
    def tokens(self) -> int:
        return len(self.shingles) // 4

    def to_bytes(self) -> bytes:
        head = _HEADER.pack(
            _MAGIC,
            _FORMAT_VERSION,
            _micros(self.published),
            len(self.signature) // 4,
            len(self.shingles) // 4,
        )
        rest = json.dumps(
            [self.language, self.url, self.content_hash, self.url_key, sorted(self.anchors)],
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")
        return head + self.signature + self.shingles + rest

    @classmethod
    def from_bytes(cls, b: bytes) -> StoryFeatures:
        """Decode :meth:`to_bytes` output; ValueError when the bytes are not ours."""
        if len(b) < _HEADER.size:
            raise ValueError("story features: truncated")
        magic, version, micros, perms, count = _HEADER.unpack_from(b)
        if magic != _MAGIC or version != _FORMAT_VERSION:
            raise ValueError(f"story features: unknown format {magic!r} v{version}")
        if not _MIN_MICROS <= micros <= _MAX_MICROS:
            raise ValueError("story features: bad date")
        mid = _HEADER.size + 4 * perms
        end = mid + 4 * count
        try:
            payload = json.loads(b[end:])
        except (ValueError, TypeError) as e:
            raise ValueError("story features: bad payload") from e
        if not _is_payload(payload):
            raise ValueError("story features: bad payload")
        language, url, content_hash, url_key, anchors = payload
        return cls(
            language=language,
            published=_EPOCH + timedelta(microseconds=micros),
            url=url,
            content_hash=content_hash,
            signature=bytes(b[_HEADER.size : mid]),
            shingles=bytes(b[mid:end]),
            anchors=frozenset(anchors),
            url_key=url_key,
        )


@dataclass(frozen=True)
class StoryMatch:
    story_key: str
    reason: str  # "url" | "hash" | "near" | "cross"
    score: float


@dataclass(frozen=True)
class CopyInfo:
    item_key: str
    source_priority: int
    published: datetime


def choose_representative(copies: Sequence[CopyInfo]) -> str:
    """The copy readers are sent to: highest priority, then earliest, then smallest key."""
    if not copies:
        raise ValueError("choose_representative: no copies")
    best = min(copies, key=lambda c: (-c.source_priority, c.published, c.item_key))
    return best.item_key


def _micros(dt: datetime) -> int:
    delta = dt.astimezone(UTC) - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


_MIN_MICROS = _micros(datetime.min.replace(tzinfo=UTC))
_MAX_MICROS = _micros(datetime.max.replace(tzinfo=UTC))


def _is_payload(value: Any) -> bool:
    """Whether a decoded payload is what :meth:`StoryFeatures.to_bytes` writes: [language,
    url, content hash, url key, [anchor, …]], strings all, anchors not empty."""
    if type(value) is not list or len(value) != 5:
        return False
    language, url, content_hash, url_key, anchors = value
    return (
        type(language) is type(url) is type(content_hash) is type(url_key) is str
        and type(anchors) is list
        and all(type(a) is str and a for a in anchors)
    )


# --------------------------------------------------------------------------- text

_BOILERPLATE = re.compile(
    r"^\s*(go back|back to the all news|read more|read also|share|"
    r"читать далее|подробнее|читайте также|следите за новостями.*|поделиться)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
# "МОСКВА, 8 сентября. /ТАСС/." and "MINSK, September 20. /TASS/." datelines
_DATELINE = re.compile(r"^[^/\n]{3,60}?/\s*[\w .-]{2,20}\s*/\.?\s*")
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
_CYRILLIC = re.compile(r"[а-яё]", re.IGNORECASE)
_LATIN = re.compile(r"[a-z]", re.IGNORECASE)


def _words(text: str) -> list[str]:
    return text.split()


_STOP = {
    "en": frozenset(
        _words(
            "a an and are as at be been by for from has have he her his in into is it its of on "
            "or that the their they this to was were will with which who also after over than "
            "said says amid about up out more most not no"
        )
    ),
    "ru": frozenset(
        _words(
            "а без более бы был была были было в во вот все всего всех для до его ее если же за "
            "и из или им их к как ко который которые которая ли на над не него нее нет ни но о "
            "об от по под при про с со так также то того только у уже что чтобы это этой этом "
            "эти я он она они мы вы году года"
        )
    ),
}
_STEMMER_NAMES = {"en": "english", "ru": "russian"}


@lru_cache(maxsize=8)
def _stemmer(language: str) -> Any:
    name = _STEMMER_NAMES.get(language)
    return Stemmer.Stemmer(name) if name else None


# Characters that make common agency text not NFKC already, each with its NFKD form (plain
# starters): normalizing a text with them replaced gives the same result, and a text that
# is NFKC once they are gone takes normalize()'s quick check instead of a full pass.
_COMPATIBLE = tuple((c, unicodedata.normalize("NFKD", c)) for c in "\u2026\u00a0\u202f\u2009\u2116")


def _clean(text: str) -> str:
    for c, plain in _COMPATIBLE:
        if c in text:
            text = text.replace(c, plain)
    text = unicodedata.normalize("NFKC", text)
    return _BOILERPLATE.sub("", text)


def _lead(summary: str, limit: int) -> str:
    """The first ``limit`` characters of a cleaned summary, cut at a space."""
    summary = summary.strip()
    if len(summary) <= limit:
        return summary
    cut = summary.rfind(" ", 0, limit)
    return summary[: cut if cut > limit // 2 else limit]


def _guess_language(text: str) -> str:
    cyr = len(_CYRILLIC.findall(text))
    lat = len(_LATIN.findall(text))
    if cyr == lat == 0:
        return ""
    return "ru" if cyr >= lat else "en"


def _language(item: Item) -> str:
    lang = (item.language or "").strip().lower().replace("_", "-").split("-")[0]
    return lang or _guess_language(item.title + " " + item.summary[:200])


def shingles(title: str, summary: str, language: str) -> set[str]:
    """Stemmed word shingles of title + lead: casefolded, ё→е, punctuation and stopwords gone."""
    return _shingles(_clean(title), _clean(summary), language)


def _shingles(title: str, summary: str, language: str) -> set[str]:
    """:func:`shingles` of a title and summary that went through :func:`_clean`."""
    words = _shingle_words(title, summary, language)
    stemmer = _stemmer(language)
    return set(stemmer.stemWords(list(words))) if stemmer is not None else words


def _shingle_words(title: str, summary: str, language: str) -> set[str]:
    """The distinct words behind the shingles, before stemming (stems are per word)."""
    lead = _DATELINE.sub("", _lead(summary, LEAD_CHARS))
    text = f"{title}\n{lead}".casefold().replace("ё", "е")
    words = set(_TOKEN.findall(text))
    if "," in text:
        words = {w.replace(",", ".") for w in words}
    return words - _STOP.get(language, frozenset())


def _token_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest(), "little")


def shingle_hashes(tokens: Iterable[str]) -> list[int]:
    """Stable 32-bit hashes (sorted, distinct): the same on every run and machine."""
    return sorted(set(map(_token_hash, tokens)))


# word -> hash of its stem, per language: words repeat across items, and stemming plus
# hashing cost ~1 µs a word against ~50 ns for a look-up
_WORD_HASHES: dict[str, dict[str, int]] = {}
_WORD_HASHES_MAX = 1 << 15  # per language; ~5 MB when full, then it starts over


def _shingle_hashes(title: str, summary: str, language: str) -> list[int]:
    """``shingle_hashes(_shingles(title, summary, language))``, through the cache."""
    words = _shingle_words(title, summary, language)
    cache = _WORD_HASHES.setdefault(language, {})
    found = set(map(cache.get, words))  # one look-up a word when all are known
    if None in found:
        missing = [w for w in words if w not in cache]
        if len(cache) + len(missing) > _WORD_HASHES_MAX:
            cache.clear()
        stemmer = _stemmer(language)
        stems = stemmer.stemWords(missing) if stemmer is not None else missing
        cache.update(zip(missing, map(_token_hash, stems), strict=True))
        found = set(map(cache.get, words))
    return sorted(cast("set[int]", found))  # every word is known now


@lru_cache(maxsize=1)
def _minhash_permutations() -> tuple[Any, Any]:
    """datasketch's affine32 parameters for ``MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED)``."""
    gen = np.random.RandomState(MINHASH_SEED)
    a = gen.randint(0, 1 << 31, NUM_PERM, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, NUM_PERM, dtype=np.uint32)
    return a, b


def signature(hashes: Sequence[int] | Any) -> bytes:
    """MinHash values as little-endian uint32 bytes, bit-identical to datasketch's
    ``MinHash(num_perm=128, seed=1, scheme="affine32")`` fed the hashes as they are.

    Each hash goes through the MurmurHash3 finalizer, then h -> a*h + b (mod 2^32) per
    permutation; the signature is the minimum per permutation (2^32-1 when empty).
    """
    if not len(hashes):
        return np.full(NUM_PERM, 0xFFFFFFFF, dtype="<u4").tobytes()
    a, b = _minhash_permutations()
    h = np.array(hashes, dtype=np.uint32)  # a copy: mixed in place below
    h ^= h >> _U16
    h *= _MIX1
    h ^= h >> _U13
    h *= _MIX2
    h ^= h >> _U16
    values = np.multiply.outer(h, a)  # uint32 arithmetic wraps: the mod 2^32 of the scheme
    values += b
    out: bytes = np.minimum.reduce(values, axis=0).astype("<u4", copy=False).tobytes()
    return out


_U13, _U16 = np.uint32(13), np.uint32(16)
_MIX1, _MIX2 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)  # MurmurHash3's finalizer


def _fallback_hash(title: str, summary: str) -> str:
    """Content hash of an item without one (``summary`` cleaned)."""
    text = " ".join(f"{title}\n{summary}".casefold().split())
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- anchors
#
# Cross-language evidence is reduced to language-neutral strings so that an English and a
# Russian copy can be compared by set intersection:
#   n:<number>  amounts, percentages, rates (≥ 100 or with decimals; "тыс."/"thousand" applied)
#   m:<number>  two-digit numbers (rounds, ages, counts)
#   y:<year>    years: weak, every story of a year shares them
#   s:<a>-<b>   scores and times: 2-1 / 2:1, 04:12
#   d:<MM-DD>   calendar dates: "18 September", "September 18", "18 сентября"
#   a:<name>    acronyms and organisations: CSTO/ОДКБ, CIS/СНГ, …
#   p:<key>     proper names: Russian stems transliterated, both sides reduced to a consonant key

_ACRONYMS: dict[str, str] = {}
for _canon, _forms in {
    "csto": "csto одкб",
    "cis": "cis снг",
    "eaeu": "eaeu eeu еаэс",
    "sco": "sco шос",
    "un": "un uno оон",
    "nato": "nato нато",
    "eu": "eu ес",
    "brics": "brics брикс",
    "osce": "osce обсе",
    "crrf": "crrf ксор",
    "eec": "eec еэк",
    "gdp": "gdp ввп",
    "npp": "npp аэс",
    "hpp": "hpp гэс",
    "khl": "khl кхл",
    "imf": "imf мвф",
    "wto": "wto вто",
    "usa": "us usa сша",
    "uae": "uae оаэ",
    "kase": "kase",
    "bcse": "bcse бвфб",
    "fifa": "fifa фифа",
    "uefa": "uefa уефа",
    "mfa": "mfa мид",
    "kpl": "kpl кпл",
    "scns": "scns гкнб",
}.items():
    for _form in _forms.split():
        _ACRONYMS[_form] = _canon

# Each phrase with text that any match contains (casefolded), to skip the search cheaply
_ORG_PHRASES: list[tuple[re.Pattern[str], str, tuple[str, ...]]] = [
    (re.compile(p, re.IGNORECASE), canon, tuple(literals.split("|")))
    for p, canon, literals in [
        (
            r"collective security treaty organi[sz]ation",
            "csto",
            "collective security treaty organi",
        ),
        (
            r"организаци\w* договора о коллективной безопасности",
            "csto",
            "договора о коллективной безопасности",
        ),
        (r"commonwealth of independent states", "cis", "commonwealth of independent states"),
        (r"содружеств\w* независимых государств", "cis", "независимых государств"),
        (r"eurasian economic union", "eaeu", "eurasian economic union"),
        (r"евразийск\w* экономическ\w* союз\w*", "eaeu", "евразийск"),
        (r"eurasian economic commission", "eec", "eurasian economic commission"),
        (r"евразийск\w* экономическ\w* комисси\w*", "eec", "евразийск"),
        (r"shanghai cooperation organi[sz]ation", "sco", "shanghai cooperation organi"),
        (r"шанхайск\w* организаци\w* сотрудничества", "sco", "шанхайск"),
        (r"united nations|un general assembly", "un", "united nations|un general assembly"),
        (
            r"организаци\w* объединенных наций|генассамбле\w* оон",
            "un",
            "объединенных наций|генассамбле",
        ),
        (r"security council", "security-council", "security council"),
        (r"совет\w* безопасности|совбез\w*", "security-council", "совет|совбез"),
        (r"kontinental hockey league", "khl", "kontinental hockey league"),
    ]
]

_ORG_LITERALS = [
    (literal, k) for k, (_, _, literals) in enumerate(_ORG_PHRASES) for literal in literals
]

# Russian exonyms whose Latin spelling is not a transliteration (stem -> English name)
_EXONYMS = {
    "москв": "moscow",
    "киргиз": "kyrgyzstan",
    "кыргызстан": "kyrgyzstan",
    "алма": "almaty",
    "белорусс": "belarus",
    "пекин": "beijing",
    "киев": "kyiv",
    "нью": "new",
    "йорк": "york",
    "грузи": "georgia",
    "герман": "germany",
    "кита": "china",
    "япони": "japan",
    "швейцари": "switzerland",
    "санкт": "saint",
    "петербург": "petersburg",
}
_TRANSLIT = str.maketrans(
    {
        "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh",
        "з": "z", "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
        "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts",
        "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu",
        "я": "ya", "ә": "a", "ғ": "g", "қ": "k", "ң": "n", "ө": "o", "ұ": "u", "ү": "u",
        "һ": "h", "і": "i",
    }
)  # fmt: skip
# Spelling variants that differ between GOST/BGN transliteration and English usage
_SOUNDS = [
    ("shch", "s"), ("sch", "s"), ("dzh", "z"), ("dj", "z"), ("zh", "z"), ("kh", "h"),
    ("ch", "C"), ("tz", "C"), ("ts", "C"), ("sh", "s"), ("ph", "f"), ("th", "t"),
    ("ck", "k"), ("x", "ks"), ("q", "k"), ("w", "v"), ("j", "z"), ("c", "k"),
]  # fmt: skip
_DROP = str.maketrans("", "", "aeiouyh'’-")
# Case endings with a consonant survive the vowel-free key: Токаевым -> Токаев
_RU_CASE_ENDINGS = ("ыми", "ими", "ами", "ями", "ому", "ему", "ого", "его", "ым", "им", "ом", "ем")
_RU_ENDINGS = re.compile(f"(?:{'|'.join(_RU_CASE_ENDINGS)})$")
# _RU_ENDINGS matches only words ending so ($ also matches before a final newline)
_RU_ENDING_TAILS = (*_RU_CASE_ENDINGS, "\n")
_EXONYM_STEMS = tuple(_EXONYMS)
_REPEATED = re.compile(r"(.)\1+")


def _first_group(m: re.Match[str]) -> str:
    return m.group(1)  # as the template r"\1", without re's per-call template handling


_NAME_KEY_LEN = 6
_NAME_MIN_LEN = 3


@functools.lru_cache(maxsize=65536)
def name_key(word: str) -> str:
    """A spelling-neutral consonant key for a name: Лукашенко, Lukashenko's -> "lksnk".

    Russian words are transliterated first; inflected forms give a key that is a prefix
    of (or extends) the nominative one, so keys are compared by prefix (see _name_pairs).
    """
    w = word.casefold().replace("ё", "е")
    if _CYRILLIC.search(w):
        latin = None
        if w.startswith(_EXONYM_STEMS):
            latin = next(v for k, v in _EXONYMS.items() if w.startswith(k))
        if latin is None:
            if len(w) > 5 and w.endswith(_RU_ENDING_TAILS):
                w = _RU_ENDINGS.sub("", w)
            latin = w.translate(_TRANSLIT)
        w = latin
    elif w.endswith(("'s", "’s")):
        w = w[:-2]
    for a, b in _SOUNDS:
        w = w.replace(a, b)
    w = w.translate(_DROP).lower()
    w = _REPEATED.sub(_first_group, w)
    if len(w) < _NAME_MIN_LEN or not w.isalpha():
        return ""
    return w[:_NAME_KEY_LEN]


# Capitalised words that are not names (title case, sentence starts, formal style) ...
_NOT_NAMES = frozenset(
    k
    for k in map(
        name_key,
        _words("""
        the and with from for that this what when where how why who after over into about
        than amid more most some new first will may can has have had are was were not all
        meets meet met held holds hold hosts host opens open says said discuss discusses
        takes part start starts begin begins launch wins win beat beats expected issued
        minister ministers ministry foreign affairs defense defence president presidential
        prime secretary general council councils state states committee world championship
        championships national bank union republic federation government chairman head
        deputy parliament parliamentary assembly organization forces security
        international forum cooperation central region oblast city day days cabinet
        office palace league cup premier agency service statement meeting session summit
        executive commission program plan visit talks exercise drills border trade
        министр министра министров министерство министерства президент президента
        премьер премьера секретарь секретаря генеральный генерального генсек совет
        совета советов государств государства государственный комитет комитета мир мира
        чемпионат чемпионата национальный национального банк банка союз союза
        республика республики федерация федерации правительство правительства
        председатель председателя глава главы заместитель парламент парламента
        ассамблея ассамблеи организация организации силы сил безопасность безопасности
        международный форум форума сотрудничество центральный область области город
        день дни кабинет кабмин дворец лига кубок служба заявление заседание сессия
        саммит исполком комиссия программа визит переговоры учение учения граница
        стороны состоялась состоялось прошло проходит принял приняла провел провела
        обсудили встретился встреча участие минобороны мчс минэнерго минсельхоз нацбанк
        стартовала стартовали открылся открылись открылась начался началась
        """),
    )
    if k
)
# ... and names that half the region's stories carry: they count, lightly, but find nothing
_COMMON_NAMES = frozenset(
    k
    for k in map(
        name_key,
        _words("""
        belarus belarusian russia russian kazakhstan kazakh kyrgyzstan kyrgyz armenia
        armenian uzbekistan uzbek tajikistan tajik azerbaijan minsk moscow astana almaty
        bishkek yerevan tashkent dushanbe sergei sergey aleksandr alexander mikhail vladimir
        andrei viktor igor marat murat nikol
        беларусь беларуси белоруссия белорусский россия россии российской российский
        казахстан казахстана казахстанский кыргызстан кыргызстана киргизия армения армении
        армянский узбекистан узбекистана таджикистан таджикистана азербайджан минск минске
        москва москве астана астане алматы бишкек бишкеке ереван ташкент душанбе сергей
        александр михаил владимир андрей виктор игорь марат мурат никол
        """),
    )
    if k
)


_MONTHS: dict[str, int] = {}
for _i, (_en, _ru) in enumerate(
    [
        ("january jan", "январ"),
        ("february feb", "феврал"),
        ("march mar", "март марта"),
        ("april apr", "апрел"),
        ("may", "ма мая"),
        ("june jun", "июн"),
        ("july jul", "июл"),
        ("august aug", "август"),
        ("september sept sep", "сентябр"),
        ("october oct", "октябр"),
        ("november nov", "ноябр"),
        ("december dec", "декабр"),
    ],
    start=1,
):
    for _m in _en.split():
        _MONTHS[_m] = _i
    for _m in _ru.split():
        _MONTHS[_m] = _i
_MONTH_EN = r"(january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\.?"
_MONTH_RU = r"(январ[ья]|феврал[ья]|марта?|апрел[ья]|ма[яй]|июн[ья]|июл[ья]|августа?|сентябр[ья]|октябр[ья]|ноябр[ья]|декабр[ья])"
_DAY_RANGE = r"(?:\s*[-–]\s*(\d{1,2}))?(?:st|nd|rd|th|-?го)?"
_DAYS = r"(\d{1,2})" + _DAY_RANGE
# every word _MONTH_EN and _MONTH_RU accept, casefolded
_MONTH_WORDS_EN = frozenset(
    _words("""
    january february march april may june july august september october november december
    jan feb mar apr jun jul aug sept sep oct nov dec
    """)
)
_MONTH_WORDS = _MONTH_WORDS_EN | frozenset(
    _words("""
    январь января февраль февраля март марта апрель апреля май мая июнь июня июль июля
    август августа сентябрь сентября октябрь октября ноябрь ноября декабрь декабря
    """)
)
# Patterns that start at a digit say so first, so that the regex engine skips ahead to the
# digits: "\d(?<!\w\d)" is "\b\d", "\d(?<![\d.,]\d)" is "(?<![\d.,])\d".
_DATE_DAY_FIRST = re.compile(
    rf"(\d(?<!\w\d)\d?){_DAY_RANGE}\s+(?:of\s+)?(?:{_MONTH_EN}|{_MONTH_RU})\b",
    re.IGNORECASE,
)
_DATE_MONTH_FIRST = re.compile(rf"\b{_MONTH_EN}\s+{_DAYS}\b", re.IGNORECASE)
_PAIR = re.compile(r"(\d(?<![\d.,]\d)\d?)\s?[-:–]\s?(\d{1,2})(?![\d.,%])")
_NUM_EN = re.compile(
    r"(\d(?<![\w.,]\d)(?:\d{0,2}(?:,\d{3})+|\d*))(?:\.(\d+))?(?:\s*(thousand|k)\b)?"
)
_NUM_RU = re.compile(
    r"(\d(?<![\w.,]\d)(?:\d{0,2}(?:[ \u00a0\u202f]\d{3})+(?!\d)|\d*))"
    r"(?:[,.](\d+))?(?:\s*(тыс)\.?)?"
)


def _month(word: str) -> int:
    w = word.casefold().rstrip(".")
    if w in _MONTHS:
        return _MONTHS[w]
    for stem in ("январ", "феврал", "апрел", "июн", "июл", "август", "сентябр", "октябр"):
        if w.startswith(stem):
            return _MONTHS[stem]
    for stem in ("ноябр", "декабр"):
        if w.startswith(stem):
            return 11 if stem == "ноябр" else 12
    if w.startswith("март"):
        return 3
    if w in ("мая", "май"):
        return 5
    return 0


def _date_anchors(text: str, out: set[str], english: Sequence[str] | None = None) -> str:
    """Add d:MM-DD anchors; return the text with the dates blanked out.

    ``english``, when given, holds every spelling an English month name has as a word
    of ``text`` (see _month_words): month-first dates are looked for there alone. Such a
    date starts at its month name, a word of its own or after an apostrophe, and blanking
    day-first dates out leaves the letters of the rest as they were.
    """

    def add(days: tuple[str | None, ...], month_word: str) -> None:
        month = _month(month_word)
        for d in days:
            if d and month and 1 <= int(d) <= 31:
                out.add(f"d:{month:02d}-{int(d):02d}")

    def day_first(m: re.Match[str]) -> str:
        add((m.group(1), m.group(2)), m.group(3) or m.group(4))
        return " "

    def month_first(m: re.Match[str]) -> str:
        add((m.group(2), m.group(3)), m.group(1))
        return " "

    text = _DATE_DAY_FIRST.sub(day_first, text)
    if english is None:
        return _DATE_MONTH_FIRST.sub(month_first, text)
    return _sub_at(_DATE_MONTH_FIRST, text, english, month_first)


def _sub_at(
    pattern: re.Pattern[str], text: str, starts: Iterable[str], repl: Callable[[re.Match[str]], str]
) -> str:
    """``pattern.sub(repl, text)`` for a pattern that matches only where one of ``starts``
    occurs in ``text``: tried there alone, instead of at every position (IGNORECASE
    alternatives are slow to try)."""
    found = set()
    for start in starts:
        k = text.find(start)
        while k >= 0:
            found.add(k)
            k = text.find(start, k + 1)
    pieces: list[str] = []
    end = 0
    for k in sorted(found):
        if k >= end and (m := pattern.match(text, k)):  # match() sees the text before k
            pieces += (text[end:k], repl(m))
            end = m.end()
    return "".join((*pieces, text[end:])) if pieces else text


def _number(int_part: str, frac: str | None, thousand: bool) -> str:
    digits = int_part if int_part.isdecimal() else re.sub(r"[^\d]", "", int_part)
    value = f"{int(digits)}.{frac}" if frac else str(int(digits))
    if thousand:
        scaled = float(value) * 1000
        value = str(int(scaled)) if scaled.is_integer() else str(scaled)
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value


_DIGIT = re.compile(r"\d")


def _number_anchors(text: str, language: str, out: set[str]) -> None:
    if not _DIGIT.search(text):
        return

    def pair(m: re.Match[str]) -> str:
        out.add(f"s:{int(m.group(1))}-{int(m.group(2))}")
        return " "

    if "-" in text or ":" in text or "–" in text:  # one of them is in every pair
        text = _PAIR.sub(pair, text)
    pattern = _NUM_RU if language == "ru" else _NUM_EN
    for m in pattern.finditer(text):
        if anchor := _amount(*m.groups()):
            out.add(anchor)


@functools.lru_cache(maxsize=8192)  # the same figures recur: years, counts, rates
def _amount(int_part: str, frac: str | None, unit: str | None) -> str:
    """The anchor of a figure _NUM_EN or _NUM_RU found, "" when it is none."""
    value = _number(int_part, frac, bool(unit))
    if "." in value:
        return f"n:{value}"
    n = int(value)
    if 1900 <= n <= 2100:
        return f"y:{n}"
    if n >= 100:
        return f"n:{n}"
    if n >= 10:
        return f"m:{n}"
    return ""


def anchors(title: str, summary: str, language: str) -> frozenset[str]:
    """Language-neutral evidence for cross-language matching (see the table above)."""
    return _anchors(_clean(title), _clean(summary), language)


# re.IGNORECASE takes these for "i"; casefold() does not (for every other letter the
# patterns use, a case-insensitive match is a match of the casefolded text)
_FOLD_MISMATCH = ("ı", "İ")
_BLANKS = " \t\u00a0"
_SENTENCE_ENDS = (".", "!", "?", ":", "\n")
_WORD_SPLIT = re.compile(f"({_WORD.pattern})")
_APOSTROPHE = re.compile(r"['’]")


def _anchors(title: str, summary: str, language: str) -> frozenset[str]:
    """:func:`anchors` of a title and summary that went through :func:`_clean`."""
    text = f"{title}\n{summary[:ANCHOR_CHARS]}".replace("ё", "е")
    out: set[str] = set()
    exact = _FOLD_MISMATCH[0] in text or _FOLD_MISMATCH[1] in text  # then no shortcuts
    if exact:
        phrases = set(range(len(_ORG_PHRASES)))
    else:
        fold = text.casefold()
        phrases = {k for literal, k in _ORG_LITERALS if literal in fold}
    for k in phrases:
        pattern, canon, _ = _ORG_PHRASES[k]
        if pattern.search(text):
            out.add(f"a:{canon}")
    split = _split_words(text)
    dates, english = (True, None) if exact else _month_words(text, split)
    if dates:
        dated = _date_anchors(text, out, english)
        if dated != text:
            text = dated
            split = _split_words(text)
    parts, words, capitalised, capitalised_folded, _, lowercase = split
    _number_anchors(text, language, out)
    for folded in lowercase.union(capitalised_folded).intersection(_ACRONYMS):
        out.add(f"a:{_ACRONYMS[folded]}")
    stop = _STOP.get(language, frozenset())
    keys: dict[str, str] = {}  # folded name -> name key
    spellings: dict[str, list[str]] = {}
    for word, f in zip(capitalised, capitalised_folded, strict=True):
        if f in lowercase or f in _ACRONYMS or f in stop:
            continue
        if f not in keys:
            key = name_key(word)
            if not key or key in _NOT_NAMES:
                continue
            keys[f] = key
        spellings.setdefault(f, []).append(word)
    for f, key in keys.items():
        for w in spellings[f]:
            if _inside_sentence(parts, words, w):
                out.add(f"p:{key}")
                break
    return frozenset(out)


class _Words(NamedTuple):
    """The words of a text as _WORD finds them, for names, acronyms and dates."""

    parts: list[str]  # the split: gap, word, gap, …, gap
    words: list[str]
    capitalised: list[str]  # distinct
    capitalised_folded: list[str]  # casefolded, in the same order
    others: set[str]  # the other distinct words
    others_folded: set[str]  # their casefolded forms


def _split_words(text: str) -> _Words:
    parts = _WORD_SPLIT.split(text)
    words = parts[1::2]
    distinct = set(words)
    capitalised = [w for w in distinct if w[0].isupper()]
    distinct.difference_update(capitalised)
    return _Words(
        parts, words, capitalised, _casefold_all(capitalised), distinct, _casefold_set(distinct)
    )


def _casefold_all(words: Iterable[str]) -> list[str]:
    """``[w.casefold() for w in words]`` in one call (casefolding is per character)."""
    folded = "\n".join(words).casefold()
    return folded.split("\n") if folded else []


def _casefold_set(words: set[str]) -> set[str]:
    """``{w.casefold() for w in words}``; ``words`` itself when no word changes (most often:
    words without a capital letter)."""
    joined = "\n".join(words)
    folded = joined.casefold()
    if folded == joined:
        return words
    return set(folded.split("\n"))


def _month_words(text: str, split: _Words) -> tuple[bool, list[str]]:
    """Whether a date pattern can match (each needs a month name as a word of its own), and
    the spellings English month names have in ``text`` (where month-first dates start)."""
    _, _, capitalised, capitalised_folded, others, others_folded = split
    found = not (
        _MONTH_WORDS.isdisjoint(others_folded) and _MONTH_WORDS.isdisjoint(capitalised_folded)
    )
    apostrophes = "'" in text or "’" in text
    if not (found or apostrophes):
        return False, []  # most texts
    english = [
        w for w, f in zip(capitalised, capitalised_folded, strict=True) if f in _MONTH_WORDS_EN
    ]
    if not _MONTH_WORDS_EN.isdisjoint(others_folded):
        english += [w for w in others if w.casefold() in _MONTH_WORDS_EN]
    if apostrophes:
        # a month name glued to a neighbour by an apostrophe is one word to _WORD ("мая’")
        for w in chain(capitalised, others):
            if "'" in w or "’" in w:
                for part in _APOSTROPHE.split(w):
                    folded = part.casefold()
                    found = found or folded in _MONTH_WORDS
                    if folded in _MONTH_WORDS_EN:
                        english.append(part)
    return found, english


def _inside_sentence(parts: list[str], words: list[str], word: str) -> bool:
    """Whether ``word`` occurs capitalised inside a sentence, not at its start.

    A name shows up capitalised inside a sentence somewhere; sentence-initial words alone
    are mostly ordinary words ("Синоптики", "Regulator"). Looks at the last 16 characters
    before each occurrence: the last one that is not a blank must not end a sentence.
    """
    k = -1
    while True:
        try:
            k = words.index(word, k + 1)
        except ValueError:
            return False
        gap = parts[2 * k]  # the text between the previous word and this one
        before = gap[-16:].rstrip(_BLANKS)
        if before:
            if before[-1] not in _SENTENCE_ENDS:
                return True
        elif k > 0 and len(gap) < 16:
            return True  # the previous word (which ends in a letter) is within reach


# --------------------------------------------------------------------------- URLs

_LANG_HOST_PREFIXES = ("www.", "eng.", "en.", "ru.", "rus.", "m.", "amp.")
_ARTICLE_NUMBER = re.compile(r"\d{5,}")
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+){3,}$")


# http(s)://host/path with a plain host and nothing urlsplit would strip: the common case
_PLAIN_URL = re.compile(r"https?://([A-Za-z0-9.-]+)(/[^?#\t\r\n]*)?(?:[?#]|\Z)")


def url_key(url: str) -> str:
    """Host (language prefixes stripped) + article number or long slug, "" when none."""
    if not url:
        return ""
    if m := _PLAIN_URL.match(url):
        host, path = m.group(1).lower(), m.group(2) or ""
    else:
        try:
            parts = urlsplit(url)
        except ValueError:
            return ""
        host, path = (parts.hostname or "").lower(), parts.path
    while host.startswith(_LANG_HOST_PREFIXES):
        host = host.split(".", 1)[1]
    numbers = _ARTICLE_NUMBER.findall(path)
    if numbers:
        return f"{host}:{numbers[-1]}"
    last = next((p for p in reversed(path.split("/")) if p), "").lower()
    return f"{host}:{last}" if _SLUG.match(last) else ""


# --------------------------------------------------------------------------- features


def features(item: Item) -> StoryFeatures:
    """Compute once at ingest; the store persists ``to_bytes()`` alongside the item."""
    language = _language(item)
    title, summary = _clean(item.title), _clean(item.summary)
    hashes = np.asarray(_shingle_hashes(title, summary, language), dtype="<u4")
    return StoryFeatures(
        language=language,
        published=item.published.astimezone(UTC),
        url=item.url,
        content_hash=item.content_hash or _fallback_hash(item.title, summary),
        signature=signature(hashes),
        shingles=hashes.tobytes(),
        anchors=_anchors(title, summary, language),
        url_key=url_key(item.url or item.link),
    )


# --------------------------------------------------------------------------- cross score

_ANCHOR_WEIGHTS = {"p": 1.0, "n": 1.5, "m": 0.5, "y": 0.2, "s": 1.0, "d": 1.0, "a": 0.5}
_COMMON_WEIGHT = 0.3
_MIN_SHARED = 3.0  # shared weight below this is never enough, whatever the ratio


def _weight(anchor: str) -> float:
    if anchor[0] == "p" and anchor[2:] in _COMMON_NAMES:
        return _COMMON_WEIGHT
    return _ANCHOR_WEIGHTS.get(anchor[0], 0.5)


def _names(anchors: frozenset[str]) -> list[str]:
    return sorted(x[2:] for x in anchors if x[0] == "p")


def _name_pairs(a: list[str], b: list[str]) -> list[str]:
    """Names of ``a`` and ``b`` that agree (one key a prefix of the other), shorter key each."""
    used: set[int] = set()
    out = []
    for x in a:
        for k, y in enumerate(b):
            if k not in used and (x.startswith(y) or y.startswith(x)):
                used.add(k)
                out.append(x if len(x) <= len(y) else y)
                break
    return out


def shared_weight(a: frozenset[str], b: frozenset[str]) -> float:
    """Weight of the anchors two items share (names matched by key prefix)."""
    exact = sum(_weight(x) for x in a & b if x[0] != "p")
    names = _name_pairs(_names(a), _names(b))
    return exact + sum(_weight(f"p:{n}") for n in names)


def _cross_score(a: frozenset[str], b: frozenset[str]) -> float:
    """How strongly two items look like the same story from their anchors alone, 0..1.

    Shared anchor weight over the smaller side's total, once the shared evidence is
    substantial; texts that both quote amounts or dates, mostly different ones, score 0.
    """
    got = shared_weight(a, b)
    if got < _MIN_SHARED or _numbers_conflict(a, b):
        return 0.0
    side = min(sum(map(_weight, a)), sum(map(_weight, b)))
    return min(1.0, got / side)


def _numbers_conflict(a: frozenset[str], b: frozenset[str]) -> bool:
    """Both texts quote amounts (or dates), and fewer than half of the smaller side agree."""
    for kinds in ("nm", "d"):
        na = {x for x in a if x[0] in kinds}
        nb = {x for x in b if x[0] in kinds}
        if na and nb and len(na & nb) * 2 < min(len(na), len(nb)):
            return True
    return False


def _names_conflict(a: frozenset[str], b: frozenset[str]) -> bool:
    """Both texts name specific people or places, and none of them agree."""
    na = [n for n in _names(a) if n not in _COMMON_NAMES]
    nb = [n for n in _names(b) if n not in _COMMON_NAMES]
    return bool(na and nb) and not _name_pairs(na, nb)


def _anchor_terms(anchors: frozenset[str]) -> tuple[dict[str, float], set[str], float]:
    """How an item's anchors meet the postings of others.

    Returns the posting keys with the weight each adds to :func:`shared_weight` at most when
    another item shares it, the keys that find candidates (names by their first three
    letters, amounts, dates, scores: the ones items are filed under), and the weight shared
    at most without any shared key. So ``base + sum(added for shared keys)`` bounds the
    shared weight from above, and candidates that cannot reach a rule's weight are skipped.
    """
    added: dict[str, float] = {}
    finding: set[str] = set()
    base = 0.0
    for x in anchors:
        if (filed := _filed_under(x)) is not None:
            finding.add(filed)
        kind = x[0]
        if kind == "p":
            name, key = x[2:], x[:5]
            # a name pairs with a name sharing its first three letters: the other item's
            # is filed under them unless it is a common one
            alone = _COMMON_WEIGHT if name in _COMMON_NAMES else _unfiled_pair_weight(name)
            base += alone
            added[key] = added.get(key, 0.0) + _ANCHOR_WEIGHTS["p"] - alone
        elif kind in "nds":
            added[x] = added.get(x, 0.0) + _weight(x)
        else:
            base += _weight(x)
    return added, finding, base


def _filed_under(anchor: str) -> str | None:
    """The anchor posting key an item with ``anchor`` is filed under, if any: names by their
    first three letters unless common, amounts, dates and scores as they are."""
    kind = anchor[0]
    if kind == "p":
        return anchor[:5] if anchor[2:] not in _COMMON_NAMES else None
    return anchor if kind in "nds" else None


@functools.lru_cache(maxsize=65536)
def _unfiled_pair_weight(name: str) -> float:
    """The most a (not common) name can weigh paired with a common name (which is not filed)."""
    if any(c.startswith(name) for c in _COMMON_NAMES):
        return _ANCHOR_WEIGHTS["p"]  # the shorter key of the pair is this one
    if any(name.startswith(c) for c in _COMMON_NAMES):
        return _COMMON_WEIGHT
    return 0.0


# --------------------------------------------------------------------------- index


class _Keys:
    """The 64-bit keys the postings file strings (URLs, content hashes, anchors) under: a
    keyed BLAKE2b, so the keys are the same in every process given the same secret (a
    snapshot of the index is loaded by another process; Python's ``hash`` differs from one
    process to the next) and a feed cannot make two strings share one without knowing it."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._base = hashlib.blake2b(digest_size=8, key=secret or os.urandom(16))

    def __call__(self, text: str) -> int:
        h = self._base.copy()
        h.update(text.encode("utf-8", "surrogatepass"))
        return int.from_bytes(h.digest(), "little", signed=True)


class _Postings:
    """A many-to-many map from integer keys to entry ids, in numpy arrays.

    Two levels of key-sorted (key, id) arrays, a large one and a recent one, plus a dict of
    the latest additions. The dict is merged into the recent level when it fills, and that
    one into the large level when it reaches an eighth of it, so each pair is copied a few
    times and costs ~12 bytes instead of a Python set slot and int. Ids of forgotten entries
    stay until :meth:`renumber`.
    """

    def __init__(self, dtype: Any, pending_limit: int) -> None:
        self._dtype = dtype
        self._levels = [(np.empty(0, dtype), np.empty(0, np.int32)) for _ in range(2)]
        self._pending: dict[int, int] = {}
        self._pending_more: dict[int, list[int]] = {}  # further ids of a pending key
        self._pending_limit = pending_limit

    def add(self, keys: Sequence[int], i: int) -> None:
        pending = self._pending
        if pending.keys().isdisjoint(keys):
            pending.update(dict.fromkeys(keys, i))
        else:
            for k in keys:
                if k in pending:
                    if pending[k] != i:
                        self._pending_more.setdefault(k, []).append(i)
                else:
                    pending[k] = i
        if len(pending) >= self._pending_limit:
            self._flush()

    def lookup(self, keys: Sequence[int], cap: int = 0) -> tuple[Any, Any, Any]:
        """Ids filed under ``keys``: (ids, index in ``keys`` of each, mask of capped keys).

        Keys filed under more than ``cap`` ids (when ``cap``) are capped and give none.
        """
        q = np.array(keys, dtype=self._dtype)
        hits = []
        counts = np.zeros(len(q), np.int64)
        for level_keys, level_ids in self._levels:
            if len(level_keys):
                lo = level_keys.searchsorted(q, side="left")
                found = level_keys.searchsorted(q, side="right") - lo
                counts += found
                hits.append((level_ids, lo, found))
        # the latest additions, in plain lists: a numpy call per key would cost more
        recent: list[int] = []
        recent_at: list[int] = []
        at_key: list[int] = []
        count_at_key: list[int] = []
        pending, pending_more = self._pending, self._pending_more
        before = counts.tolist() if cap else None
        for j, k in enumerate(keys):
            i = pending.get(k)
            if i is None:
                continue
            more = pending_more.get(k, ()) if pending_more else ()
            at_key.append(j)
            count_at_key.append(1 + len(more))
            if before is not None and before[j] + 1 + len(more) > cap:
                continue  # capped: its ids are not gathered
            recent.append(i)
            recent_at.append(j)
            if more:
                recent.extend(more)
                recent_at.extend([j] * len(more))
        if at_key:
            counts[at_key] += count_at_key  # (distinct positions)
        capped = counts > cap if cap else np.zeros(len(q), bool)
        parts, which = [], []
        for level_ids, lo, found in hits:
            found[capped] = 0
            total = int(found.sum())
            if total:
                ends = np.cumsum(found)
                parts.append(level_ids[np.arange(total) + np.repeat(lo - ends + found, found)])
                which.append(np.repeat(np.arange(len(q)), found))
        if recent:
            parts.append(np.array(recent, np.int32))
            which.append(np.array(recent_at, np.intp))
        if not parts:
            return np.empty(0, np.int32), np.empty(0, np.intp), capped
        if len(parts) == 1:
            return parts[0], which[0], capped
        return np.concatenate(parts), np.concatenate(which), capped

    def ids_of(self, key: int) -> list[int]:
        """Ids filed under one key: :meth:`lookup` without its arrays, for a URL or hash."""
        ids: list[int] = []
        for level_keys, level_ids in self._levels:
            if len(level_keys):
                lo = int(level_keys.searchsorted(key, side="left"))
                hi = int(level_keys.searchsorted(key, side="right"))
                if hi > lo:
                    ids.extend(level_ids[lo:hi].tolist())
        i = self._pending.get(key)
        if i is not None:
            ids.append(i)
            ids.extend(self._pending_more.get(key, ()))
        return ids

    def add_many(self, keys: Any, ids: Any) -> None:
        """File many (key, id) pairs at once (arrays of the keys' dtype and int32)."""
        if not len(keys):
            return
        if not len(self._levels[0][0]) and not len(self._levels[1][0]):
            self._levels[0] = (keys, ids)  # an empty index being loaded: nothing to merge
        else:
            self._merge(keys, ids)

    def settle(self) -> None:
        """Move the latest additions from the dict into the arrays."""
        if self._pending:
            self._flush()

    def levels(self) -> list[tuple[Any, Any]]:
        """The settled (keys, ids) arrays, for :meth:`StoryIndex.snapshot`."""
        self.settle()
        return list(self._levels)

    def restore(self, levels: Sequence[tuple[Any, Any]], size: int) -> None:
        """Take arrays from :meth:`levels`; ValueError unless each is key-sorted, of this
        key type, with ids of entries below ``size``."""
        if len(levels) != 2:
            raise ValueError("a posting has two levels")
        for keys, ids in levels:
            if keys.dtype != self._dtype or ids.dtype != np.int32 or keys.shape != ids.shape:
                raise ValueError("a posting level has the wrong types or lengths")
            if keys.ndim != 1 or np.any(keys[1:] < keys[:-1]):
                raise ValueError("a posting level is not sorted")
            if len(ids) and (ids.min() < 0 or ids.max() >= size):
                raise ValueError("a posting names an entry that is not there")
        self._levels = [(keys, ids) for keys, ids in levels]
        self._pending, self._pending_more = {}, {}

    def _flush(self) -> None:
        keys = list(self._pending)
        ids = list(self._pending.values())
        for k, more in self._pending_more.items():
            keys.extend([k] * len(more))
            ids.extend(more)
        self._pending, self._pending_more = {}, {}
        self._merge(np.array(keys, self._dtype), np.array(ids, np.int32))

    def _merge(self, keys: Any, ids: Any) -> None:
        recent = _merged(self._levels[1], (keys, ids))
        if len(recent[0]) > max(4 * self._pending_limit, len(self._levels[0][0]) // 8):
            self._levels = [_merged(self._levels[0], recent), (recent[0][:0], recent[1][:0])]
        else:
            self._levels[1] = recent

    def renumber(self, new_ids: Any) -> None:
        """Apply ``new_ids[old id]`` to every id, dropping those mapped to -1."""
        self._flush()
        keys, ids = _merged(*self._levels)
        ids = new_ids[ids]
        keep = ids >= 0
        self._levels = [
            (keys[keep], ids[keep].astype(np.int32)),
            (keys[:0], ids[:0].astype(np.int32)),
        ]

    def nbytes(self) -> int:
        return sum(k.nbytes + i.nbytes for k, i in self._levels)


def _merged(a: tuple[Any, Any], b: tuple[Any, Any]) -> tuple[Any, Any]:
    """Two key-sorted (key, id) arrays as one (b unsorted is fine); equal keys keep their
    order, a's first. b goes in at its places in a: sorting both anew needs an index array
    and copies ~3x the size of a at once."""
    order = np.argsort(b[0], kind="stable")
    b_keys, b_ids = b[0][order], b[1][order]
    at = a[0].searchsorted(b_keys, side="right") + np.arange(len(b_keys))
    from_a = np.ones(len(a[0]) + len(b_keys), bool)
    from_a[at] = False
    keys = np.empty(len(from_a), a[0].dtype)
    ids = np.empty(len(from_a), np.int32)
    keys[at], ids[at] = b_keys, b_ids
    keys[from_a], ids[from_a] = a[0], a[1]
    return keys, ids


def _pairs(keys: Any, ids: Any) -> tuple[Any, Any]:
    """Distinct (key, id) pairs sorted by key, then id: keys as given, ids (unsigned, below
    2**31) as int32.

    Key and id are packed into one uint64 (keys by rank unless they are uint32): a plain
    sort of those is several times faster than a stable sort of the keys.
    """
    if keys.dtype == np.uint32:
        table, packed = None, keys.astype(np.uint64)
    else:
        table, rank = np.unique(keys, return_inverse=True)
        packed = rank.astype(np.uint64)
    del keys  # temporaries passed in go before the sort, the peak of memory
    packed <<= np.uint64(32)
    packed |= ids
    del ids
    packed.sort()
    if len(packed) > 1 and (repeated := packed[1:] == packed[:-1]).any():
        packed = packed[np.concatenate(([True], ~repeated))]
    ids = packed.astype(np.uint32).view(np.int32)  # the low half
    packed >>= np.uint64(32)
    return (packed.astype(np.uint32) if table is None else table[packed]), ids


@dataclass
class _Query:
    """What the index looks up for one StoryFeatures, computed once for find and add."""

    f: StoryFeatures
    published: int  # µs since the epoch
    near: bool  # long enough for near-duplicates
    shingles: Any  # sorted uint32 array
    added: Any  # float array: shared-weight bound added per anchor key (see _anchor_terms)
    finds: Any  # bool array: which anchor keys find candidates
    anchor_keys: list[int]
    filed_under: list[int]  # the anchor keys the item is filed under
    base: float


_MEMBER_TABLE = 1 << 12  # see StoryIndex._jaccards
_LOAD_CHUNK = 1024  # rows decoded at a time: their stored bytes and payloads are held at once


class _Load:
    """Stored features of many rows as the columns and posting pairs the index keeps.

    Rows are decoded a chunk at a time (see :meth:`StoryIndex.add_many`), readable rows
    only, in row order, without a StoryFeatures each: headers and shingles with numpy, the
    JSON payloads checked by column.
    """

    def __init__(self, first: int, languages: dict[str, int], key: _Keys) -> None:
        self.first = first  # entry number of the first row
        self._key = key
        self.size = 0
        self.languages = languages
        self.story: list[str] = []
        self._story_keys: dict[str, str] = {}
        self.anchors: list[str] = []  # "\n"-joined, as StoryIndex keeps them
        # one array per chunk
        self.published: list[Any] = []
        self.language: list[Any] = []
        self.tokens: list[Any] = []
        self.shingles: list[Any] = []  # of the rows with >= MIN_TOKENS, one after another
        # (keys, entry numbers) per chunk, by posting
        self.filed: dict[str, tuple[list[Any], list[Any]]] = {
            name: ([], []) for name in ("url", "hash", "url_key", "anchor")
        }
        # anchors repeat across rows: each is looked into once
        self._anchor_codes: dict[str, int] = {}  # anchor -> index in the two lists below
        self._anchor_keys: list[int] = []  # the key it is filed under, 0 for none
        self._anchor_filed: list[bool] = []

    def decode(self, rows: Sequence[tuple[str, bytes]]) -> list[bool]:
        """Take in the readable ones of ``rows``; which ones were."""
        keys = [k for k, _ in rows]
        blobs = [b for _, b in rows]
        n, size = len(blobs), _HEADER.size
        heads = b"".join([b[:size] for b in blobs])
        if len(heads) != n * size:  # truncated rows: padded, and rejected below
            heads = b"".join([b[:size].ljust(size, b"\0") for b in blobs])
        head = np.frombuffer(heads, _HEADER_DTYPE)
        published = head["published"]
        counts = head["count"].astype(np.int64)
        mids = size + 4 * head["perms"].astype(np.int64)
        ends = mids + 4 * counts
        ok = (
            (np.fromiter(map(len, blobs), np.int64, n) > ends)  # a payload follows
            & (head["magic"] == _MAGIC)
            & (head["version"] == _FORMAT_VERSION)
            & (published >= _MIN_MICROS)
            & (published <= _MAX_MICROS)
        )
        rows_ok = np.flatnonzero(ok)
        payloads = [
            blobs[r][e:] for r, e in zip(rows_ok.tolist(), ends[rows_ok].tolist(), strict=True)
        ]
        try:
            # what json.loads does with bytes, less its encoding detection: a payload that
            # decodes and parses here is one it reads the same, and any other raises
            values = [_JSON.decode(p.decode()) for p in payloads]
        except ValueError:
            values = list(map(_loads, payloads))
        columns = _payload_columns(values)
        if columns is None:  # some payload is not what to_bytes writes: find which
            good = np.fromiter(map(_is_payload, values), bool, len(values))
            ok[rows_ok[~good]] = False
            rows_ok = rows_ok[good]
            columns = _payload_columns([v for v in values if _is_payload(v)])
            assert columns is not None
        language, url, content_hash, url_key, anchors = columns
        m = len(rows_ok)
        start = self.first + self.size
        entries = np.arange(start, start + m, dtype=np.uint32)
        self.size += m

        # rows of one story share its key string (a local table: the interpreter's own
        # table of interned strings never shrinks)
        shared = self._story_keys
        self.story.extend([shared.setdefault(keys[r], keys[r]) for r in rows_ok.tolist()])
        self.published.append(published[rows_ok])
        tokens = counts[rows_ok]
        self.tokens.append(tokens.astype(np.int32))
        long = rows_ok[tokens >= MIN_TOKENS]
        spans = zip(long.tolist(), mids[long].tolist(), ends[long].tolist(), strict=True)
        self.shingles.append(np.frombuffer(b"".join([blobs[r][a:b] for r, a, b in spans]), "<u4"))
        for lang in dict.fromkeys(language):
            self.languages.setdefault(lang, len(self.languages))
        self.language.append(np.fromiter(map(self.languages.__getitem__, language), np.int16, m))
        for name, texts in (("url", url), ("hash", content_hash), ("url_key", url_key)):
            present = np.fromiter(map(bool, texts), bool, m)
            if present.any():
                self._file(
                    name, np.fromiter(map(self._key, texts), np.int64, m)[present], entries[present]
                )

        self.anchors.extend(map("\n".join, anchors))
        every = list(chain.from_iterable(anchors))
        codes = self._anchor_codes
        for anchor in set(every).difference(codes):
            codes[anchor] = len(self._anchor_keys)
            key = _filed_under(anchor)
            self._anchor_keys.append(0 if key is None else self._key(key))
            self._anchor_filed.append(key is not None)
        at = np.fromiter(map(codes.__getitem__, every), np.int64, len(every))
        filed = np.array(self._anchor_filed, bool)[at]
        owners = np.repeat(entries, np.fromiter(map(len, anchors), np.int64, m))
        self._file("anchor", np.array(self._anchor_keys, np.int64)[at][filed], owners[filed])
        readable: list[bool] = ok.tolist()
        return readable

    def _file(self, name: str, keys: Any, entries: Any) -> None:
        self.filed[name][0].append(keys)
        self.filed[name][1].append(entries)


_JSON = json.JSONDecoder()


def _loads(payload: bytes) -> Any:
    """``json.loads``, None for what it rejects."""
    try:
        return json.loads(payload)
    except ValueError:
        return None


_PayloadColumns = tuple[
    tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[list[str], ...]
]


def _payload_columns(values: list[Any]) -> _PayloadColumns | None:
    """The fields of decoded payloads by column; None unless :func:`_is_payload` holds for
    each (checked by column: a call per value costs more than decoding it)."""
    if not values:
        return (), (), (), (), ()
    if set(map(type, values)) != {list} or set(map(len, values)) != {5}:
        return None
    language, url, content_hash, url_key, anchors = zip(*values, strict=True)
    if any(set(map(type, texts)) != {str} for texts in (language, url, content_hash, url_key)):
        return None
    if set(map(type, anchors)) != {list}:
        return None
    every = list(chain.from_iterable(anchors))
    if not set(map(type, every)) <= {str} or not all(every):
        return None
    return language, url, content_hash, url_key, anchors


class StoryIndex:
    """Recent items by story, for :meth:`find`; no I/O. Rebuilt from persisted features.

    Same-language copies ("near") need an exact shingle Jaccard ≥ ``threshold`` (plus a
    little when the two texts name different people), or, when published within
    ``assisted_window`` of each other, ≥ ``assisted_threshold`` together with shared
    anchors (names, dates, amounts) weighing ≥ ``assisted_weight``.

    Candidates come from postings, and nothing scans the whole index. Shingle postings
    give the entries whose overlap can reach the Jaccard threshold (see
    _shingle_candidates). Anchor postings (names by their first letters, amounts, dates)
    give the candidates of the assisted rule and of cross-language matches, but only those
    whose shared weight, bounded from above by the postings alone, can reach the rule's:
    templated copy shares common names and numbers with hundreds of items. Postings of
    more than ``max_posting`` items find nothing; when more than ``max_shingle_candidates``
    entries remain, the ones sharing the most are checked.

    Entries live in numpy arrays indexed by entry number (time, language, shingle
    hashes…) and in postings (~8-12 bytes a key); forgotten ones are dropped in bulk.
    """

    def __init__(
        self,
        *,
        window: timedelta = timedelta(hours=72),
        threshold: float = 0.27,
        assisted_threshold: float = 0.15,
        assisted_weight: float = 1.5,
        assisted_window: timedelta = timedelta(hours=6),
        cross_window: timedelta = timedelta(hours=24),
        cross_threshold: float = 0.6,
        max_posting: int = 2000,
        max_shingle_posting: int = 100,
        max_shingle_candidates: int = 48,
        secret: bytes | None = None,
    ) -> None:
        # (of the postings' keys: the same in the processes that share a snapshot)
        self._key = _Keys(secret)
        self.window = window
        self.threshold = threshold
        self.assisted_threshold = assisted_threshold
        self.assisted_weight = assisted_weight
        self.assisted_window = assisted_window
        self.cross_window = cross_window
        self.cross_threshold = cross_threshold
        self.max_posting = max_posting  # anchors shared by more entries find nothing
        self.max_shingle_posting = max_shingle_posting  # see _shingle_candidates
        self.max_shingle_candidates = max_shingle_candidates
        self._by_shingle = _Postings(np.uint32, 1 << 14)
        self._by_url = _Postings(np.int64, 1 << 11)
        self._by_hash = _Postings(np.int64, 1 << 11)
        self._by_url_key = _Postings(np.int64, 1 << 11)
        self._by_anchor = _Postings(np.int64, 1 << 13)
        self._languages: dict[str, int] = {"": 0}
        # per entry number (the order of add); forgotten entries stay until _renumber
        self._size = 0
        self._live = 0
        self._published = np.zeros(0, np.int64)  # µs since the epoch
        self._language = np.zeros(0, np.int16)  # index in _languages, 0 for unknown
        self._tokens = np.zeros(0, np.int32)
        self._alive = np.zeros(0, bool)
        self._shingle_at = np.zeros(0, np.int64)  # where its shingles start in _pool
        self._pool = np.zeros(0, np.uint32)  # shingle hashes of every entry, one after another
        self._pool_size = 0
        self._story: list[str] = []
        self._anchors: list[str] = []  # "\n"-joined; read for the few candidates that get far
        self._last: _Query | None = None

    def __len__(self) -> int:
        return self._live

    # ------------------------------------------------------------------ find

    def find(self, f: StoryFeatures) -> StoryMatch | None:
        """The story ``f`` belongs to, or None for a new story."""
        matches = self.find_all(f)
        return matches[0] if matches else None

    def find_all(self, f: StoryFeatures) -> list[StoryMatch]:
        """Every story ``f`` qualifies for, best first (one match per story).

        More than one means ``f`` bridges stories that are one: an agency's copy that
        arrived before the copies linking them (see :meth:`merge`).
        """
        if f.url and (i := self._latest(self._by_url, f.url)) is not None:
            return [StoryMatch(self._story[i], "url", 1.0)]
        if (
            f.tokens >= MIN_TOKENS
            and f.content_hash
            and (i := self._latest(self._by_hash, f.content_hash)) is not None
        ):
            return [StoryMatch(self._story[i], "hash", 1.0)]
        q = self._query(f)
        near, cross = self._candidates(q)
        if near:
            score, i = max(near, key=lambda m: (m[0], -m[1]))
            first = StoryMatch(self._story[i], "near", round(score, 4))
        elif cross:
            score, i = max(cross, key=lambda m: (m[0], -m[1]))
            first = StoryMatch(self._story[i], "cross", round(min(score, 1.0), 4))
        else:
            return []
        found: dict[str, StoryMatch] = {}
        for score, i in near:
            key = self._story[i]
            if key not in found or found[key].score < round(score, 4):
                found[key] = StoryMatch(key, "near", round(score, 4))
        best_cross: dict[str, float] = {}
        for score, i in cross:
            key = self._story[i]
            if key not in found:
                best_cross[key] = max(best_cross.get(key, 0.0), score)
        for key, score in best_cross.items():
            found[key] = StoryMatch(key, "cross", round(min(score, 1.0), 4))
        found.pop(first.story_key, None)
        return [first, *sorted(found.values(), key=lambda m: (-m.score, m.story_key))]

    def merge(self, from_key: str, into_key: str) -> int:
        """Re-file the entries of story ``from_key`` under ``into_key``; how many moved."""
        moved = 0
        for i, key in enumerate(self._story):
            if key == from_key:
                self._story[i] = into_key
                moved += bool(self._alive[i])
        return moved

    def _latest(self, postings: _Postings, s: str) -> int | None:
        alive = self._alive
        return max((i for i in postings.ids_of(self._key(s)) if alive[i]), default=None)

    def _query(self, f: StoryFeatures) -> _Query:
        if self._last is not None and self._last.f is f:
            return self._last
        added, finding, base = _anchor_terms(f.anchors)
        keys = list(added)
        q = _Query(
            f=f,
            published=_micros(f.published),
            near=f.tokens >= MIN_TOKENS and len(f.signature) == 4 * NUM_PERM,
            shingles=np.frombuffer(f.shingles, dtype="<u4"),
            added=np.array([added[k] for k in keys]),
            finds=np.array([k in finding for k in keys], dtype=bool),
            anchor_keys=[self._key(k) for k in keys],
            filed_under=[self._key(k) for k in finding],
            base=base,
        )
        self._last = q
        return q

    def _candidates(self, q: _Query) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
        """(score, entry) of the near and of the cross-language matches of ``q``."""
        f = q.f
        lang = self._languages.get(f.language, -1)
        near_ok = q.near
        cross_ok = bool(f.language)
        # anchor postings: candidates whose shared weight can reach a rule's
        ids, which, capped = self._by_anchor.lookup(q.anchor_keys, self.max_posting)
        base = q.base + float(q.added[capped].sum())
        near_ids = np.empty(0, np.int64)
        cross_ids = np.empty(0, np.int64)
        if len(ids):
            alive = self._alive[ids]
            ids, which = ids[alive], which[alive]
        if len(ids):
            uniq, inverse = np.unique(ids, return_inverse=True)
            bound = base + np.bincount(inverse, weights=q.added[which], minlength=len(uniq))
            finds = np.bincount(inverse, weights=q.finds[which], minlength=len(uniq)) > 0
            apart = np.abs(self._published[uniq] - q.published)
            language = self._language[uniq]
            if near_ok:
                near_ids = uniq[
                    finds
                    & (language == lang)
                    & (self._tokens[uniq] >= MIN_TOKENS)
                    & (apart <= _us(self.assisted_window))
                    & (bound >= self.assisted_weight - 1e-9)
                ]
            if cross_ok:
                ok = (
                    finds
                    & (language != lang)
                    & (language != 0)
                    & (apart <= _us(self.cross_window))
                    & (bound >= (_MIN_SHARED if self.cross_threshold > 0 else 0.0) - 1e-9)
                )
                cross_ids, bound = uniq[ok], bound[ok]
                if len(cross_ids) > self.max_shingle_candidates:
                    # common names and numbers: the ones sharing the most come first
                    order = np.argsort(-bound, kind="stable")
                    cross_ids = cross_ids[order[: self.max_shingle_candidates]]
        near: list[tuple[float, int]] = []
        cross: list[tuple[float, int]] = []
        if near_ok:
            near_ids = np.union1d(near_ids, self._shingle_candidates(q, lang, base))
            if len(near_ids):
                near = self._near(q, near_ids)
        if cross_ok:
            paired = np.empty(0, np.int64)
            if f.url_key:
                paired, _, _ = self._by_url_key.lookup([self._key(f.url_key)])
                paired = paired[
                    self._alive[paired]
                    & (self._language[paired] != lang)
                    & (self._language[paired] != 0)
                    & (np.abs(self._published[paired] - q.published) <= _us(self.cross_window))
                ]
            if len(cross_ids) or len(paired):
                cross = self._cross(q, cross_ids, paired)
        return near, cross

    def _shingle_candidates(self, q: _Query, lang: int, weight_alone: float) -> Any:
        """Entries of ``q``'s language whose shingle overlap can reach a near rule.

        Exact Jaccard J >= t needs an overlap o >= t(a + b)/(1 + t) for a and b shingles.
        Shingles filed under more than ``max_shingle_posting`` entries (common words) are
        not looked up; each of ``q``'s can still be shared, so the overlap counted from the
        others must reach the bound less their number. No pair is missed unless that
        number exceeds the bound (texts of mostly common words): then only the
        ``max_shingle_candidates`` entries sharing the most looked-up shingles are checked.
        """
        ids, _, capped = self._by_shingle.lookup(q.shingles.tolist(), self.max_shingle_posting)
        if not len(ids):
            return ids
        ids.sort()
        first = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
        overlap = np.diff(np.append(first, len(ids)))
        ids = ids[first]
        ok = self._alive[ids] & (self._language[ids] == lang) & (self._tokens[ids] >= MIN_TOKENS)
        ids, overlap = ids[ok], overlap[ok]
        apart = np.abs(self._published[ids] - q.published)
        t = np.full(len(ids), self.threshold)
        if weight_alone >= self.assisted_weight - 1e-9:
            # the assisted rule needs no shared posting then: its lower threshold applies
            t[apart <= _us(self.assisted_window)] = min(self.threshold, self.assisted_threshold)
        needed = t * (len(q.shingles) + self._tokens[ids]) / (1 + t) - int(capped.sum())
        keep = (overlap >= needed - 1e-9) & (apart <= _us(self.window))
        ids, overlap = ids[keep], overlap[keep]
        if len(ids) > self.max_shingle_candidates:
            # mostly common words: the bound lets many through; copies share the most
            ids = ids[np.argsort(-overlap, kind="stable")[: self.max_shingle_candidates]]
        return ids

    def _near(self, q: _Query, ids: Any) -> list[tuple[float, int]]:
        scores = self._jaccards(ids, q.shingles)
        keep = scores >= min(self.threshold, self.assisted_threshold)
        out = []
        f = q.f
        for i, score in zip(ids[keep].tolist(), scores[keep].tolist(), strict=True):
            anchors = self._entry_anchors(i)
            apart = abs(int(self._published[i]) - q.published)
            need = self.threshold + (NAMES_PENALTY if _names_conflict(anchors, f.anchors) else 0.0)
            if score < need and not (
                score >= self.assisted_threshold
                and apart <= _us(self.assisted_window)
                and shared_weight(anchors, f.anchors) >= self.assisted_weight
            ):
                continue
            if _numbers_conflict(anchors, f.anchors):
                continue
            out.append((score, i))
        return out

    def _cross(self, q: _Query, ids: Any, paired: Any) -> list[tuple[float, int]]:
        out = []
        f = q.f
        pairs = set(paired.tolist())
        for i in sorted(set(ids.tolist()) | pairs):
            anchors = self._entry_anchors(i)
            score = _cross_score(anchors, f.anchors)
            if i in pairs and shared_weight(anchors, f.anchors) > 0:
                # the agency's own translation under the same article number
                score = max(score + 0.25, self.cross_threshold)
            if score >= self.cross_threshold:
                out.append((score, i))
        return out

    def _jaccards(self, ids: Any, shingles: Any) -> Any:
        """Exact Jaccard similarity of ``shingles`` with each entry's, in one pass."""
        lens = self._tokens[ids]
        ends = np.cumsum(lens)
        starts = ends - lens
        at = np.arange(int(ends[-1])) + np.repeat(self._shingle_at[ids] - starts, lens)
        values = self._pool[at]
        # membership in ``shingles``: a table of their low bits rules out most values at
        # once (a gather); the few it lets through are searched for exactly
        table = np.zeros(_MEMBER_TABLE, bool)
        table[shingles & (_MEMBER_TABLE - 1)] = True
        maybe = np.flatnonzero(table[values & (_MEMBER_TABLE - 1)])
        found = values[maybe]
        pos = np.minimum(np.searchsorted(shingles, found), len(shingles) - 1)
        member = np.zeros(len(values), bool)
        member[maybe] = shingles[pos] == found
        inter = np.add.reduceat(member, starts, dtype=np.int64)
        return inter / (lens + len(shingles) - inter)

    def _entry_anchors(self, i: int) -> frozenset[str]:
        text = self._anchors[i]
        return frozenset(text.split("\n")) if text else frozenset()

    # ------------------------------------------------------------------ add / prune

    def add_many(self, rows: Iterable[tuple[str, bytes]]) -> list[bool]:
        """Add ``(story_key, StoryFeatures.to_bytes())`` rows; which ones were added.

        The index ends up as ``add(key, StoryFeatures.from_bytes(b))`` for each row in order
        would leave it, less the rows ``from_bytes`` rejects, but each posting is sorted
        once instead of growing row by row: for rebuilding the index from the store. Nothing
        is added when ``rows`` raises.
        """
        load = _Load(self._size, dict(self._languages), self._key)
        added: list[bool] = []
        it = iter(rows)
        while chunk := list(islice(it, _LOAD_CHUNK)):
            added.extend(load.decode(chunk))
        self._append(load)
        return added

    def _append(self, load: _Load) -> None:
        """Make the rows of ``load`` entries, numbered on from the last."""
        self._languages = load.languages
        if not load.size:
            return
        i, end = self._size, self._size + load.size
        if end > len(self._alive):
            self._grow(max(1024, 2 * end))
        self._published[i:end] = np.concatenate(load.published or [[]])
        self._language[i:end] = np.concatenate(load.language or [[]])
        tokens = np.concatenate(load.tokens or [[]]).astype(np.int64)
        self._tokens[i:end] = tokens
        self._alive[i:end] = True
        lens = np.where(tokens >= MIN_TOKENS, tokens, 0)
        starts = self._pool_size + np.cumsum(lens) - lens
        self._shingle_at[i:end] = np.where(lens > 0, starts, 0)
        shingles = np.concatenate(load.shingles or [np.zeros(0, np.uint32)])
        load.shingles.clear()
        at = self._pool_size
        if at + len(shingles) > len(self._pool):
            self._pool = np.concatenate([self._pool[:at], shingles]) if at else shingles
        else:
            self._pool[at : at + len(shingles)] = shingles
        self._pool_size += len(shingles)
        self._by_shingle.add_many(
            *_pairs(shingles, np.repeat(np.arange(i, end, dtype=np.uint32), lens))
        )
        for postings, name in (
            (self._by_url, "url"),
            (self._by_hash, "hash"),
            (self._by_url_key, "url_key"),
            (self._by_anchor, "anchor"),
        ):
            keys, entries = load.filed[name]
            if keys:
                postings.add_many(*_pairs(np.concatenate(keys), np.concatenate(entries)))
        self._story.extend(load.story)
        self._anchors.extend(load.anchors)
        self._size = end
        self._live += load.size

    def add(self, story_key: str, f: StoryFeatures) -> None:
        """Remember ``f`` as a copy of ``story_key``."""
        q = self._query(f)
        i = self._size
        if i == len(self._alive):
            self._grow(max(1024, 2 * i))
        self._size += 1
        self._live += 1
        self._published[i] = q.published
        self._language[i] = self._languages.setdefault(f.language, len(self._languages))
        self._tokens[i] = f.tokens
        self._alive[i] = True
        if f.tokens >= MIN_TOKENS:
            at = self._pool_size
            if at + f.tokens > len(self._pool):
                # np.zeros and a copy of what is used: the spare tail stays untouched (and
                # takes no memory) until it is written
                pool = np.zeros(max(at + f.tokens, 2 * len(self._pool)), np.uint32)
                pool[:at] = self._pool[:at]
                self._pool = pool
            self._pool[at : at + f.tokens] = q.shingles
            self._shingle_at[i] = at
            self._pool_size += f.tokens
            self._by_shingle.add(q.shingles.tolist(), i)
        if f.url:
            self._by_url.add([self._key(f.url)], i)
        if f.content_hash:
            self._by_hash.add([self._key(f.content_hash)], i)
        if q.filed_under:
            self._by_anchor.add(q.filed_under, i)
        if f.url_key:
            self._by_url_key.add([self._key(f.url_key)], i)
        self._story.append(story_key)  # a new story's key, or the one of the story it joins
        self._anchors.append("\n".join(f.anchors))

    def _all_postings(self) -> tuple[_Postings, ...]:
        return (self._by_shingle, self._by_url, self._by_hash, self._by_url_key, self._by_anchor)

    def settle(self) -> None:
        """File the latest additions in the arrays (~12 bytes a posting instead of ~100 in
        a dict): for a pause, such as between a daemon's rounds."""
        for postings in self._all_postings():
            postings.settle()

    def prune(self, before: datetime) -> int:
        """Forget entries published before ``before`` (a sliding window); how many went."""
        n = self._size
        old = self._alive[:n] & (self._published[:n] < _micros(before))
        count = int(old.sum())
        if count:
            self._alive[:n][old] = False
            self._live -= count
            for i in np.flatnonzero(old).tolist():
                self._anchors[i] = ""
            if n - self._live > max(4096, self._live // 4):
                self._renumber()
        return count

    # ------------------------------------------------------------------ snapshot

    _COLUMNS = (
        ("published", "_published", np.int64),
        ("language", "_language", np.int16),
        ("tokens", "_tokens", np.int32),
        ("alive", "_alive", np.bool_),
        ("shingle_at", "_shingle_at", np.int64),
    )
    _POSTINGS = ("shingle", "url", "hash", "url_key", "anchor")

    def snapshot(self) -> dict[str, Any]:
        """The whole index as named numpy arrays (see :meth:`restore`), for a process that
        starts later to load instead of rebuilding it from every stored item's features."""
        self.settle()
        n = self._size
        arrays: dict[str, Any] = {name: getattr(self, attr)[:n] for name, attr, _ in self._COLUMNS}
        arrays["pool"] = self._pool[: self._pool_size]
        for name, postings in zip(self._POSTINGS, self._all_postings(), strict=True):
            for level, (keys, ids) in enumerate(postings.levels()):
                arrays[f"{name}_keys_{level}"] = keys
                arrays[f"{name}_ids_{level}"] = ids
        languages = sorted(self._languages, key=self._languages.__getitem__)
        for name, texts in (
            ("story", self._story),
            ("anchors", self._anchors),
            ("languages", languages),
        ):
            arrays[name] = _pack(texts)
        arrays["live"] = np.array([self._live], np.int64)
        arrays["probe"] = np.array([self._key(_PROBE)], np.int64)
        return arrays

    def restore(self, arrays: Any) -> None:
        """Become the index :meth:`snapshot` saw; ValueError (and nothing changes) when the
        arrays are not such a snapshot."""
        try:
            columns = {attr: arrays[name] for name, attr, _ in self._COLUMNS}
            pool = arrays["pool"]
            levels = [
                [(arrays[f"{name}_keys_{i}"], arrays[f"{name}_ids_{i}"]) for i in range(2)]
                for name in self._POSTINGS
            ]
            story, anchors, languages = (
                _unpack(arrays[name]) for name in ("story", "anchors", "languages")
            )
            live = int(arrays["live"][0])
            probe = int(arrays["probe"][0])
        except (KeyError, IndexError) as e:
            raise ValueError(f"not a story index snapshot: {e!r}") from e
        if probe != self._key(_PROBE):
            raise ValueError("snapshot keys were made with another secret")
        n = len(story)
        for name, attr, dtype in self._COLUMNS:
            if columns[attr].dtype != dtype or columns[attr].shape != (n,):
                raise ValueError(f"snapshot column {name} has the wrong type or length")
        if pool.dtype != np.uint32 or pool.ndim != 1 or len(anchors) != n:
            raise ValueError("snapshot shingles or anchors do not fit its entries")
        if not languages or languages[0] != "" or len(set(languages)) != len(languages):
            raise ValueError("snapshot languages are not an index's")
        language, tokens, at = columns["_language"], columns["_tokens"], columns["_shingle_at"]
        if n and (language.min() < 0 or language.max() >= len(languages)):
            raise ValueError("snapshot names a language it does not list")
        long = tokens >= MIN_TOKENS
        if np.any(at[long] < 0) or np.any(at[long] + tokens[long] > len(pool)):
            raise ValueError("snapshot shingles run past its pool")
        if live != int(columns["_alive"].sum()):
            raise ValueError("snapshot count of live entries is wrong")
        fresh = [_Postings(p._dtype, p._pending_limit) for p in self._all_postings()]
        for postings, posting_levels in zip(fresh, levels, strict=True):
            postings.restore(posting_levels, n)
        # all checked: take it
        self._by_shingle, self._by_url, self._by_hash, self._by_url_key, self._by_anchor = fresh
        capacity = max(1024, 2 * n)
        for _name, attr, dtype in self._COLUMNS:
            column = np.zeros(capacity, dtype)
            column[:n] = columns[attr]
            setattr(self, attr, column)
        self._pool = np.array(pool)
        self._pool_size = len(pool)
        self._size, self._live = n, live
        shared: dict[str, str] = {}  # one string per story, as add_many keeps them
        self._story = [shared.setdefault(k, k) for k in story]
        self._anchors = anchors
        self._languages = {lang: i for i, lang in enumerate(languages)}
        self._last = None

    def _grow(self, capacity: int) -> None:
        for name in ("_published", "_language", "_tokens", "_alive", "_shingle_at"):
            old = getattr(self, name)
            new = np.zeros(capacity, old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def _renumber(self) -> None:
        """Drop forgotten entries from every array and posting: entry numbers change."""
        n = self._size
        keep = np.flatnonzero(self._alive[:n])
        new_ids = np.full(n, -1, np.int64)
        new_ids[keep] = np.arange(len(keep))
        for postings in self._all_postings():
            postings.renumber(new_ids)
        lens = np.where(self._tokens[keep] >= MIN_TOKENS, self._tokens[keep], 0)
        ends = np.cumsum(lens)
        starts = ends - lens
        at = np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(
            self._shingle_at[keep] - starts, lens
        )
        self._pool = self._pool[at]
        self._pool_size = len(self._pool)
        self._shingle_at = np.zeros(0, np.int64)
        columns = {
            name: getattr(self, name)[keep]
            for name in ("_published", "_language", "_tokens", "_alive")
        }
        self._size = len(keep)
        capacity = max(1024, 2 * len(keep))
        for name, values in (*columns.items(), ("_shingle_at", starts)):
            column = np.zeros(capacity, values.dtype)
            column[: len(values)] = values
            setattr(self, name, column)
        self._story = [self._story[i] for i in keep.tolist()]
        self._anchors = [self._anchors[i] for i in keep.tolist()]
        self._last = None


_PROBE = "a string whose key tells a snapshot made with the same secret"


def _pack(texts: Sequence[str]) -> Any:
    """Strings as one uint8 array: each one's UTF-8 length (8 bytes), then the bytes."""
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
    lengths = np.array([len(b) for b in encoded], "<u8").tobytes()
    return np.frombuffer(struct.pack("<Q", len(encoded)) + lengths + b"".join(encoded), np.uint8)


def _unpack(packed: Any) -> list[str]:
    """The strings :func:`_pack` packed; ValueError for anything else."""
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise ValueError("packed strings are not bytes")
    data = packed.tobytes()
    if len(data) < 8:
        raise ValueError("packed strings are cut short")
    (count,) = struct.unpack_from("<Q", data)
    start = 8 + 8 * count
    if start > len(data):
        raise ValueError("packed strings are cut short")
    lengths = np.frombuffer(data, "<u8", count, 8)
    if count and int(lengths.max()) > len(data):
        raise ValueError("packed strings do not add up")
    ends = (start + np.cumsum(lengths, dtype=np.uint64)).tolist()
    if (ends[-1] if ends else start) != len(data):
        raise ValueError("packed strings do not add up")
    starts = [start, *ends[:-1]]
    try:
        return [
            data[a:b].decode("utf-8", "surrogatepass") for a, b in zip(starts, ends, strict=True)
        ]
    except UnicodeDecodeError as e:
        raise ValueError(f"packed strings are not UTF-8: {e}") from e


def _us(delta: timedelta) -> int:
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


# --------------------------------------------------------------------------- cluster


def cluster(
    items: Sequence[Item],
    *,
    index_factory: Callable[[], StoryIndex] = StoryIndex,
) -> list[int]:
    """Cluster numbers for ``items`` (same order), fed through the index in published order."""
    index = index_factory()
    order = sorted(range(len(items)), key=lambda k: (items[k].published, k))
    result = [0] * len(items)
    stories = 0
    for k in order:
        f = features(items[k])
        match = index.find(f)
        if match is None:
            key = str(stories)
            stories += 1
        else:
            key = match.story_key
        index.add(key, f)
        result[k] = int(key)
    return result
