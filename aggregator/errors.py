"""The exceptions of the project.

    AggregatorError            base of everything raised on purpose
    ├── ConfigError            invalid configuration; carries FILE:LINE problems; exit code 2
    ├── FetchError             a fetch failed; ``kind`` says why (stored on the source)
    ├── ParseError             the body is not a feed, or the parser gave up
    └── StoreError             the database is unreachable or refused a write

Foreign exceptions are caught at the edge where they happen and re-raised as one of these
``from`` the original, so callers handle one family.
"""

from __future__ import annotations

from dataclasses import dataclass

from aggregator.types import ErrorKind


class AggregatorError(Exception):
    """Base of the project's errors."""


@dataclass(frozen=True)
class ConfigProblem:
    file: str  # file name relative to the config directory, e.g. "sources.yaml"
    line: int  # 1-based; 0 when the problem has no position (a missing file)
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class ConfigError(AggregatorError):
    """One or more problems in the config directory."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class FetchError(AggregatorError):
    """A fetch that did not give a feed body or a 304."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        url: str = "",
        status: int | None = None,
        retry_after: str | None = None,
        permanent_url: str | None = None,
    ) -> None:
        self.kind = kind
        self.message = message
        self.url = url
        self.status = status
        self.retry_after = retry_after  # the raw Retry-After header, when the server sent one
        self.permanent_url = permanent_url  # 301/308 chain seen before the failure
        super().__init__(message)


class ParseError(AggregatorError):
    """The body could not be turned into a feed."""

    def __init__(self, kind: ErrorKind, message: str, *, advertised_url: str | None = None) -> None:
        self.kind = kind
        self.message = message
        self.advertised_url = advertised_url  # feed URL an HTML page points to
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        # Raised in a parser process and re-raised here: keep the keyword argument.
        return (self.__class__, (self.kind, self.message), {"advertised_url": self.advertised_url})


class StoreError(AggregatorError):
    """The store is unreachable or refused an operation."""
