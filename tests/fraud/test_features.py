"""Feature computation (jobs.fraud.features): equals a slow reference, never leaks the future, idempotent."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from jobs.fraud.features import (
    CUSTOMER_FEATURES,
    TERMINAL_FEATURES,
    WINDOWS,
    build_features,
    compute_features,
    snapshot_timestamp,
)
from jobs.platform.config import Settings
from jobs.platform.storage import StorageLayout

pytestmark = pytest.mark.spark

DELAY = 7
DAY0 = dt.date(2018, 4, 1)
SNAP_START, SNAP_END = dt.date(2018, 5, 1), dt.date(2018, 5, 14)


# --------------------------------------------------------------------------------------------
# a hand-built tiny history with the edge cases spelled out
# --------------------------------------------------------------------------------------------
def _ts(day: dt.date, seconds: int) -> pd.Timestamp:
    return pd.Timestamp(day) + pd.Timedelta(seconds=seconds)


def tiny_history() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(7)
    rows = []
    for k in range(44):  # 2018-04-01 .. 2018-05-14
        day = DAY0 + dt.timedelta(days=k)
        for _ in range(rng.poisson(6)):
            rows.append(
                (_ts(day, int(rng.integers(0, 86_400))), int(rng.integers(0, 5)), int(rng.integers(0, 4)))
            )
    # edge cases: exactly midnight belongs to the new day, one second before to the old one
    rows += [(_ts(dt.date(2018, 5, 3), 0), 0, 0), (_ts(dt.date(2018, 5, 2), 86_399), 0, 0)]
    # customer 9 / terminal 9: one early transaction, so both fall out of their windows mid-range
    rows += [(_ts(dt.date(2018, 4, 3), 50_000), 9, 9)]
    # customer 8 / terminal 8: one transaction just before the range
    rows += [(_ts(dt.date(2018, 4, 30), 3_600), 8, 8)]
    tx = pd.DataFrame(rows, columns=["tx_datetime", "customer_id", "terminal_id"])
    tx = tx.sort_values("tx_datetime", kind="stable").reset_index(drop=True)
    tx.insert(0, "transaction_id", np.arange(len(tx), dtype=np.int64) + 1_000)
    tx["tx_amount"] = np.round(rng.uniform(1, 200, len(tx)), 2)
    tx[["customer_id", "terminal_id"]] = tx[["customer_id", "terminal_id"]].astype("int64")

    # labels: a third of the transactions are frauds, reported 1..10 days later at a random time
    fraud = tx.sample(frac=0.35, random_state=3)
    delay = pd.to_timedelta(rng.integers(1, 11, len(fraud)), unit="D")
    reported = (
        fraud["tx_datetime"].dt.normalize()
        + delay
        + pd.to_timedelta(rng.integers(0, 86_400, len(fraud)), unit="s")
    )
    labels = pd.DataFrame(
        {
            "transaction_id": fraud["transaction_id"].to_numpy(),
            "tx_datetime": fraud["tx_datetime"].to_numpy(),
            "reported_at": reported.to_numpy(),
        }
    )
    # a label reported exactly at a snapshot timestamp is NOT known by that snapshot
    target = tx[
        (tx["tx_datetime"].dt.date == dt.date(2018, 4, 28)) & ~tx.transaction_id.isin(labels.transaction_id)
    ]
    target = target.iloc[0]
    labels.loc[len(labels)] = [target.transaction_id, target.tx_datetime, pd.Timestamp("2018-05-06 00:00:00")]
    labels["tx_fraud"] = np.int32(1)
    return tx, labels.astype({"transaction_id": "int64"})


# --------------------------------------------------------------------------------------------
# the slow, obviously-correct reference
# --------------------------------------------------------------------------------------------
def reference(tx: pd.DataFrame, labels: pd.DataFrame, day: dt.date) -> tuple[dict, dict]:
    """Feature rows of snapshot ``day`` by plain loops over the raw records."""
    cutoff = pd.Timestamp(day + dt.timedelta(days=1))  # the snapshot timestamp
    records = [r for r in tx.itertuples() if r.tx_datetime < cutoff]
    known = {int(lb.transaction_id) for lb in labels.itertuples() if lb.reported_at < cutoff}

    def in_days(r, first: dt.date, last: dt.date) -> bool:
        return first <= r.tx_datetime.date() <= last

    customers: dict[int, dict] = {}
    for c in sorted({r.customer_id for r in records}):
        mine = [r for r in records if r.customer_id == c]
        if not any(in_days(r, day - dt.timedelta(days=30), day) for r in mine):
            continue
        row = {}
        for w in WINDOWS:
            amounts = [r.tx_amount for r in mine if in_days(r, day - dt.timedelta(days=w - 1), day)]
            row[f"customer_nb_tx_{w}d"] = len(amounts)
            row[f"customer_avg_amount_{w}d"] = sum(amounts) / len(amounts) if amounts else 0.0
        customers[c] = row

    terminals: dict[int, dict] = {}
    last = day - dt.timedelta(days=DELAY)
    for t in sorted({r.terminal_id for r in records}):
        mine = [r for r in records if r.terminal_id == t]
        if not any(in_days(r, last - dt.timedelta(days=30), last) for r in mine):
            continue
        row = {}
        for w in WINDOWS:
            window = [r for r in mine if in_days(r, last - dt.timedelta(days=w - 1), last)]
            frauds = [r for r in window if int(r.transaction_id) in known]
            row[f"terminal_nb_tx_{w}d"] = len(window)
            row[f"terminal_risk_{w}d"] = len(frauds) / len(window) if window else 0.0
        terminals[t] = row
    return customers, terminals


def run_spark(spark, tx: pd.DataFrame, labels: pd.DataFrame, start: dt.date, end: dt.date):
    tables = compute_features(spark.createDataFrame(tx), spark.createDataFrame(labels), start, end, DELAY)
    return {view: df.toPandas() for view, df in tables.items()}


def as_rows(df: pd.DataFrame, key: str, day: dt.date, features: list[str]) -> dict[int, dict]:
    part = df[df["date"] == day.isoformat()]
    return {int(r[key]): {f: r[f] for f in features} for _, r in part.iterrows()}


def assert_rows_equal(got: dict, want: dict, what: str) -> None:
    assert set(got) == set(want), f"{what}: entities differ: {sorted(set(got) ^ set(want))}"
    for entity, row in want.items():
        for name, value in row.items():
            assert got[entity][name] == pytest.approx(value, abs=1e-9), f"{what} {entity} {name}"


@pytest.fixture(scope="module")
def history():
    return tiny_history()


@pytest.fixture(scope="module")
def computed(spark, history):
    tx, labels = history
    return run_spark(spark, tx, labels, SNAP_START, SNAP_END)


def test_every_feature_equals_the_reference(computed, history):
    tx, labels = history
    for k in range((SNAP_END - SNAP_START).days + 1):
        day = SNAP_START + dt.timedelta(days=k)
        want_c, want_t = reference(tx, labels, day)
        got_c = as_rows(computed["customer"], "customer_id", day, CUSTOMER_FEATURES)
        got_t = as_rows(computed["terminal"], "terminal_id", day, TERMINAL_FEATURES)
        assert_rows_equal(got_c, want_c, f"{day} customer")
        assert_rows_equal(got_t, want_t, f"{day} terminal")
        assert want_c and want_t


def test_snapshot_timestamps_and_edge_cases(spark, computed, history):
    cust, term = computed["customer"], computed["terminal"]
    for df in (cust, term):
        expected = pd.to_datetime(df["date"]) + pd.Timedelta(days=1)  # D+1 00:00 UTC
        assert (pd.to_datetime(df["event_timestamp"]) == expected).all()
    assert snapshot_timestamp("2018-05-01").isoformat() == "2018-05-02T00:00:00+00:00"
    # customer 9's only transaction (04-03) leaves the 30-day window on 05-03: one zero row, then none
    c9 = cust[cust.customer_id == 9].set_index("date")
    assert list(c9.index) == ["2018-05-01", "2018-05-02", "2018-05-03"]
    assert c9.loc["2018-05-02", "customer_nb_tx_30d"] == 1 and c9.loc["2018-05-03", "customer_nb_tx_30d"] == 0
    # terminal 8's only transaction (04-30) enters its shifted window on 05-07 (= 04-30 + delay)
    t8 = term[term.terminal_id == 8].set_index("date")
    assert t8.index.min() == "2018-05-07" and t8.loc["2018-05-07", "terminal_nb_tx_1d"] == 1
    assert t8.loc["2018-05-08", "terminal_nb_tx_1d"] == 0 and t8.loc["2018-05-08", "terminal_nb_tx_7d"] == 1
    # the label reported exactly at 05-06 00:00 is unknown to the 05-05 snapshot (timestamp 05-06
    # 00:00, strict "<"); one second earlier it is known: the boundary is exact
    tx, labels = history
    late = labels[labels.reported_at == pd.Timestamp("2018-05-06")].index[0]
    terminal = int(tx.set_index("transaction_id").loc[labels.loc[late, "transaction_id"], "terminal_id"])
    earlier = labels.copy()
    earlier.loc[late, "reported_at"] = pd.Timestamp("2018-05-05 23:59:59")
    day = dt.date(2018, 5, 5)
    moved = run_spark(spark, tx, earlier, day, day)
    base = as_rows(term, "terminal_id", day, TERMINAL_FEATURES)[terminal]
    now = as_rows(moved["terminal"], "terminal_id", day, TERMINAL_FEATURES)[terminal]
    assert now["terminal_risk_30d"] == pytest.approx(
        base["terminal_risk_30d"] + 1 / base["terminal_nb_tx_30d"]
    )


def test_no_value_changes_when_later_rows_or_labels_are_added(spark, history, computed):
    tx, labels = history
    cut = dt.date(2018, 5, 8)
    cutoff = pd.Timestamp(cut + dt.timedelta(days=1))
    rng = np.random.default_rng(11)
    # transactions at and after the cut-off (one exactly at it), for existing and new entities
    extra_tx = pd.DataFrame(
        {
            "transaction_id": np.arange(50, dtype=np.int64) + 90_000,
            "tx_datetime": [cutoff]
            + [cutoff + pd.Timedelta(seconds=int(s)) for s in rng.integers(1, 6 * 86_400, 49)],
            "customer_id": rng.integers(0, 12, 50).astype("int64"),
            "terminal_id": rng.integers(0, 12, 50).astype("int64"),
            "tx_amount": np.round(rng.uniform(1, 500, 50), 2),
        }
    )
    # labels for OLD transactions (inside every window) reported at or after the cut-off
    unlabelled = tx[(tx.tx_datetime < cutoff) & ~tx.transaction_id.isin(labels.transaction_id)]
    late = unlabelled.sample(n=25, random_state=5)
    extra_labels = pd.DataFrame(
        {
            "transaction_id": late["transaction_id"].to_numpy(),
            "tx_datetime": late["tx_datetime"].to_numpy(),
            "reported_at": [cutoff] + [cutoff + pd.Timedelta(hours=int(h)) for h in rng.integers(1, 200, 24)],
            "tx_fraud": np.int32(1),
        }
    )
    more_tx = pd.concat([tx, extra_tx], ignore_index=True)
    more_labels = pd.concat([labels, extra_labels], ignore_index=True)
    again = run_spark(spark, more_tx, more_labels, SNAP_START, cut)
    for view, key in (("customer", "customer_id"), ("terminal", "terminal_id")):
        before = computed[view][computed[view]["date"] <= cut.isoformat()]
        a = before.sort_values(["date", key]).reset_index(drop=True)
        b = again[view][list(before.columns)].sort_values(["date", key]).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
    # the reference agrees the future data is irrelevant (it filters by time itself)
    assert reference(more_tx, more_labels, cut) == reference(tx, labels, cut)
    # and the added data does change the next snapshot, so the comparison above can fail
    nxt = cut + dt.timedelta(days=1)
    later = run_spark(spark, more_tx, more_labels, nxt, nxt)
    assert as_rows(later["customer"], "customer_id", nxt, CUSTOMER_FEATURES) != as_rows(
        computed["customer"], "customer_id", nxt, CUSTOMER_FEATURES
    )


# --------------------------------------------------------------------------------------------
# the job on a lake: partitions, idempotency
# --------------------------------------------------------------------------------------------
def write_lake(layout: StorageLayout, tx: pd.DataFrame, labels: pd.DataFrame) -> None:
    """Lake partitions per the data contract (transactions by tx day, labels by report day)."""
    opts = {"index": False, "coerce_timestamps": "us", "allow_truncated_timestamps": True}
    for day, part in tx.groupby(tx["tx_datetime"].dt.date):
        path = layout.path("transactions", day)
        path.mkdir(parents=True, exist_ok=True)
        part.to_parquet(path / "part-00000.parquet", **opts)
    for day, part in labels.groupby(labels["reported_at"].dt.date):
        path = layout.path("labels", day)
        path.mkdir(parents=True, exist_ok=True)
        cols = ["transaction_id", "tx_datetime", "reported_at", "tx_fraud"]
        part[cols].to_parquet(path / "part-00000.parquet", **opts)


def read_partition(layout: StorageLayout, view: str, day: dt.date) -> pd.DataFrame:
    files = sorted(layout.path("features", day, view).glob("*.parquet"))
    key = f"{view}_id"
    return pd.concat([pd.read_parquet(f) for f in files]).sort_values(key).reset_index(drop=True)


def test_build_writes_partitions_and_is_idempotent(spark, history, tmp_path):
    settings = Settings(home=tmp_path)
    layout = StorageLayout(settings)
    tx, labels = history
    write_lake(layout, tx, labels)
    start, end = dt.date(2018, 5, 1), dt.date(2018, 5, 4)
    first = build_features(start, end, settings=settings, spark=spark)
    assert first.transactions_read > 0 and first.rows["customer"] > 0
    assert layout.partitions("features", "customer") == [start + dt.timedelta(days=i) for i in range(4)]
    snap1 = {
        (v, d): read_partition(layout, v, d)
        for v in ("customer", "terminal")
        for d in layout.partitions("features", v)
    }
    # a re-run (here of one day of the range) replaces the partitions with identical content
    build_features(dt.date(2018, 5, 3), settings=settings, spark=spark)
    for (view, day), before in snap1.items():
        after = read_partition(layout, view, day)
        pd.testing.assert_frame_equal(before, after)
        assert after[f"{view}_id"].is_unique
    # the files hold the reference values
    want_c, want_t = reference(tx, labels, dt.date(2018, 5, 3))
    got_c = read_partition(layout, "customer", dt.date(2018, 5, 3)).assign(date="2018-05-03")
    got_t = read_partition(layout, "terminal", dt.date(2018, 5, 3)).assign(date="2018-05-03")
    day = dt.date(2018, 5, 3)
    assert_rows_equal(as_rows(got_c, "customer_id", day, CUSTOMER_FEATURES), want_c, "file customer")
    assert_rows_equal(as_rows(got_t, "terminal_id", day, TERMINAL_FEATURES), want_t, "file terminal")
    # no temporary folder is left behind
    assert not list(layout.dataset_root("features").rglob("_tmp-*"))


def test_first_days_have_empty_terminal_snapshots(spark, tmp_path):
    """Before the label delay has passed no terminal is in its window: an empty, typed partition."""
    settings = Settings(home=tmp_path)
    layout = StorageLayout(settings)
    tx, labels = tiny_history()
    write_lake(layout, tx[tx.tx_datetime < "2018-04-04"], labels[labels.reported_at < "2018-04-04"])
    build_features(dt.date(2018, 4, 2), dt.date(2018, 4, 3), settings=settings, spark=spark)
    empty = read_partition(layout, "terminal", dt.date(2018, 4, 3))
    assert len(empty) == 0 and list(empty.columns) == ["terminal_id", "event_timestamp", *TERMINAL_FEATURES]
    assert len(read_partition(layout, "customer", dt.date(2018, 4, 3))) > 0


def test_reversed_range_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="end: value 2018-05-01 is before start"):
        build_features("2018-05-02", "2018-05-01", settings=Settings(home=tmp_path))
