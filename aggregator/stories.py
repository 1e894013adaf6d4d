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

Near-duplicates: stemmed word shingles of title + lead, MinHash (datasketch) signatures
banded into LSH buckets for candidates, verified by the exact Jaccard of the shingle hashes
(the 128-value estimate wobbles by ±0.04 around the 0.27 threshold; exact costs ~200 bytes
per item). Amounts and dates that disagree veto a match: consecutive daily rate notes share
almost every word. Cross-language: numbers, dates, acronyms (ОДКБ = CSTO) and transliterated
names reduced to consonant keys (Лукашенко = Lukashenko), with a conservative threshold.

Precision comes first: a wrong merge hides a story from readers, while a missed merge only
shows it twice. Everything here is pure: no I/O and no clock. ``datasketch`` (which pulls in
scipy, ~0.5 s) is imported on the first :func:`features` call so short commands stay fast.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import struct
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
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
        mid = _HEADER.size + 4 * perms
        end = mid + 4 * count
        try:
            language, url, content_hash, url_key, anchors = json.loads(b[end:])
        except (ValueError, TypeError) as e:
            raise ValueError("story features: bad payload") from e
        return cls(
            language=language,
            published=_EPOCH + timedelta(microseconds=micros),
            url=url,
            content_hash=content_hash,
            signature=bytes(b[_HEADER.size : mid]),
            shingles=bytes(b[mid:end]),
            # anchors repeat across items ("a:csto", names): one string object each
            anchors=frozenset(map(sys.intern, anchors)),
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


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return _BOILERPLATE.sub("", text)


def _lead(summary: str, limit: int) -> str:
    summary = _clean(summary).strip()
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
    lead = _DATELINE.sub("", _lead(summary, LEAD_CHARS))
    text = f"{_clean(title)}\n{lead}".casefold().replace("ё", "е")
    words = [w.replace(",", ".") for w in _TOKEN.findall(text)]
    stop = _STOP.get(language, frozenset())
    words = [w for w in words if w not in stop]
    stemmer = _stemmer(language)
    if stemmer is not None:
        words = stemmer.stemWords(words)
    return set(words)


def shingle_hashes(tokens: Iterable[str]) -> list[int]:
    """Stable 32-bit hashes (sorted, distinct): the same on every run and machine."""
    return sorted(
        {
            int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=4).digest(), "little")
            for t in tokens
        }
    )


def _identity(x: int) -> int:
    return x


@lru_cache(maxsize=1)
def _minhash_permutations() -> Any:
    from datasketch import MinHash  # lazy: pulls in scipy

    return MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED).permutations


def signature(hashes: Sequence[int]) -> bytes:
    """MinHash values (datasketch, affine32 scheme) as little-endian uint32 bytes."""
    from datasketch import MinHash  # lazy: pulls in scipy

    m = MinHash(
        num_perm=NUM_PERM,
        seed=MINHASH_SEED,
        hashfunc=_identity,  # the shingles are hashed already; affine32 pre-mixes them
        permutations=_minhash_permutations(),
        scheme="affine32",
    )
    m.update_batch(hashes)
    return bytes(np.asarray(m.hashvalues, dtype="<u4").tobytes())


def _fallback_hash(title: str, summary: str) -> str:
    text = " ".join(f"{title}\n{_clean(summary)}".casefold().split())
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

