"""Topic rules: compile a topic's terms once, then match items against them.

Pure: no I/O, no clock. The pipeline prepares each item once (tokens, stems, folded text)
and runs every topic over the prepared text::

    prepared = prepare(item)
    matches = [m for t in topics if (m := match_prepared(t, prepared, item))]

(:func:`match_all` does exactly that.)

How a term matches (title, summary and content are searched; HTML tags are dropped):

- Case-insensitive, whole words, Unicode-aware; ``ё`` is the same letter as ``е``; typographic
  apostrophes are plain ones; a possessive ``'s`` is ignored (``Council's`` is ``Council``).
- Hyphens, dashes and other punctuation separate words, so ``security council`` matches
  ``security-council`` and ``государств – членов ОДКБ`` matches ``государств-членов ОДКБ``.
- A plain word matches its inflected forms: each word is stemmed with the Snowball stemmer of
  its script (Cyrillic: Russian, anything else: English), in the term and in the text.
- A phrase (several words) matches its words consecutively and in order; punctuation between
  them is allowed, other words are not. Title, summary and content are separate: a phrase
  never runs from one into the next.
- ``word*`` is a prefix wildcard on the folded, unstemmed word (``secur*`` matches
  ``security``); it may end any word of a phrase.
- ``/…/`` is a Python regular expression searched case-insensitively in the folded, unstemmed
  text (title, summary and content joined by newlines).
- Acronyms: a word written in capitals in the rule, 2–6 letters or digits (``CIS``, ``СНГ``,
  ``CSTO``, ``ОДКБ``, ``UN``), is not stemmed and matches only the same capitals in the text,
  optionally followed by a plural or case ending (``NGOs``, ``МИДа``, ``МИДом``). Stemming
  would make ``AIDS`` match "aid", and matching any case would let ``US``, ``WHO`` or ``IT``
  match the everyday words "us", "who" and "it" (and ``CIS`` the "cis" of "cis-trans").
  Write the rule in lower case (``nato``) to match any case, with stemming.

How a topic matches: every filter passes (``sources``, ``tags``, ``languages``: each only when
non-empty; ``en`` admits ``en-GB``; an item of unknown language passes only an empty
``languages``), at least one
``any`` term matches (or ``any`` is empty), every ``all`` term matches and no ``none`` term
does.
"""

from __future__ import annotations

import html
import re
import threading
import unicodedata
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from itertools import compress, filterfalse, repeat
from operator import is_
from typing import cast

import Stemmer

from aggregator.errors import ConfigError, ConfigProblem
from aggregator.types import Topic

__all__ = [
    "CompiledTerm",
    "CompiledTopic",
    "Match",
    "MatchInput",
    "NearMiss",
    "PreparedText",
    "compile_topic",
    "explain",
    "explain_prepared",
    "match",
    "match_all",
    "match_prepared",
    "prepare",
    "validate_term",
]

# A word: letters and digits, with apostrophes inside ("з'езд", "Council's"); "_" separates.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
# A word of a rule, with an optional trailing wildcard.
_TERM_WORD = re.compile(r"([^\W_]+(?:'[^\W_]+)*)(\*?)")
_CYRILLIC = re.compile(r"[\u0400-\u052f]")
_CYRILLIC_LINE = re.compile(r"^[^\n\u0400-\u052f]*+[\u0400-\u052f].*$", re.MULTILINE)

_REPLACEMENTS = (
    ("ё", "е"),
    ("Ё", "Е"),
    ("\u2019", "'"),  # right single quotation mark, the usual typographic apostrophe
    ("\u2018", "'"),
    ("\u02bc", "'"),  # modifier letter apostrophe
    # invisible characters that would split a word in two
    ("\u00ad", ""),  # soft hyphen
    ("\u200b", ""),
    ("\u200c", ""),
    ("\u200d", ""),
    ("\u2060", ""),
    ("\ufeff", ""),
)


_SCRIPT_STYLE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
# Block-level tags separate words; inline ones ("<b>Sec</b>urity") do not.
_BLOCK_TAG = re.compile(
    r"</?(?:address|article|aside|blockquote|br|caption|dd|div|dl|dt|figcaption|figure|footer"
    r"|h[1-6]|header|hr|img|li|ol|p|pre|section|table|tbody|td|tfoot|th|thead|tr|ul)\b[^>]*>",
    re.IGNORECASE,
)
_TAG = re.compile(r"<[a-zA-Z/!?][^>]*>")

_ACRONYM_ENDINGS_RU = ("а", "у", "е", "ом", "ы", "ов", "ам", "ами", "ах")
_ACRONYM_ENDINGS_LATIN = ("s",)

