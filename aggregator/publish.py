"""Render topic feed pages as Atom 1.0, RSS 2.0 and JSON Feed 1.1, plus OPML and the index page.

Pure: every function turns records from :mod:`aggregator.types` into bytes. Nothing here does
I/O or reads the clock; every date in the output comes from the records, so the same
:class:`~aggregator.types.FeedPage` always renders byte-identical output (which keeps ETags
stable).

    FeedPage ─┬─ render_atom ─> Atom 1.0 (RFC 4287, RFC 5005 paging links)
              ├─ render_rss  ─> RSS 2.0 (+ atom:link self/paging, content:encoded)
              └─ render_json ─> JSON Feed 1.1 (+ "_aggregator" extension: source, related copies)
    [Topic]        ─ render_opml       ─> OPML 2.0 subscription list
    [TopicSummary] ─ render_index_html ─> HTML5 page with autodiscovery links

The XML documents are built with lxml directly rather than with feedgen, because feedgen 1.0
cannot express what a story entry needs and is not safe in a threaded server:

- its Atom ``<source>`` holds only a title and a plain link (no ``<id>``, ``<updated>`` or
  ``rel="self"``) and it cannot put ``xml:lang`` on an entry;
- it writes dates with ``isoformat()`` (``+00:00``, microseconds) and stamps
  ``datetime.now()`` into every feed and entry it creates;
- it formats every RSS date by switching the process-wide locale (``locale.setlocale``),
  which races with other threads of the web server.

lxml is what feedgen itself uses underneath, so the output is the same kind of document with
full control over element order, dates and escaping.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

from lxml import etree

from aggregator.types import Copy, FeedPage, StoryView, Topic

__all__ = [
    "FORMATS",
    "MEDIA_TYPES",
    "TopicSummary",
    "feed_path",
    "feed_url",
    "render",
    "render_atom",
    "render_index_html",
    "render_json",
    "render_opml",
    "render_rss",
]

MEDIA_TYPES = {
    "atom": "application/atom+xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
}
FORMATS = tuple(MEDIA_TYPES)

ATOM_NS = "http://www.w3.org/2005/Atom"
CONTENT_NS = "http://purl.org/rss/1.0/modules/content/"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
GENERATOR = "aggregator"

# Characters XML 1.0 forbids (C0 controls except tab/LF/CR, lone surrogates, U+FFFE/U+FFFF);
# lxml refuses them, and feed readers choke on them.
_INVALID_XML = re.compile(r"[\x00-\x08\x0B\x0C\x0E-\x1F\uD800-\uDFFF\uFFFE\uFFFF]")
# RFC 3066 as RFC 4287 constrains it (atomLanguageTag).
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")


# --------------------------------------------------------------------------- URLs


def _check_format(fmt: str) -> None:
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"unknown feed format {fmt!r}; expected one of {', '.join(FORMATS)}")


def feed_path(topic_id: str, fmt: str = "atom") -> str:
    """The path of a topic feed below the base URL: ``topics/{id}.atom`` (or .rss, .json)."""
    _check_format(fmt)
    return f"topics/{quote(topic_id, safe='')}.{fmt}"


def feed_url(base_url: str, topic_id: str, fmt: str = "atom", page: int = 1) -> str:
    """The public URL of one page of a topic feed; page 1 has no query string."""
    if page < 1:
        raise ValueError(f"page must be 1 or more, not {page}")
    url = _base(base_url) + feed_path(topic_id, fmt)
    return url if page == 1 else f"{url}?page={page}"


def _base(base_url: str) -> str:
    return base_url if base_url.endswith("/") else base_url + "/"


def _category_scheme(base_url: str) -> str:
    return _base(base_url) + "topics/"


# --------------------------------------------------------------------------- text and dates


def _clean(text: str) -> str:
    return _INVALID_XML.sub("", text)


def _utc(when: datetime) -> datetime:
    # Records carry aware UTC datetimes; a naive one is taken to be UTC rather than local time.
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def _rfc3339(when: datetime) -> str:
    return _utc(when).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfc822(when: datetime) -> str:
    # email.utils does not depend on the locale, unlike strftime("%a, %d %b").
    return format_datetime(_utc(when).replace(microsecond=0), usegmt=True)


def _language(tag: str | None) -> str | None:
    """A language tag valid in xml:lang/hreflang, or None (e.g. for "" or "en_US" fixed up)."""
    if not tag:
        return None
    tag = tag.strip().replace("_", "-")
    return tag if _LANGUAGE_TAG.fullmatch(tag) else None


def _unique(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for value in values:
        value = _clean(value).strip()
        if value and value not in seen:
            seen.add(value)
            out.append(value)
    return out


def _author(story: StoryView) -> str:
    return _clean(story.author or story.source_name or story.source_id)


def _related(story: StoryView) -> list[Copy]:
    """The other copies worth a link: not the representative's link, each href once."""
    seen = {story.link}
    out: list[Copy] = []
    for copy in story.related:
        if copy.link and copy.link not in seen:
            seen.add(copy.link)
            out.append(copy)
    return out


