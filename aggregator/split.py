"""Find a feed body's items as byte spans, without parsing it (pure, no I/O).

A changed feed usually lists again most of what it listed last time. Hashing each item's
raw bytes lets :func:`aggregator.parse.parse_feed` cut the items it saw before out of the
body, so only new and edited ones go through the full parser. The scan is a tokenizer, not
a parser: it recognises just enough markup (tags, CDATA, comments, processing instructions,
the DOCTYPE) to find the ``<item>``/``<entry>`` elements and the elements around them. When
anything looks unusual it gives up (returns None) and the whole body is parsed as usual.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ItemSpans", "cut", "split_items"]

_MARKUP = re.compile(
    rb"<!\[CDATA\[.*?\]\]>"
    rb"|<!--.*?-->"
    rb"|<\?.*?\?>"
    rb"|<!DOCTYPE(?:[^\[>]|\[.*?\])*>"
    # a tag: end tag, or start tag with quoted attributes, maybe self-closing
    rb"|<(/?)([A-Za-z_][\w.:-]*)(?:\s+[^\s=/>]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*\s*(/?)>",
    re.DOTALL,
)
_ITEM_NAMES = frozenset({b"item", b"entry"})  # RSS/RDF items, Atom entries


@dataclass(frozen=True)
class ItemSpans:
    """Where a body's items are, and what around them shapes how they read."""

    spans: tuple[tuple[int, int], ...]  # [start, end) of each item element, in body order
    context: bytes  # the prolog, the DOCTYPE and the start tags of the items' ancestors

    def digests(self, body: bytes, salt: bytes) -> tuple[bytes, ...]:
        """8 bytes per item: its raw bytes in their context (and ``salt``)."""
        base = hashlib.blake2b(salt, digest_size=8)
        base.update(self.context)
        out = []
        for start, end in self.spans:
            h = base.copy()
            h.update(body[start:end])
            out.append(h.digest())
        return tuple(out)


def _local(name: bytes) -> bytes:
    return name.rpartition(b":")[2]


def split_items(body: bytes) -> ItemSpans | None:
    """The item elements of a well-formed feed body, or None when the scan is unsure.

    Items are the outermost elements named ``item`` or ``entry`` (any prefix); all of them
    must share the same ancestors. Markup outside items that the tokenizer does not know
    (an unquoted attribute, a stray ``<``) makes it give up rather than guess; inside an
    item only its end matters (a malformed item makes the parse of the body, and so the
    use of its digests, fail anyway).
    """
    stack: list[bytes] = []  # start tags of the open elements outside items
    context: list[bytes] = []  # prolog, DOCTYPE
    ancestors: tuple[bytes, ...] | None = None
    spans: list[tuple[int, int]] = []
    pos = 0
    while True:
        match = _MARKUP.search(body, pos)
        if match is None:
            break
        if body.find(b"<", pos, match.start()) != -1:
            return None  # markup the tokenizer did not recognise
        pos = match.end()
        name = match.group(2)
        if name is None:  # CDATA, comment, PI, DOCTYPE
            if not stack and not match.group(0).startswith(b"<!--"):
                context.append(match.group(0))
            continue
        closing, self_closing = match.group(1), match.group(3)
        if closing:
            if not stack or _tag_name(stack[-1]) != name:
                return None
            stack.pop()
        elif _local(name) in _ITEM_NAMES:
            here = tuple(stack)
            if ancestors is None:
                ancestors = here
            elif here != ancestors:
                return None
            if not self_closing:
                end = _item_end(body, name, pos)
                if end == -1:
                    return None
                pos = end
            spans.append((match.start(), pos))
        elif not self_closing:
            stack.append(match.group(0))
    if body.find(b"<", pos) != -1 or stack or ancestors is None:
        return None
    return ItemSpans(tuple(spans), b"\n".join((*context, *ancestors)))


@functools.lru_cache(maxsize=64)
def _inside(name: bytes) -> re.Pattern[bytes]:
    """What matters inside an item: CDATA and comments (skipped whole), and tags of its name."""
    return re.compile(
        rb"<!\[CDATA\[.*?\]\]>|<!--.*?-->|<(/?)" + re.escape(name) + rb"(?=[\s/>])([^>]*)>",
        re.DOTALL,
    )


def _item_end(body: bytes, name: bytes, pos: int) -> int:
    """Where the item whose start tag ends at ``pos`` ends (after its end tag), or -1."""
    pattern = _inside(name)
    depth = 1
    while depth:
        match = pattern.search(body, pos)
        if match is None:
            return -1
        pos = match.end()
        if match.group(1) is None:
            continue  # CDATA or a comment
        if match.group(1):
            depth -= 1
        elif not match.group(2).endswith(b"/"):
            depth += 1
    return pos


def _tag_name(start_tag: bytes) -> bytes:
    end = 1
    while end < len(start_tag) and start_tag[end : end + 1] not in b" \t\r\n/>":
        end += 1
    return start_tag[1:end]


def cut(body: bytes, spans: Iterable[tuple[int, int]]) -> bytes:
    """``body`` without the given spans (ascending, not overlapping)."""
    parts = []
    pos = 0
    for start, end in spans:
        parts.append(body[pos:start])
        pos = end
    parts.append(body[pos:])
    return b"".join(parts)
