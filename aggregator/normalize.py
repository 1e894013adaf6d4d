"""Parsed entries -> clean :class:`Item` records (pure: no I/O, no clock).

Every building block is a small pure function, exported and tested on its own:

* URLs: :func:`absolute_url`, :func:`safe_link`, :func:`clean_link` (for display) and
  :func:`canonical_url` (the cross-source dedup key);
* text: :func:`clean_text` (HTML/entities -> plain text), :func:`fold_for_matching`;
* boilerplate: :data:`BOILERPLATE_PHRASES`, :func:`strip_boilerplate_text`,
  :func:`strip_boilerplate_html`;
* HTML: :func:`sanitize_html` (nh3 allow-list, absolute URLs, bounded nesting);
* dates and language: :func:`parse_date`, :func:`detect_language`.

:func:`normalize_entry` composes them.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import cast
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import lxml.html
import nh3
from lxml import etree

from aggregator.types import Enclosure, Item, NormalizeOptions, ParsedEntry, ParsedFeed

logger = logging.getLogger(__name__)

__all__ = [
    "BOILERPLATE_PHRASES",
    "TRACKING_PARAMS",
    "absolute_url",
    "canonical_url",
    "clean_link",
    "clean_text",
    "detect_language",
    "fold_for_matching",
    "normalize_entry",
    "parse_date",
    "safe_link",
    "sanitize_html",
    "strip_boilerplate_html",
    "strip_boilerplate_text",
]

SUMMARY_LIMIT = 1000  # characters of Item.summary
TITLE_FALLBACK_LIMIT = 80  # characters of a title made from the summary
MAX_FUTURE = timedelta(hours=24)  # dates further ahead than this are clock errors
MAX_NESTING = 64  # deeper HTML is flattened to paragraphs (nh3 is quadratic in depth)

# --------------------------------------------------------------------------- characters

# C0/C1 controls (not \t \n \r), lone surrogates and non-characters: PostgreSQL and XML
# writers reject them.
_CONTROL_CHARS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff"
# Invisible characters that only break matching: zero-width space/joiners, word joiner,
# BOM, soft hyphen.
_INVISIBLE_CHARS = "\u200b-\u200d\u2060\ufeff\u00ad"
_CONTROL = re.compile(f"[{_CONTROL_CHARS}]")
_CONTROL_OR_INVISIBLE = re.compile(f"[{_CONTROL_CHARS}{_INVISIBLE_CHARS}]")
# None of either kind is printable, and str.isprintable is much faster than a search: the
# code below tests it first.


def _strip_controls(text: str) -> str:
    return text if text.isprintable() else _CONTROL.sub("", text)


def fold_for_matching(text: str) -> str:
    """Case- and ё-insensitive form of ``text``, for matching and hashing (never shown)."""
    return unicodedata.normalize("NFC", text).casefold().replace("ё", "е")


# --------------------------------------------------------------------------- URLs

TRACKING_PARAMS: tuple[str, ...] = (
    "fbclid",
    "gclid",
    "yclid",
    "_openstat",
    "mc_cid",
    "mc_eid",
)
_TRACKING_PREFIXES = ("utm_",)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_URL_SAFE = "/%:@!$&'()*+,;=-._~"
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_TAB_NEWLINE = re.compile(r"[\t\n\r]+")


def _url_text(url: str) -> str:
    """A URL as browsers read it: no controls, tabs or newlines, no surrounding spaces."""
    return _TAB_NEWLINE.sub("", _strip_controls(url)).strip()


def _is_http(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def absolute_url(href: str, base: str | None) -> str:
    """``href`` resolved against ``base`` (returned unchanged when it cannot be)."""
    href = _url_text(href) if href else ""
    if not base:
        return href
    try:
        return urljoin(base.strip(), href)
    except ValueError:  # malformed IPv6 hosts and similar
        return href


def safe_link(url: str) -> str | None:
    """``url`` if it is an absolute http(s) link, else None (``javascript:``, ``data:`` …)."""
    if not url:
        return None
    cleaned = _url_text(url)
    try:
        parts = urlsplit(cleaned)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return cleaned


def _is_tracking(key: str, extra: frozenset[str]) -> bool:
    name = unquote(key.replace("+", " ")).strip().lower()
    return name.startswith(_TRACKING_PREFIXES) or name in TRACKING_PARAMS or name in extra


def _kept_query(query: str, extra: Iterable[str]) -> list[str]:
    extra_names = frozenset(name.lower() for name in extra)
    return [
        part
        for part in query.split("&")
        if part and not _is_tracking(part.split("=", 1)[0], extra_names)
    ]


def clean_link(url: str, *, extra_tracking: Iterable[str] = ()) -> str:
    """The link as written, minus tracking parameters and the fragment (for display)."""
    url = _url_text(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    query = "&".join(_kept_query(parts.query, extra_tracking))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _normalize_percent(text: str) -> str:
    """Decode escaped unreserved characters, upper-case the rest, escape raw non-ASCII."""

    def fix(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return quote(_PERCENT.sub(fix, text), safe=_URL_SAFE)


def _canonical_host(host: str) -> str:
    host = host.rstrip(".").lower()
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:  # labels IDNA 2003 refuses: keep them readable and consistent
        return host


# An absolute http(s) URL with a lower-case host, a path of unreserved characters, maybe a
# query of plain parameters, and nothing else: most agencies' links. Such a URL is already
# absolute, safe and canonical but for the query, and urllib takes long to see that.
_PLAIN_URL = re.compile(
    r"(https?://[a-z0-9-]+(?:\.[a-z0-9-]+)*/[A-Za-z0-9._~/-]*)(?:\?([A-Za-z0-9._~=&+-]+))?"
)


def _absolute_link(href: str, base: str | None) -> str | None:
    """``safe_link(absolute_url(href, base))``, quickly for a plain URL."""
    if _PLAIN_URL.fullmatch(href):
        return href
    return safe_link(absolute_url(href, base))


def canonical_url(url: str, *, extra_tracking: Iterable[str] = ()) -> str:
    """The form of ``url`` used to recognise the same page across sources.

    Scheme and host lower-cased (IDN hosts as punycode), default port, fragment and tracking
    parameters dropped, remaining query parameters sorted, percent-escapes normalized,
    empty path -> "/". Anything that is not an absolute URL comes back stripped.
    """
    url = _url_text(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    scheme = parts.scheme.lower()
    host = _canonical_host(parts.hostname or "")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc = f"{host}:{port}"
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "")
        netloc = f"{userinfo}@{netloc}"
    path = _normalize_percent(parts.path) or "/"
    query = "&".join(
        sorted(_normalize_percent(p) for p in _kept_query(parts.query, extra_tracking))
    )
    return urlunsplit((scheme, netloc, path, query, ""))


# --------------------------------------------------------------------------- text

# Elements whose boundaries are line breaks in text.
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "caption", "dd", "div", "dl",
        "dt", "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6",
        "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody",
        "td", "tfoot", "th", "thead", "tr", "ul",
    }
)  # fmt: skip
# Elements whose content is never text for a reader.
_DROP_CONTENT_TAGS = frozenset(
    {
        "applet", "embed", "frame", "frameset", "head", "iframe", "math", "noembed",
        "noframes", "noscript", "object", "script", "select", "style", "svg", "template",
        "textarea", "title",
    }
)  # fmt: skip
_VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
     "source", "track", "wbr"}
)  # fmt: skip
# Closed implicitly by their next sibling: they do not deepen the tree.
_SELF_CLOSING_SIBLINGS = frozenset({"p", "li", "dt", "dd", "tr", "td", "th", "option"})

# A tag opening as an HTML tokenizer sees one (it need not be closed to swallow text).
_LOOKS_LIKE_MARKUP = re.compile(r"<(?:[a-zA-Z][a-zA-Z0-9-]*[\s/>]|/[a-zA-Z]|!--|!\[CDATA\[)")
_LOOKS_LIKE_ENTITY = re.compile(
    r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]{1,31});"
)
_BLOCK_MARK = re.compile(
    r"</?(?:" + "|".join(sorted(_BLOCK_TAGS, key=len, reverse=True)) + r")\s*/?>"
)
_TAG_TOKEN = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)\b[^<>]*?(/?)>")
_ANY_TAG = re.compile(r"<[^>]*>")
# Whitespace but "\n" (as str.isspace and \s see it) spelled out: ranges test much faster.
_OTHER_SPACE = "\t\x0b\x0c\r\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# A run of whitespace within a line that is not a single plain space already.
_SPACES = re.compile(f"(?:[{_OTHER_SPACE}]| [ {_OTHER_SPACE}])[ {_OTHER_SPACE}]*")
_LINE_SEPARATORS = re.compile("[\r\u2028\u2029\x85]")


def _too_deep(markup: str, limit: int = MAX_NESTING) -> bool:
    """Whether the markup nests deeper than ``limit`` (a linear scan, unclosed tags count)."""
    if markup.count("<") <= limit:  # every level needs a tag of its own
        return False
    depth = 0
    for match in _TAG_TOKEN.finditer(markup):
        name = match.group(2).lower()
        if name in _VOID_TAGS or name in _SELF_CLOSING_SIBLINGS or match.group(3):
            continue
        if match.group(1):
            depth = max(0, depth - 1)
        else:
            depth += 1
            if depth > limit:
                return True
    return False


def _flatten(markup: str) -> str:
    """Text of markup by a linear tag scan (for documents too deep for an HTML parser)."""
    out: list[str] = []
    position = 0
    skipping: str | None = None  # inside <script>, <style> …: their text is not text
    for match in _ANY_TAG.finditer(markup):
        if skipping is None:
            out.append(markup[position : match.start()])
        position = match.end()
        tag = _TAG_TOKEN.match(match.group(0))
        if tag is None:
            continue
        name, closing = tag.group(2).lower(), bool(tag.group(1))
        if skipping is not None:
            if closing and name == skipping:
                skipping = None
            continue
        if not closing and name in _DROP_CONTENT_TAGS and name not in _VOID_TAGS:
            skipping = name
        elif name in _BLOCK_TAGS:
            out.append("\n")
    if skipping is None:
        out.append(markup[position:])
    return html.unescape("".join(out))


# Built once: setting up a sanitizer costs more than most fragments take to clean.
_TEXT_CLEANER = nh3.Cleaner(
    tags=set(_BLOCK_TAGS),
    attributes={},
    clean_content_tags=set(_DROP_CONTENT_TAGS),
    strip_comments=True,
    link_rel=None,
)


def _html_to_lines(markup: str) -> str:
    """Markup -> text with a line break at every block boundary (entities decoded)."""
    if _too_deep(markup):
        return _flatten(markup)
    stripped = _TEXT_CLEANER.clean(markup)
    return html.unescape(_BLOCK_MARK.sub("\n", stripped))


def clean_text(html_or_text: str) -> str:
    """Plain text of an HTML fragment or of text with entities.

    Tags are stripped (block elements and ``<br>`` become line breaks), entities decoded
    (also double-encoded ones like ``&amp;quot;`` and double-escaped markup), Unicode NFC,
    zero-width and control characters removed, spaces collapsed within each line, empty
    lines dropped. Lines are joined with "\\n".
    """
    return _clean_text(_strip_controls(html_or_text or ""))


def _clean_text(text: str) -> str:
    """:func:`clean_text` of text without control characters."""
    if "\r" in text or "\u2028" in text or "\u2029" in text:  # (no "\x85": a control)
        text = _LINE_SEPARATORS.sub("\n", text)
    for _ in range(4):  # each pass undoes one level of escaping
        if _LOOKS_LIKE_MARKUP.search(text):
            text = _html_to_lines(text)
        elif "&" in text and _LOOKS_LIKE_ENTITY.search(text):
            text = html.unescape(text)
        else:
            break
        if _LOOKS_LIKE_MARKUP.search(text):
            # Markup that was escaped: keep this pass's line breaks through the next one.
            text = text.replace("\n", "<br>")
    else:
        # Escaped more often than any real feed does: make sure no tag is left at all.
        text = _ANY_TAG.sub(" ", text.replace("<br>", "\n"))
    text = unicodedata.normalize("NFC", text)
    if text.replace("\n", "").isprintable():
        # Nothing to drop, and no whitespace but " " and "\n" (usually so).
        if "  " in text:
            text = _SPACES.sub(" ", text)
    else:
        text = _SPACES.sub(" ", _CONTROL_OR_INVISIBLE.sub("", text))
    lines = (line.strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _one_line(text: str) -> str:
    """The words of ``text`` separated by single spaces."""
    line = text.replace("\n", " ")
    # Printable, it has no whitespace but " ": clean text is done here, without the slower
    # split and join.
    if line.isprintable() and "  " not in line and line[:1] != " " and line[-1:] != " ":
        return line
    return " ".join(text.split())


def _truncate(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, with "…"."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    boundary = max(cut.rfind(" "), cut.rfind("\n"))
    if boundary > limit // 2:
        cut = cut[:boundary]
    return cut.rstrip(" \n,;:-–—") + "…"


# --------------------------------------------------------------------------- boilerplate

BOILERPLATE_PHRASES: tuple[str, ...] = (
    # English
    "Go back",
    "Back",
    "Back to the all news",
    "Back to all news",
    "Back to news",
    "Back to the news",
    "Back to the list",
    "Back to top",
    "Read more",
    "Read more...",
    "Read more news",
    "Read the full story",
    "Read full story",
    "Read the full article",
    "Read full article",
    "Read also",
    "Continue reading",
    "Full story",
    "More",
    "More news",
    "All news",
    "See also",
    "Related news",
    "Subscribe to our channel",
    "Subscribe to our Telegram channel",
    "Subscribe to our newsletter",
    "Follow us on Telegram",
    "Follow us on Twitter",
    "Follow us on Facebook",
    "Follow us on X",
    "Share",
    "Share this",
    "Print",
    "Print version",
    "Advertisement",
    # Russian
    "Читать далее",
    "Читать дальше",
    "Читать полностью",
    "Читать ещё",
    "Подробнее",
    "Подробности",
    "Далее",
    "Ещё",
    "Вернуться назад",
    "Назад",
    "Все новости",
    "Вернуться к списку новостей",
    "Вернуться к новостям",
    "Вернуться к списку",
    "К списку новостей",
    "Подписывайтесь на наш канал",
    "Подписывайтесь на наш Telegram-канал",
    "Подписывайтесь на нас в Telegram",
    "Подписывайтесь на нас",
    "Подпишитесь на наш канал",
    "Читайте нас в Telegram",
    "Читайте также",
    "Смотрите также",
    "Новости по теме",
    "Поделиться",
    "Версия для печати",
    "Наверх",
    "Реклама",
)

# Separators left behind when a link next to them goes: arrows, bars, bullets, dashes.
_LINK_DECORATION = re.compile(r"[\s←→↩↪⟵⟶⇐⇒⇦⇨|•·>\-–—]+$")
_LONGEST_BOILERPLATE = 120  # a longer line is never boilerplate


def _phrase_key(text: str) -> str:
    return " ".join(_trim_junk(fold_for_matching(text)).split())


def _trim_junk(text: str) -> str:
    """``text`` without the characters other than letters and digits at its ends."""
    # A regex anchored at the end tries every position; usually no character goes here.
    start, end = 0, len(text)
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return text[start:end]


_PHRASE_KEYS = frozenset(_phrase_key(phrase) for phrase in BOILERPLATE_PHRASES)


def _phrase_regex(phrase: str) -> str:
    words = _phrase_key(phrase).split()
    return r"\s+".join(re.escape(word).replace("е", "[её]") for word in words)


# A boilerplate phrase closing the last line right after a sentence ("… talks. Read more »").
_TRAILING_PHRASE = re.compile(
    r"(?<=[.!?…»\"”)\]])[^\S\n]+[^\w\n]{0,3}[^\S\n]*(?:"
    + "|".join(sorted({_phrase_regex(p) for p in BOILERPLATE_PHRASES}, key=len, reverse=True))
    + r")[^\w\n]*$",
    re.IGNORECASE,
)

LineMatcher = Callable[[str], bool]


# The summary's last line and the content's last text are often the same paragraph.
@lru_cache(maxsize=64)
def _cut_trailing_phrase(text: str) -> str:
    """``text`` without a boilerplate phrase closing it after a sentence."""
    return _TRAILING_PHRASE.sub("", text)


@lru_cache(maxsize=256)
def _compile_patterns(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as e:  # config validates these; a bad one is skipped, not fatal
            logger.warning("ignoring invalid strip pattern %r: %s", pattern, e)
    return tuple(compiled)


# Short lines recur (link texts, the boilerplate itself): each is judged once.
@lru_cache(maxsize=4096)
def _is_short_boilerplate(line: str, compiled: tuple[re.Pattern[str], ...]) -> bool:
    """Whether a line of single-spaced words, at most 120 characters, is boilerplate."""
    if _phrase_key(line) in _PHRASE_KEYS:
        return True
    if not compiled:
        return False
    core = _trim_junk(line)
    return any(p.search(line) or p.search(core) for p in compiled)


def _line_matcher(extra_patterns: Iterable[str]) -> LineMatcher:
    compiled = _compile_patterns(tuple(extra_patterns))

    def is_boilerplate(line: str) -> bool:
        if len(line) > 4 * _LONGEST_BOILERPLATE:  # cheap exit for whole paragraphs
            return False
        if (
            len(line) > _LONGEST_BOILERPLATE
            and line.isprintable()  # no whitespace but " "
            and "  " not in line
            and len(line.strip(" ")) > _LONGEST_BOILERPLATE
        ):
            return False  # too long even with its words joined (clean text: the usual case)
        line = _one_line(line)
        return 0 < len(line) <= _LONGEST_BOILERPLATE and _is_short_boilerplate(line, compiled)

    return is_boilerplate


def strip_boilerplate_text(text: str, extra_patterns: Iterable[str] = ()) -> str:
    """``text`` without boilerplate lines (built-in phrases and ``extra_patterns``).

    A line goes only when the whole of it is boilerplate (surrounding punctuation, arrows
    and spaces tolerated); a phrase closing the last sentence ("… talks. Read more") goes
    too. Sentences that merely contain the words stay.
    """
    is_boilerplate = _line_matcher(extra_patterns)
    lines = [line for line in text.split("\n") if not is_boilerplate(line)]
    if lines:
        lines[-1] = _cut_trailing_phrase(lines[-1]).rstrip()
    return "\n".join(line for line in lines if line.strip())


def _is_element(node: etree._Element) -> bool:
    return isinstance(node.tag, str)


def _breaks_line(node: etree._Element) -> bool:
    return _is_element(node) and str(node.tag).lower() in _BLOCK_TAGS


def _text_content(element: etree._Element) -> str:
    """``element.text_content()``: the same text, about twice as fast."""
    return cast(str, etree.tostring(element, method="text", encoding="unicode", with_tail=False))


def _blankish(text: str | None) -> bool:
    return not text or not any(ch.isalnum() for ch in text)


def _alone_on_line(node: etree._Element, root: etree._Element) -> bool:
    """Whether nothing but punctuation shares the node's line (inline parents see through)."""
    while True:
        parent = node.getparent()
        if parent is None:
            return False
        previous = node.getprevious()
        before = previous.tail if previous is not None else parent.text
        following = node.getnext()
        if not (_blankish(before) and _blankish(node.tail)):
            return False
        if (previous is not None and not _breaks_line(previous)) or (
            following is not None and not _breaks_line(following)
        ):
            return False
        if parent is root or _breaks_line(parent):
            return True
        if previous is None and following is None:
            node = parent  # the only content of an inline wrapper: judge the wrapper
            continue
        return True


