"""Items found without parsing, and a changed feed parsed only where it changed.

The oracle is always the whole body parsed by feedparser: what ``parse_feed(new,
known=old.digests)`` returns must be exactly the entries of ``parse_feed(new)`` whose items
were not in the old body, in order.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.parse import parse_feed
from aggregator.split import cut, split_items
from aggregator.types import ParsedFeed

DATA = Path(__file__).parent / "data" / "parse"
URL = "https://agency.example/feed.xml"
HEADERS = {"content-type": "application/rss+xml"}


def rss(*items: str, channel_attrs: str = "", prolog: str = "utf-8") -> bytes:
    body = "".join(
        f"<item><title>{title}</title><link>https://agency.example/{sum(map(ord, title))}</link>"
        f"<guid>g-{title}</guid><description><![CDATA[<p>{title}, </item> in CDATA</p>]]>"
        f"</description><!-- <item> in a comment --></item>\n"
        for title in items
    )
    return (
        f'<?xml version="1.0" encoding="{prolog}"?>\n<rss version="2.0">'
        f"<channel{channel_attrs}><title>Agency</title><link>https://agency.example/</link>"
        f"<lastBuildDate>Mon, 30 Nov 2026 00:00:00 GMT</lastBuildDate>\n{body}</channel></rss>"
    ).encode(prolog)


def parse(body: bytes, known: bytes = b"", salt: bytes = b"") -> ParsedFeed:
    return parse_feed(body, url=URL, headers=HEADERS, known=known, salt=salt)


def titles(feed: ParsedFeed) -> list[str]:
    return [e.title for e in feed.entries]


# --------------------------------------------------------------------------- split_items


@pytest.mark.parametrize("name", ["rss20.xml", "atom.xml", "rdf.xml", "russian.xml"])
def test_split_finds_every_item_the_parser_finds(name: str) -> None:
    body = (DATA / name).read_bytes()
    items = split_items(body)
    assert items is not None
    whole = parse_feed(body, url=URL, headers={})
    assert len(items.spans) == len(whole.entries) > 0
    for start, end in items.spans:
        element = body[start:end]
        assert re.match(rb"<(\w+:)?(item|entry)[\s>/]", element)
        assert re.search(rb"</(\w+:)?(item|entry)\s*>$", element)
    # cutting every item leaves a feed without entries that still parses
    emptied = parse_feed(cut(body, items.spans), url=URL, headers={})
    assert emptied.entries == () and emptied.title == whole.title


def test_split_is_not_fooled_by_markup_in_cdata_and_comments() -> None:
    body = rss("One", "Two", "Three")
    items = split_items(body)
    assert items is not None and len(items.spans) == 3
    assert all(
        body[s:e].endswith(b"</description><!-- <item> in a comment --></item>")
        for s, e in items.spans
    )


@pytest.mark.parametrize(
    "body",
    [
        b"<rss><channel><title>a < b</title><item><title>x</title></item></channel></rss>",
        b"<rss><channel foo=bar><item><title>x</title></item></channel></rss>",
        b"<rss><channel><item><title>x</title></item></channel><item/></rss>",  # two depths
        b"<rss><channel><title>no items</title></channel></rss>",
        b"<rss><channel><item><title>never closed</title></channel></rss>",
        b"<rss><channel><item><title>x</title></item></rss>",  # channel never closed
        b"<feed><entry><title>x</title></entry></fed>",
    ],
)
def test_split_gives_up_on_what_it_cannot_be_sure_of(body: bytes) -> None:
    assert split_items(body) is None


def test_item_digests_depend_on_the_ancestors_and_the_salt_not_on_siblings() -> None:
    one = rss("A", "B")
    other = rss("B", "C")
    based = rss("A", "B", channel_attrs=' xml:base="https://elsewhere.example/"')

    def digests(body: bytes, salt: bytes = b"") -> tuple[bytes, ...]:
        items = split_items(body)
        assert items is not None
        return items.digests(body, salt)

    assert digests(one)[1] == digests(other)[0]  # "B", wherever it stands
    assert digests(one)[1] != digests(based)[1]  # another base for its relative links
    assert digests(one)[1] != digests(one, b"other options")[1]


# --------------------------------------------------------------------------- parse_feed(known=)


def test_a_changed_feed_parses_only_its_new_and_edited_items() -> None:
    first = parse(rss("One", "Two", "Three"))
    assert first.skipped == 0 and len(first.digests) == 8 + 3 * 8

    changed = rss("Zero", "One", "Two (edited)", "Three")
    again = parse(changed, known=first.digests)
    whole = parse(changed)

    assert titles(again) == ["Zero", "Two (edited)"]
    assert again.skipped == 2
    assert [whole.entries[0], whole.entries[2]] == list(again.entries)
    assert again.digests == whole.digests  # the next body is checked against all four
    assert (again.title, again.link, again.language) == (whole.title, whole.link, whole.language)

    unchanged = parse(changed, known=again.digests)
    assert unchanged.entries == () and unchanged.skipped == 4


def test_a_new_context_makes_every_item_new() -> None:
    first = parse(rss("One", "Two"))
    for body, salt in [
        (rss("One", "Two", channel_attrs=' xml:lang="ru"'), b""),
        (rss("One", "Two", prolog="windows-1251"), b""),
        (rss("One", "Two"), b"a source option changed"),
    ]:
        again = parse(body, known=first.digests, salt=salt)
        assert (titles(again), again.skipped) == (["One", "Two"], 0)


def test_a_feed_link_that_changes_makes_every_item_new() -> None:
    """Relative links resolve against the channel's link: a new one reads every item anew."""
    first = parse(rss("One", "Two"))
    moved = rss("One", "Two").replace(
        b"<link>https://agency.example/</link>", b"<link>https://moved.example/</link>"
    )
    again = parse(moved, known=first.digests)
    assert (titles(again), again.skipped) == (["One", "Two"], 0)


