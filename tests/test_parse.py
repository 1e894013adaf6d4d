"""parse_feed: dialects, encodings, HTML pages, malformed and hostile documents."""

from __future__ import annotations

import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer

from aggregator.errors import ParseError
from aggregator.normalize import normalize_entry
from aggregator.parse import parse_feed
from aggregator.types import ErrorKind, NormalizeOptions

DATA = Path(__file__).parent / "data" / "parse"
RSS = {"content-type": "application/rss+xml"}
TITLE = "Совет безопасности ОДКБ обсудил ситуацию на границе"
SECOND_TITLE = "Лукашенко провёл встречу с делегацией Казахстана"


def data(name: str) -> bytes:
    return (DATA / name).read_bytes()


# --------------------------------------------------------------------------- encodings


def russian_feed(declaration: str | None) -> str:
    """The same Russian feed, with or without an encoding in its XML prolog."""
    body = (DATA / "russian.xml").read_text(encoding="utf-8")
    if declaration is None:
        return '<?xml version="1.0"?>\n' + body
    return f'<?xml version="1.0" encoding="{declaration}"?>\n' + body


ENCODING_CASES = {
    # (body, response headers)
    "utf-8 declared in HTTP and prolog": (
        russian_feed("utf-8").encode("utf-8"),
        {"content-type": "application/rss+xml; charset=utf-8"},
    ),
    "utf-8 undeclared": (russian_feed(None).encode("utf-8"), {}),
    "(a) windows-1251 declared only in HTTP": (
        russian_feed(None).encode("cp1251"),
        {"content-type": "application/rss+xml; charset=windows-1251"},
    ),
    "(a) windows-1251 declared only in HTTP, text/xml": (
        russian_feed(None).encode("cp1251"),
        {"content-type": "text/xml; charset=windows-1251"},
    ),
    "(b) windows-1251 declared only in the prolog": (
        russian_feed("windows-1251").encode("cp1251"),
        RSS,
    ),
    "(b) windows-1251 in the prolog, text/xml without charset": (
        russian_feed("windows-1251").encode("cp1251"),
        {"content-type": "text/xml"},
    ),
    "(c) windows-1251 undeclared": (russian_feed(None).encode("cp1251"), RSS),
    "(c) windows-1251 undeclared, no headers at all": (russian_feed(None).encode("cp1251"), {}),
    "(d) koi8-r undeclared": (russian_feed(None).encode("koi8_r"), RSS),
    "(e) windows-1251 declared as utf-8 in HTTP and prolog": (
        russian_feed("utf-8").encode("cp1251"),
        {"content-type": "application/rss+xml; charset=utf-8"},
    ),
    "utf-8 declared as windows-1251": (
        russian_feed("windows-1251").encode("utf-8"),
        {"content-type": "application/rss+xml; charset=windows-1251"},
    ),
    "windows-1251 declared as iso-8859-1": (
        russian_feed(None).encode("cp1251"),
        {"content-type": "text/xml; charset=iso-8859-1"},
    ),
    "windows-1251 declared as koi8-r": (
        russian_feed("koi8-r").encode("cp1251"),
        {"content-type": "text/xml"},
    ),
    "koi8-r declared as windows-1251": (
        russian_feed("windows-1251").encode("koi8_r"),
        RSS,
    ),
    "utf-16 with BOM": (russian_feed("utf-16").encode("utf-16"), RSS),
}


@pytest.mark.parametrize("case", list(ENCODING_CASES))
def test_russian_feed_reads_correctly_however_its_encoding_is_declared(case: str) -> None:
    body, headers = ENCODING_CASES[case]
    feed = parse_feed(body, url="https://ru.example.com/rss", headers=headers)
    assert feed.title == "Новости ОДКБ"
    assert [e.title for e in feed.entries] == [TITLE, SECOND_TITLE]
    assert feed.entries[0].summary.startswith("Секретари советов безопасности")


def test_encoding_actually_used_is_reported() -> None:
    windows = parse_feed(russian_feed(None).encode("cp1251"), url="https://x/", headers=RSS)
    koi8 = parse_feed(russian_feed(None).encode("koi8_r"), url="https://x/", headers=RSS)
    wrong = parse_feed(
        russian_feed("utf-8").encode("cp1251"),
        url="https://x/",
        headers={"content-type": "application/rss+xml; charset=utf-8"},
    )
    assert windows.encoding == "windows-1251"
    assert koi8.encoding == "koi8-r"
    assert wrong.encoding == "windows-1251"
    assert wrong.warning  # a declared charset that lied is worth a note


