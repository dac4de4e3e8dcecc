"""Feature tables for tests: a simulated lake per the data contract, reading snapshots back, and what a
request must see; comparing the feature tables of two storage layouts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from jobs.fraud import training_data as td
from jobs.fraud.features import CUSTOMER_FEATURES, TERMINAL_FEATURES
from jobs.fraud.simulate import SimulatorConfig, write_lake
from jobs.platform.storage import StorageLayout

SIM = SimulatorConfig(n_customers=120, n_terminals=240, dup_rate=0.0)  # the feature-store tests' world
VIEWS = {"customer": CUSTOMER_FEATURES, "terminal": TERMINAL_FEATURES}


def write_simulated_lake(
    layout: StorageLayout, first: dt.date, last: dt.date, cfg: SimulatorConfig = SIM
) -> None:
    """Lake partitions per the data contract, straight from the simulator (what ingestion publishes)."""
    write_lake(cfg, first, last, layout)


def offline_snapshot(layout: StorageLayout, view: str, day: dt.date) -> pd.DataFrame:
    """The feature table partition of ``day``, indexed by entity id."""
    files = sorted(layout.path("features", day, view).glob("*.parquet"))
    df = pd.concat([pd.read_parquet(f) for f in files])
    return df.set_index(f"{view}_id")[VIEWS[view]]


def expected_features(layout: StorageLayout, customer: int, terminal: int, day: dt.date) -> dict:
    """The snapshot features a request on ``day`` must see: the snapshot of day-1, or the defaults."""
    out = {name: td.FEATURE_DEFAULTS[name] for name in td.SNAPSHOT_FEATURES}
    for view, entity in (("customer", customer), ("terminal", terminal)):
        snap = offline_snapshot(layout, view, day - dt.timedelta(days=1))
        if entity in snap.index:
            out.update(snap.loc[entity].to_dict())
    return out


def assert_same_feature_tables(expected, actual, views=("customer", "terminal", "recent")) -> None:
    """The feature tables of two storage layouts: the same partitions, row for row (order-free)."""

    def frame(path: Path):
        df = pd.concat([pd.read_parquet(f) for f in sorted(path.glob("*.parquet"))])
        return df.sort_values(list(df.columns)).reset_index(drop=True)

    assert expected.partitions("features", "customer"), "the expected build wrote nothing"
    for view in views:
        assert actual.partitions("features", view) == expected.partitions("features", view), view
        for day in expected.partitions("features", view):
            left, right = (frame(lay.path("features", day, view)) for lay in (expected, actual))
            pd.testing.assert_frame_equal(left, right, check_exact=True, obj=f"{view} {day}")
