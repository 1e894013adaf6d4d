"""The config directory as an admin writes it: what loads, and the FILE:LINE errors for what doesn't."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from aggregator.config import (
    DEFAULT_USER_AGENT,
    load_config,
    parse_duration,
    parse_size,
    resolve_config_dir,
)
from aggregator.errors import ConfigError, ConfigProblem
from aggregator.types import Config, Defaults, Settings, Source, Topic, TopicMatch

DATA = Path(__file__).parent / "data" / "config_cases"

SOURCES = """
sources:
  - id: belta-en
    url: https://eng.belta.by/rss
  - id: tass-en
    url: https://tass.com/rss/v2.xml
"""


def write(directory: Path, **files: str) -> Path:
    """Write ``name=text`` as ``name.yaml``; the text's first line is line 1."""
    for name, text in files.items():
        path = directory / f"{name}.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return directory


def problems(directory: Path, **files: str) -> list[str]:
    write(directory, **files)
    with pytest.raises(ConfigError) as info:
        load_config(directory, env={})
    assert all(isinstance(p, ConfigProblem) for p in info.value.problems)
    return [str(p) for p in info.value.problems]


# --------------------------------------------------------------------------- valid configs


def test_product_example_loads_into_frozen_records() -> None:
    config = load_config(DATA / "full", env={})

    assert config == Config(
        settings=Settings(
            database="sqlite:///data/aggregator.db",
            listen="127.0.0.1:8080",
            base_url="http://localhost:8080/",
            user_agent="aggregator/<version> (+https://example.org/contact)",
            defaults=Defaults(interval=900.0, timeout=20.0, max_bytes=10 * 1024 * 1024),
            retention_days=90,
            concurrency=16,
            per_host=2,
            tracking_params=(),
        ),
        sources=(
            Source(
                id="belta-en",
                url="https://eng.belta.by/rss",
                name="BELTA (English)",
                language="en",
                interval=600.0,
                timeout=20.0,
                max_bytes=10 * 1024 * 1024,
                priority=10,
                tags=("agency", "belarus"),
                enabled=True,
                strip=("^Go back$", "^Back to the all news$"),
                allow_private=False,
            ),
        ),
        topics=(
            Topic(
                id="cis-security",
                title="CIS security",
                subtitle="CSTO, CIS and Security Council news from regional agencies",
                match=TopicMatch(
                    any=(
                        "CSTO",
                        "ОДКБ",
                        "Collective Security Treaty",
                        "CIS",
                        "СНГ",
                        "Security Council",
                        "совет безопасности",
                    ),
                    all=(),
                    none=("football", "футбол"),
                ),
                sources=(),
                tags=(),
                languages=(),
                limit=50,
            ),
        ),
        directory=str(DATA / "full"),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.sources[0].interval = 1.0  # type: ignore[misc]
    assert config.source("belta-en") is config.sources[0]
    assert config.topic("cis-security") is config.topics[0]


def test_only_sources_yaml_gives_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, sources=SOURCES), env={})

    assert config.settings == Settings(user_agent=DEFAULT_USER_AGENT)
    assert DEFAULT_USER_AGENT.startswith("aggregator/0.")
    assert config.topics == ()
    assert config.sources[0] == Source(
        id="belta-en", url="https://eng.belta.by/rss", name="belta-en"
    )
    assert config.directory == str(tmp_path)


def test_empty_optional_files_are_fine(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, aggregator="# nothing yet\n", sources=SOURCES, topics=""), env={}
    )
    assert config.settings.listen == "127.0.0.1:8080"
    assert config.topics == ()


def test_sources_take_interval_timeout_and_size_from_defaults(tmp_path: Path) -> None:
    write(
        tmp_path,
        aggregator="""
        defaults: {interval: 2h, timeout: 45s, max_bytes: 2MiB}
        """,
        sources="""
        sources:
          - id: belta-en
            url: https://eng.belta.by/rss
          - id: tass-en
            url: https://tass.com/rss/v2.xml
            interval: 90
            timeout: 1m
            max_bytes: 512KB
        """,
    )
    inherited, own = load_config(tmp_path, env={}).sources

    assert (inherited.interval, inherited.timeout, inherited.max_bytes) == (7200.0, 45.0, 2 << 20)
    assert (own.interval, own.timeout, own.max_bytes) == (90.0, 60.0, 512 * 1024)


