"""Benchmarks for the aggregator: ours against lemon24's ``reader`` on the same corpus, and
our own targets (store scaling, serving, daemon footprint, topic recompute).

Run ``python -m bench all`` (about 15 minutes on 2 cores) or ``python -m bench all --quick``;
see ``bench/README.md``.
"""
