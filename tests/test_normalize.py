"""normalize: URLs, text, boilerplate, dates, language, and the Item built from an entry."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from aggregator.normalize import (
    BOILERPLATE_PHRASES,
    absolute_url,
    canonical_url,
    clean_link,
    clean_text,
    detect_language,
    fold_for_matching,
    normalize_entry,
    parse_date,
    safe_link,
    sanitize_html,
    strip_boilerplate_html,
    strip_boilerplate_text,
)
from aggregator.types import Enclosure, Item, NormalizeOptions, ParsedEntry, ParsedFeed

FETCHED = datetime(2025, 3, 13, 12, 0, tzinfo=UTC)
FEED_URL = "https://www.example.com/rss"
FEED = ParsedFeed(title="Example", link="https://www.example.com/", language=None, entries=())
OPTIONS = NormalizeOptions(source_id="example")
STORY = "The ministers met in Minsk on Tuesday to discuss border security."


def entry(**fields: object) -> ParsedEntry:
    values: dict[str, object] = {
        "guid": "id-1",
        "link": "https://www.example.com/news/1",
        "title": "Ministers meet in Minsk",
        "summary": STORY,
        "content": "",
    }
    values.update(fields)
    return ParsedEntry(**values)  # type: ignore[arg-type]


def normalize(
    e: ParsedEntry, *, feed: ParsedFeed = FEED, options: NormalizeOptions = OPTIONS
) -> Item | None:
    return normalize_entry(e, feed, options, fetched_at=FETCHED, feed_url=FEED_URL)


def item(e: ParsedEntry, *, feed: ParsedFeed = FEED, options: NormalizeOptions = OPTIONS) -> Item:
    result = normalize(e, feed=feed, options=options)
    assert result is not None
    return result


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("HTTP://Example.COM/News", "http://example.com/News"),
        ("https://example.com", "https://example.com/"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("https://example.com/a#comments", "https://example.com/a"),
        ("https://example.com/a?utm_source=rss&utm_medium=feed", "https://example.com/a"),
        ("https://example.com/a?UTM_Campaign=x&id=5", "https://example.com/a?id=5"),
        (
            "https://example.com/a?fbclid=1&gclid=2&yclid=3&_openstat=4&mc_cid=5&mc_eid=6&p=1",
            "https://example.com/a?p=1",
        ),
        ("https://example.com/a?b=2&a=1&c=3", "https://example.com/a?a=1&b=2&c=3"),
        ("https://example.com/a?from=rss", "https://example.com/a?from=rss"),
        ("https://example.com/%7euser/%d0%bd", "https://example.com/~user/%D0%BD"),
        (
            "https://example.com/новости",
            "https://example.com/%D0%BD%D0%BE%D0%B2%D0%BE%D1%81%D1%82%D0%B8",
        ),
        ("https://Пример.РФ/a", "https://xn--e1afmkfd.xn--p1ai/a"),
        ("https://xn--e1afmkfd.xn--p1ai/a", "https://xn--e1afmkfd.xn--p1ai/a"),
        ("  https://example.com/a  ", "https://example.com/a"),
        ("http://[::1]:80/x", "http://[::1]/x"),
        ("not a url", "not a url"),
        ("http://[broken/x", "http://[broken/x"),
    ],
)
def test_canonical_url(url: str, canonical: str) -> None:
    assert canonical_url(url) == canonical


def test_canonical_url_drops_configured_tracking_params() -> None:
    url = "https://example.com/a?ref=tg&id=1&Source=mail"
    assert canonical_url(url, extra_tracking=["ref", "source"]) == "https://example.com/a?id=1"


def test_same_page_from_two_agencies_has_one_canonical_url() -> None:
    first = "https://WWW.Example.com:443/news/1?utm_source=belta&b=2&a=1#top"
    second = "https://www.example.com/news/1?a=1&b=2&fbclid=XYZ"
    assert canonical_url(first) == canonical_url(second)


@pytest.mark.parametrize(
    ("url", "cleaned"),
    [
        ("https://Ex.com/a?utm_source=x&b=2&a=1#frag", "https://Ex.com/a?b=2&a=1"),
        ("https://ex.com/a?fbclid=1", "https://ex.com/a"),
        ("https://ex.com/новости?x=1", "https://ex.com/новости?x=1"),
    ],
)
def test_clean_link_keeps_the_link_as_written(url: str, cleaned: str) -> None:
    assert clean_link(url) == cleaned


@pytest.mark.parametrize(
    ("href", "base", "absolute"),
    [
        ("/news/1", "https://ex.com/rss", "https://ex.com/news/1"),
        ("item.html", "https://ex.com/ru/news/", "https://ex.com/ru/news/item.html"),
        ("//cdn.ex.com/a.jpg", "https://ex.com/", "https://cdn.ex.com/a.jpg"),
        ("https://other.org/x", "https://ex.com/", "https://other.org/x"),
        (" \n/news/2\t", "https://ex.com/", "https://ex.com/news/2"),
        ("/x", None, "/x"),
    ],
)
def test_absolute_url(href: str, base: str | None, absolute: str) -> None:
    assert absolute_url(href, base) == absolute


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "java\tscript:alert(1)",
        "java\nscript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
        "ftp://example.com/a",
        "//example.com/a",
        "/relative",
        "",
    ],
)
def test_safe_link_rejects_everything_but_http(url: str) -> None:
    assert safe_link(url) is None


def test_safe_link_keeps_http_links() -> None:
    assert safe_link("https://example.com/a?b=1") == "https://example.com/a?b=1"
    assert safe_link("HTTP://example.com/") == "HTTP://example.com/"


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("<p>Hello <b>world</b></p>", "Hello world"),
        ("<p>One</p><p>Two</p>", "One\nTwo"),
        ("Line<br>break<br/>here", "Line\nbreak\nhere"),
        ("Tom &amp; Jerry &mdash; &#171;friends&#187;", "Tom & Jerry — «friends»"),
        ("He said &amp;quot;no&amp;quot;", 'He said "no"'),
        (
            "&lt;p&gt;Escaped &lt;b&gt;twice&lt;/b&gt;&lt;/p&gt;&lt;p&gt;Next&lt;/p&gt;",
            "Escaped twice\nNext",
        ),
        ("zero\u200bwidth\u200c\u200d\u2060\ufeff joined", "zerowidth joined"),
        ("soft\u00adhyphen", "softhyphen"),
        ("Cafe\u0301", "Café"),
        ("nul\x00 and\x07 bell\x1b", "nul and bell"),
        ("  lots   of\t\tspace\u00a0here  ", "lots of space here"),
        ("<script>alert(1)</script><style>p{}</style>Visible", "Visible"),
        ("<!-- comment -->Text", "Text"),
        ("a < b and c > d", "a < b and c > d"),
        ("Plain\n\n\ntext\r\nlines", "Plain\ntext\nlines"),
        ("<ul><li>one</li><li>two</li></ul>", "one\ntwo"),
        ("", ""),
    ],
)
def test_clean_text(raw: str, text: str) -> None:
    assert clean_text(raw) == text


def test_clean_text_of_very_deep_markup_is_fast_and_complete() -> None:
    deep = "<div>" * 50_000 + "deep text" + "</div>" * 50_000
    assert clean_text(deep) == "deep text"


LINE_BREAKS = "\n\r\u2028\u2029"
CONTROL_SPACES = "\x0b\x0c\x1c\x1d\x1e\x1f\x85"  # dropped like other control characters


@pytest.mark.parametrize("space", [chr(c) for c in range(0x3001) if chr(c).isspace()])
def test_clean_text_treats_every_kind_of_space_alike(space: str) -> None:
    """A run of spaces becomes one, line breaks end lines, control characters go."""
    if space in LINE_BREAKS:
        expected = "a\nb"
    elif space in CONTROL_SPACES:
        expected = "ab"
    else:
        expected = "a b"
    assert clean_text(f"a{space}{space}b") == expected
    assert clean_text(f"<p>{space}a{space}{space}b{space}</p>") == expected


def test_fold_for_matching() -> None:
    assert fold_for_matching("Ёлка СЧЁТ Straße") == "елка счет strasse"
    assert fold_for_matching("ОДКБ") == fold_for_matching("одкб")


# --------------------------------------------------------------------------- boilerplate


def _visible(text: str) -> str:
    return fold_for_matching(clean_text(text))


@pytest.mark.parametrize("phrase", BOILERPLATE_PHRASES)
def test_boilerplate_phrase_disappears_from_summary_and_content(phrase: str) -> None:
    key = fold_for_matching(phrase).rstrip(".")
    variants = [
        # as its own paragraph
        (f"<p>{STORY}</p><p>{phrase}</p>", f"<p>{STORY}</p><p>{phrase}</p>"),
        # as a trailing line, decorated with arrows and spaces
        (f"{STORY}\n  ← {phrase} → ", f"<p>{STORY}</p><p>  ← <a href='/all'>{phrase}</a> →</p>"),
        # as a link after a line break at the very end
        (f"{STORY}<br><br>{phrase}", f"<p>{STORY}<br><a href='/back'>{phrase}</a></p>"),
    ]
    for summary, content in variants:
        result = item(entry(summary=summary, content=content))
        assert key not in fold_for_matching(result.summary), (summary, result.summary)
        assert key not in _visible(result.content), (content, result.content)
        assert result.summary.startswith("The ministers met in Minsk")
        assert "border security" in _visible(result.content)


@pytest.mark.parametrize(
    "sentence",
    [
        "We will go back to the talks next week.",
        "Read more about the summit in our report.",
        "Мы вернёмся назад к переговорам позже.",
        "Подробнее о встрече рассказал министр.",
        "All news agencies covered the summit.",
        "Back in 2020 the parties agreed.",
    ],
)
def test_sentences_merely_containing_the_words_stay(sentence: str) -> None:
    result = item(entry(summary=sentence, content=f"<p>{sentence}</p>"))
    assert result.summary == sentence
    assert clean_text(result.content) == sentence


def test_boilerplate_in_a_list_item_and_a_div_goes() -> None:
    html = (
        "<div><p>Story text.</p></div><ul><li>First point</li><li>Читать далее →</li></ul>"
        "<div><strong><a href='/back'>Back to the all news</a></strong></div>"
    )
    cleaned = strip_boilerplate_html(html)
    assert clean_text(cleaned) == "Story text.\nFirst point"


def test_trailing_read_more_after_a_sentence_goes() -> None:
    assert strip_boilerplate_text("The talks ended. Read more »") == "The talks ended."
    assert (
        strip_boilerplate_text("Переговоры завершены. Читать далее...") == "Переговоры завершены."
    )
    html = "<p>The talks ended. <a href='/more'>Read more</a></p>"
    assert clean_text(strip_boilerplate_html(html)) == "The talks ended."


def test_strip_patterns_from_the_source_options() -> None:
    options = replace(OPTIONS, strip=(r"^Source: BELTA$", r"^Photo: .*$"))
    summary = f"{STORY}\nsource: belta\nPhoto: Sputnik"
    content = f"<p>{STORY}</p><p>Source: BELTA</p><p><em>Photo: Sputnik</em></p>"
    result = item(entry(summary=summary, content=content), options=options)
    assert result.summary == STORY
    assert clean_text(result.content) == STORY


def test_invalid_strip_pattern_is_ignored() -> None:
    assert strip_boilerplate_text(f"{STORY}\nGo back", ["(unclosed"]) == STORY


def test_strip_boilerplate_html_leaves_clean_html_alone() -> None:
    html = "<p>Story <b>text</b>.</p>"
    assert strip_boilerplate_html(html) == html


# --------------------------------------------------------------------------- dates

MSK = timezone(timedelta(hours=3))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12 марта 2025, 14:05", datetime(2025, 3, 12, 14, 5, tzinfo=UTC)),
        ("12 мар 2025", datetime(2025, 3, 12, tzinfo=UTC)),
        ("1 мая 2025 г. 09:30 МСК", datetime(2025, 5, 1, 9, 30, tzinfo=MSK)),
        ("3 января 2025 года в 08:00", datetime(2025, 1, 3, 8, 0, tzinfo=UTC)),
        ("Среда, 24 декабря 2025 23:59", datetime(2025, 12, 24, 23, 59, tzinfo=UTC)),
        ("5 Июнь 2025", datetime(2025, 6, 5, tzinfo=UTC)),
        ("7 сент. 2025 10:00 +0300", datetime(2025, 9, 7, 10, 0, tzinfo=MSK)),
        ("12.03.2025 14:05", datetime(2025, 3, 12, 14, 5, tzinfo=UTC)),
        ("March 12, 2025 2:05 PM", datetime(2025, 3, 12, 14, 5, tzinfo=UTC)),
        ("12 March 2025", datetime(2025, 3, 12, tzinfo=UTC)),
        ("Wed, 12 Mar 2025 14:05:00 +0300", datetime(2025, 3, 12, 14, 5, tzinfo=MSK)),
        ("Ср, 12 мар 2025 14:05:00 +0300", datetime(2025, 3, 12, 14, 5, tzinfo=MSK)),
        ("2025-03-12T14:05:00+03:00", datetime(2025, 3, 12, 14, 5, tzinfo=MSK)),
        ("2025-03-12 14:05 MSK", datetime(2025, 3, 12, 14, 5, tzinfo=MSK)),
    ],
)
def test_parse_date(text: str, expected: datetime) -> None:
    parsed = parse_date(text)
    assert parsed == expected
    assert parsed is not None and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    ["", "сегодня", "yesterday", "31 февраля 2025", "no date here", "0001-01-01T00:00:00+03:00"],
)
def test_parse_date_gives_up_on_non_dates(text: str) -> None:
    assert parse_date(text) is None


def test_published_falls_back_from_published_to_updated_to_raw_to_fetch_time() -> None:
    published = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)
    updated = datetime(2025, 3, 11, 8, 0, tzinfo=UTC)
    assert item(entry(published=published, updated=updated)).published == published
    assert item(entry(updated=updated)).published == updated
    raw = item(entry(published_raw="12 марта 2025, 14:05"))
    assert raw.published == datetime(2025, 3, 12, 14, 5, tzinfo=UTC)
    assert item(entry()).published == FETCHED  # first seen
    both = item(entry(published=published, updated=updated))
    assert both.updated == updated


def test_dates_far_in_the_future_are_clamped_to_fetch_time() -> None:
    future = FETCHED + timedelta(days=3)
    near = FETCHED + timedelta(hours=2)
    assert item(entry(published=future)).published == FETCHED
    assert item(entry(published=near)).published == near  # clock skew is tolerated
    assert item(entry(published_raw="1 января 2099")).published == FETCHED


def test_dates_are_utc() -> None:
    local = datetime(2025, 3, 12, 14, 5, tzinfo=MSK)
    result = item(entry(published=local))
    assert result.published == datetime(2025, 3, 12, 11, 5, tzinfo=UTC)
    assert result.published.utcoffset() == timedelta(0)


# --------------------------------------------------------------------------- language


@pytest.mark.parametrize(
    ("text", "candidates", "language"),
    [
        ("Совет безопасности ОДКБ обсудил ситуацию", ("en", "ru"), "ru"),
        ("CSTO Security Council discussed the border", ("en", "ru"), "en"),
        ("ОДКБ: CSTO summit in Minsk", ("en", "ru"), "en"),
        ("12345 !!!", ("en", "ru"), None),
        ("Совет безопасности", ("en",), None),
        ("Security council", ("en", "de"), None),
        ("Қазақстан үкіметі отырыс өткізді", ("ru", "kk"), "kk"),
        ("Україна і Білорусь підписали угоду", ("ru", "uk"), "uk"),
        ("Правительство провело заседание", ("ru", "uk", "kk"), "ru"),
    ],
)
def test_detect_language(text: str, candidates: tuple[str, ...], language: str | None) -> None:
    assert detect_language(text, candidates) == language


def test_language_precedence_entry_feed_source_detected() -> None:
    ru_feed = replace(FEED, language="ru-RU")
    source_kk = replace(OPTIONS, source_language="kk")
    assert item(entry(language="en-GB"), feed=ru_feed).language == "en"
    assert item(entry(), feed=ru_feed, options=source_kk).language == "ru"
    assert item(entry(), options=source_kk).language == "kk"
    assert item(entry()).language == "en"  # detected from the English text
    russian = entry(title="Совет безопасности ОДКБ", summary="Заседание прошло в Минске.")
    assert item(russian).language == "ru"


# --------------------------------------------------------------------------- the item


def test_item_from_a_typical_entry() -> None:
    result = item(
        entry(
            link="/news/1?utm_source=rss&id=7#top",
            title="  CSTO &amp; CIS <b>meet</b>\n in Minsk ",
            summary="<p>The secretaries met.</p><p>Go back</p>",
            content='<p>The secretaries met. <img src="/i.jpg" onerror="x()"></p>'
            '<script>alert(1)</script><p><a href="/back">Go back</a></p>',
            author=" Ivan\u200b Petrov ",
            categories=("Politics", " politics ", "Security", ""),
            enclosures=(
                Enclosure(url="/media/a.jpg", type="image/jpeg", length=10),
                Enclosure(url="javascript:alert(1)", type="text/html"),
            ),
        )
    )
    assert result.source_id == "example"
    assert result.link == "https://www.example.com/news/1?id=7"
    assert result.url == "https://www.example.com/news/1?id=7"
    assert result.title == "CSTO & CIS meet in Minsk"
    assert result.summary == "The secretaries met."
    assert result.content == '<p>The secretaries met. <img src="https://www.example.com/i.jpg"></p>'
    assert result.author == "Ivan Petrov"
    assert result.categories == ("Politics", "Security")
    assert result.enclosures == (
        Enclosure(url="https://www.example.com/media/a.jpg", type="image/jpeg", length=10),
    )
    assert len(result.content_hash) == 32


def test_relative_urls_in_content_resolve_against_xml_base() -> None:
    result = item(
        entry(
            base="https://atom.example.org/ru/news/",
            content='<p><a href="detail.html">more detail</a> <img src="/pic.png"></p>',
        )
    )
    assert 'href="https://atom.example.org/ru/news/detail.html"' in result.content
    assert 'src="https://atom.example.org/pic.png"' in result.content


def test_summary_is_truncated_at_a_word_boundary() -> None:
    long_text = " ".join(["word"] * 600)
    result = item(entry(summary=long_text))
    assert len(result.summary) <= 1000
    assert result.summary.endswith("word…")


def test_title_falls_back_to_the_summary() -> None:
    result = item(entry(title="", summary="A " + "long " * 40 + "summary"))
    assert result.title.startswith("A long long")
    assert result.title.endswith("…")
    assert len(result.title) <= 80


def test_html_summary_becomes_content_when_there_is_no_content() -> None:
    result = item(entry(summary="<p>Para <a href='/x'>link</a></p>", content=""))
    assert result.content.startswith('<p>Para <a href="https://www.example.com/x"')
    plain = item(entry(summary="Just text.", content=""))
    assert plain.content == ""


def test_entry_with_nothing_to_show_is_dropped() -> None:
    assert normalize(entry(guid="x", link=None, title="", summary="", content="")) is None
    assert normalize(entry(link=None, title=" <br> ", summary="&nbsp;", content="<p></p>")) is None


def test_unsafe_entry_link_is_dropped() -> None:
    result = item(entry(link="javascript:alert(document.cookie)"))
    assert result.link == ""
    assert result.url == ""


def test_guid_falls_back_to_link_then_content_hash() -> None:
    assert item(entry(guid="  belta-1  ")).guid == "belta-1"
    by_link = item(entry(guid=None, link="https://www.example.com/a?utm_source=x#c"))
    assert by_link.guid == "https://www.example.com/a"
    by_hash = item(entry(guid=None, link=None))
    assert by_hash.guid == f"hash:{by_hash.content_hash}"


def test_content_hash_ignores_case_spacing_and_yo() -> None:
    first = item(entry(title="Всё  о ОДКБ", summary="<p>Текст  новости.</p>"))
    second = item(entry(title="все о одкб", summary="Текст новости."))
    third = item(entry(title="все о одкб", summary="Другой текст."))
    assert first.content_hash == second.content_hash
    assert first.content_hash != third.content_hash


def test_control_characters_are_stripped_everywhere() -> None:
    result = item(
        entry(
            guid="id\x00-1",
            link="https://www.example.com/a\x00b",
            title="Ti\x00tle\x1b",
            summary="Sum\x00mary\x08",
            content="<p>Con\x00tent\x0c</p>",
            author="Au\x00thor",
            categories=("Cat\x00",),
        )
    )
    fields = [result.guid, result.link, result.url, result.title, result.summary, result.content]
    fields += [result.author or "", *result.categories]
    for value in fields:
        assert not any(ord(ch) < 32 and ch not in "\t\n\r" for ch in value), value
    assert result.title == "Title"


def test_deeply_nested_content_is_flattened_quickly() -> None:
    deep = "<div>" * 20_000 + "<p>Story</p><script>x</script>" + "</div>" * 20_000
    result = item(entry(content=deep))
    assert result.content == "<p>Story</p>"


@pytest.mark.parametrize("fragment", ["<html></html><p>Read more</p>", "<html></html>Go back"])
def test_a_fragment_lxml_cannot_take_apart_is_left_to_the_sanitizer(fragment: str) -> None:
    # lxml.html asserts on an empty <html> followed by text; the entry must still be stored
    kept = strip_boilerplate_html(fragment)
    assert kept == fragment
    assert "<html" not in sanitize_html(kept, "https://www.belta.by/")