def test_settings_keys_are_read_and_base_url_gets_a_slash(tmp_path: Path) -> None:
    write(
        tmp_path,
        aggregator="""
        database: postgresql+psycopg://agg@db/agg
        listen: "[::1]:9000"
        base_url: https://feeds.example.org/news
        user_agent: MyBot/1.0
        retention: {days: 30}
        concurrency: 4
        per_host: 1
        tracking_params: [from, ref_src]
        """,
        sources=SOURCES,
        topics="""
        topics:
          - id: tass-only
            title: Everything from TASS
            sources: [tass-en]
            languages: [EN]
            limit: 1000
        """,
    )
    config = load_config(tmp_path, env={})

    assert config.settings == Settings(
        database="postgresql+psycopg://agg@db/agg",
        listen="[::1]:9000",
        base_url="https://feeds.example.org/news/",
        user_agent="MyBot/1.0",
        retention_days=30,
        concurrency=4,
        per_host=1,
        tracking_params=("from", "ref_src"),
    )
    # no match.any: the topic takes every item its filters let through
    assert config.topics[0] == Topic(
        id="tass-only",
        title="Everything from TASS",
        sources=("tass-en",),
        languages=("en",),
        limit=1000,
    )


def test_database_url_from_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, aggregator="database: sqlite:///from-file.db\n", sources=SOURCES)
    url = "postgresql+psycopg://agg@db/agg"

    assert load_config(tmp_path, env={"AGGREGATOR_DATABASE_URL": url}).settings.database == url
    assert load_config(tmp_path, env={"AGGREGATOR_DATABASE_URL": ""}).settings.database == (
        "sqlite:///from-file.db"
    )
    monkeypatch.setenv("AGGREGATOR_DATABASE_URL", url)
    assert load_config(tmp_path).settings.database == url


@pytest.mark.parametrize(
    ("cli", "env", "expected"),
    [
        ("/etc/aggregator", {"AGGREGATOR_CONFIG": "/srv/agg"}, Path("/etc/aggregator")),
        (None, {"AGGREGATOR_CONFIG": "/srv/agg"}, Path("/srv/agg")),
        (None, {"AGGREGATOR_CONFIG": ""}, Path("config")),
        (None, {}, Path("config")),
        ("", {}, Path("config")),
    ],
)
def test_resolve_config_dir_precedence(
    cli: str | None, env: dict[str, str], expected: Path
) -> None:
    assert resolve_config_dir(cli, env) == expected


def test_resolve_config_dir_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGGREGATOR_CONFIG", "/srv/agg")
    assert resolve_config_dir(None) == Path("/srv/agg")


# --------------------------------------------------------------------------- durations, sizes


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1d2h3m4s", 93784.0),
        ("1.5h", 5400.0),
        (" 10M ", 600.0),
        ("900", 900.0),
        (900, 900.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["15 minutes", "", "m", "1w", "30m1h", "-5", "-5s", "1h 30m", "1.5", True, -1]
)
def test_parse_duration_rejects(text: str | int) -> None:
    with pytest.raises(ValueError, match=r"bad duration .* \(use 90s, 15m, 2h, 1d or seconds\)"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10MB", 10 * 1024 * 1024),
        ("512KB", 512 * 1024),
        ("1GB", 1024**3),
        ("2MiB", 2 * 1024 * 1024),
        ("1.5 mb", 1572864),
        ("64k", 65536),
        ("100B", 100),
        ("4096", 4096),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["10 parsecs", "", "MB", "1TB", "-1MB", "1e6", False, -1])
def test_parse_size_rejects(text: str | int) -> None:
    with pytest.raises(ValueError, match=r"bad size .* \(use 512KB, 10MB, 1GB or bytes\)"):
        parse_size(text)


# --------------------------------------------------------------------------- one problem each


def test_unknown_key_is_reported_at_the_key(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        sources="""
        sources:
          - id: belta-en
            url: https://eng.belta.by/rss
          - id: tass-en
            url: https://tass.com/rss/v2.xml
            intervall: 10m
        """,
    ) == ["sources.yaml:6: sources[1]: unknown key 'intervall' (did you mean 'interval'?)"]


def test_wrong_type_names_the_key_and_value(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        sources="""
        sources:
          - id: belta-en
            url: https://eng.belta.by/rss
            priority: high
            enabled: "yes"
            tags: agency
        """,
    ) == [
        "sources.yaml:4: sources[0].priority: expected an integer, got 'high'",
        "sources.yaml:5: sources[0].enabled: expected true or false, got 'yes'",
        "sources.yaml:6: sources[0].tags: expected a list, got 'agency'",
    ]


def test_number_where_text_is_expected_suggests_quotes(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        sources="""
        sources:
          - id: belta-en
            url: https://eng.belta.by/rss
            name: 1984
        """,
    ) == ["sources.yaml:4: sources[0].name: expected a string, got 1984 (put it in quotes)"]


