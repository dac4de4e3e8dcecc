"""CLI of the feature build: ``python -m jobs.fraud.build_features --date 2018-05-01`` (or ``--start/--end``).

``--materialize`` then applies the Feast repo and loads the online store. This module sits above
:mod:`jobs.fraud.features` (the Spark job) and :mod:`jobs.platform.feature_store` (Feast), so neither imports the
other. Also ``spark-submit jobs/fraud/build_features.py ...`` against a cluster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/fraud/build_features.py: make `jobs` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from jobs.fraud.features import build_features, snapshot_timestamp

__all__ = ["build_features", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.fraud.build_features", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--date", help="one snapshot day (YYYY-MM-DD)")
    parser.add_argument("--start", help="first snapshot day of a range")
    parser.add_argument("--end", help="last snapshot day of a range (default: --start)")
    parser.add_argument(
        "--materialize",
        action="store_true",
        help="then apply feature_repo/fraud/ and materialize to the online store",
    )
    args = parser.parse_args(argv)
    start = args.date or args.start
    if not start:
        parser.error("give --date or --start")
    end = args.end or start
    result = build_features(start, end)
    print(result.as_dict())
    if args.materialize:
        from jobs.platform.feature_store import apply, materialize

        apply()  # idempotent; keeps the materialization watermark of unchanged views
        print(materialize(snapshot_timestamp(end), start=snapshot_timestamp(start)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
