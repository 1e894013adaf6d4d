"""The command line as a user runs it: exit codes and FILE:LINE messages."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator.cli import main

ROOT = Path(__file__).parent.parent


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(ROOT / "config", target)
    text = (target / "aggregator.yaml").read_text()
    (target / "aggregator.yaml").write_text(
        text.replace("sqlite:///data/aggregator.db", f"sqlite:///{tmp_path}/data/agg.db")
    )
    return target


def test_the_example_config_is_valid() -> None:
    result = run("check", "--config", str(ROOT / "config"))
    assert result.returncode == 0, result.stderr
    assert "config ok" in result.stdout


def _line_of(path: Path, needle: str) -> int:
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return n
    raise AssertionError(needle)


def test_unknown_key_is_reported_with_its_line(config_copy: Path, tmp_path: Path) -> None:
    sources = config_copy / "sources.yaml"
    sources.write_text(
        sources.read_text().replace("    interval: 15m\n", "    intervall: 15m\n", 1)
    )
    result = run("check", "--config", str(config_copy))
    assert result.returncode == 2
    line = _line_of(sources, "intervall")
    assert f"sources.yaml:{line}:" in result.stderr
    assert "unknown key 'intervall'" in result.stderr
    # Nothing was touched: no database file appeared.
    assert not (tmp_path / "data").exists()


def test_duplicate_id_and_bad_duration(config_copy: Path, tmp_path: Path) -> None:
    sources = config_copy / "sources.yaml"
    text = sources.read_text()
    text = text.replace("id: tass-ru", "id: tass-en").replace(
        "interval: 10m", "interval: 10 minutes", 1
    )
    sources.write_text(text)
    result = run("poll", "--config", str(config_copy))
    assert result.returncode == 2
    dup_line = [n for n, line in enumerate(text.splitlines(), 1) if "id: tass-en" in line][1]
    bad_line = _line_of(sources, "10 minutes")
    assert f"sources.yaml:{dup_line}:" in result.stderr and "duplicate source id" in result.stderr
    assert f"sources.yaml:{bad_line}:" in result.stderr and "bad duration" in result.stderr
    assert not (tmp_path / "data").exists()


def test_config_from_environment(
    config_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGGREGATOR_CONFIG", str(config_copy))
    assert main(["check"]) == 0
    assert str(config_copy) in capsys.readouterr().out


def test_export_of_unknown_topic_is_an_error(
    config_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "nope", "--config", str(config_copy)]) == 2
    assert "unknown topic: nope" in capsys.readouterr().err


def test_db_upgrade_is_idempotent(config_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade", "--config", str(config_copy)]) == 0
    assert "database upgraded" in capsys.readouterr().out
    assert main(["db", "upgrade", "--config", str(config_copy)]) == 0
    assert "already up to date" in capsys.readouterr().out


def test_import_opml_prints_valid_sources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opml = tmp_path / "feeds.opml"
    opml.write_text(
        """<?xml version="1.0"?><opml version="2.0"><head><title>x</title></head><body>
        <outline text="Agencies">
          <outline type="rss" text="BELTA (English)" xmlUrl="https://eng.belta.by/rss"/>
          <outline type="rss" text="БелТА" xmlUrl="https://www.belta.by/rss"/>
          <outline type="rss" text="BELTA (English)" xmlUrl="https://eng.belta.by/rss/other"/>
          <outline type="rss" text="broken" xmlUrl="ftp://nope"/>
        </outline></body></opml>""",
        encoding="utf-8",
    )
    assert main(["import-opml", str(opml)]) == 0
    out = capsys.readouterr().out
    config = tmp_path / "config"
    config.mkdir()
    (config / "sources.yaml").write_text(out, encoding="utf-8")
    from aggregator.config import load_config

    loaded = load_config(config)
    assert [s.id for s in loaded.sources] == ["belta-english", "belta", "belta-english-2"]
    assert loaded.sources[1].name == "БелТА"