_ORG_PHRASES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.IGNORECASE), canon)
    for p, canon in [
        (r"collective security treaty organi[sz]ation", "csto"),
        (r"организаци\w* договора о коллективной безопасности", "csto"),
        (r"commonwealth of independent states", "cis"),
        (r"содружеств\w* независимых государств", "cis"),
        (r"eurasian economic union", "eaeu"),
        (r"евразийск\w* экономическ\w* союз\w*", "eaeu"),
        (r"eurasian economic commission", "eec"),
        (r"евразийск\w* экономическ\w* комисси\w*", "eec"),
        (r"shanghai cooperation organi[sz]ation", "sco"),
        (r"шанхайск\w* организаци\w* сотрудничества", "sco"),
        (r"united nations|un general assembly", "un"),
        (r"организаци\w* объединенных наций|генассамбле\w* оон", "un"),
        (r"security council", "security-council"),
        (r"совет\w* безопасности|совбез\w*", "security-council"),
        (r"kontinental hockey league", "khl"),
    ]
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
_RU_ENDINGS = re.compile(r"(?:ыми|ими|ами|ями|ому|ему|ого|его|ым|им|ом|ем)$")
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
        latin = next((v for k, v in _EXONYMS.items() if w.startswith(k)), None)
        if latin is None:
            if len(w) > 5:
                w = _RU_ENDINGS.sub("", w)
            latin = w.translate(_TRANSLIT)
        w = latin
    elif w.endswith(("'s", "’s")):
        w = w[:-2]
    for a, b in _SOUNDS:
        w = w.replace(a, b)
    w = w.translate(_DROP).lower()
    w = re.sub(r"(.)\1+", r"\1", w)
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
_DAYS = r"(\d{1,2})(?:\s*[-–]\s*(\d{1,2}))?(?:st|nd|rd|th|-?го)?"
_DATE_DAY_FIRST = re.compile(rf"\b{_DAYS}\s+(?:of\s+)?(?:{_MONTH_EN}|{_MONTH_RU})\b", re.IGNORECASE)
_DATE_MONTH_FIRST = re.compile(rf"\b{_MONTH_EN}\s+{_DAYS}\b", re.IGNORECASE)
_PAIR = re.compile(r"(?<![\d.,])(\d{1,2})\s?[-:–]\s?(\d{1,2})(?![\d.,%])")
_NUM_EN = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?:\s*(thousand|k)\b)?")
_NUM_RU = re.compile(
    r"(?<![\w.,])(\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?!\d)|\d+)(?:[,.](\d+))?(?:\s*(тыс)\.?)?"
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


def _date_anchors(text: str, out: set[str]) -> str:
    """Add d:MM-DD anchors; return the text with the dates blanked out."""

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
    return _DATE_MONTH_FIRST.sub(month_first, text)


def _number(int_part: str, frac: str | None, thousand: bool) -> str:
    digits = re.sub(r"[^\d]", "", int_part)
    value = f"{int(digits)}.{frac}" if frac else str(int(digits))
    if thousand:
        scaled = float(value) * 1000
        value = str(int(scaled)) if scaled.is_integer() else str(scaled)
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value


def _number_anchors(text: str, language: str, out: set[str]) -> None:
    def pair(m: re.Match[str]) -> str:
        out.add(f"s:{int(m.group(1))}-{int(m.group(2))}")
        return " "

    text = _PAIR.sub(pair, text)
    pattern = _NUM_RU if language == "ru" else _NUM_EN
    for m in pattern.finditer(text):
        value = _number(m.group(1), m.group(2), bool(m.group(3)))
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


def anchors(title: str, summary: str, language: str) -> frozenset[str]:
    """Language-neutral evidence for cross-language matching (see the table above)."""
    text = f"{_clean(title)}\n{_clean(summary)[:ANCHOR_CHARS]}".replace("ё", "е")
    out: set[str] = set()
    for pattern, canon in _ORG_PHRASES:
        if pattern.search(text):
            out.add(f"a:{canon}")
    text = _date_anchors(text, out)
    _number_anchors(text, language, out)
    words = _WORD.findall(text)
    lowercase = {w.casefold() for w in words if not w[0].isupper()}
    # a name shows up capitalised inside a sentence somewhere; sentence-initial words alone
    # are mostly ordinary words ("Синоптики", "Regulator")
    inner = {
        m.group().casefold()
        for m in _WORD.finditer(text)
        # only the few characters before the word matter (slicing the whole prefix is O(n²))
        if text[max(0, m.start() - 16) : m.start()].rstrip(" \t\u00a0")[-1:]
        not in ("", ".", "!", "?", ":", "\n")
    }
    for word in words:
        folded = word.casefold()
        if folded in _ACRONYMS:
            out.add(f"a:{_ACRONYMS[folded]}")
            continue
        if not word[0].isupper() or folded in lowercase or folded not in inner:
            continue
        if folded in _STOP.get(language, ()):
            continue
        key = name_key(word)
        if key and key not in _NOT_NAMES:
            out.add(f"p:{key}")
    return frozenset(out)


# --------------------------------------------------------------------------- URLs

_LANG_HOST_PREFIXES = ("www.", "eng.", "en.", "ru.", "rus.", "m.", "amp.")
_ARTICLE_NUMBER = re.compile(r"\d{5,}")
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+){3,}$")