_RULES_FILE = "topics.yaml"


# --------------------------------------------------------------------------- public records


@dataclass(frozen=True)
class MatchInput:
    """The parts of an item a topic looks at."""

    title: str
    summary: str
    content: str  # plain text or HTML
    source_id: str
    source_tags: tuple[str, ...] = ()
    language: str | None = None


@dataclass(frozen=True)
class Match:
    topic_id: str
    terms: tuple[str, ...]  # the configured `any` then `all` terms that matched, in config order


@dataclass(frozen=True)
class NearMiss:
    """An item whose `any` terms matched but which a `none` term, an `all` term or a filter
    kept out of the topic."""

    topic_id: str
    terms: tuple[str, ...]  # the `any` and `all` terms that did match
    reason: str  # e.g. "excluded by none term 'football'; source 'x' not in sources"


# --------------------------------------------------------------------------- text


_local = threading.local()  # Stemmer objects keep state and must not be shared by threads


def _stemmer(language: str) -> Stemmer.Stemmer:
    stemmers = cast("dict[str, Stemmer.Stemmer] | None", getattr(_local, "stemmers", None))
    if stemmers is None:
        stemmers = {}
        _local.stemmers = stemmers
    stemmer = stemmers.get(language)
    if stemmer is None:
        stemmer = stemmers[language] = Stemmer.Stemmer(language)
        stemmer.maxCacheSize = 0  # _word_stems caches: a second cache only costs time
    return stemmer


def _stem_words(words: list[str], language: str) -> list[str]:
    if not words:
        return []
    return cast("list[str]", _stemmer(language).stemWords(words))


def _stems(folded: list[str]) -> dict[str, str]:
    """Stem each folded word with the stemmer of its script."""
    # One regex pass over the words joined by newlines sorts out the Cyrillic ones.
    russian = _CYRILLIC_LINE.findall("\n".join(folded))
    english = list(set(folded).difference(russian)) if russian else folded
    stems = dict(zip(russian, _stem_words(russian, "russian"), strict=True))
    stems.update(zip(english, _stem_words(english, "english"), strict=True))
    return stems


def _normalize(text: str) -> str:
    """NFC, ё → е, plain apostrophes, no invisible characters; case is kept."""
    text = unicodedata.normalize("NFC", text)
    for old, new in _REPLACEMENTS:
        # str.replace is much faster than str.translate, and most texts need none of these.
        if old in text:
            text = text.replace(old, new)
    return text


def _plain(text: str) -> str:
    """Drop HTML tags and entities cheaply; plain text comes back unchanged."""
    if "<" in text:
        if "<s" in text or "<S" in text or "<ſ" in text:  # ("ſ" is an "s" to re.IGNORECASE)
            text = _SCRIPT_STYLE.sub(" ", text)
        text = _BLOCK_TAG.sub(" ", text)
        text = _TAG.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    return text


def _bases(tokens: list[str]) -> list[str]:
    """The tokens without an English possessive ending."""
    if "'" not in "".join(tokens):
        return tokens
    return [t[:-2] if t.endswith(("'s", "'S")) else t for t in tokens]


def _folded(words: list[str]) -> list[str]:
    """Each word casefolded."""
    # One call for all words; casefolding never makes a newline.
    return "\n".join(words).casefold().split("\n") if words else []


# Word -> stem of its folded base. Stemming is most of the cost of preparing a text and news
# repeats its words, so each distinct word is stemmed once per process (a full cache is
# replaced by an empty one).
_stem_cache: dict[str, str] = {}
_STEM_CACHE_LIMIT = 50_000


def _word_stems(words: set[str]) -> tuple[list[str | None], dict[str, str]]:
    """The cached stem of each of ``words`` (None if not cached yet) in the set's order, and
    the stems of the words that were not cached (now they are)."""
    global _stem_cache
    cache = _stem_cache
    found = list(map(cache.get, words))
    if None not in found:
        return found, {}
    new = list(compress(words, map(is_, found, repeat(None))))
    folded = _folded(_bases(new))
    stem_of = _stems(list(set(folded)))
    new_stems = dict(zip(new, map(stem_of.__getitem__, folded), strict=True))
    if len(cache) + len(new) > _STEM_CACHE_LIMIT:
        cache = _stem_cache = {}
    cache.update(new_stems)
    return found, new_stems


def _distinct_words(text: str) -> set[str]:
    """The set of ``_WORD.findall(text)``."""
    # A regex pass costs per word found; splitting at whitespace is much cheaper and most
    # pieces are one whole word. No word spans whitespace, so only the rest needs the regex.
    words = set(text.split())
    rest = list(filterfalse(str.isalnum, words))
    if rest:
        words.difference_update(rest)
        words.update(_WORD.findall(" ".join(rest)))
    return words