def _at_end(node: etree._Element, root: etree._Element) -> bool:
    """Whether only punctuation and line breaks follow the node in the whole fragment."""
    while node is not root:
        if not _blankish(node.tail):
            return False
        sibling = node.getnext()
        while sibling is not None:
            if not (str(sibling.tag).lower() == "br" and _blankish(sibling.tail)):
                return False
            sibling = sibling.getnext()
        parent = node.getparent()
        if parent is None:
            return False
        node = parent
    return True


def _drop(node: etree._Element) -> None:
    """Remove an element with its content but keep the text after it (minus decorations)."""
    previous = node.getprevious()
    parent = node.getparent()
    if _blankish(node.tail):
        node.tail = None
    if previous is not None and previous.tail:
        previous.tail = _LINK_DECORATION.sub(" ", previous.tail)
    elif previous is None and parent is not None and parent.text:
        parent.text = _LINK_DECORATION.sub(" ", parent.text)
    node.drop_tree()


class _Tree:
    """A parsed fragment's elements in document order as they were when it was made, and
    those of them that break lines (lxml keeps one object per element while it is referenced,
    so a set can hold them)."""

    def __init__(self, root: etree._Element) -> None:
        self.root = root
        self.elements = list(root.iter(etree.Element))
        self.blocks = {e for e in self.elements if str(e.tag).lower() in _BLOCK_TAGS}


