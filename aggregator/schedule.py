"""When to poll a source next: pure arithmetic over ``now``, the interval and the last outcome.

    success:  now + interval (lengthened by a server cache hint, capped) ± jitter
    error:    max(capped exponential backoff with full jitter, the server's Retry-After)

Nothing here reads the clock or draws from a global random generator: ``now`` and a
``random.Random`` are passed in, so every result is reproducible in tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from random import Random

MAX_RETRY_AFTER = timedelta(days=7)
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_NO_STORE = re.compile(r"(?:^|[,\s])(?:no-store|no-cache)\b", re.IGNORECASE)


def next_poll_after_success(
    now: datetime,
    interval: float,
    rng: Random,
    *,
    jitter: float = 0.1,
    cache_hint: float | None = None,
    max_interval: float = 86400.0,
) -> datetime:
    """``now + interval`` ± ``jitter`` (a fraction of it), so sources do not poll in step.

    A server cache hint (seconds) longer than the interval lengthens it, up to
    ``max_interval``; a hint never shortens the configured interval.
    """
    delay = interval
    if cache_hint is not None and cache_hint > interval:
        delay = min(cache_hint, max(max_interval, interval))
    spread = delay * jitter
    delay += rng.uniform(-spread, spread)
    return now + timedelta(seconds=max(delay, 0.0))


def backoff(
    now: datetime,
    interval: float,
    consecutive_errors: int,
    rng: Random,
    *,
    cap: float = 86400.0,
) -> datetime:
    """Capped exponential backoff with full jitter, never shorter than the interval.

    The delay is drawn from ``[interval, min(cap, interval * 2**errors)]``: the window doubles
    with each error, and the source keeps being polled (at worst once per ``cap``).
    """
    exponent = min(max(consecutive_errors, 0), 64)  # 2**64 times any interval is past any cap
    ceiling = max(interval, min(cap, interval * 2.0**exponent))
    return now + timedelta(seconds=rng.uniform(interval, ceiling))


def parse_retry_after(value: str | None, now: datetime) -> datetime | None:
    """The time a ``Retry-After`` header (seconds or HTTP-date) points to.

    Floored at ``now``, capped at ``now`` + 7 days; None when absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        seconds = min(int(text), int(MAX_RETRY_AFTER.total_seconds()))
        return now + timedelta(seconds=seconds)
    when = _http_date(text)
    if when is None:
        return None
    return min(max(when, now), now + MAX_RETRY_AFTER)


def cache_hint_seconds(
    headers: Mapping[str, str], now: datetime, ttl_seconds: int | None
) -> float | None:
    """How long the server says the feed stays fresh, in seconds, or None.

    Cache-Control ``max-age`` wins over ``Expires`` (as in HTTP caching); the feed's own
    RSS ``<ttl>`` (already in seconds) counts too, and the longest hint is taken.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    hints: list[float] = []
    cache_control = lowered.get("cache-control", "")
    max_age = _MAX_AGE.search(cache_control)
    if max_age is not None:
        hints.append(float(max_age.group(1)))
    elif not _NO_STORE.search(cache_control) and "expires" in lowered:
        expires = _http_date(lowered["expires"])
        # Measured against the server's own Date when it sent one, to ignore clock skew.
        reference = _http_date(lowered.get("date", "")) or now
        if expires is not None:
            hints.append((expires - reference).total_seconds())
    if ttl_seconds is not None:
        hints.append(float(ttl_seconds))
    positive = [h for h in hints if h > 0]
    return max(positive) if positive else None


def next_poll_after_error(
    now: datetime,
    interval: float,
    consecutive_errors: int,
    rng: Random,
    retry_after: str | None,
    *,
    cap: float = 86400.0,
) -> datetime:
    """The later of the backoff and the server's Retry-After."""
    delayed = backoff(now, interval, consecutive_errors, rng, cap=cap)
    asked = parse_retry_after(retry_after, now)
    return delayed if asked is None else max(delayed, asked)


def _http_date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    # "-0000" or no zone: HTTP dates are GMT.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