def test_duplicate_source_id_points_at_both(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        sources="""
        sources:
          - id: belta-en
            url: https://eng.belta.by/rss
          - id: tass-en
            url: https://tass.com/rss/v2.xml
          - id: tass-ru
            url: https://tass.ru/rss/v2.xml
          - id: tass-en
            url: https://tass.com/rss/other.xml
        """,
    ) == ["sources.yaml:8: sources[3].id: duplicate source id 'tass-en' (first at line 4)"]


def test_duplicate_topic_id(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        sources=SOURCES,
        topics="""
        topics:
          - id: csto
            title: CSTO
            match: {any: [CSTO]}
          - id: csto
            title: CSTO again
            match: {any: [ОДКБ]}
        """,
    ) == ["topics.yaml:5: topics[1].id: duplicate topic id 'csto' (first at line 2)"]


@pytest.mark.parametrize(
    "url", ["ftp://eng.belta.by/rss", "eng.belta.by/rss", "https://", "http://h:99999/"]
)
def test_source_url_must_be_http(tmp_path: Path, url: str) -> None:
    assert problems(
        tmp_path,
        sources=f"""
        sources:
          - id: belta-en
            url: "{url}"
        """,
    ) == [f"sources.yaml:3: sources[0].url: must be an http(s) URL: '{url}'"]


def test_bad_duration_and_size(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        sources="""
        sources:
          - id: belta-en
            url: https://eng.belta.by/rss
            interval: 15 minutes
            timeout: 0s
            max_bytes: 10 parsecs
        """,
    ) == [
        "sources.yaml:4: sources[0].interval: bad duration '15 minutes' (use 90s, 15m, 2h, 1d or seconds)",
        "sources.yaml:5: sources[0].timeout: must be longer than zero, got '0s'",
        "sources.yaml:6: sources[0].max_bytes: bad size '10 parsecs' (use 512KB, 10MB, 1GB or bytes)",
    ]


def test_bad_regex_in_strip(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        sources="""
        sources:
          - id: belta-en
            url: https://eng.belta.by/rss
            strip:
              - ^Go back$
              - "^(Read more"
        """,
    ) == [
        "sources.yaml:6: sources[0].strip[1]: bad regular expression '^(Read more': "
        "missing ), unterminated subpattern at position 1"
    ]


def test_bad_regex_term_in_topic(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        sources=SOURCES,
        topics="""
        topics:
          - id: csto
            title: CSTO
            match:
              any: [CSTO, "/ОДКБ[/"]
        """,
    ) == [
        "topics.yaml:5: topics[0].match.any[1]: bad regular expression '/ОДКБ[/': "
        "unterminated character set at position 4"
    ]


def test_topic_referencing_unknown_source(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        sources=SOURCES,
        topics="""
        topics:
          - id: csto
            title: CSTO
            match: {any: [CSTO]}
            sources:
              - tass-en
              - sputnik-ru
        """,
    ) == ["topics.yaml:7: topics[0].sources[1]: unknown source id 'sputnik-ru'"]


def test_topic_that_would_match_everything_is_refused(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        sources=SOURCES,
        topics="""
        topics:
          - id: everything
            title: Everything
            match: {none: [football]}
        """,
    ) == [
        "topics.yaml:2: topics[0]: matches every item: "
        "give match.any terms or a sources, tags or languages filter"
    ]


def test_bad_yaml_reports_the_parser_line(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        sources="""
        sources:
          - id: belta-en
            url: https://eng.belta.by/rss
            name: BELTA: English
        """,
    ) == ["sources.yaml:4: invalid YAML: mapping values are not allowed here"]


def test_unsafe_yaml_tags_are_refused(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        sources="""
        sources:
          - id: !!python/object/apply:os.system ["true"]
            url: https://eng.belta.by/rss
        """,
    )
    assert len(found) == 1
    assert found[0].startswith("sources.yaml:2: invalid YAML: could not determine a constructor")


def test_duplicate_mapping_key(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        sources="""
        sources:
          - id: belta-en
            url: https://eng.belta.by/rss
            priority: 1
            url: https://eng.belta.by/rss2
        """,
    ) == ["sources.yaml:5: sources[0]: duplicate key 'url' (first at line 3)"]