def _strip_text_lines(tree: _Tree, is_boilerplate: LineMatcher) -> bool:
    """Blank bare text lines (between <br>s or block edges) that are boilerplate."""
    changed = False
    root, blocks = tree.root, tree.blocks
    for element in tree.elements:
        if element is not root and element not in blocks:
            continue
        children = list(element)
        # lxml decodes .text and .tail anew on every access: read each once, and only when
        # the element's place calls for it.
        if not children or children[0] in blocks:
            text = element.text
            if text and is_boilerplate(text):
                element.text = None
                changed = True
        for index, child in enumerate(children):
            if child not in blocks or not (tail := child.tail):
                continue
            following = children[index + 1] if index + 1 < len(children) else None
            if (following is None or following in blocks) and is_boilerplate(tail):
                child.tail = None
                changed = True
    return changed


def _strip_trailing_phrase(tree: _Tree) -> bool:
    """Cut a boilerplate phrase closing the fragment's last text ("… talks. Read more")."""
    # The last non-blank one when each element's text, then its tail, is taken in pre-order.
    for node in reversed(tree.elements):
        tail = node.tail if node is not tree.root else None
        if tail and tail.strip():
            field, value = "tail", tail
            break
        text = node.text
        if text and text.strip():
            field, value = "text", text
            break
    else:
        return False
    holder = node if field == "text" else node.getparent()
    if holder is None or any(str(a.tag).lower() == "a" for a in (holder, *holder.iterancestors())):
        return False  # link text is handled as a whole
    stripped = _cut_trailing_phrase(value)
    if stripped == value:
        return False
    if field == "text":
        node.text = stripped
    else:
        node.tail = stripped
    return True