def test_mislabelled_utf8_is_redecoded_with_a_warning() -> None:
    feed = parse_feed(
        russian_feed("windows-1251").encode("utf-8"),
        url="https://x/",
        headers={"content-type": "application/rss+xml; charset=windows-1251"},
    )
    assert feed.encoding == "utf-8"
    assert feed.entries[0].title == TITLE
    assert feed.warning is not None and "utf-8" in feed.warning


def test_latin1_feed_is_not_mistaken_for_cyrillic() -> None:
    text = (
        '<?xml version="1.0" encoding="iso-8859-1"?><rss version="2.0"><channel><title>Actualités'
        "</title><item><title>Réunion à Genève: café, thé et gâteaux</title>"
        "<description>Les ministres se sont réunis à Genève où ils ont évoqué la sécurité."
        "</description></item></channel></rss>"
    )
    feed = parse_feed(text.encode("latin-1"), url="https://fr.example/", headers=RSS)
    assert feed.entries[0].title == "Réunion à Genève: café, thé et gâteaux"


# --------------------------------------------------------------------------- dialects


def test_rss20_sample() -> None:
    feed = parse_feed(data("rss20.xml"), url="https://feeds.example.com/rss", headers=RSS)
    assert feed.title == "Example Agency — News"
    assert feed.link == "https://www.example.com/"
    assert feed.language == "en-US"
    assert feed.ttl_seconds == 30 * 60
    assert feed.encoding == "utf-8"
    assert feed.warning is None
    first, second = feed.entries
    assert first.guid == "example-1001"
    assert first.link == "https://www.example.com/news/csto-minsk?utm_source=rss&id=7#top"
    assert first.title == "CSTO secretaries meet in Minsk"
    assert "<b>CSTO</b>" in first.summary
    assert "They discussed border security." in first.content  # content:encoded
    assert first.published == datetime(2026, 11, 16, 6, 30, tzinfo=UTC)
    assert first.published_raw is None
    assert first.author == "Ivan Petrov"
    assert first.categories == ("Politics", "Security")
    assert first.language == "en-US"
    [enclosure] = first.enclosures
    assert enclosure.url == "https://www.example.com/media/minsk.jpg"
    assert (enclosure.type, enclosure.length) == ("image/jpeg", 12345)
    # a Russian date feedparser cannot read is kept for normalize
    assert second.published is None
    assert second.published_raw == "12 марта 2025, 14:05"
    assert second.enclosures[0].length is None  # length="not-a-number"


def test_atom_sample_with_xml_base() -> None:
    feed = parse_feed(
        data("atom.xml"),
        url="https://atom.example.org/ru/feed.atom",
        headers={"content-type": "application/atom+xml"},
    )
    assert feed.title == "Агентство"
    assert feed.link == "https://atom.example.org/ru/"
    assert feed.language == "ru-RU"
    first, second = feed.entries
    assert first.guid == "tag:atom.example.org,2025:1"
    assert first.link == "https://atom.example.org/ru/news/item-1.html"
    assert first.base == "https://atom.example.org/ru/news/"
    assert first.published == datetime(2025, 3, 12, 11, 5, tzinfo=UTC)
    assert first.updated == datetime(2025, 3, 12, 12, 0, tzinfo=UTC)
    assert first.summary == "Короткое описание."
    assert first.content == '<p>Полный текст <a href="detail.html">новости</a>.</p>'
    assert first.author == "Редакция"
    assert first.categories == ("Безопасность",)
    assert first.enclosures[0].url == "https://atom.example.org/files/report.pdf"
    assert first.enclosures[0].length == 2048
    assert second.link == "https://atom.example.org/ru/other/item-2.html"
    assert "<em>второй</em>" in second.content  # xhtml content kept as markup


def test_rdf_sample() -> None:
    feed = parse_feed(data("rdf.xml"), url="https://rdf.example.net/rss", headers=RSS)
    assert feed.title == "RDF Agency"
    assert feed.language == "en"
    [entry] = feed.entries
    assert entry.title == "RDF item title"
    assert entry.link == "https://rdf.example.net/a"
    assert entry.updated == datetime(2025, 3, 12, 10, 0, tzinfo=UTC)
    assert entry.categories == ("Economy",)