def url_key(url: str) -> str:
    """Host (language prefixes stripped) + article number or long slug, "" when none."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    host = (parts.hostname or "").lower()
    while host.startswith(_LANG_HOST_PREFIXES):
        host = host.split(".", 1)[1]
    numbers = _ARTICLE_NUMBER.findall(parts.path)
    if numbers:
        return f"{host}:{numbers[-1]}"
    last = next((p for p in reversed(parts.path.split("/")) if p), "").lower()
    return f"{host}:{last}" if _SLUG.match(last) else ""


# --------------------------------------------------------------------------- features


def features(item: Item) -> StoryFeatures:
    """Compute once at ingest; the store persists ``to_bytes()`` alongside the item."""
    language = _language(item)
    hashes = shingle_hashes(shingles(item.title, item.summary, language))
    published = item.published.astimezone(UTC)
    return StoryFeatures(
        language=language,
        published=published,
        url=item.url,
        content_hash=item.content_hash or _fallback_hash(item.title, item.summary),
        signature=signature(hashes),
        shingles=np.asarray(hashes, dtype="<u4").tobytes(),
        anchors=anchors(item.title, item.summary, language),
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


def cross_score(a: StoryFeatures, b: StoryFeatures) -> float:
    """How strongly two items look like the same story from their anchors alone, 0..1.

    Shared anchor weight over the smaller side's total, once the shared evidence is
    substantial; texts that both quote amounts or dates, mostly different ones, score 0.
    """
    got = shared_weight(a.anchors, b.anchors)
    if got < _MIN_SHARED or _numbers_conflict(a.anchors, b.anchors):
        return 0.0
    side = min(sum(map(_weight, a.anchors)), sum(map(_weight, b.anchors)))
    return min(1.0, got / side)


def _numbers_conflict(a: frozenset[str], b: frozenset[str]) -> bool:
    """Both texts quote amounts (or dates), and fewer than half of the smaller side agree."""
    for kinds in ("nm", "d"):
        na = {x for x in a if x[0] in kinds}
        nb = {x for x in b if x[0] in kinds}
        if na and nb and len(na & nb) * 2 < min(len(na), len(nb)):
            return True
    return False


def _names_conflict(a: StoryFeatures, b: StoryFeatures) -> bool:
    """Both texts name specific people or places, and none of them agree."""
    na = [n for n in _names(a.anchors) if n not in _COMMON_NAMES]
    nb = [n for n in _names(b.anchors) if n not in _COMMON_NAMES]
    return bool(na and nb) and not _name_pairs(na, nb)


def _posting_keys(f: StoryFeatures) -> set[str]:
    """Anchors that find candidates beyond the LSH buckets (names by their first 3 letters)."""
    keys = set()
    for x in f.anchors:
        if x[0] == "p":
            if x[2:] not in _COMMON_NAMES:
                keys.add(x[:5])
        elif x[0] in "nds":
            keys.add(x)
    return keys


# --------------------------------------------------------------------------- index


@dataclass
class _Entry:
    story_key: str
    f: StoryFeatures  # kept without its signature: the bands hold what the index needs of it
    sh: Any  # numpy uint32 array view of f.shingles


def _jaccard(a: Any, b: Any) -> float:
    """Exact Jaccard similarity of two sorted arrays of distinct shingle hashes."""
    inter = int(np.intersect1d(a, b, assume_unique=True).size)
    union = len(a) + len(b) - inter
    return inter / union if union else 0.0


def _lsh_params(num_perm: int, threshold: float) -> tuple[int, int]:
    """Bands × rows with ≥ 99% chance to surface a pair at the verification threshold."""
    best = (num_perm, 1)
    for r in range(1, num_perm // 2 + 1):
        b = num_perm // r
        if 1 - (1 - threshold**r) ** b >= 0.99:
            best = (b, r)
    return best


class StoryIndex:
    """Recent items by story, for :meth:`find`; no I/O. Rebuilt from persisted features.

    Same-language copies ("near") need an exact shingle Jaccard ≥ ``threshold`` (plus a
    little when the two texts name different people), or, when published within
    ``assisted_window`` of each other, ≥ ``assisted_threshold`` together with shared
    anchors (names, dates, amounts) weighing ≥ ``assisted_weight``. MinHash LSH buckets and
    the anchor postings provide the candidates; nothing scans the whole index.
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
        lsh_threshold: float | None = None,
    ) -> None:
        self.window = window
        self.threshold = threshold
        self.assisted_threshold = assisted_threshold
        self.assisted_weight = assisted_weight
        self.assisted_window = assisted_window
        self.cross_window = cross_window
        self.cross_threshold = cross_threshold
        self.max_posting = max_posting  # anchors shared by more entries find nothing
        self._lsh = _Bands(*_lsh_params(NUM_PERM, lsh_threshold or threshold))
        self._entries: dict[int, _Entry] = {}
        self._next_id = 0
        self._by_url: dict[str, int] = {}
        self._by_hash: dict[str, int] = {}
        self._by_anchor: dict[str, set[int]] = {}
        self._by_url_key: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ find

    def find(self, f: StoryFeatures) -> StoryMatch | None:
        """The story ``f`` belongs to, or None for a new story."""
        if f.url and (i := self._by_url.get(f.url)) is not None:
            return StoryMatch(self._entries[i].story_key, "url", 1.0)
        if f.tokens >= MIN_TOKENS and (i := self._by_hash.get(f.content_hash)) is not None:
            return StoryMatch(self._entries[i].story_key, "hash", 1.0)
        by_anchor: set[int] = set()
        for a in _posting_keys(f):
            posting = self._by_anchor.get(a)
            if posting and len(posting) <= self.max_posting:
                by_anchor |= posting
        return self._find_near(f, by_anchor) or self._find_cross(f, by_anchor)

    def find_all(self, f: StoryFeatures) -> list[StoryMatch]:
        """Every story ``f`` qualifies for, best first (one match per story).

        More than one means ``f`` bridges stories that are one: an agency's copy that
        arrived before the copies linking them (see :meth:`merge`).
        """
        first = self.find(f)
        if first is None:
            return []
        if first.reason in ("url", "hash"):
            return [first]
        by_anchor: set[int] = set()
        for a in _posting_keys(f):
            posting = self._by_anchor.get(a)
            if posting and len(posting) <= self.max_posting:
                by_anchor |= posting
        found: dict[str, StoryMatch] = {}
        for score, i in self._near_candidates(f, by_anchor):
            key = self._entries[i].story_key
            if key not in found or found[key].score < score:
                found[key] = StoryMatch(key, "near", round(score, 4))
        for score, i in self._cross_candidates(f, by_anchor):
            key = self._entries[i].story_key
            if key not in found:
                found[key] = StoryMatch(key, "cross", round(min(score, 1.0), 4))
        found.pop(first.story_key, None)
        return [first, *sorted(found.values(), key=lambda m: (-m.score, m.story_key))]

    def merge(self, from_key: str, into_key: str) -> int:
        """Re-file the entries of story ``from_key`` under ``into_key``; how many moved."""
        moved = 0
        for e in self._entries.values():
            if e.story_key == from_key:
                e.story_key = into_key
                moved += 1
        return moved

    def _find_near(self, f: StoryFeatures, by_anchor: set[int]) -> StoryMatch | None:
        best: tuple[float, int] | None = None
        for score, i in self._near_candidates(f, by_anchor):
            if best is None or (score, -i) > (best[0], -best[1]):
                best = (score, i)
        if best is None:
            return None
        return StoryMatch(self._entries[best[1]].story_key, "near", round(best[0], 4))

    def _near_candidates(
        self, f: StoryFeatures, by_anchor: set[int]
    ) -> Iterator[tuple[float, int]]:
        if f.tokens < MIN_TOKENS or len(f.signature) != 4 * NUM_PERM:
            return
        sig = np.frombuffer(f.signature, dtype="<u4")
        sh = np.frombuffer(f.shingles, dtype="<u4")
        for i in by_anchor | self._lsh.query(sig):
            e = self._entries[i]
            if e.f.language != f.language or e.f.tokens < MIN_TOKENS:
                continue
            apart = abs(e.f.published - f.published)
            if apart > self.window:
                continue
            score = _jaccard(e.sh, sh)
            need = self.threshold + (NAMES_PENALTY if _names_conflict(e.f, f) else 0.0)
            if score < need and not (
                score >= self.assisted_threshold
                and apart <= self.assisted_window
                and shared_weight(e.f.anchors, f.anchors) >= self.assisted_weight
            ):
                continue
            if _numbers_conflict(e.f.anchors, f.anchors):
                continue
            yield score, i

    def _find_cross(self, f: StoryFeatures, by_anchor: set[int]) -> StoryMatch | None:
        best: tuple[float, int] | None = None
        for score, i in self._cross_candidates(f, by_anchor):
            if best is None or (score, -i) > (best[0], -best[1]):
                best = (score, i)
        if best is None:
            return None
        return StoryMatch(self._entries[best[1]].story_key, "cross", round(min(best[0], 1.0), 4))

    def _cross_candidates(
        self, f: StoryFeatures, by_anchor: set[int]
    ) -> Iterator[tuple[float, int]]:
        if not f.language:
            return
        paired = self._by_url_key.get(f.url_key, set()) if f.url_key else set()
        for i in by_anchor | paired:
            e = self._entries[i]
            if not e.f.language or e.f.language == f.language:
                continue
            if abs(e.f.published - f.published) > self.cross_window:
                continue
            score = cross_score(e.f, f)
            if i in paired and shared_weight(e.f.anchors, f.anchors) > 0:
                # the agency's own translation under the same article number
                score = max(score + 0.25, self.cross_threshold)
            if score < self.cross_threshold:
                continue
            yield score, i

    # ------------------------------------------------------------------ add / prune

    def add(self, story_key: str, f: StoryFeatures) -> None:
        """Remember ``f`` as a copy of ``story_key``."""
        i = self._next_id
        self._next_id += 1
        sig = np.frombuffer(f.signature, dtype="<u4")
        if len(sig) == NUM_PERM:
            self._lsh.insert(i, sig)
        slim = replace(f, signature=b"")
        self._entries[i] = _Entry(story_key, slim, np.frombuffer(f.shingles, dtype="<u4"))
        if f.url:
            self._by_url[f.url] = i
        if f.content_hash:
            self._by_hash[f.content_hash] = i
        for a in _posting_keys(f):
            self._by_anchor.setdefault(a, set()).add(i)
        if f.url_key:
            self._by_url_key.setdefault(f.url_key, set()).add(i)

    def prune(self, before: datetime) -> int:
        """Forget entries published before ``before`` (a sliding window); how many went."""
        old = [i for i, e in self._entries.items() if e.f.published < before]
        for i in old:
            e = self._entries.pop(i)
            f = e.f
            self._lsh.remove(i)
            if self._by_url.get(f.url) == i:
                del self._by_url[f.url]
            if self._by_hash.get(f.content_hash) == i:
                del self._by_hash[f.content_hash]
            for a in _posting_keys(f):
                _discard(self._by_anchor, a, i)
            _discard(self._by_url_key, f.url_key, i)
        return len(old)


