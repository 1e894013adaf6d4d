"""``aggregator topics explain``: matched terms per story, and why near misses were excluded."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CIS_SECURITY, DATA, FeedServer, write_config

from aggregator.cli import main


def test_explain_prints_terms_and_exclusion_reasons(
    tmp_path: Path, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    belta = feed_server.add("/belta.xml", (DATA / "feeds" / "belta-en.xml").read_bytes())
    tass = feed_server.add(
        "/tass.xml",
        (DATA / "feeds" / "tass-en.xml").read_bytes(),
        content_type="application/atom+xml",
    )
    config = write_config(
        tmp_path / "config",
        settings={"database": f"sqlite:///{tmp_path}/agg.db"},
        sources=[{"id": "belta-en", "url": belta}, {"id": "tass-en", "url": tass}],
        topics=[CIS_SECURITY],
    )
    assert main(["poll", "--config", str(config)]) == 0
    capsys.readouterr()

    assert main(["topics", "explain", "cis-security", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "1 matching stories" in out
    assert "Secretaries of CSTO Security Councils meet in Minsk" in out
    # Both copies' terms are considered: the story matched CSTO and Security Council.
    match_block = out.split("MATCH", 1)[1]
    assert "matched: CSTO" in match_block and "Security Council" in match_block
    assert "NEAR" not in out  # near misses only with --near

    assert main(["topics", "explain", "cis-security", "--near", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    near = out.split("near misses:", 1)[1]
    assert "CIS Cup: football final set for Saturday" in near
    assert "matched: CIS" in near
    assert "football" in near and "none" in near
    # Stories that match nothing are not near misses.
    assert "ruble" not in out


def test_explain_unknown_topic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(
        tmp_path / "config",
        settings={"database": f"sqlite:///{tmp_path}/agg.db"},
        sources=[{"id": "a", "url": "http://127.0.0.1:9/rss"}],
        topics=[CIS_SECURITY],
    )
    assert main(["topics", "explain", "nope", "--config", str(config)]) == 2
    assert "unknown topic: nope" in capsys.readouterr().err
