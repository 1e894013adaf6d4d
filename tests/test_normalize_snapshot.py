"""Normalization and topic matching give the items and hits recorded in a snapshot.

``tests/data/normalize_snapshot.json`` holds digests of what normalize and topics produced
for a fixed sample: 40 feeds of the benchmark corpus, the feed fixtures, the story corpus,
the XSS vectors and generated HTML edge cases (boilerplate in every wrapper, escaped
markup, deep nesting, invisible characters, odd URLs and dates). Any change in a stored or
published field (title, summary, content, URLs, dates, language, categories, topic hits …)
changes a digest. After an intended change, regenerate it with
``PYTHONPATH=. python tests/test_normalize_snapshot.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import random
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator import normalize, parse, prepare, topics
from aggregator.errors import ParseError
from aggregator.types import (
    Enclosure,
    NormalizeOptions,
    ParsedEntry,
    ParsedFeed,
    Source,
    Topic,
    TopicMatch,
)

DATA = Path(__file__).parent / "data"
SNAPSHOT = DATA / "normalize_snapshot.json"
BASE = datetime(2025, 3, 13, 11, 0, tzinfo=UTC)
FETCHED = BASE + timedelta(hours=1)
GROUP = 25  # cases per digest: a failure names a small group

TOPICS = (
    # config/topics.yaml
    Topic(
        "cis-security",
        "CIS security",
        match=TopicMatch(
            any=(
                "CSTO",
                "ОДКБ",
                "Collective Security Treaty",
                "CIS",
                "СНГ",
                "Security Council",
                "совет безопасности",
            ),
            none=("football", "футбол"),
        ),
    ),
    Topic(
        "eurasian-economy",
        "Eurasian economy",
        match=TopicMatch(
            any=(
                "EAEU",
                "ЕАЭС",
                "Eurasian Economic Union",
                "Евразийский экономический союз",
                "Eurasian Economic Commission",
                "ЕЭК",
            )
        ),
        tags=("agency",),
    ),
    # every kind of term and filter
    Topic(
        "wildcards",
        "w",
        match=TopicMatch(
            any=("secur*", "безопасн*", "Eurasian econ*", "минист*"), none=("sport*",)
        ),
    ),
    Topic(
        "regex",
        "r",
        match=TopicMatch(any=(r"/\bminsk\b/", "/сов[её]т/", r"/\d+\.\d%/")),
        languages=("ru",),
    ),
    Topic(
        "acronyms",
        "a",
        match=TopicMatch(any=("UN", "NGO", "МИД", "US", "IT"), all=("minister",)),
        sources=("belta-en-0", "tass-ru-1", "synthetic", "stories"),
    ),
    Topic(
        "phrases",
        "p",
        match=TopicMatch(
            any=("council's meeting", "security council", "государств членов ОДКБ", "Read more"),
            none=("/football/",),
        ),
        languages=("en-GB", "en"),
    ),
)
COMPILED = [topics.compile_topic(t) for t in TOPICS]
SOURCES = (
    Source("synthetic", "https://example.com/rss", "S", tags=("agency",)),
    Source("stories", "https://example.com/rss", "S", tags=()),
)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))


def _hits(source: Source, title: str, summary: str, content: str, language: str | None) -> Any:
    hits = prepare.topic_hits(COMPILED, source, title, summary, content, language)
    return [[h.topic_id, list(h.terms)] for h in hits]


def _normalized(
    entry: ParsedEntry, feed: ParsedFeed, options: NormalizeOptions, source: Source
) -> dict[str, Any]:
    item = normalize.normalize_entry(
        entry, feed, options, fetched_at=FETCHED, feed_url="https://feeds.example.com/rss.xml"
    )
    out: dict[str, Any] = {"item": None if item is None else dataclasses.asdict(item)}
    if item is not None:
        out["hits"] = _hits(source, item.title, item.summary, item.content, item.language)
    # Raw markup too: topics must cope with HTML it was not given by normalize.
    out["raw_hits"] = _hits(source, entry.title, entry.summary, entry.content, entry.language)
    return out


# --------------------------------------------------------------------------- inputs


def _corpus_cases() -> Iterator[tuple[str, Any]]:
    from bench.corpus import Corpus

    corpus = Corpus(1, 40, BASE)
    for spec in corpus.specs():
        feed = parse.parse_feed(
            corpus.render(spec.index, spec.index % 3), url=f"https://{spec.host}/rss", headers={}
        )
        unknown_language = spec.index % 4 == 1  # language detection from the text
        if unknown_language:
            feed = dataclasses.replace(feed, language=None)
        source = Source(spec.id, "https://x/", spec.id, tags=("agency",) if spec.index % 2 else ())
        options = NormalizeOptions(
            source_id=spec.id,
            strip=("^Go back$", "Подробнее") if spec.index % 5 == 0 else (),
            tracking_params=("ref",) if spec.index % 3 == 0 else (),
            languages=("en", "ru") if spec.index % 7 else ("ru", "uk", "kk"),
        )
        for n, entry in enumerate(feed.entries):
            if unknown_language:
                entry = dataclasses.replace(entry, language=None)
            yield f"corpus/{spec.id}/{n}", _normalized(entry, feed, options, source)


def _fixture_cases() -> Iterator[tuple[str, Any]]:
    paths = sorted((DATA / "feeds").glob("*.xml")) + sorted((DATA / "parse").glob("*"))
    for path in paths:
        try:
            feed = parse.parse_feed(path.read_bytes(), url="https://example.com/rss", headers={})
        except ParseError:
            continue
        options = NormalizeOptions(source_id=path.stem, strip=("^Go back$",))
        for n, entry in enumerate(feed.entries):
            yield f"fixture/{path.name}/{n}", _normalized(entry, feed, options, SOURCES[0])


def _story_cases() -> Iterator[tuple[str, Any]]:
    feed = ParsedFeed(title="", link=None, language=None, entries=())
    options = NormalizeOptions(source_id="stories")
    with (DATA / "stories" / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            entry = ParsedEntry(
                guid=row["guid"],
                link=row["url"],
                title=row["title"],
                summary=row["summary"],
                content="",
                published_raw=row["published"],
            )
            yield f"stories/{row['id']}", _normalized(entry, feed, options, SOURCES[1])


def _xss_cases() -> Iterator[tuple[str, Any]]:
    feed = ParsedFeed(title="", link="https://example.com/", language="en", entries=())
    options = NormalizeOptions(source_id="synthetic")
    lines = (DATA / "xss_vectors.txt").read_text(encoding="utf-8").splitlines()
    for n, vector in enumerate(lines):
        if not vector or vector.startswith("# "):
            continue
        entry = ParsedEntry(guid=None, link=None, title=vector, summary=vector, content=vector)
        yield f"xss/{n}/entry", _normalized(entry, feed, options, SOURCES[0])
        yield f"xss/{n}/sanitize", normalize.sanitize_html(vector, None)


WORDS = (
    "The ministers met in Minsk on Tuesday to discuss border security.",
    "Министры встретились в Минске, чтобы обсудить безопасность границ.",
    "CSTO",
    "ОДКБ",
    "the Collective Security Treaty Organization",
    "Security-Council",
    "the Council's meeting",
    "security councils",
    "заседание Совета Безопасности ООН",
    "государств – членов ОДКБ",
    "ЕАЭС",
    "EAEU's",
    "Eurasian Economic Union",
    "евразийского экономического союза",
    "NGOs",
    "МИДа",
    "cis-trans",
    "us",
    "US",
    "it",
    "football",
    "футбола",
    "<b>Sec</b>urity",
    "secu\u00adrity",
    "МИНСК",
    "ёлка Ёж",
    "e\u0301te\u0301",
    "12.5%",
    "sport",
    "Ukraine's і ї є ґ",
    "Қазақстан әғқңөұүһ",
    "a < b > c & d",
    "AT&amp;T",
    "&amp;quot;quoted&amp;quot;",
    "&nbsp;&#8212;&#x2014;&unknown;",
    "tab\there  and   spaces",
    "line\r\nbreak\u2028sep\x85next",
    "zero\u200bwidth\ufeffbom\u2060joiner",
    "ctrl\x00\x07\x1f\x7f\x9f",
    "  ",
    "",
)
PHRASES = (
    *normalize.BOILERPLATE_PHRASES,
    "READ MORE",
    "read more »",
    "→ Read more",
    "Читать далее →",
    "Ещё",
    "Еще",
    "Подробнее...",
    "Back to the all news ←",
    "Read more | Share",
    "Read more about the talks",
    "Следите за новостями в Telegram",
)
URLS = (
    "https://example.com/news/1?utm_source=rss&b=2&a=1#top",
    "/ru/news/5.html?ref=rss",
    "item.html",
    "//cdn.example.com/a.jpg",
    "javascript:alert(1)",
    "data:text/html,x",
    "https://Пример.РФ/новости?x=1",
    "HTTP://Example.COM:80/A%7e%d0%bd",
    "https://user:pw@example.com:8443/a?fbclid=1&mc_cid=2",
    "http://[::1]:80/x",
    "http://[broken/x",
    " \n/news/2\t",
    "mailto:desk@example.com",
    "https://example.com/a/../b/./c~d_e.html",
    "https://example.com./a",
    "https://EXAMPLE.com/a",
    "https://example.com",
    "https://example.com/a;p",
    "https://example.com/a?",
    "https://example.com/a#",
    "https://example.com:443/a",
    "https://xn--e1afmkfd.xn--p1ai/a",
    "https://example.com/a b",
    "ftp://example.com/a",
    "https://example.com/news/2?id=5&utm_source=tg&ref=rss&q=a+b",
    "https://example.com/a?b=2&&a=1&fbclid=",
    "https://example.com/a?b=%41",
    "",
)
DATES = (
    "Thu, 13 Mar 2025 10:05:00 +0300",
    "2025-03-12T14:05:00+03:00",
    "12.03.2025 14:05",
    "12 марта 2025, 14:05 МСК",
    "12 мар 2025 г.",
    "March 12, 2025 2:05 PM",
    "12 Mar 2025",
    "03/12/2025",
    "0001-01-01T00:00:00+03:00",
    "2031-01-01T00:00:00Z",
    "yesterday",
    "",
)
STRIP = ("^Go back$", "(?i)^source:", "Подписывайтесь.*", "[invalid", "^Tags:")


def _text(r: random.Random) -> str:
    return " ".join(r.choice(WORDS) for _ in range(r.randint(1, 4)))


def _part(r: random.Random, depth: int = 0) -> str:
    inner = r.choice(PHRASES) if r.random() < 0.3 else _text(r)
    if depth < 2 and r.random() < 0.25:
        inner = _part(r, depth + 1) + r.choice(("", " ", "<br>", " | ")) + _part(r, depth + 1)
    url = html.escape(r.choice(URLS))
    wrappers = (
        "{}",
        "<p>{}</p>",
        "<div>{}</div>",
        "<li>{}</li>",
        '<a href="' + url + '">{}</a>',
        "<p>" + _text(r) + '. <a href="' + url + '">{}</a></p>',
        "<br>{}",
        "{}<br/>",
        "<b>{}</b>",
        "<span>{}</span>",
        "<h2>{}</h2>",
        "<blockquote>{}</blockquote>",
        "<table><tr><td>{}</td></tr></table>",
        "<ul><li>{}</li></ul>",
        "<p>{}",
        "<script>var x = '{}';</script>",
        "<ſcript>{}</ſcript>",
        "<style>p {{ color: red }}</style>{}",
        "<!-- {} -->",
        "<![CDATA[{}]]>",
        '<img src="' + url + '" onerror="alert(1)" alt="{}">',
        '<p onclick="x()" style="color:red"><i>{}</i></p>',
        "<iframe src=x>{}</iframe>",
        "<noscript>{}</noscript>",
        "<figure><img src=/a.png><figcaption>{}</figcaption></figure>",
        "<pre>  {}\n  </pre>",
        "<hr>{}",
        "{}. " + r.choice(PHRASES) + " »",
    )
    return r.choice(wrappers).format(inner)


def _fragment(r: random.Random) -> str:
    roll = r.random()
    if roll < 0.04:
        tag = r.choice(("div", "b", "blockquote", "span"))
        depth = r.choice((30, 64, 65, 70, 200))
        return f"<{tag}>" * depth + _text(r) + f"</{tag}>" * r.choice((0, depth))
    fragment = "".join(_part(r) for _ in range(r.randint(0, 6)))
    if roll < 0.12:
        fragment = html.escape(fragment, quote=r.random() < 0.5)
    elif roll < 0.16:
        fragment = html.escape(html.escape(fragment))
    elif roll < 0.18:
        fragment = html.escape(html.escape(html.escape(html.escape(html.escape(fragment)))))
    return fragment


def _synthetic_cases(count: int = 1500) -> Iterator[tuple[str, Any]]:
    r = random.Random("normalize-snapshot")
    for n in range(count):
        summary = _fragment(r)
        content = r.choice(("", summary, _fragment(r), html.escape(summary)))
        base = r.choice(
            (None, "https://base.example.com/dir/", "http://[broken/", "/relative", "http://a b/")
        )
        strip = tuple(r.sample(STRIP, r.randint(0, 2)))
        tracking = r.choice(((), ("ref",), ("REF", "from")))
        languages = r.choice((("en", "ru"), ("ru", "uk"), ("en",), ("kk", "ru", "be"), ()))
        entry = ParsedEntry(
            guid=r.choice((None, "", f"id-{n}", " id\n with\tspaces ")),
            link=r.choice((*URLS, None)),
            title=r.choice(("", _text(r), _fragment(r), html.escape(_text(r)))),
            summary=summary,
            content=content,
            published=r.choice((None, BASE, BASE + timedelta(days=3))),
            updated=r.choice((None, BASE - timedelta(hours=2), FETCHED + timedelta(hours=30))),
            published_raw=r.choice((None, *DATES)),
            author=r.choice((None, "", "<b>Desk</b> &amp; Co", _text(r))),
            categories=tuple(
                r.choice(("Politics", "POLITICS", "<i>Economy</i>", "", "Ёлки", "елки"))
                for _ in range(r.randint(0, 4))
            ),
            language=r.choice((None, None, "ru-RU", "en_US", "EN", "x", "")),
            base=base,
            enclosures=tuple(
                Enclosure(
                    r.choice(URLS),
                    r.choice((None, "image/jpeg\n", "")),
                    r.choice((None, -1, 0, 1234)),
                )
                for _ in range(r.randint(0, 2))
            ),
        )
        feed = ParsedFeed(
            title="Feed",
            link=r.choice((None, "https://feed.example.org/", "/relative/", "javascript:x")),
            language=r.choice((None, None, "ru", "en-GB")),
            entries=(),
        )
        options = NormalizeOptions(
            source_id="synthetic",
            source_language=r.choice((None, None, None, "ru")),
            strip=strip,
            tracking_params=tracking,
            languages=languages,
        )
        source = SOURCES[n % 2]
        text = normalize.clean_text(summary)
        yield (
            f"synthetic/{n}",
            {
                "entry": _normalized(entry, feed, options, source),
                "clean_text": text,
                "sanitize": normalize.sanitize_html(summary, base),
                "strip_html": normalize.strip_boilerplate_html(summary, strip),
                "strip_text": normalize.strip_boilerplate_text(text, strip),
                "language": normalize.detect_language(text, languages),
                "url": normalize.canonical_url(URLS[n % len(URLS)], extra_tracking=tracking),
                "link": normalize.clean_link(URLS[n % len(URLS)], extra_tracking=tracking),
                "absolute": normalize.absolute_url(URLS[n % len(URLS)], base),
                "date": str(normalize.parse_date(DATES[n % len(DATES)])),
                "fold": normalize.fold_for_matching(_text(r)),
            },
        )


# --------------------------------------------------------------------------- snapshot


def _groups() -> Iterator[tuple[str, list[tuple[str, Any]]]]:
    """Batches of (case, output), each named by its first case."""
    for cases in (
        _corpus_cases(),
        _fixture_cases(),
        _story_cases(),
        _xss_cases(),
        _synthetic_cases(),
    ):
        batch: list[tuple[str, Any]] = []
        for key, value in cases:
            batch.append((key, _json(value)))
            if len(batch) == GROUP:
                yield batch[0][0], batch
                batch = []
        if batch:
            yield batch[0][0], batch


def _digest(batch: list[tuple[str, Any]]) -> str:
    data = json.dumps(batch, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:16]


def _hit_counts(counts: Counter[str], value: Any) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in ("hits", "raw_hits"):
                counts.update(f"{key}:{topic_id}" for topic_id, _ in inner)
            else:
                _hit_counts(counts, inner)


def current() -> dict[str, Any]:
    digests: dict[str, str] = {}
    counts: Counter[str] = Counter()
    items = 0
    for name, batch in _groups():
        digests[name] = _digest(batch)
        for _, value in batch:
            _hit_counts(counts, value)
            items += 1
    return {"cases": items, "topic_hits": dict(sorted(counts.items())), "digests": digests}


@pytest.fixture(scope="module")
def snapshot() -> dict[str, Any]:
    return current()


def test_the_sample_covers_every_topic(snapshot: dict[str, Any]) -> None:
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert snapshot["cases"] == expected["cases"]
    assert snapshot["topic_hits"] == expected["topic_hits"]
    assert all(snapshot["topic_hits"].get(f"hits:{t.id}") for t in TOPICS)


def test_items_and_hits_are_as_recorded(snapshot: dict[str, Any]) -> None:
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))["digests"]
    changed = [name for name, digest in snapshot["digests"].items() if expected.get(name) != digest]
    assert not changed, f"output differs from the snapshot in groups starting at {changed[:10]}"
    assert snapshot["digests"].keys() == expected.keys()


def _write(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    # With a path argument, every case's full output goes there too (to diff two versions).
    _write(SNAPSHOT, current())
    if len(sys.argv) > 1:
        _write(Path(sys.argv[1]), {key: value for _, batch in _groups() for key, value in batch})
