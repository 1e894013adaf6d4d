"""aggregator.feedreader: whatever it accepts, parse_feed reads exactly as feedparser does."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aggregator import feedreader, parse
from aggregator.errors import ParseError
from aggregator.parse import parse_feed
from aggregator.types import ParsedFeed
from bench.corpus import Corpus, base_time
from tests import test_parse

DATA = Path(__file__).parent / "data"
URL = "https://feeds.example.com/news/rss"
RSS = {"content-type": "application/rss+xml"}


class Spy:
    """Counts how often the fast reader accepted or declined."""

    def __init__(self) -> None:
        self.accepted = 0
        self.declined = 0

    def __call__(self, body: bytes, headers: Any) -> Any:
        result = _READ(body, headers)
        if result is None:
            self.declined += 1
        else:
            self.accepted += 1
        return result


_READ = feedreader.read


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    counter = Spy()
    monkeypatch.setattr(feedreader, "read", counter)
    yield counter


def both(body: bytes, headers: dict[str, str], url: str = URL) -> tuple[Any, Any]:
    """parse_feed with the fast reader and with feedparser alone (a ParsedFeed or the error)."""
    results = []
    for fast in (True, False):
        parse.FAST_READER = fast
        try:
            results.append(parse_feed(body, url=url, headers=headers))
        except ParseError as e:
            results.append((e.kind, e.message, e.advertised_url))
        finally:
            parse.FAST_READER = True
    return results[0], results[1]


def assert_same(body: bytes, headers: dict[str, str], url: str = URL) -> Any:
    fast, slow = both(body, headers, url)
    if isinstance(fast, ParsedFeed) and isinstance(slow, ParsedFeed):
        for a, b in zip(fast.entries, slow.entries, strict=True):
            assert a == b
    assert fast == slow
    return fast


# --------------------------------------------------------------------------- the corpus


def test_corpus_feeds_read_the_same_and_take_the_fast_path(spy: Spy) -> None:
    feeds = 200
    corpus = Corpus(1, feeds, base_time(datetime.now(UTC)))
    for f in range(feeds):
        spec = corpus.spec(f)
        for round_ in (0, 1):
            body = corpus.render(f, round_)
            url = f"https://{spec.host}{spec.path}"
            assert_same(body, {"content-type": spec.content_type}, url)
    # the first parse of each pair: fast reader; windows-1251 feeds are read twice (re-decoded)
    assert spy.accepted >= 2 * feeds
    assert spy.declined == 0


# --------------------------------------------------------------------------- test data

HEADER_VARIANTS = [
    {},
    {"content-type": "application/rss+xml"},
    {"content-type": "application/xml; charset=utf-8"},
    {"content-type": "text/xml"},
    {"content-type": "text/xml; charset=windows-1251"},
    {"content-type": "application/atom+xml; charset=iso-8859-1"},
    {"content-type": "text/html; charset=utf-8"},
    {"content-type": "application/octet-stream"},
    {"content-type": "application/rss+xml", "content-language": "ru_RU"},
]


def data_bodies() -> list[tuple[str, bytes]]:
    bodies = [
        (str(path.relative_to(DATA)), path.read_bytes())
        for folder in ("parse", "feeds")
        for path in sorted((DATA / folder).iterdir())
    ]
    for name, (body, _) in test_parse.ENCODING_CASES.items():
        bodies.append((name, body))
    bodies += [(f"fuzz-sample-{i}", body) for i, body in enumerate(INLINE_BODIES)]
    return bodies


INLINE_BODIES = [
    b'<rss version="2.0"><channel><link>https://www.example.com/</link>'
    b"<item><title>t</title><link>/news/1</link>"
    b'<enclosure url="media/a.mp3" type="audio/mpeg"/></item></channel></rss>',
    b'<rss version="2.0"><channel><item><title>t</title><link>news/2</link></item></channel></rss>',
    b'<?xml version="1.0"?><rss version="2.0"><channel><item>'
    b"<title>Minsk&#160;&#8212; Moscow &amp; back</title></item></channel></rss>",
    b'<rss version="2.0"><channel><title>Quiet</title></channel></rss>',
    b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T</title>'
    b"<item><title>Minsk talks end</title><link>https://x/1</link>"
    b"<description>Body text</description></item></channel></rss>",
]


@pytest.mark.parametrize("name", [name for name, _ in data_bodies()])
def test_test_data_reads_the_same_with_any_headers(name: str) -> None:
    body = dict(data_bodies())[name]
    for headers in HEADER_VARIANTS:
        assert_same(body, headers)


def test_plain_test_feeds_take_the_fast_path(spy: Spy) -> None:
    for name in ("parse/rss20.xml", "parse/atom.xml", "parse/rdf.xml", "parse/russian.xml"):
        parse_feed((DATA / name).read_bytes(), url=URL, headers=RSS)
    assert spy.declined == 0 and spy.accepted == 4


# --------------------------------------------------------------------------- tricky cases


def rss(items: str, channel: str = "", namespaces: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:media="http://search.yahoo.com/mrss/" '
        f'xmlns:atom="http://www.w3.org/2005/Atom"{namespaces}>\n<channel>\n'
        f"<title>Feed</title><link>https://site.example/</link>{channel}\n{items}\n"
        "</channel></rss>"
    ).encode()


def atom(entries: str, feed: str = "", attrs: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<feed xmlns="http://www.w3.org/2005/Atom"{attrs}>\n'
        f"<title>Atom</title><id>urn:feed</id>{feed}\n{entries}\n</feed>"
    ).encode()


CASES: dict[str, bytes] = {
    "cdata description": rss(
        "<item><title>T</title><description><![CDATA[<p>A &amp; <b>B</b></p>]]></description></item>"
    ),
    "escaped description": rss(
        "<item><title>T</title><description>&lt;p&gt;A &amp;amp; &lt;b&gt;B&lt;/b&gt;&lt;/p&gt;"
        "</description></item>"
    ),
    "markup inside description": rss("<item><description><p>raw</p></description></item>"),
    "entities and char refs": rss(
        "<item><title>A &#x2014; B &#169; &#150; &#x80;</title>"
        "<description>x &lt; y &#38;amp; z</description></item>"
    ),
    "latin-1 read as utf-8": rss("<item><title>Ã©tÃ© \u0096</title></item>"),
    "whitespace": rss(
        "<item>\n  <title>\n   Spaced   title \n</title>\n <link>\n /x \n</link></item>"
    ),
    "empty elements": rss(
        "<item><title/><link/><description></description><guid/><pubDate/><category/>"
        "<dc:creator/><content:encoded/></item>"
    ),
    "guid permalink": rss(
        "<item><guid>https://site.example/a</guid></item>"
        "<item><guid isPermaLink='true'>rel/b</guid></item>"
        "<item><guid isPermaLink='false'>rel/c</guid></item>"
        "<item><guid isPermaLink='True'>rel/d</guid><link>/e</link></item>"
        "<item><link>/f</link><guid>g</guid></item>"
    ),
    "dates": rss(
        "<item><title>a</title><pubDate>Mon, 16 Nov 2026 09:30:00 +0300</pubDate></item>"
        "<item><title>b</title><pubDate>12 марта 2025, 14:05</pubDate></item>"
        "<item><title>c</title><dc:date>2025-03-12T10:00:00+02:00</dc:date></item>"
        "<item><title>d</title><pubDate>not a date</pubDate><dc:date>garbage</dc:date></item>"
        "<item><title>e</title></item>"
    ),
    "authors": rss(
        "<item><author>ivan@example.com (Ivan)</author></item>"
        "<item><dc:creator>Редакция</dc:creator></item>"
    ),
    "author and creator": rss("<item><author>a</author><dc:creator>b</dc:creator></item>"),
    "categories": rss(
        "<item><category>A</category><category domain='x'>B</category><category>A</category>"
        "<dc:subject>C</dc:subject><category domain='y'/><category>D</category></item>"
    ),
    "content encoded": rss(
        "<item><content:encoded><![CDATA[<p>full</p>]]></content:encoded>"
        "<description>short</description></item>"
        "<item><description>first</description><content:encoded>&lt;p&gt;x</content:encoded></item>"
        "<item><content:encoded>only content</content:encoded></item>"
    ),
    "two descriptions": rss(
        "<item><description>a</description><description>b</description></item>"
    ),
    "enclosures and media": rss(
        "<item><enclosure url='/m.mp3' type='audio/mpeg' length='12'/>"
        "<enclosure url='' href='h.mp3'/>"
        "<media:content url='https://cdn.example/v.mp4' type='video/mp4' fileSize='99'/>"
        "<media:content url='/m.mp3'/><media:thumbnail url='/t.jpg'/></item>"
    ),
    "media content with children": rss(
        "<item><media:content url='x.jpg'><media:title>t</media:title></media:content></item>"
    ),
    "atom link in rss": rss(
        "<item><atom:link rel='alternate' href='/alt'/><link>/plain</link></item>"
        "<item><link>/plain</link><atom:link href='/alt'/></item>",
        channel="<atom:link rel='self' href='https://feeds.example.com/news/rss' "
        "type='application/rss+xml'/>",
    ),
    "link with ampersands": rss(
        "<item><link>https://x.example/?a=1&amp;b=2&amp;amp;c=3&amp;d;</link></item>"
    ),
    "xml base in rss": rss(
        "<item xml:base='https://other.example/dir/'><link>a.html</link>"
        "<title>t</title></item><item><link>b.html</link></item>"
    ),
    "xml lang": rss("<item xml:lang='be_BY'><title>t</title></item><item><title>u</title></item>"),
    "channel extras": rss(
        "<item><title>t</title><comments>/c</comments><slash:comments>3</slash:comments></item>",
        channel="<description>d</description><language>ru-RU</language><ttl>20</ttl>"
        "<image><url>/i.png</url><title>Img</title><link>/</link></image>"
        "<lastBuildDate>Mon, 16 Nov 2026 09:30:00 +0300</lastBuildDate>"
        "<generator>g</generator><copyright>c</copyright><category>x</category>"
        "<sy:updatePeriod>hourly</sy:updatePeriod>",
        namespaces=' xmlns:slash="http://purl.org/rss/1.0/modules/slash/"'
        ' xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"',
    ),
    "unknown namespace": rss(
        "<item><title>t</title><yandex:full-text>long</yandex:full-text>"
        "<yandex:genre kind='x'>message</yandex:genre></item>",
        namespaces=' xmlns:yandex="http://news.yandex.ru"',
    ),
    "unknown namespace under a known prefix": rss(
        "<item><title>t</title><itunes:summary>s</itunes:summary></item>",
        namespaces=' xmlns:itunes="http://example.com/not-itunes"',
    ),
    "known namespace under another prefix": rss(
        "<item><d:creator>x</d:creator></item>",
        namespaces=' xmlns:d="http://purl.org/dc/elements/1.1/"',
    ),
    "ttl with attributes": rss("", channel="<ttl unit='min'>5</ttl>"),
    "comment in title": rss("<item><title>a<!-- c -->b</title></item>"),
    "channel title after items": rss("<item><title>t</title></item><title>Later</title>"),
    "item title twice": rss("<item><title></title><title>b</title><title>c</title></item>"),
    "doctype": b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x "y">]>'
    b'<rss version="2.0"><channel><item><title>&x;</title></item></channel></rss>',
    "rss 0.91": b'<rss version="0.91"><channel><title>Old</title><language>en</language>'
    b"<item><title>t</title><link>http://x/1</link><description>d</description></item>"
    b"</channel></rss>",
    "atom text types": atom(
        "<entry><id>tag:x,1</id><title type='html'>A &amp;lt;b&amp;gt;</title>"
        "<summary type='text'>s &lt;i&gt;</summary>"
        "<content type='html'>&lt;p&gt;c&lt;/p&gt;</content></entry>"
        "<entry><id>tag:x,2</id><title type='text'>plain &amp; simple</title>"
        "<content>text &lt;b&gt; content</content></entry>"
        "<entry><id>tag:x,3</id><title type='xhtml'><div xmlns='http://www.w3.org/1999/xhtml'>"
        "X<b>y</b></div></title><summary type='xhtml'><div xmlns='http://www.w3.org/1999/xhtml'>"
        "<p class='a' TYPE='B'>s &amp; t</p></div> </summary>"
        "<content type='xhtml'>\n <div xmlns='http://www.w3.org/1999/xhtml'><p>one</p>"
        "<br/><p>two</p></div>\n</content></entry>"
        "<entry><id>tag:x,4</id><content type='xhtml'><div xmlns='http://www.w3.org/1999/xhtml'>"
        "a</div><div xmlns='http://www.w3.org/1999/xhtml'>b</div></content></entry>"
        "<entry><id>tag:x,5</id><content type='application/octet-stream'>aGVsbG8=</content></entry>"
    ),
    "atom links": atom(
        "<entry><id>tag:x,1</id><link href='/a'/><link rel='enclosure' href='e.mp3' length='5'/>"
        "<link rel='related' href='/r'/><link rel='alternate' type='text/html' href='/b'/></entry>"
        "<entry><id>https://site.example/id-as-link</id><title>no link</title></entry>"
        "<entry><link rel='alternate' type='application/pdf' href='/doc.pdf'/>"
        "<id>tag:x,3</id></entry>",
        feed="<link href='https://site.example/'/><link rel='self' href='/feed.atom'/>",
    ),
    "atom xml base": atom(
        "<entry xml:base='sub/'><id>tag:x,1</id><link href='a.html'/><title>t</title>"
        "<content type='html' xml:base='/other/'>&lt;a href='x'&gt;x&lt;/a&gt;</content></entry>"
        "<entry><id>tag:x,2</id><link href='b.html'/><title>u</title></entry>",
        attrs=" xml:base='https://base.example/root/' xml:lang='ru'",
    ),
    "atom base quirk": atom(
        "<entry xml:base='https://one.example/a/'><id>tag:x,1</id><link href='1'/></entry>"
        "<entry><id>tag:x,2</id><link href='2'/></entry>"
    ),
    "atom authors": atom(
        "<entry><id>tag:x,1</id><author><name>N</name><email>e@x.example</email></author></entry>"
        "<entry><id>tag:x,2</id><author><email>e@x.example</email></author></entry>"
        "<entry><id>tag:x,3</id><author><uri>/u</uri></author></entry>"
        "<entry><id>tag:x,4</id><author>Plain Name</author></entry>"
        "<entry><id>tag:x,5</id><author><name>\u0085A</name></author>"
        "<contributor><name>C</name></contributor></entry>"
    ),
    "atom categories and dates": atom(
        "<entry><id>tag:x,1</id><category term='a' scheme='s'/><category term='a' scheme='s'/>"
        "<category label='L'/><published>2025-03-12T14:05:00+03:00</published>"
        "<updated>2025-03-12</updated></entry>"
        "<entry><id>tag:x,2</id><updated>yesterday</updated></entry>"
    ),
    "atom summary after content": atom(
        "<entry><id>tag:x,1</id><content type='html'>c</content><summary>s</summary></entry>"
        "<entry><id>tag:x,2</id><summary>s</summary><content>c</content></entry>"
    ),
    "atom content src": atom("<entry><id>tag:x,3</id><content src='/x' type='text/html'/></entry>"),
    "atom 0.3": b'<feed version="0.3" xmlns="http://purl.org/atom/ns#"><title>t</title>'
    b"<entry><title>e</title><link rel='alternate' href='http://x/'/></entry></feed>",
    "rdf": b'<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
    b' xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
    b' xml:lang="de"><channel rdf:about="http://x/"><title>R</title><link>http://x/</link>'
    b"<items><rdf:Seq><rdf:li rdf:resource='http://x/1'/></rdf:Seq></items></channel>"
    b"<image rdf:about='http://x/i.png'><title>I</title><url>http://x/i.png</url></image>"
    b"<item rdf:about='http://x/1'><title>one</title><link>http://x/1</link>"
    b"<dc:date>2025-03-12T10:00:00Z</dc:date><dc:subject>S</dc:subject></item>"
    b"<item rdf:about='http://x/2'><title>two</title></item></rdf:RDF>",
    "not well-formed": rss("<item><title>broken</item>"),
    "undeclared prefix": b'<rss version="2.0"><channel><item><x:y>1</x:y></item></channel></rss>',
    "unknown root": b"<opml><body><outline/></body></opml>",
    "html page": b"<html><head><title>x</title></head><body>hello</body></html>",
}

WINDOWS_1251 = test_parse.russian_feed(None).encode("cp1251")
ENCODING_CASES: dict[str, tuple[bytes, dict[str, str]]] = {
    "1251 in prolog only": (test_parse.russian_feed("windows-1251").encode("cp1251"), RSS),
    "1251 in header only": (
        WINDOWS_1251,
        {"content-type": "application/rss+xml; charset=windows-1251"},
    ),
    "1251 header in upper case": (
        WINDOWS_1251,
        {"content-type": "application/rss+xml; charset=WINDOWS-1251"},
    ),
    "1251 mislabelled utf-8": (
        test_parse.russian_feed("utf-8").encode("cp1251"),
        {"content-type": "application/rss+xml; charset=utf-8"},
    ),
    "1251 undeclared": (WINDOWS_1251, RSS),
    "1251 undeclared text/xml": (WINDOWS_1251, {"content-type": "text/xml"}),
    "utf-8 with bom": (b"\xef\xbb\xbf" + test_parse.russian_feed("utf-8").encode(), RSS),
    "utf-8 declared as 1251": (
        test_parse.russian_feed("windows-1251").encode("utf-8"),
        {"content-type": "application/rss+xml; charset=windows-1251"},
    ),
    "koi8-r declared": (
        test_parse.russian_feed("koi8-r").encode("koi8_r"),
        {"content-type": "text/xml"},
    ),
    "utf-16": (test_parse.russian_feed("utf-16").encode("utf-16"), RSS),
    "latin-1 with C1 bytes": (
        '<?xml version="1.0" encoding="iso-8859-1"?><rss version="2.0"><channel><item>'
        "<title>caf\u00e9 \u0093quoted\u0094</title></item></channel></rss>".encode("latin-1"),
        RSS,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tricky_feed_reads_the_same(case: str) -> None:
    for headers in (RSS, {}, {"content-type": "text/xml; charset=utf-8"}):
        assert_same(CASES[case], headers)


@pytest.mark.parametrize("case", list(ENCODING_CASES))
def test_encodings_read_the_same(case: str) -> None:
    body, headers = ENCODING_CASES[case]
    feed = assert_same(body, headers)
    assert isinstance(feed, ParsedFeed) and feed.entries


@pytest.mark.parametrize(
    "case",
    ["doctype", "markup inside description", "two descriptions", "not well-formed", "atom 0.3"],
)
def test_fast_reader_declines_what_it_does_not_repeat(case: str, spy: Spy) -> None:
    with contextlib.suppress(ParseError):
        parse_feed(CASES[case], url=URL, headers=RSS)
    assert spy.accepted == 0


@pytest.mark.parametrize(
    "case",
    [
        "cdata description",
        "escaped description",
        "guid permalink",
        "dates",
        "authors",
        "categories",
        "content encoded",
        "enclosures and media",
        "xml base in rss",
        "channel extras",
        "atom links",
        "atom xml base",
        "atom authors",
        "atom summary after content",
        "rdf",
    ],
)
def test_fast_reader_accepts_common_constructs(case: str) -> None:
    assert feedreader.read(CASES[case], RSS) is not None


def test_declined_constructs_inside_an_accepted_dialect() -> None:
    # base64 content (an unknown type) sends the whole document to feedparser
    assert feedreader.read(CASES["atom text types"], RSS) is None
    assert feedreader.read(CASES["unknown namespace under a known prefix"], RSS) is None