def test_missing_sources_yaml(tmp_path: Path) -> None:
    assert problems(tmp_path) == [f"sources.yaml:0: file not found in {tmp_path}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["sources.yaml:0: expected a mapping with a 'sources:' list, got an empty file"]),
        ("- id: x\n", ["sources.yaml:1: expected a mapping with a 'sources:' list, got a list"]),
        (
            "source: []\n",
            [
                "sources.yaml:1: missing required key 'sources'",
                "sources.yaml:1: unknown key 'source' (did you mean 'sources'?)",
            ],
        ),
        ("sources:\n", ["sources.yaml:1: sources: expected a list, got null (an empty value)"]),
    ],
)
def test_sources_yaml_must_hold_a_sources_list(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    assert problems(tmp_path, sources=text) == expected


def test_bad_settings(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        aggregator="""
        listen: localhost
        base_url: localhost:8080
        concurrency: 0
        retention: {days: 90, keep: forever}
        defaults: {interval: often}
        """,
        sources=SOURCES,
    ) == [
        "aggregator.yaml:1: listen: must be host:port such as 127.0.0.1:8080 or [::1]:8080, got 'localhost'",
        "aggregator.yaml:2: base_url: must be an http(s) URL: 'localhost:8080'",
        "aggregator.yaml:3: concurrency: must be at least 1, got 0",
        "aggregator.yaml:4: retention: unknown key 'keep'",
        "aggregator.yaml:5: defaults.interval: bad duration 'often' (use 90s, 15m, 2h, 1d or seconds)",
    ]


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    write(tmp_path, sources=SOURCES)
    (tmp_path / "topics.yaml").write_bytes(
        b"topics:\n  - id: x\n    title: " + "Безопасность\n".encode("cp1251")
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, env={})
    assert [str(p) for p in info.value.problems] == [
        "topics.yaml:3: not UTF-8 text: byte 0xc1 cannot be decoded"
    ]


# --------------------------------------------------------------------------- all together


def test_every_problem_in_every_file_is_reported_at_once(tmp_path: Path) -> None:
    write(
        tmp_path,
        aggregator="""
        per_host: many
        """,
        sources="""
        sources:
          - id: Belta EN
            url: https://eng.belta.by/rss
          - id: tass-en
            url: ftp://tass.com/rss
            intervall: 10m
          - id: tass-en
            url: https://tass.com/rss/v2.xml
        """,
        topics="""
        topics:
          - id: csto
            title: CSTO
            match: {any: ["/(/"], nix: [football]}
            sources: [belta-en]
            limit: 5000
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, env={})

    lines = [
        "aggregator.yaml:1: per_host: expected an integer, got 'many'",
        "sources.yaml:2: sources[0].id: must be a slug (lowercase letters, digits, '-', '_'), got 'Belta EN'",
        "sources.yaml:5: sources[1].url: must be an http(s) URL: 'ftp://tass.com/rss'",
        "sources.yaml:6: sources[1]: unknown key 'intervall' (did you mean 'interval'?)",
        "sources.yaml:7: sources[2].id: duplicate source id 'tass-en' (first at line 4)",
        "topics.yaml:4: topics[0].match.any[0]: bad regular expression '/(/': "
        "missing ), unterminated subpattern at position 0",
        "topics.yaml:4: topics[0].match: unknown key 'nix'",
        # 'Belta EN' is not a valid id, so the reference to belta-en does not resolve
        "topics.yaml:5: topics[0].sources[0]: unknown source id 'belta-en'",
        "topics.yaml:6: topics[0].limit: must be at most 1000, got 5000",
    ]
    assert [str(p) for p in info.value.problems] == lines
    assert str(info.value) == "\n".join(lines)


def test_anchors_and_merge_keys_share_settings_between_sources(tmp_path: Path) -> None:
    write(
        tmp_path,
        sources="""
        sources:
          - &tass
            id: tass-en
            url: https://tass.com/rss/v2.xml
            interval: 5m
            tags: [agency, russia]
          - <<: *tass
            id: tass-ru
            url: https://tass.ru/rss/v2.xml
            name: 2024-12-25
        """,
    )
    _, russian = load_config(tmp_path, env={}).sources

    assert (russian.id, russian.url, russian.interval) == (
        "tass-ru",
        "https://tass.ru/rss/v2.xml",
        300.0,
    )
    assert russian.tags == ("agency", "russia")
    assert russian.name == "2024-12-25"  # dates stay text


def test_second_yaml_document_and_control_characters(tmp_path: Path) -> None:
    assert problems(tmp_path, sources="sources: []\n---\nsources: []\n") == [
        "sources.yaml:2: invalid YAML: expected a single document in the stream "
        "but found another document"
    ]
    assert problems(tmp_path, sources="sources:\n  - id: a\x00\n") == [
        "sources.yaml:2: invalid YAML: character #x0000: special characters are not allowed"
    ]