class PreparedText:
    """An item's text tokenized and stemmed once, for every topic to match against.

    Most terms need only the sets of bases and stems; the rest is worked out when a term
    asks for it.
    """

    def __init__(self, fields: list[str]) -> None:
        self._fields = fields  # title, summary and content: no tags, normalized
        text = "\n".join(fields)
        self._words = _distinct_words(text)  # never changed: its order is that of _found
        self._found, self._new = _word_stems(self._words)
        stems = set(self._found)
        if self._new:
            stems.discard(None)
            stems.update(self._new.values())
        self.stem_set = cast("set[str]", stems)
        # Only a possessive makes a base differ from its word.
        self.base_set: AbstractSet[str] = (
            frozenset(_bases(list(self._words))) if "'" in text else self._words
        )

    @cached_property
    def text(self) -> str:
        """Folded title, summary and content joined by newlines: regexes search this."""
        return "\n".join(self._fields).casefold()

    @cached_property
    def tokens(self) -> tuple[str, ...]:
        """Words as written, in order; "" between title, summary and content."""
        tokens: list[str] = []
        for text in self._fields:
            if tokens:
                tokens.append("")  # a phrase must not run from one field into the next
            tokens.extend(_WORD.findall(text))
        return tuple(tokens)

    @cached_property
    def bases(self) -> dict[str, str]:
        """Word -> word without possessive, case kept (acronyms)."""
        words = list(self._words)
        return dict(zip(words, _bases(words), strict=True))

    @cached_property
    def folded(self) -> dict[str, str]:
        """Word -> casefolded base (wildcards)."""
        words = list(self._words)
        return dict(zip(words, _folded(_bases(words)), strict=True))

    @cached_property
    def stems(self) -> dict[str, str]:
        """Word -> stem of the folded base (plain words)."""
        stems = dict(zip(self._words, self._found, strict=True))
        stems.update(self._new)
        return cast("dict[str, str]", stems)

    @cached_property
    def _folded_lines(self) -> str:
        # Every folded word after a newline: a prefix test is one substring search.
        return "\n" + "\n".join(set(self.folded.values()))

    def has_prefix(self, prefix: str) -> bool:
        return ("\n" + prefix) in self._folded_lines


def prepare(item: MatchInput) -> PreparedText:
    """Tokenize, fold and stem an item's title, summary and content, once for all topics."""
    return PreparedText([_normalize(_plain(f)) for f in (item.title, item.summary, item.content)])


class _Kind(Enum):
    STEM = "stem"  # plain word: compare stems
    PREFIX = "prefix"  # word*: the folded word starts with the key
    ACRONYM = "acronym"  # CIS: the word as written is one of the forms


@dataclass(frozen=True)
class _Word:
    kind: _Kind
    key: str
    forms: frozenset[str] = frozenset()

    def present(self, text: PreparedText) -> bool:
        """Whether the word occurs anywhere in the text."""
        if self.kind is _Kind.STEM:
            return self.key in text.stem_set
        if self.kind is _Kind.PREFIX:
            return text.has_prefix(self.key)
        return not self.forms.isdisjoint(text.base_set)

    def tokens(self, text: PreparedText) -> list[str]:
        """The distinct tokens of the text that are this word."""
        if self.kind is _Kind.STEM:
            return [t for t, stem in text.stems.items() if stem == self.key]
        if self.kind is _Kind.PREFIX:
            return [t for t, f in text.folded.items() if f.startswith(self.key)]
        return [t for t, base in text.bases.items() if base in self.forms]

    def at(self, text: PreparedText, token: str) -> bool:
        """Whether ``token`` (one of ``text.tokens``, maybe "") is this word."""
        if self.kind is _Kind.STEM:
            return text.stems.get(token) == self.key
        if self.kind is _Kind.PREFIX:
            return text.folded.get(token, "").startswith(self.key)
        return text.bases.get(token) in self.forms