def _last_page(page: FeedPage) -> int:
    return max(page.pages, 1)


def _xml_bytes(root: etree._Element) -> bytes:
    data: bytes = etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True)
    return data


def _sub(
    parent: etree._Element, tag: str, text: str | None = None, /, **attrs: str
) -> etree._Element:
    """Add a child element; text and attribute values are stripped of XML-invalid characters."""
    element = etree.SubElement(parent, tag)
    for name, value in attrs.items():
        element.set(name, _clean(value))
    if text is not None:
        element.text = _clean(text)
    return element


# --------------------------------------------------------------------------- Atom


def _atom(name: str) -> str:
    return f"{{{ATOM_NS}}}{name}"


def _paging_links(page: FeedPage, fmt: str) -> list[tuple[str, str]]:
    """(rel, href) pairs: this page as ``self``, then the RFC 5005 paged-feed links."""
    topic_id, base, last = page.topic.id, page.base_url, _last_page(page)
    links = [
        ("self", feed_url(base, topic_id, fmt, page.page)),
        ("first", feed_url(base, topic_id, fmt)),
    ]
    if page.page > 1:
        links.append(("previous", feed_url(base, topic_id, fmt, min(page.page - 1, last))))
    if page.page < last:
        links.append(("next", feed_url(base, topic_id, fmt, page.page + 1)))
    links.append(("last", feed_url(base, topic_id, fmt, last)))
    return links


def render_atom(page: FeedPage) -> bytes:
    """An Atom 1.0 document (RFC 4287) for one page of a topic feed.

    The feed ``<id>`` is the page-1 URL on every page; ``rel="self"`` is this page's URL and
    ``first``/``previous``/``next``/``last`` follow RFC 5005. Entries keep the given order.
    """
    topic = page.topic
    feed = etree.Element(_atom("feed"), nsmap={None: ATOM_NS})
    _sub(feed, _atom("id"), feed_url(page.base_url, topic.id, "atom"))
    _sub(feed, _atom("title"), topic.title, type="text")
    if topic.subtitle:
        _sub(feed, _atom("subtitle"), topic.subtitle, type="text")
    _sub(feed, _atom("updated"), _rfc3339(page.updated))
    for rel, href in _paging_links(page, "atom"):
        _sub(feed, _atom("link"), rel=rel, type="application/atom+xml", href=href)
    _sub(feed, _atom("link"), rel="alternate", type="text/html", href=_base(page.base_url))
    generator = _sub(feed, _atom("generator"), GENERATOR, uri=_base(page.base_url))
    if page.generator_version:
        generator.set("version", _clean(page.generator_version))
    for story in page.stories:
        _atom_entry(feed, story, page)
    return _xml_bytes(feed)


def _atom_entry(feed: etree._Element, story: StoryView, page: FeedPage) -> None:
    entry = _sub(feed, _atom("entry"))
    language = _language(story.language)
    if language:
        entry.set(XML_LANG, language)
    _sub(entry, _atom("id"), story.story_id)
    _sub(entry, _atom("title"), story.title, type="text")
    _sub(entry, _atom("updated"), _rfc3339(story.updated))
    _sub(entry, _atom("published"), _rfc3339(story.published))
    # The feed has no author of its own, so RFC 4287 needs one on every entry.
    author = _sub(entry, _atom("author"))
    _sub(author, _atom("name"), _author(story))
    if story.link:
        _sub(entry, _atom("link"), rel="alternate", type="text/html", href=story.link)
    for copy in _related(story):
        link = _sub(entry, _atom("link"), rel="related", type="text/html", href=copy.link)
        copy_language = _language(copy.language)
        if copy_language:
            link.set("hreflang", copy_language)
        link.set("title", _clean(copy.source_name or copy.source_id))
    if story.summary:
        _sub(entry, _atom("summary"), story.summary, type="text")
    if story.content:
        _sub(entry, _atom("content"), story.content, type="html")
    elif not story.link:
        # An entry needs an alternate link or content (RFC 4287 4.1.1.1).
        _sub(entry, _atom("content"), story.summary or story.title, type="text")
    for term in _unique(story.categories):
        _sub(entry, _atom("category"), term=term)
    _sub(
        entry,
        _atom("category"),
        term=page.topic.id,
        scheme=_category_scheme(page.base_url),
        label=page.topic.title,
    )
    source = _sub(entry, _atom("source"))
    if story.source_url:
        _sub(source, _atom("id"), story.source_url)
    _sub(source, _atom("title"), story.source_name or story.source_id, type="text")
    # The source feed's own <updated> is not kept; the representative's date is a lower bound.
    _sub(source, _atom("updated"), _rfc3339(story.updated))
    if story.source_url:
        _sub(source, _atom("link"), rel="self", href=story.source_url)