def test_relative_links_resolve_against_the_site_link_then_the_feed_url() -> None:
    with_site = (
        b'<rss version="2.0"><channel><link>https://www.example.com/</link>'
        b"<item><title>t</title><link>/news/1</link>"
        b'<enclosure url="media/a.mp3" type="audio/mpeg"/></item></channel></rss>'
    )
    without_site = b'<rss version="2.0"><channel><item><title>t</title><link>news/2</link></item></channel></rss>'
    first = parse_feed(with_site, url="https://feeds.example.net/x/rss", headers=RSS)
    second = parse_feed(without_site, url="https://feeds.example.net/x/rss", headers=RSS)
    assert first.entries[0].link == "https://www.example.com/news/1"
    assert first.entries[0].enclosures[0].url == "https://www.example.com/media/a.mp3"
    assert second.entries[0].link == "https://feeds.example.net/x/news/2"


def test_html_named_entities_in_a_feed_are_decoded() -> None:
    body = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><item>'
        b"<title>Minsk&nbsp;&mdash; Moscow &amp; back</title></item></channel></rss>"
    )
    feed = parse_feed(body, url="https://x/", headers=RSS)
    assert feed.entries[0].title == "Minsk\u00a0\u2014 Moscow & back"
    assert feed.warning is None  # read by the strict parser, nothing was lost


# --------------------------------------------------------------------------- not a feed


def test_html_page_advertising_a_feed_names_it() -> None:
    with pytest.raises(ParseError) as caught:
        parse_feed(
            data("page_with_feed.html"),
            url="https://www.example.com/news/index.html",
            headers={"content-type": "text/html; charset=utf-8"},
        )
    error = caught.value
    assert error.kind is ErrorKind.NOT_A_FEED
    assert error.advertised_url == "https://www.example.com/rss/all.xml"
    assert error.message == (
        "not a feed (HTML page); it advertises a feed at https://www.example.com/rss/all.xml"
    )


def test_html_page_feed_link_honours_base_element() -> None:
    page = (
        b'<html><head><base href="https://cdn.example.com/site/">'
        b'<link rel="alternate" type="application/atom+xml" href="atom.xml"></head></html>'
    )
    with pytest.raises(ParseError) as caught:
        parse_feed(page, url="https://www.example.com/", headers={})
    assert caught.value.advertised_url == "https://cdn.example.com/site/atom.xml"


def test_plain_html_page_is_not_a_feed() -> None:
    with pytest.raises(ParseError) as caught:
        parse_feed(data("page_plain.html"), url="https://x.example/", headers={})
    assert caught.value.kind is ErrorKind.NOT_A_FEED
    assert caught.value.advertised_url is None
    assert caught.value.message.startswith("not a feed")


@pytest.mark.parametrize("body", [b"", b"   \n", b'{"version": "json"}', b"hello world"])
def test_empty_or_non_xml_body_is_not_a_feed(body: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse_feed(body, url="https://x.example/", headers={})
    assert caught.value.kind is ErrorKind.NOT_A_FEED
    assert caught.value.message.startswith("not a feed")


# --------------------------------------------------------------------------- malformed


def test_recoverable_malformed_xml_keeps_entries_with_a_warning() -> None:
    feed = parse_feed(data("malformed.xml"), url="https://broken.example.com/rss", headers=RSS)
    assert [e.link for e in feed.entries] == [
        "https://broken.example.com/1",
        "https://broken.example.com/2",
    ]
    assert feed.entries[1].title == "Second item"
    assert feed.warning


def test_broken_feed_without_entries_is_a_parse_error() -> None:
    with pytest.raises(ParseError) as caught:
        parse_feed(
            b'<?xml version="1.0"?><rss version="2.0"><channel><title>x</ti',
            url="https://x/",
            headers=RSS,
        )
    assert caught.value.kind is ErrorKind.PARSE


def test_valid_empty_feed_has_no_entries_and_no_error() -> None:
    feed = parse_feed(
        b'<rss version="2.0"><channel><title>Quiet</title></channel></rss>',
        url="https://x/",
        headers=RSS,
    )
    assert feed.entries == ()
    assert feed.title == "Quiet"


# --------------------------------------------------------------------------- hostile input


def _all_text(feed: object) -> str:
    return repr(feed)


def test_external_entity_never_reaches_an_item() -> None:
    passwd = Path("/etc/passwd").read_text(encoding="utf-8", errors="replace")
    feed = parse_feed(data("xxe.xml"), url="https://xxe.example.com/rss", headers=RSS)
    everything = _all_text(feed)
    assert "root:" not in everything
    assert passwd.splitlines()[0] not in everything
    entry = feed.entries[0]
    assert entry.title.startswith("News ")
    assert entry.title.endswith("from Example")  # a harmless internal entity still works
    assert entry.link == "https://xxe.example.com/1"


def test_external_entities_are_never_fetched(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/evil.dtd").respond_with_data('<!ENTITY leak "LEAKED">')
    httpserver.expect_request("/secret").respond_with_data("LEAKED")
    dtd, secret = httpserver.url_for("/evil.dtd"), httpserver.url_for("/secret")
    bodies = [
        f'<?xml version="1.0"?><!DOCTYPE rss SYSTEM "{dtd}"><rss version="2.0"><channel>'
        "<item><title>a &leak;</title></item></channel></rss>",
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY % p SYSTEM "{dtd}"> %p;]>'
        '<rss version="2.0"><channel><item><title>b &leak;</title></item></channel></rss>',
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY leak SYSTEM "{secret}">]>'
        '<rss version="2.0"><channel><item><title>c &leak;</title></item></channel></rss>',
    ]
    for body in bodies:
        feed = parse_feed(body.encode(), url="https://x/", headers=RSS)
        assert "LEAKED" not in _all_text(feed)
    assert httpserver.log == []