@dataclass(frozen=True)
class CompiledTerm:
    text: str  # the term as configured
    words: tuple[_Word, ...] = ()
    pattern: re.Pattern[str] | None = None

    def matches(self, text: PreparedText) -> bool:
        if self.pattern is not None:
            return self.pattern.search(text.text) is not None
        if len(self.words) == 1:
            return self.words[0].present(text)
        # Cheap test first: most items lack at least one word of a phrase.
        if not all(w.present(text) for w in self.words):
            return False
        return self._phrase_at_any(text)

    def _phrase_at_any(self, text: PreparedText) -> bool:
        first, rest = self.words[0], self.words[1:]
        tokens = text.tokens
        last = len(tokens) - len(rest)  # the phrase must start before this position
        for token in first.tokens(text):
            # tuple.index finds each occurrence without a Python-level loop over all tokens.
            i = -1
            while True:
                try:
                    i = tokens.index(token, i + 1, last)
                except ValueError:
                    break
                if all(w.at(text, tokens[i + 1 + j]) for j, w in enumerate(rest)):
                    return True
        return False


def _is_acronym(word: str) -> bool:
    return 2 <= len(word) <= 6 and word.isupper() and word.isalnum()


def _compile_word(word: str, wildcard: bool) -> _Word:
    base = _bases([word])[0]
    if wildcard:
        return _Word(_Kind.PREFIX, base.casefold())
    if _is_acronym(base):
        cyrillic = _CYRILLIC.search(base) is not None
        endings = _ACRONYM_ENDINGS_RU if cyrillic else _ACRONYM_ENDINGS_LATIN
        return _Word(_Kind.ACRONYM, base, frozenset([base, *(base + e for e in endings)]))
    folded = base.casefold()
    return _Word(_Kind.STEM, _stems([folded])[folded])


def _regex_body(term: str) -> str | None:
    text = term.strip()
    if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
        return _normalize(text[1:-1])
    return None


def validate_term(term: str) -> str | None:
    """An error message for a term that cannot be compiled, or None when it is fine."""
    text = term.strip()
    if not text:
        return "empty term"
    if text.startswith("/"):
        body = _regex_body(text)
        if body is None:
            return f"regular expression {term!r} must end with '/'"
        if not body:
            return f"empty regular expression {term!r}"
        try:
            pattern = re.compile(body, re.IGNORECASE)
        except re.error as e:
            return f"bad regular expression {term!r}: {e}"
        if pattern.search("") is not None:
            return f"regular expression {term!r} matches empty text, so it would match every item"
        return None
    norm = _normalize(text)
    for i, char in enumerate(norm):
        if char == "*":
            before = norm[i - 1] if i else ""
            after = norm[i + 1] if i + 1 < len(norm) else ""
            if not before.isalnum() or after.isalnum() or after == "*":
                return f"term {term!r}: '*' is allowed only at the end of a word"
    if not _WORD.search(norm):
        return f"term {term!r} has no letters or digits"
    return None


def _compile_term(term: str) -> CompiledTerm:
    body = _regex_body(term)
    if body is not None:
        return CompiledTerm(term, pattern=re.compile(body, re.IGNORECASE))
    words = tuple(_compile_word(w, star == "*") for w, star in _TERM_WORD.findall(_normalize(term)))
    return CompiledTerm(term, words=words)


# --------------------------------------------------------------------------- topics


def _language_key(language: str) -> str:
    return language.strip().lower().replace("_", "-")


@dataclass(frozen=True)
class CompiledTopic:
    topic: Topic
    any: tuple[CompiledTerm, ...]
    all: tuple[CompiledTerm, ...]
    none: tuple[CompiledTerm, ...]
    sources: frozenset[str]
    tags: frozenset[str]
    languages: tuple[str, ...]  # lower case, "-" separated

    @property
    def id(self) -> str:
        return self.topic.id

    @cached_property
    def _any_screen(self) -> tuple[frozenset[str], frozenset[str]] | None:
        """The stems and the acronym forms of the `any` terms' first words (a term matches
        only where its first word does), or None when a wildcard or regex term is among them.
        """
        stems: set[str] = set()
        forms: set[str] = set()
        for term in self.any:
            first = term.words[0] if term.words else None
            if first is None or first.kind is _Kind.PREFIX:
                return None
            if first.kind is _Kind.STEM:
                stems.add(first.key)
            else:
                forms.update(first.forms)
        return frozenset(stems), frozenset(forms)

    def _may_match_any(self, text: PreparedText) -> bool:
        """False when no `any` term can match the text (a quick test)."""
        screen = self._any_screen
        return (
            screen is None
            or not text.stem_set.isdisjoint(screen[0])
            or not text.base_set.isdisjoint(screen[1])
        )

    def _language_ok(self, language: str | None) -> bool:
        if not self.languages:
            return True
        if language is None:
            return False
        key = _language_key(language)
        # "en" admits "en-GB"; "en-gb" does not admit a bare "en".
        return any(key == lang or key.startswith(lang + "-") for lang in self.languages)

    def admits(self, item: MatchInput) -> bool:
        """Whether the item passes the source, tag and language filters."""
        return (
            (not self.sources or item.source_id in self.sources)
            and (not self.tags or not self.tags.isdisjoint(item.source_tags))
            and self._language_ok(item.language)
        )

    def filter_reasons(self, item: MatchInput) -> list[str]:
        """Why the filters keep the item out (empty when they do not)."""
        reasons = []
        if self.sources and item.source_id not in self.sources:
            reasons.append(f"source {item.source_id!r} not in sources")
        if not self._language_ok(item.language):
            if item.language is None:
                reasons.append("unknown language not in languages")
            else:
                reasons.append(f"language {item.language!r} not in languages")
        if self.tags and self.tags.isdisjoint(item.source_tags):
            reasons.append(f"source tags {list(item.source_tags)!r} not in tags")
        return reasons


