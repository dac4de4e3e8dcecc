"""The ranking feature snapshots (Spark) against a plain pandas computation of the same definitions
on simulated days: windows, smoothed CTRs, user x category shares, membership, the catalogue log."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from jobs.ranking.features import CTR_PRIOR, compute_features
from jobs.ranking.world import World, WorldConfig

SMALL = WorldConfig(
    seed=21, n_users=800, n_items=1_500, n_brands=40, new_items_per_day=20, requests_per_day=600
)
DAYS = [SMALL.start_date + dt.timedelta(days=i) for i in range(10)]
START, END = DAYS[7], DAYS[9]


@pytest.fixture(scope="module")
def lake():
    world = World(SMALL)
    files = [world.landing(d) for d in DAYS]
    return {name: pd.concat([f[name] for f in files], ignore_index=True) for name in files[0]}


@pytest.fixture(scope="module")
def tables(spark, lake):
    frames = {name: spark.createDataFrame(frame) for name, frame in lake.items()}
    out = compute_features(
        frames["impressions"], frames["clicks"], frames["purchases"], frames["items"], START, END
    )
    return {name: df.toPandas() for name, df in out.items()}


def expected_counts(lake, key, day, w):
    lo, hi = pd.Timestamp(day) - pd.Timedelta(days=w - 1), pd.Timestamp(day) + pd.Timedelta(days=1)
    out = {}
    for name, frame, col in (
        ("impressions", lake["impressions"], "shown_at"),
        ("clicks", lake["clicks"], "clicked_at"),
        ("purchases", lake["purchases"], "purchased_at"),
    ):
        part = frame[(frame[col] >= lo) & (frame[col] < hi)]
        out[name] = part.groupby(key).size()
    return out


def test_user_and_item_windows_match_pandas(lake, tables):
    a, b = CTR_PRIOR
    for entity, key in (("user", "user_id"), ("item", "item_id")):
        table = tables[entity]
        assert set(table["date"]) == {d.isoformat() for d in (DAYS[7], DAYS[8], DAYS[9])}
        assert (table["event_timestamp"] == pd.to_datetime(table["date"]) + pd.Timedelta(days=1)).all()
        for day in (DAYS[7], DAYS[9]):
            snap = table[table["date"] == day.isoformat()].set_index(key)
            for w in (1, 7, 30):
                counts = expected_counts(lake, key, day, w)
                for kind in ("impressions", "clicks", "purchases"):
                    got = snap[f"{entity}_{kind}_{w}d"]
                    want = counts[kind].reindex(got.index, fill_value=0)
                    np.testing.assert_array_equal(
                        got.to_numpy(), want.to_numpy(), err_msg=f"{entity} {kind} {w}d {day}"
                    )
                imps, clicks = snap[f"{entity}_impressions_{w}d"], snap[f"{entity}_clicks_{w}d"]
                ctr = snap[f"{entity}_ctr_{w}d"]
                if entity == "item":
                    np.testing.assert_allclose(ctr, (clicks + a) / (imps + a + b))
                else:
                    np.testing.assert_allclose(ctr, np.where(imps > 0, clicks / imps.clip(lower=1), 0.0))
            # membership: every entity active in the last 31 days, and only those
            active = expected_counts(lake, key, day, 31)
            members = (
                set(active["impressions"].index)
                | set(active["clicks"].index)
                | set(active["purchases"].index)
            )
            assert set(snap.index) == members


def test_user_category_shares(lake, tables):
    uc = tables["user_category"]
    day = DAYS[9]
    snap = uc[uc["date"] == day.isoformat()]
    category = lake["items"].drop_duplicates("item_id").set_index("item_id")["category"]
    clicks = lake["clicks"][lake["clicks"]["clicked_at"] < pd.Timestamp(day) + pd.Timedelta(days=1)]
    by = (
        clicks.assign(category=category[clicks["item_id"]].to_numpy()).groupby(["user_id", "category"]).size()
    )
    share = (by / by.groupby(level=0).transform("sum")).rename("want")
    joined = snap.set_index(["user_id", "category"]).join(share, how="inner")
    assert len(joined) > 50
    np.testing.assert_allclose(joined["uc_click_share_30d"], joined["want"])
    sums = snap.groupby("user_id")["uc_click_share_30d"].sum()
    assert np.allclose(sums[sums > 0], 1.0)


def test_the_catalogue_is_a_change_log_with_its_times(lake, tables):
    attrs = tables["item_attributes"].sort_values(["item_id", "event_timestamp"], ignore_index=True)
    items = lake["items"].sort_values(["item_id", "updated_at"], ignore_index=True)
    assert len(attrs) == len(items)
    np.testing.assert_array_equal(attrs["item_id"], items["item_id"])
    np.testing.assert_array_equal(attrs["event_timestamp"].to_numpy(), items["updated_at"].to_numpy())
    np.testing.assert_allclose(attrs["price"], items["price"])
    launched = (items["launched_at"] - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    np.testing.assert_array_equal(attrs["launched_at_s"], launched)
