"""Topic feeds as readers receive them: Atom 1.0, RSS 2.0, JSON Feed 1.1, OPML, index page.

Atom output is checked three ways: against the RFC 4287 Appendix B schema (tests/data/atom.rng,
with its Schematron rules), against the RFC's MUSTs spelled out in Python, and by parsing it
back with feedparser the way a reader would.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import feedparser
import pytest
from lxml import etree, isoschematron

from aggregator import publish
from aggregator.publish import TopicSummary
from aggregator.types import Copy, FeedPage, StoryView, Topic

SCHEMA = Path(__file__).parent / "data" / "atom.rng"
A = "{http://www.w3.org/2005/Atom}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
CONTENT_ENCODED = "{http://purl.org/rss/1.0/modules/content/}encoded"
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")

BASE = "http://news.example.org/"
TOPIC = Topic(
    id="cis-security",
    title="CIS security",
    subtitle="CSTO, CIS and Security Council news from regional agencies",
)

# English, with three other copies (plus one repeating a copy and one repeating the alternate).
ENGLISH = StoryView(
    story_id="urn:uuid:0b7c8a36-6f0e-4c55-9d7a-1f1b6f0e0001",
    title="CSTO Security Council secretaries meet in Minsk",
    summary="Secretaries of the CSTO security councils discussed regional threats.",
    content='<p>The <b>CSTO</b> secretaries met in Minsk.</p><p><a href="https://eng.belta.by/csto">More</a></p>',
    link="https://eng.belta.by/politics/view/csto-secretaries-meet-123",
    published=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    updated=datetime(2026, 3, 1, 12, 30, tzinfo=UTC),
    source_id="belta-en",
    source_name="BELTA (English)",
    source_url="https://eng.belta.by/rss",
    language="en",
    categories=("Politics", "Security"),
    related=(
        Copy("https://tass.com/politics/2001", "TASS", "tass-en", language="en"),
        Copy(
            "https://sputnik.by/20260301/odkb-minsk-1.html",
            "Sputnik Беларусь",
            "sputnik-ru",
            language="ru",
        ),
        Copy("https://www.inform.kz/en/csto-meeting_a1", "Kazinform", "kazinform-en"),
        Copy("https://tass.com/politics/2001", "TASS", "tass-en-2", language="en"),
        Copy("https://eng.belta.by/politics/view/csto-secretaries-meet-123", "BELTA", "belta-ru"),
    ),
)
ENGLISH_RELATED = [
    ("https://tass.com/politics/2001", "TASS", "en"),
    ("https://sputnik.by/20260301/odkb-minsk-1.html", "Sputnik Беларусь", "ru"),
    ("https://www.inform.kz/en/csto-meeting_a1", "Kazinform", None),
]
# Russian, without content, published in Moscow time.
RUSSIAN = StoryView(
    story_id="urn:uuid:0b7c8a36-6f0e-4c55-9d7a-1f1b6f0e0002",
    title="Совет Безопасности СНГ обсудил борьбу с терроризмом",
    summary="Секретари советов безопасности государств СНГ встретились в Москве.",
    content="",
    link="https://tass.ru/politika/2002",
    published=datetime(2026, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=3))),
    updated=datetime(2026, 3, 1, 10, 5, tzinfo=timezone(timedelta(hours=3))),
    source_id="tass-ru",
    source_name="ТАСС",
    source_url="https://tass.ru/rss/v2.xml",
    language="ru",
    author="Иван Петров",
    categories=("Политика",),
)
# Markup characters in plain text, and an ampersand in a URL.
MARKUP = StoryView(
    story_id="urn:uuid:0b7c8a36-6f0e-4c55-9d7a-1f1b6f0e0003",
    title='Armenia & Kazakhstan: "security <first>" at the CSTO summit',
    summary="Talks on 'collective security' & <borders>.",
    content="<p>Leaders said security &amp; stability come first: &lt;no compromise&gt;.</p>",
    link="https://armenpress.am/eng/news/3003?id=7&lang=en",
    published=datetime(2026, 2, 28, 18, 0, tzinfo=UTC),
    updated=datetime(2026, 2, 28, 18, 0, tzinfo=UTC),
    source_id="armenpress-en",
    source_name="Armenpress",
    source_url="https://armenpress.am/eng/rss/",
    language="en",
    author="Armenpress staff",
)
# Characters XML 1.0 forbids; no language; repeated and empty categories.
CONTROL = StoryView(
    story_id="urn:uuid:0b7c8a36-6f0e-4c55-9d7a-1f1b6f0e0004",
    title="CIS\x00 defence ministers\x0b gather",
    summary="Ministers met\x00 in Dushanbe.",
    content="<p>Met\x00 today.</p>",
    link="https://cronos.asia/news/4004",
    published=datetime(2026, 2, 28, 9, 0, tzinfo=UTC),
    updated=datetime(2026, 2, 28, 9, 0, tzinfo=UTC),
    source_id="cronos-ru",
    source_name="Cronos.Asia",
    source_url="https://cronos.asia/rss",
    categories=("Defence", "Defence", "", "Security"),
)
STORIES = (ENGLISH, RUSSIAN, MARKUP, CONTROL)


# What a reader should see for each story (text already stripped of invalid characters).
@dataclass(frozen=True)
class Seen:
    id: str
    title: str
    summary: str
    content: str
    link: str
    author: str
    language: str | None
    published: datetime
    updated: datetime


EXPECTED = [
    Seen(
        id=s.story_id,
        title=s.title.replace("\x00", "").replace("\x0b", ""),
        summary=s.summary.replace("\x00", ""),
        content=s.content.replace("\x00", ""),
        link=s.link,
        author=s.author or s.source_name,
        language=s.language,
        published=s.published.astimezone(UTC),
        updated=s.updated.astimezone(UTC),
    )
    for s in STORIES
]


def make_page(stories: tuple[StoryView, ...] = STORIES, page: int = 1, pages: int = 1) -> FeedPage:
    return FeedPage(
        topic=TOPIC,
        base_url=BASE,
        stories=stories,
        updated=datetime(2026, 3, 1, 12, 30, tzinfo=UTC),
        page=page,
        pages=pages,
        generator_version="0.1.0",
    )


@pytest.fixture(scope="module")
def schema_doc() -> etree._ElementTree:
    return etree.parse(str(SCHEMA))


@pytest.fixture(scope="module")
def relaxng(schema_doc: etree._ElementTree) -> etree.RelaxNG:
    return etree.RelaxNG(schema_doc)


@pytest.fixture(scope="module")
def schematron(schema_doc: etree._ElementTree) -> isoschematron.Schematron:
    return isoschematron.Schematron(schema_doc)


def strict_xml(data: bytes) -> etree._Element:
    # A non-recovering parser: any well-formedness error fails the test.
    return etree.fromstring(data, etree.XMLParser(recover=False, resolve_entities=False))


def utc_struct(when: datetime) -> tuple[int, ...]:
    return tuple(when.astimezone(UTC).timetuple())[:6]


# --------------------------------------------------------------------------- URLs


def test_feed_paths_and_urls() -> None:
    assert publish.feed_path("cis-security") == "topics/cis-security.atom"
    assert publish.feed_path("cis-security", "rss") == "topics/cis-security.rss"
    assert publish.feed_path("cis-security", "json") == "topics/cis-security.json"
    assert publish.feed_url(BASE, "cis-security", "atom") == BASE + "topics/cis-security.atom"
    assert publish.feed_url(BASE, "cis-security", "rss", page=3) == (
        BASE + "topics/cis-security.rss?page=3"
    )
    # A base URL configured without the trailing slash still gives the same URLs.
    assert publish.feed_url("http://news.example.org/feeds", "x") == (
        "http://news.example.org/feeds/topics/x.atom"
    )
    with pytest.raises(ValueError, match="unknown feed format"):
        publish.feed_path("x", "html")
    with pytest.raises(ValueError, match="page"):
        publish.feed_url(BASE, "x", "atom", page=0)


def test_render_dispatches_by_format_with_media_types() -> None:
    page = make_page()
    assert publish.render(page, "atom") == publish.render_atom(page)
    assert publish.render(page, "rss") == publish.render_rss(page)
    assert publish.render(page, "json") == publish.render_json(page)
    assert publish.MEDIA_TYPES == {
        "atom": "application/atom+xml; charset=utf-8",
        "rss": "application/rss+xml; charset=utf-8",
        "json": "application/feed+json; charset=utf-8",
    }
    with pytest.raises(ValueError):
        publish.render(page, "xml")


# --------------------------------------------------------------------------- Atom validity


@pytest.mark.parametrize(
    "page",
    [
        make_page(),
        make_page(stories=(), page=1, pages=1),
        make_page(stories=(RUSSIAN,), page=2, pages=3),
    ],
    ids=["full", "empty", "middle-page"],
)
def test_atom_is_valid_against_rfc4287_schema(
    page: FeedPage, relaxng: etree.RelaxNG, schematron: isoschematron.Schematron
) -> None:
    root = strict_xml(publish.render_atom(page))
    assert relaxng.validate(root), relaxng.error_log
    assert schematron.validate(root), schematron.error_log


def test_schema_rejects_broken_atom(
    relaxng: etree.RelaxNG, schematron: isoschematron.Schematron
) -> None:
    """The schema has teeth: the checks above would catch a renderer regression."""
    good = publish.render_atom(make_page())
    no_entry_id = strict_xml(good)
    entry = no_entry_id.find(f"{A}entry")
    entry.remove(entry.find(f"{A}id"))
    assert not relaxng.validate(no_entry_id)

    bad_date = strict_xml(good.replace(b"2026-03-01T12:30:00Z", b"Sun, 01 Mar 2026 12:30"))
    assert not relaxng.validate(bad_date)

    no_author = strict_xml(good)
    for entry in no_author.iter(f"{A}entry"):
        entry.remove(entry.find(f"{A}author"))
    assert relaxng.validate(no_author)  # author rules live in the Schematron part
    assert not schematron.validate(no_author)


def test_atom_meets_rfc4287_musts() -> None:
    data = publish.render_atom(make_page())
    assert data.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    feed = strict_xml(data)
    assert feed.tag == f"{A}feed"

    def absolute_iri(value: str | None) -> bool:
        return bool(value) and bool(re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", value or ""))

    def check_text_construct(element: etree._Element) -> None:
        kind = element.get("type", "text")
        assert kind in {"text", "html", "xhtml"}
        if kind in {"text", "html"}:
            assert len(element) == 0, f"{element.tag} of type {kind} must not contain markup"

    def check_date(element: etree._Element) -> None:
        assert RFC3339.fullmatch(element.text or ""), element.text
        assert datetime.fromisoformat(element.text or "").tzinfo is not None

    # atom:feed: exactly one id, title, updated; the id an absolute IRI.
    for name in ("id", "title", "updated"):
        assert len(feed.findall(f"{A}{name}")) == 1, name
    assert absolute_iri(feed.findtext(f"{A}id"))
    check_text_construct(feed.find(f"{A}title"))
    check_text_construct(feed.find(f"{A}subtitle"))
    check_date(feed.find(f"{A}updated"))
    feed_alternates = Counter(
        (link.get("type"), link.get("hreflang"))
        for link in feed.findall(f"{A}link")
        if link.get("rel", "alternate") == "alternate"
    )
    assert all(n == 1 for n in feed_alternates.values())

    entries = feed.findall(f"{A}entry")
    assert len(entries) == len(STORIES)
    ids = [entry.findtext(f"{A}id") for entry in entries]
    assert len(set(ids)) == len(ids)
    for entry in entries:
        for name in ("id", "title", "updated"):
            assert len(entry.findall(f"{A}{name}")) == 1, name
        assert absolute_iri(entry.findtext(f"{A}id"))
        check_date(entry.find(f"{A}updated"))
        check_date(entry.find(f"{A}published"))
        # The feed has no author, so every entry carries one with a name.
        assert not feed.findall(f"{A}author")
        assert (entry.findtext(f"{A}author/{A}name") or "").strip()
        for construct in ("title", "summary"):
            for element in entry.findall(f"{A}{construct}"):
                check_text_construct(element)
        alternates = Counter(
            (link.get("type"), link.get("hreflang"))
            for link in entry.findall(f"{A}link")
            if link.get("rel", "alternate") == "alternate"
        )
        assert sum(alternates.values()) == 1
        for link in entry.findall(f"{A}link"):
            assert absolute_iri(link.get("href"))
        for content in entry.findall(f"{A}content"):
            assert content.get("type") == "html"
            assert len(content) == 0  # escaped HTML, not embedded elements
        source = entry.find(f"{A}source")
        assert absolute_iri(source.findtext(f"{A}id"))
        check_date(source.find(f"{A}updated"))


def test_atom_escapes_text_and_html_content() -> None:
    data = publish.render_atom(make_page(stories=(MARKUP,)))
    # Plain text is escaped once; HTML content is escaped as a string, not embedded as markup.
    assert b'Armenia &amp; Kazakhstan: "security &lt;first&gt;" at the CSTO summit' in data
    assert b"&lt;p&gt;Leaders said security &amp;amp; stability" in data
    assert b'href="https://armenpress.am/eng/news/3003?id=7&amp;lang=en"' in data
    entry = strict_xml(data).find(f"{A}entry")
    assert entry.findtext(f"{A}title") == MARKUP.title
    assert entry.findtext(f"{A}summary") == MARKUP.summary
    assert entry.findtext(f"{A}content") == MARKUP.content


def test_atom_feed_metadata() -> None:
    feed = strict_xml(publish.render_atom(make_page()))
    assert feed.findtext(f"{A}id") == BASE + "topics/cis-security.atom"
    assert feed.findtext(f"{A}title") == TOPIC.title
    assert feed.findtext(f"{A}subtitle") == TOPIC.subtitle
    assert feed.findtext(f"{A}updated") == "2026-03-01T12:30:00Z"
    generator = feed.find(f"{A}generator")
    assert (generator.text, generator.get("version")) == ("aggregator", "0.1.0")
    alternate = [link for link in feed.findall(f"{A}link") if link.get("rel") == "alternate"]
    assert [(link.get("type"), link.get("href")) for link in alternate] == [("text/html", BASE)]


def test_atom_entries_carry_story_details() -> None:
    feed = strict_xml(publish.render_atom(make_page()))
    english, russian, _markup, control = feed.findall(f"{A}entry")

    links = english.findall(f"{A}link")
    assert (links[0].get("rel"), links[0].get("href")) == ("alternate", ENGLISH.link)
    related = [
        (link.get("href"), link.get("title"), link.get("hreflang"))
        for link in links
        if link.get("rel") == "related"
    ]
    assert related == ENGLISH_RELATED

    assert english.get(XML_LANG) == "en"
    assert russian.get(XML_LANG) == "ru"
    assert control.get(XML_LANG) is None

    assert russian.findtext(f"{A}published") == "2026-03-01T07:00:00Z"  # from +03:00
    assert russian.findtext(f"{A}author/{A}name") == "Иван Петров"
    assert english.findtext(f"{A}author/{A}name") == "BELTA (English)"
    assert russian.find(f"{A}content") is None

    def categories(entry: etree._Element) -> list[tuple[str | None, str | None]]:
        return [(c.get("term"), c.get("scheme")) for c in entry.findall(f"{A}category")]

    scheme = BASE + "topics/"
    assert categories(english) == [("Politics", None), ("Security", None), ("cis-security", scheme)]
    assert categories(control) == [("Defence", None), ("Security", None), ("cis-security", scheme)]

    source = english.find(f"{A}source")
    assert source.findtext(f"{A}id") == ENGLISH.source_url
    assert source.findtext(f"{A}title") == ENGLISH.source_name
    assert source.findtext(f"{A}updated") == "2026-03-01T12:30:00Z"
    assert [(ln.get("rel"), ln.get("href")) for ln in source.findall(f"{A}link")] == [
        ("self", ENGLISH.source_url)
    ]


def test_invalid_xml_characters_are_stripped_everywhere() -> None:
    page = make_page()
    for fmt in publish.FORMATS:
        data = publish.render(page, fmt)
        assert b"\x00" not in data and b"\x0b" not in data, fmt
        assert b"\\u0000" not in data and b"\\u000b" not in data, fmt
    entry = strict_xml(publish.render_atom(page)).findall(f"{A}entry")[3]
    assert entry.findtext(f"{A}title") == "CIS defence ministers gather"
    assert entry.findtext(f"{A}content") == "<p>Met today.</p>"


def test_entry_without_link_or_content_stays_valid(
    relaxng: etree.RelaxNG, schematron: isoschematron.Schematron
) -> None:
    bare = replace(CONTROL, link="", content="", language="en_US", related=())
    root = strict_xml(publish.render_atom(make_page(stories=(bare,))))
    assert relaxng.validate(root), relaxng.error_log
    assert schematron.validate(root), schematron.error_log
    entry = root.find(f"{A}entry")
    assert entry.find(f"{A}link") is None
    assert entry.find(f"{A}content").get("type") == "text"
    assert entry.get(XML_LANG) == "en-US"  # written as a valid language tag
    assert (
        strict_xml(publish.render_atom(make_page(stories=(replace(bare, language="not a tag"),))))
        .find(f"{A}entry")
        .get(XML_LANG)
        is None
    )


# --------------------------------------------------------------------------- feedparser round trip


def test_atom_round_trip_through_feedparser() -> None:
    parsed = feedparser.parse(publish.render_atom(make_page()))
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert parsed.feed.title == TOPIC.title
    assert parsed.feed.id == BASE + "topics/cis-security.atom"
    assert [e.id for e in parsed.entries] == [s.story_id for s in STORIES]
    for entry, want in zip(parsed.entries, EXPECTED, strict=True):
        assert entry.title == want.title
        assert entry.title_detail.type == "text/plain"
        assert entry.link == want.link
        assert entry.summary == want.summary
        assert entry.author == want.author
        assert entry.title_detail.language == want.language
        assert tuple(entry.published_parsed)[:6] == utc_struct(want.published)
        assert tuple(entry.updated_parsed)[:6] == utc_struct(want.updated)
        if want.content:
            assert entry.content[0].type == "text/html"
            assert entry.content[0].value == want.content
        else:
            assert "content" not in entry
        assert entry.tags[-1].term == "cis-security"
    english, russian = parsed.entries[0], parsed.entries[1]
    related = [
        (link.href, link.title, link.get("hreflang"))
        for link in english.links
        if link.rel == "related"
    ]
    assert related == ENGLISH_RELATED
    assert english.source.title == ENGLISH.source_name
    assert english.source.id == ENGLISH.source_url
    assert russian.source.title == "ТАСС"


def test_rss_round_trip_through_feedparser() -> None:
    parsed = feedparser.parse(publish.render_rss(make_page()))
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "rss20"
    assert parsed.feed.title == TOPIC.title
    assert parsed.feed.link == BASE
    assert [e.id for e in parsed.entries] == [s.story_id for s in STORIES]
    for entry, want in zip(parsed.entries, EXPECTED, strict=True):
        assert entry.title == want.title
        assert entry.link == want.link
        # RSS descriptions are HTML: the plain-text summary arrives escaped, reads the same.
        assert entry.summary_detail.type == "text/html"
        assert html.unescape(entry.summary) == want.summary
        assert tuple(entry.published_parsed)[:6] == utc_struct(want.published)
        if want.content:
            assert entry.content[0].value == want.content
        assert entry.tags[-1].term == "cis-security"
    assert parsed.entries[0].source == {"href": ENGLISH.source_url, "title": ENGLISH.source_name}


def test_rss_has_required_elements() -> None:
    rss = strict_xml(publish.render_rss(make_page()))
    assert rss.tag == "rss" and rss.get("version") == "2.0"
    channel = rss.find("channel")
    for name in ("title", "link", "description"):
        assert (channel.findtext(name) or "").strip(), name
    assert parsedate_to_datetime(channel.findtext("lastBuildDate")) == datetime(
        2026, 3, 1, 12, 30, tzinfo=UTC
    )
    self_links = [
        link.get("href") for link in channel.findall(f"{A}link") if link.get("rel") == "self"
    ]
    assert self_links == [BASE + "topics/cis-security.rss"]
    items = channel.findall("item")
    assert len(items) == len(STORIES)
    for item, story in zip(items, STORIES, strict=True):
        assert item.findtext("title") or item.findtext("description")
        guid = item.find("guid")
        assert (guid.text, guid.get("isPermaLink")) == (story.story_id, "false")
        assert parsedate_to_datetime(item.findtext("pubDate")) == story.published
        assert item.find("source").get("url") == story.source_url
        assert (item.find(CONTENT_ENCODED) is not None) == bool(story.content)


# --------------------------------------------------------------------------- JSON Feed


FEED_KEYS = {
    "version", "title", "home_page_url", "feed_url", "description", "user_comment",
    "next_url", "icon", "favicon", "authors", "author", "language", "expired", "hubs", "items",
}  # fmt: skip
ITEM_KEYS = {
    "id", "url", "external_url", "title", "content_html", "content_text", "summary", "image",
    "banner_image", "date_published", "date_modified", "authors", "author", "tags",
    "language", "attachments",
}  # fmt: skip


def json_feed_problems(doc: Any) -> list[str]:
    """The JSON Feed 1.1 rules (https://jsonfeed.org/version/1.1) a reader relies on."""
    problems: list[str] = []

    def url(value: Any, where: str) -> None:
        if not isinstance(value, str) or not urlsplit(value).scheme:
            problems.append(f"{where}: not an absolute URL: {value!r}")

    def date(value: Any, where: str) -> None:
        if not isinstance(value, str) or not RFC3339.fullmatch(value):
            problems.append(f"{where}: not RFC 3339: {value!r}")

    if not isinstance(doc, dict):
        return ["top level is not an object"]
    if doc.get("version") != "https://jsonfeed.org/version/1.1":
        problems.append("version")
    if not isinstance(doc.get("title"), str) or not doc["title"]:
        problems.append("title")
    problems += [f"unknown key {k}" for k in doc if k not in FEED_KEYS and not k.startswith("_")]
    for key in ("home_page_url", "feed_url", "next_url"):
        if key in doc:
            url(doc[key], key)
    items = doc.get("items")
    if not isinstance(items, list):
        return [*problems, "items"]
    ids = [item.get("id") for item in items]
    if len(set(map(str, ids))) != len(ids):
        problems.append("duplicate item ids")
    for n, item in enumerate(items):
        where = f"items[{n}]"
        if not isinstance(item.get("id"), str) or not item["id"]:
            problems.append(f"{where}.id")
        problems += [
            f"{where}: unknown key {k}"
            for k in item
            if k not in ITEM_KEYS and not k.startswith("_")
        ]
        for key in ("url", "external_url"):
            if key in item:
                url(item[key], f"{where}.{key}")
        for key in ("title", "summary", "content_html", "content_text", "language"):
            if key in item and not isinstance(item[key], str):
                problems.append(f"{where}.{key} is not a string")
        if "content_html" not in item and "content_text" not in item:
            problems.append(f"{where}: neither content_html nor content_text")
        for key in ("date_published", "date_modified"):
            if key in item:
                date(item[key], f"{where}.{key}")
        for author in item.get("authors", []):
            if not isinstance(author, dict) or not ({"name", "url", "avatar"} & author.keys()):
                problems.append(f"{where}.authors")
        tags = item.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            problems.append(f"{where}.tags")
    return problems


def test_json_feed_follows_version_1_1() -> None:
    data = publish.render_json(make_page())
    doc = json.loads(data.decode("utf-8"))
    assert json_feed_problems(doc) == []
    assert "Совет Безопасности".encode() in data  # UTF-8, not \u escapes
    assert doc["feed_url"] == BASE + "topics/cis-security.json"
    assert doc["home_page_url"] == BASE
    assert "next_url" not in doc
    items = doc["items"]
    assert [i["id"] for i in items] == [s.story_id for s in STORIES]
    for item, want in zip(items, EXPECTED, strict=True):
        assert item["title"] == want.title
        assert item["url"] == want.link
        assert item["summary"] == want.summary
        assert item["authors"] == [{"name": want.author}]
        assert item.get("language") == want.language
        assert datetime.fromisoformat(item["date_published"]) == want.published
        assert datetime.fromisoformat(item["date_modified"]) == want.updated
        if want.content:
            assert item["content_html"] == want.content
        else:
            assert item["content_text"] == want.summary
    assert items[0]["_aggregator"]["related"] == [
        {"url": href, "source": name, **({"language": lang} if lang else {})}
        for href, name, lang in ENGLISH_RELATED
    ]
    assert items[0]["_aggregator"]["source"]["feed_url"] == ENGLISH.source_url
    assert items[3]["tags"] == ["Defence", "Security", "cis-security"]

    # The checker itself catches broken documents.
    broken = json.loads(data)
    del broken["items"][0]["content_html"]
    broken["items"][1]["date_published"] = "1 March 2026"
    broken["extra"] = 1
    assert len(json_feed_problems(broken)) == 3


# --------------------------------------------------------------------------- determinism, paging


def test_rendering_is_byte_identical() -> None:
    page = make_page()
    twin = replace(page, stories=tuple(replace(s) for s in page.stories))
    for fmt in publish.FORMATS:
        assert publish.render(page, fmt) == publish.render(page, fmt) == publish.render(twin, fmt)


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (1, {"self": "", "first": "", "next": "?page=2", "last": "?page=3"}),
        (2, {"self": "?page=2", "first": "", "previous": "", "next": "?page=3", "last": "?page=3"}),
        (3, {"self": "?page=3", "first": "", "previous": "?page=2", "last": "?page=3"}),
    ],
)
def test_paging_links(number: int, expected: dict[str, str]) -> None:
    page = make_page(stories=(STORIES[number - 1],), page=number, pages=3)

    atom = strict_xml(publish.render_atom(page))
    atom_links = {
        link.get("rel"): link.get("href")
        for link in atom.findall(f"{A}link")
        if link.get("rel") != "alternate"
    }
    assert atom_links == {rel: BASE + "topics/cis-security.atom" + q for rel, q in expected.items()}
    # The feed id names the feed, not the page.
    assert atom.findtext(f"{A}id") == BASE + "topics/cis-security.atom"

    rss_links = {
        link.get("rel"): link.get("href")
        for link in strict_xml(publish.render_rss(page)).iter(f"{A}link")
    }
    assert rss_links == {rel: BASE + "topics/cis-security.rss" + q for rel, q in expected.items()}

    doc = json.loads(publish.render_json(page))
    assert doc["feed_url"] == BASE + "topics/cis-security.json" + expected["self"]
    if "next" in expected:
        assert doc["next_url"] == BASE + "topics/cis-security.json" + expected["next"]
    else:
        assert "next_url" not in doc


