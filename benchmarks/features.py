"""Feature computation and materialization throughput on the default 183-day dataset (~1.75M tx).

1. the lake is written straight from the simulator (what ingestion would publish);
2. **feature computation**: ``jobs.fraud.features.build_features`` for every snapshot day in one Spark
   job -> transactions read per second and feature rows written per second;
3. **materialization**, each into a fresh online store (SQLite, the local profile):
   * baseline: Feast's own plain ``FeatureStore.materialize(first, last)`` over the full range;
   * ours, full: ``jobs.platform.feature_store.materialize(last)`` on an empty watermark (same work plus the
     watermark bookkeeping);
   * ours, daily: the next day's incremental run (one new snapshot), what the DAG does every day.

``python -m benchmarks.features [--days 183] [--customers 5000] [--terminals 10000] [--home DIR]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _fresh_store(settings) -> None:
    """Drop the registry and online store (the offline tables stay)."""
    shutil.rmtree(settings.feast_home, ignore_errors=True)


def run(args: argparse.Namespace) -> dict:
    from jobs.fraud.features import build_features, snapshot_timestamp
    from jobs.fraud.simulate import SimulatorConfig, write_lake
    from jobs.platform import feature_store as fs
    from jobs.platform.config import Settings
    from jobs.platform.storage import StorageLayout

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="bench-features-"))
    settings = Settings(home=home, case={"feast_project": "bench_features"}, spark_driver_memory="3g")
    layout = StorageLayout(settings)
    first = dt.date.fromisoformat(settings.case.start_date)
    last = first + dt.timedelta(days=args.days - 1)
    out: dict = {"days": args.days, "home": str(home)}

    t0 = time.monotonic()
    cfg = SimulatorConfig(n_customers=args.customers, n_terminals=args.terminals)
    out["transactions"] = write_lake(cfg, first, last, layout)
    out["lake_write_s"] = time.monotonic() - t0

    # feature computation: all snapshot days but the last (kept for the daily run below)
    from jobs.platform.spark import get_spark

    spark = get_spark("bench-features", settings)
    spark.range(1).count()  # JVM warm-up outside the timing
    t0 = time.monotonic()
    built = build_features(first, last - dt.timedelta(days=1), settings=settings, spark=spark)
    out["build_s"] = time.monotonic() - t0
    out["feature_rows"] = sum(built.rows.values())
    out["build_tx_read"] = built.transactions_read
    out["build_tx_per_s"] = built.transactions_read / out["build_s"]
    out["build_rows_per_s"] = out["feature_rows"] / out["build_s"]
    t0 = time.monotonic()
    daily = build_features(last, settings=settings, spark=spark)
    out["build_daily_s"] = time.monotonic() - t0
    out["daily_feature_rows"] = sum(daily.rows.values())
    spark.stop()

    offline_rows = out["feature_rows"]
    end_ts = snapshot_timestamp(last - dt.timedelta(days=1))
    start_ts = snapshot_timestamp(first)

    # baseline: Feast's plain full materialize
    _fresh_store(settings)
    fs.apply(settings)
    store = fs.get_store(settings)
    t0 = time.monotonic()
    store.materialize(start_date=start_ts, end_date=end_ts)
    out["feast_materialize_s"] = time.monotonic() - t0
    out["feast_rows_per_s"] = offline_rows / out["feast_materialize_s"]

    # ours: full (empty watermark), then the daily incremental run
    _fresh_store(settings)
    fs.apply(settings)
    t0 = time.monotonic()
    done = fs.materialize(last - dt.timedelta(days=1), settings=settings)
    out["ours_full_s"] = time.monotonic() - t0
    out["ours_full_rows_per_s"] = offline_rows / out["ours_full_s"]
    out["ours_full_modes"] = sorted({v["mode"] for v in done.values()})
    t0 = time.monotonic()
    done = fs.materialize(last, settings=settings)
    out["ours_daily_s"] = time.monotonic() - t0
    out["ours_daily_rows"] = sum(v["offline_rows"] for v in done.values())
    out["ours_daily_rows_per_s"] = out["ours_daily_rows"] / out["ours_daily_s"]
    if not args.keep and not args.home:
        shutil.rmtree(home, ignore_errors=True)
    return out


def print_table(r: dict) -> None:
    print(f"\nfeatures benchmark: {r['days']} days, {r['transactions']:,} transactions")
    print(f"(lake written from the simulator in {r['lake_write_s']:.1f} s)\n")
    print(f"{'step':<52}{'rows':>12}{'seconds':>10}{'rows/s':>12}")
    rows = [
        (
            "feature computation (Spark, all days), tx read",
            r["transactions"],
            r["build_s"],
            r["build_tx_per_s"],
        ),
        (
            "feature computation (Spark, all days), rows written",
            r["feature_rows"],
            r["build_s"],
            r["build_rows_per_s"],
        ),
        ("feature computation, one daily run", r["daily_feature_rows"], r["build_daily_s"], None),
        (
            "materialize full: Feast plain materialize (baseline)",
            r["feature_rows"],
            r["feast_materialize_s"],
            r["feast_rows_per_s"],
        ),
        (
            "materialize full: jobs.platform.feature_store.materialize",
            r["feature_rows"],
            r["ours_full_s"],
            r["ours_full_rows_per_s"],
        ),
        (
            "materialize daily incremental (ours)",
            r["ours_daily_rows"],
            r["ours_daily_s"],
            r["ours_daily_rows_per_s"],
        ),
    ]
    for name, n, s, rate in rows:
        rate_s = f"{rate:>12,.0f}" if rate is not None else f"{n / s:>12,.0f}"
        print(f"{name:<52}{n:>12,}{s:>10.1f}{rate_s}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.features", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--home", help="platform home to use (default: a temporary folder, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    result = run(parser.parse_args(argv))
    print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