# --------------------------------------------------------------------------- RSS


def render_rss(page: FeedPage) -> bytes:
    """An RSS 2.0 document for one page of a topic feed.

    Titles are plain text; ``<description>`` is HTML by RSS convention, so the plain-text
    summary is HTML-escaped into it and the sanitized content goes to ``content:encoded``.
    """
    topic = page.topic
    rss = etree.Element("rss", version="2.0", nsmap={"atom": ATOM_NS, "content": CONTENT_NS})
    channel = _sub(rss, "channel")
    _sub(channel, "title", topic.title)
    _sub(channel, "link", _base(page.base_url))
    _sub(channel, "description", topic.subtitle or topic.title)
    _sub(channel, "lastBuildDate", _rfc822(page.updated))
    generator = GENERATOR
    if page.generator_version:
        generator = f"{GENERATOR} {page.generator_version}"
    _sub(channel, "generator", generator)
    _sub(channel, "docs", "https://www.rssboard.org/rss-specification")
    for rel, href in _paging_links(page, "rss"):
        _sub(channel, _atom("link"), rel=rel, type="application/rss+xml", href=href)
    scheme = _category_scheme(page.base_url)
    for story in page.stories:
        item = _sub(channel, "item")
        _sub(item, "title", story.title)
        if story.link:
            _sub(item, "link", story.link)
        if story.summary:
            _sub(item, "description", html.escape(story.summary, quote=False))
        if story.content:
            _sub(item, f"{{{CONTENT_NS}}}encoded", story.content)
        _sub(item, "guid", story.story_id, isPermaLink="false")
        _sub(item, "pubDate", _rfc822(story.published))
        for term in _unique(story.categories):
            _sub(item, "category", term)
        _sub(item, "category", page.topic.id, domain=scheme)
        if story.source_url:
            _sub(item, "source", story.source_name or story.source_id, url=story.source_url)
    return _xml_bytes(rss)


# --------------------------------------------------------------------------- JSON Feed


def render_json(page: FeedPage) -> bytes:
    """A JSON Feed 1.1 document for one page of a topic feed.

    Keys come in a fixed order and non-ASCII text is kept as UTF-8, so output is stable.
    Copies from other sources go under the ``_aggregator`` extension (JSON Feed requires
    custom keys to start with an underscore), together with the representative's source.
    """
    topic = page.topic
    document: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": _clean(topic.title),
    }
    if topic.subtitle:
        document["description"] = _clean(topic.subtitle)
    document["home_page_url"] = _clean(_base(page.base_url))
    document["feed_url"] = _clean(feed_url(page.base_url, topic.id, "json", page.page))
    if page.page < _last_page(page):
        document["next_url"] = _clean(feed_url(page.base_url, topic.id, "json", page.page + 1))
    document["items"] = [_json_item(story, page) for story in page.stories]
    text = json.dumps(document, ensure_ascii=False, indent=2)
    return (text + "\n").encode("utf-8")


def _json_item(story: StoryView, page: FeedPage) -> dict[str, Any]:
    item: dict[str, Any] = {"id": _clean(story.story_id)}
    if story.link:
        item["url"] = _clean(story.link)
    item["title"] = _clean(story.title)
    if story.summary:
        item["summary"] = _clean(story.summary)
    # One of content_html / content_text is required on every item.
    if story.content:
        item["content_html"] = _clean(story.content)
    else:
        item["content_text"] = _clean(story.summary or story.title)
    item["date_published"] = _rfc3339(story.published)
    item["date_modified"] = _rfc3339(story.updated)
    item["authors"] = [{"name": _author(story)}]
    item["tags"] = _unique([*story.categories, page.topic.id])
    language = _language(story.language)
    if language:
        item["language"] = language
    related = []
    for copy in _related(story):
        entry = {"url": _clean(copy.link), "source": _clean(copy.source_name or copy.source_id)}
        copy_language = _language(copy.language)
        if copy_language:
            entry["language"] = copy_language
        related.append(entry)
    item["_aggregator"] = {
        "source": {
            "id": _clean(story.source_id),
            "name": _clean(story.source_name),
            "feed_url": _clean(story.source_url),
        },
        "related": related,
    }
    return item


# --------------------------------------------------------------------------- dispatch