def test_billion_laughs_ends_quickly_with_bounded_memory() -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        feed = parse_feed(data("billion_laughs.xml"), url="https://lol.example.com/", headers=RSS)
    except ParseError:
        feed = None
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 20 * 1024 * 1024
    if feed is not None:
        assert all(len(e.title) < 1000 and "lollol" not in e.summary for e in feed.entries)


def test_one_huge_entity_referenced_many_times_is_not_expanded() -> None:
    body = (
        b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY big "'
        + b"A" * 50_000
        + b'">]><rss version="2.0"><channel><item><title>'
        + b"&big;" * 20_000
        + b"</title></item></channel></rss>"
    )
    started = time.perf_counter()
    feed = parse_feed(body, url="https://x/", headers=RSS)
    assert time.perf_counter() - started < 2.0
    assert "AAAA" not in feed.entries[0].title


def test_control_characters_and_nul_bytes_do_not_break_parsing() -> None:
    body = (
        b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T\x00</title>'
        b"<item><title>Minsk\x00 talks\x07 end\x1b</title><link>https://x/1\x00</link>"
        b"<description>Body\x0b text</description></item></channel></rss>"
    )
    feed = parse_feed(body, url="https://x/", headers=RSS)
    [entry] = feed.entries
    assert entry.title == "Minsk talks end"
    assert entry.link == "https://x/1"
    assert entry.summary == "Body text"
    assert feed.warning is None  # the strict parser read it


# --------------------------------------------------------------------------- fuzzing

SAMPLE = data("rss20.xml")
MUTATIONS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=len(SAMPLE)),
        st.sampled_from(["insert", "delete", "flip", "replace"]),
        st.integers(min_value=0, max_value=255),
    ),
    min_size=1,
    max_size=25,
)
INTERESTING = [
    b"<",
    b">",
    b"&",
    b"]]>",
    b"<![CDATA[",
    b"&#0;",
    b"\x00",
    b"\xff",
    b'"',
    b"<!DOCTYPE x [<!ENTITY a 'b'>]>",
]


def mutate(sample: bytes, operations: list[tuple[int, str, int]]) -> bytes:
    data = bytearray(sample)
    for position, kind, value in operations:
        position = min(position, len(data))
        if kind == "insert":
            data[position:position] = bytes([value])
        elif kind == "delete":
            del data[position : position + 1 + value % 8]
        elif kind == "flip" and position < len(data):
            data[position] ^= 1 << (value % 8)
        elif kind == "replace":
            data[position:position] = INTERESTING[value % len(INTERESTING)]
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MUTATIONS)
def test_mutated_feed_raises_only_parse_errors(operations: list[tuple[int, str, int]]) -> None:
    body = mutate(SAMPLE, operations)
    try:
        feed = parse_feed(body, url="https://feeds.example.com/rss", headers=RSS)
    except ParseError:
        return
    options = NormalizeOptions(source_id="fuzz")
    fetched_at = datetime(2025, 3, 13, tzinfo=UTC)
    for entry in feed.entries:
        item = normalize_entry(
            entry, feed, options, fetched_at=fetched_at, feed_url="https://feeds.example.com/rss"
        )
        if item is not None:
            assert "\x00" not in item.title + item.summary + item.content + item.guid
            assert item.published.tzinfo is not None
