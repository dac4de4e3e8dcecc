"""Write the simulated shop's daily landing files: ``python -m jobs.ranking.simulate``.

For every day of the range the four files of :meth:`jobs.ranking.world.World.landing` (the
catalogue's changes, the day's impressions, the clicks and purchases that arrive on it) go to
``<home>/data/ranking/landing/<dataset>/date=D/<dataset>.csv``, each written to a temporary name
and renamed, then the producer's done marker (``_SUCCESS``) of every folder, last. The world is
deterministic per day (its seed, its size and drift knobs are ``RANKING_WORLD_*``), so re-writing a
day gives the same bytes. Logged by the popularity policy (the served ranker takes over online,
part 2 of the use case).

CLI: ``python -m jobs.ranking.simulate --days 21 [--start 2024-01-01] [--scale 0.2]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import pandas as pd

from jobs.platform.config import Settings, get_settings
from jobs.platform.landing import mark_landed
from jobs.platform.logs import get_logger
from jobs.platform.storage import StorageLayout, as_date, staged_file
from jobs.ranking.datasets import DATASETS
from jobs.ranking.schema import TIMESTAMP_FORMAT
from jobs.ranking.world import World

USE_CASE = "ranking"


def to_csv(frame: pd.DataFrame, path) -> None:
    with staged_file(path) as tmp:
        frame.to_csv(tmp, index=False, date_format=TIMESTAMP_FORMAT, float_format="%.6g")


def simulate(start: dt.date, end: dt.date, settings: Settings | None = None) -> pd.DataFrame:
    """Write the landing files of days ``start..end``; returns one row of counts per day."""
    settings = (settings or get_settings()).with_use_case(USE_CASE)
    if end < start:
        raise ValueError(f"end: value {end} is before start {start} (rule: start <= end)")
    layout = StorageLayout(settings)
    world = World(settings.case.world_config())
    log = get_logger("simulate", f"{start}..{end}")
    rows = []
    day = start
    while day <= end:
        t0 = time.monotonic()
        files = world.landing(day)
        for name, frame in files.items():
            spec = DATASETS[name]
            to_csv(frame[list(spec.raw_columns)], layout.path(spec.landing, day) / f"{name}.csv")
        for name in files:  # the day is complete: say so, last
            mark_landed(layout.path(DATASETS[name].landing, day), settings)
        row = {"date": day.isoformat(), **{name: len(frame) for name, frame in files.items()}}
        row["seconds"] = round(time.monotonic() - t0, 2)
        log.info("day written", **row)
        rows.append(row)
        day += dt.timedelta(days=1)
    return pd.DataFrame(rows)


_PANDAS_TYPES = {
    "bigint": "int64",
    "int": "int32",
    "double": "float64",
    "timestamp": "datetime64[us]",
    "string": "object",
}


def write_lake(start: dt.date, end: dt.date, settings: Settings | None = None) -> dict[str, int]:
    """Write the lake partitions of days ``start..end`` straight from the world, in the ingestion
    contract's columns and types (what ingestion publishes for clean input), atomically per partition.
    For the offline evaluation and benchmarks, where running ingestion day by day is not the point.
    Returns the rows written per dataset."""
    from jobs.platform.storage import staged_directory
    from jobs.ranking.schema import SCHEMAS

    settings = (settings or get_settings()).with_use_case(USE_CASE)
    layout = StorageLayout(settings)
    world = World(settings.case.world_config())
    totals = dict.fromkeys(SCHEMAS, 0)
    day = start
    while day <= end:
        for name, frame in world.landing(day).items():
            schema = SCHEMAS[name]
            typed = frame[list(schema)].astype({c: _PANDAS_TYPES[t] for c, t in schema.items()})
            with staged_directory(layout.path(name, day)) as tmp:
                tmp.mkdir(parents=True)
                typed.to_parquet(tmp / "part-00000.parquet", index=False)
            totals[name] += len(typed)
        day += dt.timedelta(days=1)
    return totals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.ranking.simulate", description=__doc__.split("\n\n")[0])
    p.add_argument("--start", help="first day to write (default: RANKING_START_DATE)")
    p.add_argument("--days", type=int, default=21, help="number of days to write")
    p.add_argument("--scale", type=float, help="multiply the catalogue (RANKING_WORLD_SCALE)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.days < 1:
        raise SystemExit(f"--days: value {args.days} is invalid; rule: at least 1")
    settings = get_settings().with_use_case(USE_CASE)
    if args.scale is not None:
        settings = settings.with_case(world=settings.case.world.model_copy(update={"scale": args.scale}))
    start = as_date(args.start) if args.start else as_date(settings.case.start_date)
    counts = simulate(start, start + dt.timedelta(days=args.days - 1), settings)
    print(counts.to_string(index=False))
    totals = {c: int(counts[c].sum()) for c in ("items", "impressions", "clicks", "purchases")}
    print("total: " + ", ".join(f"{v} {k}" for k, v in totals.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
