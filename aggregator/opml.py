"""OPML import: turn a feed reader's subscription list into ``sources.yaml`` entries."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import yaml
from lxml import etree

from aggregator.errors import AggregatorError


class OpmlError(AggregatorError):
    """The file is not OPML we can read."""


@dataclass(frozen=True)
class OpmlFeed:
    title: str
    url: str
    language: str | None = None


_TRANSLIT = str.maketrans(
    {
        "а": "a",
        "б": "b",
        "в": "v",
        "г": "g",
        "д": "d",
        "е": "e",
        "ё": "e",
        "ж": "zh",
        "з": "z",
        "и": "i",
        "й": "y",
        "к": "k",
        "л": "l",
        "м": "m",
        "н": "n",
        "о": "o",
        "п": "p",
        "р": "r",
        "с": "s",
        "т": "t",
        "у": "u",
        "ф": "f",
        "х": "kh",
        "ц": "ts",
        "ч": "ch",
        "ш": "sh",
        "щ": "shch",
        "ъ": "",
        "ы": "y",
        "ь": "",
        "э": "e",
        "ю": "yu",
        "я": "ya",
    }
)


def slugify(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.lower().translate(_TRANSLIT))
    text = text.encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return slug[:60].strip("-") or "feed"


def read_opml(data: bytes) -> list[OpmlFeed]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        raise OpmlError(f"not valid XML: {e}") from e
    if root.tag != "opml":
        raise OpmlError(f"not an OPML document (root element <{root.tag}>)")
    feeds = []
    for outline in root.iter("outline"):
        url = (outline.get("xmlUrl") or "").strip()
        if not url.startswith(("http://", "https://")):
            continue
        title = (outline.get("title") or outline.get("text") or url).strip()
        language = (outline.get("language") or "").strip()[:2].lower() or None
        feeds.append(OpmlFeed(title, url, language))
    return feeds


def sources_yaml_from_opml(data: bytes) -> str:
    """``sources.yaml`` text for the feeds in an OPML file (ids unique, derived from titles)."""
    seen_ids: set[str] = set()
    seen_urls: set[str] = set()
    entries = []
    for feed in read_opml(data):
        if feed.url in seen_urls:
            continue
        seen_urls.add(feed.url)
        base = slugify(feed.title)
        source_id, n = base, 2
        while source_id in seen_ids:
            source_id, n = f"{base}-{n}", n + 1
        seen_ids.add(source_id)
        entry: dict[str, object] = {"id": source_id, "url": feed.url, "name": feed.title}
        if feed.language:
            entry["language"] = feed.language
        entries.append(entry)
    return yaml.safe_dump(
        {"sources": entries}, allow_unicode=True, sort_keys=False, default_flow_style=False
    )
