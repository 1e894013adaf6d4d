"""Next-poll arithmetic with a fixed ``now`` and seeded random generators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from random import Random
from statistics import mean

import pytest

from aggregator.schedule import (
    backoff,
    cache_hint_seconds,
    next_poll_after_error,
    next_poll_after_success,
    parse_retry_after,
)

NOW = datetime(2024, 10, 1, 12, 0, tzinfo=UTC)
HOUR = 3600.0


def seconds_after_now(when: datetime) -> float:
    return (when - NOW).total_seconds()


# --------------------------------------------------------------------------- success


@pytest.mark.parametrize(
    ("interval", "cache_hint", "max_interval", "low", "high"),
    [
        (900, None, 86400, 810, 990),  # interval ± 10 %
        (900, 300, 86400, 810, 990),  # a shorter hint never shortens
        (900, 1800, 86400, 1620, 1980),  # a longer hint lengthens
        (900, 10**9, 86400, 77760, 95040),  # capped at max_interval
        (7200, 10**9, 3600, 6480, 7920),  # the cap never goes below the interval
    ],
)
def test_next_poll_after_success(
    interval: float, cache_hint: float | None, max_interval: float, low: float, high: float
) -> None:
    rng = Random(1)
    delays = [
        seconds_after_now(
            next_poll_after_success(
                NOW, interval, rng, cache_hint=cache_hint, max_interval=max_interval
            )
        )
        for _ in range(200)
    ]
    assert all(low <= d <= high for d in delays)
    assert max(delays) - min(delays) > (high - low) / 2  # jitter really spreads the polls


def test_success_without_jitter_is_exact() -> None:
    assert next_poll_after_success(NOW, 900, Random(0), jitter=0) == NOW + timedelta(seconds=900)


def test_same_seed_same_schedule() -> None:
    a = [next_poll_after_success(NOW, 900, Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


# --------------------------------------------------------------------------- errors


def test_backoff_grows_with_each_error_and_stays_under_the_cap() -> None:
    interval, cap = 600.0, 4 * HOUR
    rng = Random(42)
    means = []
    for errors in range(1, 6):
        window_top = min(cap, interval * 2**errors)
        delays = [
            seconds_after_now(backoff(NOW, interval, errors, rng, cap=cap)) for _ in range(300)
        ]
        assert all(interval <= d <= window_top for d in delays)
        means.append(mean(delays))
    assert means == sorted(means) and means[-1] > 5 * means[0]
    many = [seconds_after_now(backoff(NOW, interval, 50, rng, cap=cap)) for _ in range(300)]
    assert max(many) <= cap and mean(many) > cap / 2


@pytest.mark.parametrize(
    ("interval", "errors", "cap", "low", "high"),
    [
        (900, 0, 86400, 900, 900),  # no error yet: the plain interval
        (900, 1, 86400, 900, 1800),
        (900, 3, 86400, 900, 7200),
        (900, 10_000, 86400, 900, 86400),  # huge counts neither overflow nor disable
        (7200, 5, 3600, 7200, 7200),  # a cap below the interval keeps the interval
        (900, -1, 86400, 900, 900),
    ],
)
def test_backoff_window(interval: float, errors: int, cap: float, low: float, high: float) -> None:
    rng = Random(3)
    for _ in range(100):
        delay = seconds_after_now(backoff(NOW, interval, errors, rng, cap=cap))
        assert low <= delay <= high


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", NOW + timedelta(seconds=120)),
        (" 0 ", NOW),
        ("Tue, 01 Oct 2024 12:30:00 GMT", NOW + timedelta(minutes=30)),
        ("Tue, 01 Oct 2024 14:30:00 +0200", NOW + timedelta(minutes=30)),
        ("Tue, 01 Oct 2024 12:30:00 -0000", NOW + timedelta(minutes=30)),
        ("Mon, 30 Sep 2024 12:00:00 GMT", NOW),  # in the past: floored at now
        ("99999999999999999999", NOW + timedelta(days=7)),  # capped
        ("Fri, 01 Oct 2100 00:00:00 GMT", NOW + timedelta(days=7)),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("Tue, 32 Oct 2024 12:30:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: datetime | None) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [
        (None, 900, 1800),  # backoff alone (one error)
        ("60", 900, 1800),  # a shorter Retry-After does not hurry the backoff
        ("7200", 7200, 7200),  # a longer one is honoured
        ("Tue, 01 Oct 2024 15:00:00 GMT", 3 * HOUR, 3 * HOUR),
        ("garbage", 900, 1800),
    ],
)
def test_next_poll_after_error(retry_after: str | None, low: float, high: float) -> None:
    delay = seconds_after_now(next_poll_after_error(NOW, 900, 1, Random(5), retry_after))
    assert low <= delay <= high


# --------------------------------------------------------------------------- cache hints


@pytest.mark.parametrize(
    ("headers", "ttl", "expected"),
    [
        ({}, None, None),
        ({"cache-control": "public, max-age=1800"}, None, 1800.0),
        ({"Cache-Control": "max-age=600, must-revalidate"}, None, 600.0),  # any case
        ({"cache-control": "max-age=0"}, None, None),
        ({"expires": "Tue, 01 Oct 2024 13:00:00 GMT"}, None, 3600.0),
        (  # Expires measured against the server's Date, whatever our clock says
            {"expires": "Tue, 01 Oct 2024 13:00:00 GMT", "date": "Tue, 01 Oct 2024 12:50:00 GMT"},
            None,
            600.0,
        ),
        ({"expires": "Tue, 01 Oct 2024 11:00:00 GMT"}, None, None),  # already expired
        ({"expires": "0"}, None, None),  # the common "already expired" spelling
        (  # max-age wins over Expires
            {"cache-control": "max-age=300", "expires": "Tue, 01 Oct 2024 20:00:00 GMT"},
            None,
            300.0,
        ),
        ({"cache-control": "no-cache", "expires": "Tue, 01 Oct 2024 20:00:00 GMT"}, None, None),
        ({}, 3600, 3600.0),  # RSS <ttl>60</ttl>
        ({"cache-control": "max-age=300"}, 3600, 3600.0),  # the longest hint
        ({"cache-control": "max-age=7200"}, 3600, 7200.0),
    ],
)
def test_cache_hint_seconds(
    headers: dict[str, str], ttl: int | None, expected: float | None
) -> None:
    assert cache_hint_seconds(headers, NOW, ttl) == expected


def test_cache_hint_feeds_the_success_schedule() -> None:
    hint = cache_hint_seconds({"cache-control": "max-age=3600"}, NOW, None)
    when = next_poll_after_success(NOW, 900, Random(0), jitter=0, cache_hint=hint)
    assert when == NOW + timedelta(hours=1)