_EMPTY_DROPPED = _BLOCK_TAGS - {"br", "hr", "td", "th", "tr"}


def _tidy(tree: _Tree) -> None:
    """Drop trailing <br>s and blocks left empty by the removals."""
    root, blocks = tree.root, tree.blocks
    for element in reversed(tree.elements):
        if element is root or element not in blocks:
            continue
        tag = str(element.tag).lower()
        if tag == "br" and _blankish(element.tail) and element.getnext() is None:
            parent = element.getparent()
            if parent is not None and (parent is root or parent in blocks):
                element.drop_tree()
        elif (
            tag in _EMPTY_DROPPED
            and not (element.text or "").strip()  # quick: it has text of its own
            and not _text_content(element).strip()
            and not any(True for _ in element.iter("img"))
        ):
            element.drop_tree()


# lxml.html's parser picks each element's class with a Python callback; the classes it
# would pick for forms and inputs add nothing used here, so one class for all is enough.
_FRAGMENT_PARSER = etree.HTMLParser()
_FRAGMENT_PARSER.set_element_class_lookup(
    etree.ElementDefaultClassLookup(
        element=lxml.html.HtmlElement,
        comment=lxml.html.HtmlComment,
        pi=lxml.html.HtmlProcessingInstruction,
        entity=lxml.html.HtmlEntity,
    )
)


