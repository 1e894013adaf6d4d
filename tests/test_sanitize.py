"""sanitize_html / clean_text / safe_link against XSS filter-evasion vectors."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from aggregator.normalize import clean_text, normalize_entry, safe_link, sanitize_html
from aggregator.types import Enclosure, NormalizeOptions, ParsedEntry, ParsedFeed

VECTORS = [
    line
    for line in (Path(__file__).parent / "data" / "xss_vectors.txt")
    .read_text(encoding="utf-8")
    .splitlines()
    if line and not line.startswith("# ")
]
BASE = "https://news.example.com/section/"
ALLOWED_TAGS = {
    "a", "b", "blockquote", "br", "code", "em", "figcaption", "figure", "h2", "h3", "h4",
    "h5", "h6", "hr", "i", "img", "li", "ol", "p", "pre", "span", "strong", "sub", "sup",
    "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
URL_ATTRIBUTES = {"href", "src"}
SAFE_SCHEMES = {"http", "https", "mailto"}
CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]+")


class TagCollector(HTMLParser):
    """Every start tag with its attributes, values entity-decoded the way browsers do."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


QUOTED_VALUE = re.compile(r"\"[^\"]*\"|'[^']*'")


def assert_safe_html(output: str) -> None:
    assert not re.search(r"<\s*/?\s*script", output, re.IGNORECASE), output
    for tag in re.findall(r"<[^>]*>", QUOTED_VALUE.sub('""', output)):
        assert not re.search(r"[\s/]on\w+\s*=", tag, re.IGNORECASE), output
    collector = TagCollector()
    collector.feed(output)
    collector.close()
    for tag, attrs in collector.tags:
        assert tag in ALLOWED_TAGS, (tag, output)
        for name, value in attrs:
            assert not name.startswith("on"), (name, output)
            assert name != "style", output
            if name in URL_ATTRIBUTES:
                url = CONTROL_OR_SPACE.sub("", value or "").lower()
                assert not url.startswith(("javascript:", "vbscript:", "data:")), output
                scheme = urlsplit(url).scheme
                assert scheme in SAFE_SCHEMES, (url, output)


def assert_plain_text(text: str) -> None:
    assert not re.search(r"<[a-zA-Z/!?]", text), text


def test_there_are_enough_vectors() -> None:
    assert len(VECTORS) >= 100


@pytest.mark.parametrize("vector", VECTORS)
def test_sanitize_html_neutralizes_vector(vector: str) -> None:
    assert_safe_html(sanitize_html(vector, BASE))
    assert_safe_html(sanitize_html(vector, None))


@pytest.mark.parametrize("vector", VECTORS)
def test_clean_text_leaves_no_markup(vector: str) -> None:
    assert_plain_text(clean_text(vector))


def test_vectors_through_the_whole_entry_normalization() -> None:
    feed = ParsedFeed(title="t", link="https://news.example.com/", language="en", entries=())
    options = NormalizeOptions(source_id="xss")
    for vector in VECTORS:
        entry = ParsedEntry(
            guid=None,
            link="https://news.example.com/1",
            title=vector,
            summary=vector,
            content=f"<p>Story.</p>{vector}",
        )
        item = normalize_entry(
            entry,
            feed,
            options,
            fetched_at=datetime(2025, 3, 13, tzinfo=UTC),
            feed_url="https://news.example.com/rss",
        )
        assert item is not None
        assert_safe_html(item.content)
        assert_plain_text(item.title)
        assert_plain_text(item.summary)


def test_dangerous_elements_vanish_with_their_content() -> None:
    html = (
        "<p>Kept</p><script>var secret = 1;</script><style>p { color: red }</style>"
        "<iframe src='https://evil.example/'>frame text</iframe><object>obj</object>"
        "<form action='/x'><p>form text</p></form><meta http-equiv='refresh' content='0'>"
        "<base href='https://evil.example/'><link rel='stylesheet' href='/x.css'>"
    )
    output = sanitize_html(html, BASE)
    for word in ("secret", "color", "frame text", "obj", "<form", "<meta", "<base", "<link"):
        assert word not in output
    assert "<p>Kept</p>" in output


def test_good_markup_survives_with_absolute_urls_and_safe_rel() -> None:
    html = (
        '<h2>Head</h2><p>See <a href="../other/page.html" title="Other">the page</a> and '
        '<a href="mailto:desk@example.com">write</a>.</p>'
        '<figure><img src="/img/a.jpg" alt="A" width="640" height="480"><figcaption>Cap</figcaption></figure>'
        "<table><thead><tr><th>K</th></tr></thead><tbody><tr><td>V</td></tr></tbody></table>"
        "<ul><li><em>one</em></li></ul><blockquote>q</blockquote><pre><code>x</code></pre>"
    )
    output = sanitize_html(html, BASE)
    assert (
        '<a href="https://news.example.com/other/page.html" title="Other" '
        'rel="noopener noreferrer nofollow">the page</a>'
    ) in output
    assert '<a href="mailto:desk@example.com" rel="noopener noreferrer nofollow">' in output
    assert (
        '<img src="https://news.example.com/img/a.jpg" alt="A" width="640" height="480">' in output
    )
    for fragment in ("<h2>Head</h2>", "<figcaption>Cap</figcaption>", "<th>K</th>", "<td>V</td>"):
        assert fragment in output
    assert "<li><em>one</em></li>" in output
    assert "<pre><code>x</code></pre>" in output


def test_javascript_link_keeps_its_text_but_loses_the_url() -> None:
    output = sanitize_html('<a href="javascript:alert(1)">Click</a>', BASE)
    assert "Click" in output
    assert "href" not in output


def test_escaped_markup_is_sanitized_not_shown_or_run() -> None:
    output = sanitize_html("&lt;p&gt;Text&lt;/p&gt;&lt;script&gt;alert(1)&lt;/script&gt;", BASE)
    assert output == "<p>Text</p>"


def test_deep_nesting_is_flattened_to_paragraphs() -> None:
    html = "<div>" * 100 + "Deep <b>story</b><script>alert(1)</script>" + "</div>" * 100
    assert sanitize_html(html, BASE) == "<p>Deep story</p>"


BAD_LINKS = [
    "javascript:alert(1)",
    "JAVASCRIPT:alert(1)",
    "  javascript:alert(1)",
    "jav\tascript:alert(1)",
    "jav\nascript:alert(1)",
    "\x00javascript:alert(1)",
    "vbscript:msgbox(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "data:image/png;base64,iVBORw0KGgo=",
    "file:///etc/passwd",
    "about:blank",
]


@pytest.mark.parametrize("url", BAD_LINKS)
def test_safe_link_rejects_script_and_data_urls(url: str) -> None:
    assert safe_link(url) is None


@pytest.mark.parametrize("url", BAD_LINKS)
def test_entry_links_and_enclosures_with_bad_schemes_are_dropped(url: str) -> None:
    feed = ParsedFeed(title="t", link=None, language="en", entries=())
    entry = ParsedEntry(
        guid="g",
        link=url,
        title="Title",
        summary="Text",
        content="",
        enclosures=(
            Enclosure(url=url, type="text/html"),
            Enclosure(url="https://cdn.example.com/a.mp3", type="audio/mpeg", length=5),
        ),
    )
    item = normalize_entry(
        entry,
        feed,
        NormalizeOptions(source_id="s"),
        fetched_at=datetime(2025, 3, 13, tzinfo=UTC),
        feed_url="https://news.example.com/rss",
    )
    assert item is not None
    assert item.link == ""
    assert item.url == ""
    assert [e.url for e in item.enclosures] == ["https://cdn.example.com/a.mp3"]
