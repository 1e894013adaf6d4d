"""Agency feed aggregator: poll regional news agencies, one entry per story, clean topic feeds."""

__version__ = "0.1.0"