def _parse_fragment(markup: str) -> lxml.html.HtmlElement:
    """``lxml.html.fragment_fromstring(markup, create_parent="div")`` with the parser above."""
    elements = lxml.html.fragments_fromstring(markup, parser=_FRAGMENT_PARSER)
    root = cast("lxml.html.HtmlElement", _FRAGMENT_PARSER.makeelement("div"))
    if elements and isinstance(elements[0], str):
        root.text = elements.pop(0)
    root.extend(elements)
    return root


# What lxml.html.tostring drops from what it writes (it cannot match across elements).
_META_CONTENT_TYPE = re.compile(r'<meta http-equiv="Content-Type"[^>]*>')


def _inner_html(root: etree._Element) -> str:
    """The markup inside ``root``, as lxml.html.tostring writes each child; empties ``root``'s
    text (the root is thrown away after)."""
    text = root.text
    root.text = None
    # One call for the whole tree: much faster than one per child, and the same text.
    markup = etree.tostring(root, method="html", encoding="unicode")
    inner = _META_CONTENT_TYPE.sub("", markup[len("<div>") : -len("</div>")])
    return html.escape(text, quote=False) + inner if text else inner


def strip_boilerplate_html(html_fragment: str, extra_patterns: Iterable[str] = ()) -> str:
    """``html_fragment`` without boilerplate blocks.

    Removes block elements (``<p>``, ``<div>``, ``<li>`` …) and links alone on their line
    whose whole text is boilerplate, bare boilerplate lines between ``<br>``s, and a
    boilerplate link closing the fragment. The result still needs :func:`sanitize_html`.
    """
    if not html_fragment.strip():
        return html_fragment
    is_boilerplate = _line_matcher(extra_patterns)
    try:
        root = _parse_fragment(_strip_controls(html_fragment))
    except (etree.LxmlError, ValueError, AssertionError):
        # unparseable (lxml.html asserts on a document with an empty <html>): the sanitizer
        # still cleans it
        return html_fragment
    changed = False
    for element in list(root.iter(etree.Element)):
        tag = str(element.tag).lower()
        if element is root or (tag != "a" and (tag not in _BLOCK_TAGS or tag in ("br", "hr"))):
            continue
        if changed and not any(ancestor is root for ancestor in element.iterancestors()):
            continue  # inside an element already removed
        if not is_boilerplate(_text_content(element)):
            continue
        if tag == "a" and not (_alone_on_line(element, root) or _at_end(element, root)):
            continue
        _drop(element)
        changed = True
    # No element goes from here until _tidy, which takes them last to first.
    tree = _Tree(root)
    changed = _strip_text_lines(tree, is_boilerplate) or changed
    changed = _strip_trailing_phrase(tree) or changed
    if not changed:
        return html_fragment
    _tidy(tree)
    return _inner_html(root)