def render(page: FeedPage, fmt: str) -> bytes:
    """Render ``page`` as ``"atom"``, ``"rss"`` or ``"json"``; serve it as ``MEDIA_TYPES[fmt]``."""
    _check_format(fmt)
    if fmt == "atom":
        return render_atom(page)
    if fmt == "rss":
        return render_rss(page)
    return render_json(page)


# --------------------------------------------------------------------------- OPML


def render_opml(topics: Sequence[Topic], base_url: str, *, title: str, date: datetime) -> bytes:
    """An OPML 2.0 subscription list with one outline per topic, pointing at its Atom feed."""
    opml = etree.Element("opml", version="2.0")
    head = _sub(opml, "head")
    _sub(head, "title", title)
    _sub(head, "dateCreated", _rfc822(date))
    _sub(head, "docs", "http://opml.org/spec2.opml")
    body = _sub(opml, "body")
    for topic in topics:
        outline = _sub(
            body,
            "outline",
            type="rss",
            text=topic.title,
            title=topic.title,
            xmlUrl=feed_url(base_url, topic.id, "atom"),
            htmlUrl=_base(base_url),
        )
        if topic.subtitle:
            outline.set("description", _clean(topic.subtitle))
    return _xml_bytes(opml)


# --------------------------------------------------------------------------- index page


@dataclass(frozen=True)
class TopicSummary:
    """A topic as the index page lists it."""

    topic: Topic
    entries: int
    updated: datetime | None  # newest change; None when the topic has no entries yet


_INDEX_CSS = """\
body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; background: #fff; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
.topic { border-top: 1px solid #ddd; padding: 0.8rem 0; }
.topic h2 { font-size: 1.2rem; margin: 0; }
.subtitle { margin: 0.2rem 0; color: #444; }
.meta { margin: 0.2rem 0; color: #666; font-size: 0.9rem; }
.subscribe a { margin-right: 0.8rem; }
footer { border-top: 1px solid #ddd; margin-top: 1.5rem; padding-top: 0.8rem;
         color: #666; font-size: 0.9rem; }
a { color: #0645ad; }"""


def _e(text: str) -> str:
    return html.escape(_clean(text), quote=True)


def render_index_html(topics: Sequence[TopicSummary], base_url: str, *, version: str) -> bytes:
    """The HTML5 home page: every topic with its subscribe links, plus feed autodiscovery."""
    base = _base(base_url)
    head_links = [
        f'<link rel="alternate" type="application/atom+xml" title="{_e(s.topic.title)}"'
        f' href="{_e(feed_url(base, s.topic.id, "atom"))}">'
        for s in topics
    ]
    sections = [_index_topic(s, base) for s in topics] or [
        '<p class="empty">No topics are configured yet.</p>'
    ]
    footer = (
        f'<a href="{_e(base + "opml")}">OPML of all feeds</a> · '
        f'<a href="{_e(base + "status")}">Source status</a> · '
        f"{_e(GENERATOR)} {_e(version)}"
    )
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Topic feeds</title>",
        *head_links,
        f'<link rel="alternate" type="text/x-opml" title="All topic feeds" href="{_e(base + "opml")}">',
        f"<style>\n{_INDEX_CSS}\n</style>",
        "</head>",
        "<body>",
        "<header>",
        "<h1>Topic feeds</h1>",
        "<p>Each story once, from every agency that ran it. Subscribe in your feed reader.</p>",
        "</header>",
        "<main>",
        *sections,
        "</main>",
        f"<footer>{footer}</footer>",
        "</body>",
        "</html>",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _index_topic(summary: TopicSummary, base: str) -> str:
    topic = summary.topic
    count = f"{summary.entries} entr{'y' if summary.entries == 1 else 'ies'}"
    if summary.updated is None:
        updated = "no entries yet"
    else:
        when = _utc(summary.updated)
        updated = (
            f'updated <time datetime="{_rfc3339(when)}">'
            f"{when.strftime('%Y-%m-%d %H:%M')} UTC</time>"
        )
    subscribe = " ".join(
        f'<a href="{_e(feed_url(base, topic.id, fmt))}" type="{_e(MEDIA_TYPES[fmt].split(";")[0])}">'
        f"{label}</a>"
        for fmt, label in (("atom", "Atom"), ("rss", "RSS"), ("json", "JSON Feed"))
    )
    parts = [
        f'<section class="topic" id="topic-{_e(topic.id)}">',
        f'<h2><a href="{_e(feed_url(base, topic.id, "atom"))}">{_e(topic.title)}</a></h2>',
    ]
    if topic.subtitle:
        parts.append(f'<p class="subtitle">{_e(topic.subtitle)}</p>')
    parts += [
        f'<p class="meta">{count} · {updated}</p>',
        f'<p class="subscribe">Subscribe: {subscribe}</p>',
        "</section>",
    ]
    return "\n".join(parts)
