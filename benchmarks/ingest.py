"""Ingestion speed: seconds per simulated day at the default size (~9.7k rows/day).

Measured against a baseline run in the same process on the same files: pandas ``read_csv`` ->
``drop_duplicates`` -> ``to_parquet`` (no validation, no quarantine, no accounting) -- what "just load it"
would cost. The first ingested day includes the one-off Spark/GX warm-up and is reported separately.

    python -m benchmarks.ingest [--days 4] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

from jobs.fraud.simulate import SimulatorConfig, simulate
from jobs.platform.config import Settings
from jobs.platform.ingest import ingest_labels, ingest_transactions
from jobs.platform.spark import get_spark
from jobs.platform.storage import StorageLayout


def baseline(layout: StorageLayout, day: dt.date, out: Path) -> float:
    import pandas as pd

    start = time.perf_counter()
    df = pd.read_csv(
        layout.path("landing_transactions", day) / "transactions.csv", parse_dates=["tx_datetime"]
    )
    df.drop_duplicates("transaction_id").sort_values(["tx_datetime", "transaction_id"]).to_parquet(out)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--scale", type=float, default=1.0)
    args = p.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    settings = Settings(home=home)
    layout = StorageLayout(settings)
    start = dt.date(2018, 4, 10)
    days = [start + dt.timedelta(days=i) for i in range(args.days)]
    simulate(SimulatorConfig(scale=args.scale), days[0], days[-1], layout)
    spark = get_spark("bench-ingest", settings)
    print(f"{'day':<12}{'rows':>8}{'ingest tx s':>13}{'labels s':>10}{'baseline s':>12}")
    times = []
    for i, day in enumerate(days):
        t0 = time.perf_counter()
        tx = ingest_transactions(day, settings, spark)
        t1 = time.perf_counter()
        ingest_labels(day, settings, spark)
        t2 = time.perf_counter()
        base = baseline(layout, day, home / f"baseline-{day}.parquet")
        note = "  (warm-up)" if i == 0 else ""
        print(f"{day!s:<12}{tx.rows_in:>8}{t1 - t0:>13.2f}{t2 - t1:>10.2f}{base:>12.3f}{note}", flush=True)
        if i:
            times.append((t1 - t0, t2 - t1, base))
    if times:
        n = len(times)
        tx_s, lb_s, base_s = (sum(t[k] for t in times) / n for k in range(3))
        print(
            f"\nsteady state: transactions {tx_s:.2f} s/day, labels {lb_s:.2f} s/day, baseline {base_s:.3f} s/day"
        )
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