def compile_topic(topic: Topic) -> CompiledTopic:
    """Compile every term of the topic once.

    Raises ConfigError for a term :func:`validate_term` rejects (the config loader reports
    those with their line first).
    """
    problems = [
        ConfigProblem(_RULES_FILE, 0, f"topic {topic.id!r}: match.{key}: {error}")
        for key, terms in (
            ("any", topic.match.any),
            ("all", topic.match.all),
            ("none", topic.match.none),
        )
        for term in terms
        if (error := validate_term(term)) is not None
    ]
    if problems:
        raise ConfigError(problems)
    return CompiledTopic(
        topic=topic,
        any=tuple(_compile_term(t) for t in topic.match.any),
        all=tuple(_compile_term(t) for t in topic.match.all),
        none=tuple(_compile_term(t) for t in topic.match.none),
        sources=frozenset(topic.sources),
        tags=frozenset(topic.tags),
        languages=tuple(_language_key(lang) for lang in topic.languages),
    )


def _matched_terms(any_hits: list[str], all_hits: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(any_hits + all_hits))


def match_prepared(topic: CompiledTopic, text: PreparedText, item: MatchInput) -> Match | None:
    """Match an item whose text :func:`prepare` has already processed."""
    if not topic.admits(item) or (topic.any and not topic._may_match_any(text)):
        return None
    any_hits = [t.text for t in topic.any if t.matches(text)]
    if topic.any and not any_hits:
        return None
    if not all(t.matches(text) for t in topic.all):
        return None
    if any(t.matches(text) for t in topic.none):
        return None
    return Match(topic.id, _matched_terms(any_hits, [t.text for t in topic.all]))


def match(topic: CompiledTopic, item: MatchInput) -> Match | None:
    """The topic's match for the item, with the terms that matched, or None."""
    if not topic.admits(item):
        return None
    return match_prepared(topic, prepare(item), item)


def match_all(topics: Sequence[CompiledTopic], item: MatchInput) -> list[Match]:
    """Every topic the item belongs to, in the order given; the text is prepared once."""
    admitting = [t for t in topics if t.admits(item)]
    if not admitting:
        return []
    text = prepare(item)
    return [m for t in admitting if (m := match_prepared(t, text, item)) is not None]


def _listing(what: str, terms: list[str]) -> str:
    quoted = ", ".join(repr(t) for t in terms)
    return f"{what}s {quoted}" if len(terms) > 1 else f"{what} {quoted}"


def explain_prepared(
    topic: CompiledTopic, text: PreparedText, item: MatchInput
) -> Match | NearMiss | None:
    """Like :func:`explain`, for an item whose text :func:`prepare` has already processed."""
    any_hits = [t.text for t in topic.any if t.matches(text)]
    if topic.any and not any_hits:
        return None
    all_hits: list[str] = []
    all_missing: list[str] = []
    for term in topic.all:
        (all_hits if term.matches(text) else all_missing).append(term.text)
    none_hits = [t.text for t in topic.none if t.matches(text)]
    terms = _matched_terms(any_hits, all_hits)
    reasons: list[str] = []
    if none_hits:
        reasons.append(_listing("excluded by none term", none_hits))
    if all_missing:
        reasons.append(_listing("missing all term", all_missing))
    reasons.extend(topic.filter_reasons(item))
    if not reasons:
        return Match(topic.id, terms)
    if not terms:
        # Nothing in the text spoke for the topic: not worth showing as a near miss.
        return None
    return NearMiss(topic.id, terms, "; ".join(reasons))


def explain(topic: CompiledTopic, item: MatchInput) -> Match | NearMiss | None:
    """The match, or a near miss when terms matched but a `none` term, a missing `all` term
    or a filter kept the item out (with every reason), or None when no term spoke for it."""
    return explain_prepared(topic, prepare(item), item)