# --------------------------------------------------------------------------- sanitizing

_ALLOWED_TAGS = frozenset(
    {
        "a", "b", "blockquote", "br", "code", "em", "figcaption", "figure", "h2", "h3",
        "h4", "h5", "h6", "hr", "i", "img", "li", "ol", "p", "pre", "span", "strong",
        "sub", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
    }
)  # fmt: skip
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height", "title"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
_URL_SCHEMES = frozenset({"http", "https", "mailto"})
_LINK_REL = "noopener noreferrer nofollow"
_ESCAPED_MARKUP = re.compile(r"&lt;/?[a-zA-Z][a-zA-Z0-9]*(?:\s|/?&gt;)")


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{html.escape(line, quote=False)}</p>" for line in text.split("\n") if line)


def sanitize_html(html_fragment: str, base_url: str | None) -> str:
    """``html_fragment`` reduced to an allow-list of tags and attributes with nh3.

    Only http, https and mailto URLs survive; relative ``href``/``src`` become absolute
    against ``base_url`` (and are dropped when there is none); links get
    ``rel="noopener noreferrer nofollow"``. Markup nested deeper than :data:`MAX_NESTING`
    is flattened to text paragraphs. Markup that arrives escaped a second time
    (``&lt;p&gt;…``) is unescaped once first.
    """
    fragment = html_fragment or ""
    if not fragment.isprintable():  # (a quick test: none of them in a printable text)
        fragment = _CONTROL_OR_INVISIBLE.sub("", fragment)
    if not fragment.strip():
        return ""
    if not _LOOKS_LIKE_MARKUP.search(fragment) and _ESCAPED_MARKUP.search(fragment):
        fragment = html.unescape(fragment)
    if _too_deep(fragment):
        return _paragraphs(clean_text(fragment))
    cleaner = _sanitizer(base_url) if base_url else None
    # Without a usable base a relative URL cannot be made absolute: drop it.
    cleaned = (cleaner or _DENY_RELATIVE).clean(fragment)
    return unicodedata.normalize("NFC", cleaned).strip()


def _nh3_cleaner(relative: nh3.UrlRelative) -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(_ALLOWED_TAGS),
        clean_content_tags=set(_DROP_CONTENT_TAGS),
        attributes={tag: set(names) for tag, names in _ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(_URL_SCHEMES),
        link_rel=_LINK_REL,
        strip_comments=True,
        url_relative=relative,
    )


_DENY_RELATIVE = _nh3_cleaner("deny")


@lru_cache(maxsize=256)
def _sanitizer(base_url: str) -> nh3.Cleaner | None:
    """The sanitizer making relative URLs absolute against ``base_url`` (one per feed), or
    None when that is no http(s) URL."""
    if not _is_http(base_url):
        return None
    try:
        return _nh3_cleaner(("rewrite_with_base", base_url.strip()))
    except ValueError:  # a base URL nh3's URL parser refuses
        return None


# --------------------------------------------------------------------------- dates

_MONTHS = {
    # Russian, nominative and genitive, full and abbreviated: keyed by the first 3 letters
    "янв": 1, "фев": 2, "мар": 3, "апр": 4, "май": 5, "мая": 5, "июн": 6, "июл": 7,
    "авг": 8, "сен": 9, "окт": 10, "ноя": 11, "дек": 12,
    # English
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8,
    "sep": 9, "oct": 10, "nov": 11, "dec": 12,
}  # fmt: skip
_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_NUMERIC_DATE = re.compile(r"\b(\d{1,2})[./](\d{1,2})[./](\d{4})\b")
_DAY_MONTH_YEAR = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+([^\W\d_]{3,})\.?,?\s+(\d{4})\b")
_MONTH_DAY_YEAR = re.compile(r"\b([^\W\d_]{3,})\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b")
_TIME = re.compile(
    r"(?<![\d:])(\d{1,2}):(\d{2})(?::(\d{2}))?(?:[.,]\d+)?(?:\s*([ap])\.?\s?m\b\.?)?",
    re.IGNORECASE,
)
# The email parser is lenient enough to misread other forms ("March 12, 2025 2:05 PM").
_RFC822 = re.compile(r"(?:[A-Za-z]{3},\s*)?\d{1,2}\s+[A-Za-z]{3}\s+\d{2,4}\s+\d{1,2}:\d{2}")
_MOSCOW = re.compile(r"\b(?:MSK|МСК)\b", re.IGNORECASE)
_OFFSET = re.compile(r"(?<![\d.])([+-])(\d{2}):?(\d{2})\b")


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _zone(text: str) -> timezone:
    """The zone named in ``text`` (the part after the time); UTC when none is given."""
    if _MOSCOW.search(text):
        return timezone(timedelta(hours=3))
    match = _OFFSET.search(text)
    if match is None:
        return UTC
    offset = timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
    if offset >= timedelta(hours=15):
        return UTC
    return timezone(-offset if match.group(1) == "-" else offset)