# --------------------------------------------------------------------------- OPML and index


OTHER = Topic(id="trade", title='Trade & "<tariffs>"', subtitle="")


def test_opml_lists_every_topic_feed() -> None:
    date = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    data = publish.render_opml([TOPIC, OTHER], BASE, title="Agency topics", date=date)
    assert data == publish.render_opml([TOPIC, OTHER], BASE, title="Agency topics", date=date)
    opml = strict_xml(data)
    assert opml.tag == "opml" and opml.get("version") == "2.0"
    assert opml.findtext("head/title") == "Agency topics"
    assert parsedate_to_datetime(opml.findtext("head/dateCreated")) == date
    outlines = opml.findall("body/outline")
    assert [(o.get("type"), o.get("text"), o.get("title"), o.get("xmlUrl"), o.get("htmlUrl"))
            for o in outlines] == [
        ("rss", TOPIC.title, TOPIC.title, BASE + "topics/cis-security.atom", BASE),
        ("rss", OTHER.title, OTHER.title, BASE + "topics/trade.atom", BASE),
    ]  # fmt: skip


class _Links(HTMLParser):
    """Collects <link> and <a> attributes and the text, as a browser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.head_links: list[dict[str, str | None]] = []
        self.anchors: list[dict[str, str | None]] = []
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "link":
            self.head_links.append(dict(attrs))
        elif tag == "a":
            self.anchors.append(dict(attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_index_page_lists_topics_with_autodiscovery() -> None:
    evil = Topic(id="evil", title="<script>alert('x')</script> & co", subtitle='"quoted" <b>')
    summaries = [
        TopicSummary(TOPIC, 42, datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        TopicSummary(OTHER, 1, datetime(2026, 3, 1, 15, 0, tzinfo=timezone(timedelta(hours=3)))),
        TopicSummary(evil, 0, None),
    ]
    data = publish.render_index_html(summaries, BASE, version="0.1.0")
    assert data == publish.render_index_html(summaries, BASE, version="0.1.0")
    page = data.decode("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in page

    parser = _Links()
    parser.feed(page)
    assert "script" not in parser.tags
    autodiscovery = [
        (link["title"], link["href"])
        for link in parser.head_links
        if link.get("rel") == "alternate" and link.get("type") == "application/atom+xml"
    ]
    assert autodiscovery == [(t.title, BASE + f"topics/{t.id}.atom") for t in (TOPIC, OTHER, evil)]
    hrefs = [a["href"] for a in parser.anchors]
    for fmt in publish.FORMATS:
        assert BASE + f"topics/cis-security.{fmt}" in hrefs
    assert BASE + "opml" in hrefs and BASE + "status" in hrefs
    text = "".join(parser.text)
    assert "42 entries" in text and "1 entry" in text and "no entries yet" in text
    assert "2026-03-01 12:30 UTC" in text and "2026-03-01 12:00 UTC" in text
    assert TOPIC.subtitle in text


def test_index_page_without_topics() -> None:
    page = publish.render_index_html([], BASE, version="0.1.0").decode()
    assert "No topics are configured yet." in page
    assert 'type="application/atom+xml"' not in page
