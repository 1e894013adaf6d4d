"""The topic index page as a browser renders it (headless Chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CHROMIUM, chromium, serve_app
from lxml import html

from aggregator.web import AppState, create_app

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not installed (Debian package 'chromium')"
)


@pytest.fixture
def served_index(app_state: AppState) -> Iterator[str]:
    with serve_app(create_app(app_state)) as base:
        yield base


def test_index_lists_topics_with_autodiscovery(served_index: str, tmp_path: Path) -> None:
    result = chromium(tmp_path, "--dump-dom", served_index + "/")
    assert result.returncode == 0, result.stderr[-2000:]
    doc = html.fromstring(result.stdout)
    alternates = {
        link.get("title"): link.get("href")
        for link in doc.xpath('//head/link[@rel="alternate"][@type="application/atom+xml"]')
    }
    assert alternates == {
        "CIS security": "http://feeds.example.org/topics/cis.atom",
        "Nothing yet": "http://feeds.example.org/topics/empty.atom",
    }
    body_text = " ".join(doc.xpath("//body//text()"))
    assert "CIS security" in body_text and "CSTO and CIS" in body_text
    assert "120" in body_text  # the entry count of the topic
    subscribe = doc.xpath("//body//a/@href")
    assert "http://feeds.example.org/topics/cis.atom" in subscribe
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "index.png"
    result = chromium(
        tmp_path, f"--screenshot={shot}", "--window-size=1100,700", served_index + "/"
    )
    assert result.returncode == 0 and shot.stat().st_size > 1000