def _month(name: str) -> int | None:
    return _MONTHS.get(name[:3].casefold())


def _find_date(text: str) -> tuple[int, int, int, int] | None:
    """(year, month, day, end offset) of the first date-like part of ``text``."""
    if match := _ISO_DATE.search(text):
        return int(match.group(1)), int(match.group(2)), int(match.group(3)), match.end()
    if match := _NUMERIC_DATE.search(text):
        day, month = int(match.group(1)), int(match.group(2))
        if month > 12 >= day:  # 03/12/2025 written month first
            day, month = month, day
        return int(match.group(3)), month, day, match.end()
    if (match := _DAY_MONTH_YEAR.search(text)) and (named := _month(match.group(2))):
        return int(match.group(3)), named, int(match.group(1)), match.end()
    if (match := _MONTH_DAY_YEAR.search(text)) and (named := _month(match.group(1))):
        return int(match.group(3)), named, int(match.group(2)), match.end()
    return None


def parse_date(text: str) -> datetime | None:
    """A date in ``text`` as an aware UTC datetime, or None.

    Understands RFC 822 and ISO 8601, "12.03.2025 14:05", Russian month names in any case
    and abbreviation ("12 марта 2025, 14:05", "12 мар 2025 г.") and English ones
    ("March 12, 2025 2:05 PM", "12 Mar 2025"). A date without a zone is taken as UTC.
    """
    text = " ".join(_strip_controls(text or "").split())
    if not text or len(text) > 200:
        return None
    if _RFC822.match(text):
        try:
            return _as_utc(parsedate_to_datetime(text))
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    try:
        return _as_utc(datetime.fromisoformat(text))
    except (ValueError, OverflowError):  # "0001-01-01T00:00:00+03:00": an unset CMS date
        pass
    found = _find_date(text)
    if found is None:
        return None
    year, month, day, date_end = found
    hour = minute = second = 0
    rest = text[date_end:]
    if time_match := _TIME.search(text):
        hour, minute = int(time_match.group(1)), int(time_match.group(2))
        second = int(time_match.group(3) or 0)
        meridiem = (time_match.group(4) or "").lower()
        if meridiem == "p" and hour < 12:
            hour += 12
        elif meridiem == "a" and hour == 12:
            hour = 0
        rest = text[max(time_match.end(), date_end) :]
    try:
        return _as_utc(datetime(year, month, day, hour, minute, second, tzinfo=_zone(rest)))
    except (ValueError, OverflowError):
        return None


# --------------------------------------------------------------------------- language

_CYRILLIC_LANGUAGES = {
    # letters that only this language's alphabet has (among the ones listed)
    "ru": "ыэъё",
    "uk": "іїєґ",
    "be": "іў",
    "kk": "әғқңөұүһі",
    "ky": "ңөү",
    "tg": "ғӣқӯҳҷ",
    "mn": "өү",
    "sr": "ђјљњћџ",
    "bg": "",
    "mk": "ѓќѕјљњџ",
}
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")
_CYRILLIC_CHAR = re.compile("[\u0400-\u04ff]")
_LATIN_LETTER = re.compile("[A-Za-z]")


def _language_code(value: str | None) -> str | None:
    """The primary subtag of a language tag ("ru-RU" -> "ru", "en_US" -> "en") or None."""
    if not value:
        return None
    primary = re.split(r"[-_\s]", value.strip().lower(), maxsplit=1)[0]
    return primary if _LANGUAGE_CODE.fullmatch(primary) else None


def detect_language(text: str, candidates: Sequence[str]) -> str | None:
    """The candidate language ``text`` is written in, judged by its script; None if unsure.

    Cyrillic text picks the Cyrillic candidate (telling Russian from Ukrainian, Kazakh …
    by their own letters when several are candidates); Latin text picks the Latin
    candidate when there is exactly one.
    """
    cyrillic_chars = _CYRILLIC_CHAR.findall(text)
    cyrillic = len(cyrillic_chars)
    latin = len(_LATIN_LETTER.findall(text))
    seen = {ch.lower() for ch in set(cyrillic_chars)}
    letters = cyrillic + latin
    if letters < 3:
        return None
    codes = [code for code in (_language_code(c) for c in candidates) if code]
    if cyrillic / letters >= 0.6:
        options = [code for code in codes if code in _CYRILLIC_LANGUAGES]
        if len(options) <= 1:
            return options[0] if options else None
        scored = [
            (sum(1 for ch in _CYRILLIC_LANGUAGES[code] if ch in seen), code) for code in options
        ]
        best = max(score for score, _ in scored)
        winners = [code for score, code in scored if score == best]
        if len(winners) == 1:
            return winners[0]
        return "ru" if "ru" in winners else None
    if latin / letters >= 0.6:
        options = [code for code in codes if code not in _CYRILLIC_LANGUAGES]
        return options[0] if len(options) == 1 else None
    return None