def _discard(index: dict[str, set[int]], key: str, i: int) -> None:
    posting = index.get(key)
    if posting is not None:
        posting.discard(i)
        if not posting:
            del index[key]


class _Bands:
    """MinHash LSH banding (the scheme of datasketch's MinHashLSH), stored compactly.

    Each entry has one 32-bit key per band (its band's MinHash values and the band number,
    mixed). All keys live in one sorted numpy array with the entry ids beside it, plus a
    small unsorted tail that is merged in when it grows: 8 bytes per band per entry instead
    of a Python dict slot and key object (~140 bytes) — measured 88 MB for 10,000 entries
    with dicts. A key collision between bands only adds a candidate, which the exact
    Jaccard check then rejects.
    """

    _MIX = (np.uint64(0x9E3779B1), np.uint64(0x85EBCA77), np.uint64(0xC2B2AE3D))

    def __init__(self, bands: int, rows: int) -> None:
        self.bands = bands
        self.rows = rows
        self._band_ids = np.arange(bands, dtype=np.uint64)
        self._keys = np.empty(0, dtype=np.uint32)  # sorted
        self._ids = np.empty(0, dtype=np.int32)
        self._tail_keys: list[Any] = []
        self._tail_ids: list[int] = []
        self._dead: set[int] = set()

    def _band_keys(self, sig: Any) -> Any:
        rows = sig[: self.bands * self.rows].astype(np.uint64).reshape(self.bands, self.rows)
        mixed = self._band_ids * self._MIX[2]
        for r in range(self.rows):
            mixed = mixed * self._MIX[0] + rows[:, r] * self._MIX[1] + np.uint64(r)
            mixed ^= mixed >> np.uint64(29)
        return (mixed & np.uint64(0xFFFFFFFF)).astype(np.uint32)

    def insert(self, i: int, sig: Any) -> None:
        self._tail_keys.append(self._band_keys(sig))
        self._tail_ids.append(i)
        if len(self._tail_ids) >= max(1024, len(self._keys) // (8 * self.bands)):
            self._merge()

    def _merge(self) -> None:
        keys = [self._keys, *self._tail_keys] if self._tail_keys else [self._keys]
        ids = [self._ids, np.repeat(np.asarray(self._tail_ids, dtype=np.int32), self.bands)]
        all_keys = np.concatenate(keys)
        all_ids = np.concatenate(ids)
        if self._dead:
            alive = ~np.isin(all_ids, np.fromiter(self._dead, dtype=np.int32))
            all_keys, all_ids = all_keys[alive], all_ids[alive]
            self._dead.clear()
        order = np.argsort(all_keys, kind="stable")
        self._keys, self._ids = all_keys[order], all_ids[order]
        self._tail_keys, self._tail_ids = [], []

    def query(self, sig: Any) -> set[int]:
        q = self._band_keys(sig)
        found: set[int] = set()
        if len(self._keys):
            lo = np.searchsorted(self._keys, q, side="left")
            hi = np.searchsorted(self._keys, q, side="right")
            for a, b in zip(lo[hi > lo].tolist(), hi[hi > lo].tolist(), strict=True):
                found.update(self._ids[a:b].tolist())
        if self._tail_keys:
            hits = (np.stack(self._tail_keys) == q).any(axis=1)
            found.update(self._tail_ids[k] for k in np.flatnonzero(hits).tolist())
        return found - self._dead if self._dead else found

    def remove(self, i: int) -> None:
        self._dead.add(i)
        if len(self._dead) * self.bands > len(self._keys) // 4:
            self._merge()


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