def test_a_malformed_body_is_parsed_whole_and_leaves_no_digests() -> None:
    first = parse(rss("One", "Two"))
    broken = rss("One", "Two", "Three").replace(
        b"<title>Three</title>", b"<title>Three & co</title>"
    )
    again = parse(broken, known=first.digests)
    assert again.warning is not None and again.warning.startswith("recovered from")
    assert titles(again) == ["One", "Two", "Three & co"]
    assert again.skipped == 0 and again.digests == b""
    # and the next body is parsed whole too
    assert parse(rss("One", "Two"), known=again.digests).skipped == 0


def test_digests_of_an_older_format_are_ignored() -> None:
    old_format = b"\x01" * 8 * 3  # 8 bytes per parsed entry, no feed-level prefix
    again = parse(rss("One", "Two"), known=old_format)
    assert (titles(again), again.skipped) == (["One", "Two"], 0)


ITEM_TITLES = st.lists(
    st.text(alphabet="abcdefgh АБВГ&<>\"'", min_size=1, max_size=12), min_size=1, max_size=8
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=ITEM_TITLES, new=ITEM_TITLES)
def test_skipping_known_items_equals_parsing_the_whole_body(old: list[str], new: list[str]) -> None:
    def body(names: list[str]) -> bytes:
        return rss(
            *(n.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") for n in names)
        )

    first = parse(body(old))
    again = parse(body(new), known=first.digests)
    whole = parse(body(new))

    def per_item(digests: bytes) -> list[bytes]:
        return [digests[i : i + 8] for i in range(8, len(digests), 8)]

    known = set(per_item(first.digests))
    fresh = [
        e for e, d in zip(whole.entries, per_item(whole.digests), strict=True) if d not in known
    ]
    # the whole parse's entries, less the items listed before, in order
    assert list(again.entries) == fresh
    assert again.skipped == len(whole.entries) - len(fresh)
    assert again.digests == whole.digests


@pytest.mark.parametrize("name", ["rss20.xml", "atom.xml", "russian.xml"])
def test_a_sample_feed_that_drops_an_item_is_not_parsed_again(name: str) -> None:
    body = (DATA / name).read_bytes()
    first = parse_feed(body, url=URL, headers={})
    items = split_items(body)
    assert items is not None and first.digests and len(items.spans) >= 2
    shorter = cut(body, items.spans[:1])
    again = parse_feed(shorter, url=URL, headers={}, known=first.digests)
    assert again.entries == () and again.skipped == len(first.entries) - 1
    assert again.digests == first.digests[:8] + first.digests[16:]
