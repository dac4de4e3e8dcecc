"""CLI alias of :mod:`jobs.features`: ``python -m jobs.build_features --date 2018-05-01``."""

from __future__ import annotations

from jobs.features import build_features, main

__all__ = ["build_features", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