# --------------------------------------------------------------------------- the item


def _content_hash(title: str, text: str) -> str:
    folded = fold_for_matching(_one_line(f"{title} {text}"))
    return hashlib.sha256(folded.encode("utf-8")).hexdigest()[:32]


def _has_visible_html(fragment: str) -> bool:
    return "<img" in fragment or bool(html.unescape(_ANY_TAG.sub("", fragment)).strip())


def _categories(values: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    kept: list[str] = []
    for value in values:
        term = _one_line(clean_text(value))
        key = fold_for_matching(term)
        if term and key not in seen:
            seen.add(key)
            kept.append(term)
    return tuple(kept)


def _enclosures(enclosures: Iterable[Enclosure], base: str) -> tuple[Enclosure, ...]:
    kept: list[Enclosure] = []
    for enclosure in enclosures:
        url = _absolute_link(enclosure.url, base)
        if url is None:
            continue
        mime = _one_line(_strip_controls(enclosure.type or "")) or None
        length = (
            enclosure.length if enclosure.length is not None and enclosure.length >= 0 else None
        )
        kept.append(Enclosure(url=url, type=mime, length=length))
    return tuple(kept)


def _dates(entry: ParsedEntry, fetched_at: datetime) -> tuple[datetime, datetime]:
    published = entry.published or entry.updated
    if published is None and entry.published_raw:
        published = parse_date(entry.published_raw)
    published = _as_utc(published) if published else fetched_at
    updated = _as_utc(entry.updated) if entry.updated else published
    if published > fetched_at + MAX_FUTURE:
        published = fetched_at
    if updated > fetched_at + MAX_FUTURE:
        updated = fetched_at
    return published, max(published, updated)


def normalize_entry(
    entry: ParsedEntry,
    feed: ParsedFeed,
    options: NormalizeOptions,
    *,
    fetched_at: datetime,
    feed_url: str,
) -> Item | None:
    """A clean :class:`Item` from a parsed entry; None when it has no title, link or text.

    ``fetched_at`` (when the feed was fetched) stands in for a missing date and caps dates
    more than a day in the future.
    """
    fetched_at = _as_utc(fetched_at)
    feed_link = feed.link if feed.link and _is_http(feed.link) else None
    base = entry.base or feed_link or feed_url
    tracking = options.tracking_params
    strip = options.strip

    link = url = ""
    if entry.link and (plain := _PLAIN_URL.fullmatch(entry.link)):
        # All clean_link and canonical_url would do: drop tracking parameters, sort the rest.
        address, query = plain.groups()
        kept = _kept_query(query, tracking) if query else []
        link = f"{address}?{'&'.join(kept)}" if kept else address
        url = f"{address}?{'&'.join(sorted(kept))}" if kept else address
    elif entry.link:
        safe = _absolute_link(entry.link, base)
        if safe:
            link = clean_link(safe, extra_tracking=tracking)
        url = canonical_url(link, extra_tracking=tracking) if link else ""

    raw_summary = _strip_controls(entry.summary or "")
    raw_content = _strip_controls(entry.content or "")
    summary_full = _clean_text(raw_summary)
    summary_text = strip_boilerplate_text(summary_full, strip)
    if not raw_content and _LOOKS_LIKE_MARKUP.search(raw_summary):
        raw_content = raw_summary  # an HTML description is the content too

    content = ""
    body_text = summary_text
    if raw_content:
        if raw_content == raw_summary:  # common: the description is the whole content
            full_text = summary_full
        else:
            full_text = _clean_text(raw_content)
            body_text = strip_boilerplate_text(full_text, strip)
        if body_text != full_text:
            raw_content = strip_boilerplate_html(raw_content, strip)
        content = sanitize_html(raw_content, base)
        if not _has_visible_html(content):
            content = ""
    if not summary_text:
        summary_text = body_text
    summary = _truncate(summary_text, SUMMARY_LIMIT)

    title = _one_line(clean_text(entry.title or ""))
    if not title and summary:
        title = _truncate(_one_line(summary), TITLE_FALLBACK_LIMIT)
    if not (title or link or body_text):
        return None

    content_hash = _content_hash(title, body_text)
    guid = _one_line(_strip_controls(entry.guid or "")) or link or f"hash:{content_hash}"
    published, updated = _dates(entry, fetched_at)
    language = (
        _language_code(entry.language)
        or _language_code(feed.language)
        or _language_code(options.source_language)
        or detect_language(f"{title}\n{summary}", options.languages)
    )
    author = _one_line(clean_text(entry.author or "")) or None
    return Item(
        source_id=options.source_id,
        guid=guid,
        url=url,
        link=link,
        title=title,
        summary=summary,
        content=content,
        published=published,
        updated=updated,
        language=language,
        author=author,
        categories=_categories(entry.categories),
        enclosures=_enclosures(entry.enclosures, base),
        content_hash=content_hash,
    )
