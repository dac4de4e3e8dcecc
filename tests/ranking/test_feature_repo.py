"""The ranking Feast project: its definitions applied to a Feast store over feature tables computed
from simulated days; the point-in-time join gives each impression the previous day's snapshot and
the item as the catalogue described it at that moment, and the online store (after
materialization) serves the same values as the offline join."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.platform.feature_store import _definitions, _file_source, join_service
from jobs.ranking.features import compute_features
from jobs.ranking.world import World, WorldConfig

SMALL = WorldConfig(
    seed=8, n_users=600, n_items=1_000, n_brands=30, new_items_per_day=15, requests_per_day=500
)
DAYS = [SMALL.start_date + dt.timedelta(days=i) for i in range(11)]
START, END = DAYS[8], DAYS[10]


@pytest.fixture(scope="module")
def store(spark, tmp_path_factory):
    from feast import FeatureStore, RepoConfig

    root = tmp_path_factory.mktemp("ranking_feast")
    world = World(SMALL)
    files = [world.landing(d) for d in DAYS]
    lake = {name: pd.concat([f[name] for f in files], ignore_index=True) for name in files[0]}
    frames = {name: spark.createDataFrame(frame) for name, frame in lake.items()}
    tables = compute_features(
        frames["impressions"], frames["clicks"], frames["purchases"], frames["items"], START, END
    )
    for table, df in tables.items():
        pdf = df.toPandas()
        pdf.attrs = {}  # Spark Connect's plan metrics are not parquet metadata
        pdf["event_timestamp"] = pdf["event_timestamp"].dt.tz_localize("UTC")  # as Spark writes it
        for date, part in pdf.groupby("date"):
            out = root / "features" / table / f"date={date}"
            out.mkdir(parents=True)
            part.drop(columns="date").to_parquet(out / "part-0.parquet", index=False)
    objects = []
    for obj in _definitions("ranking"):
        source = _file_source(obj)
        if source is not None:
            obj = copy.deepcopy(obj)
            _file_source(obj).file_options.uri = str(root / "features" / Path(source.path).name)
        objects.append(obj)
    config = RepoConfig(
        project="ranking_test",
        provider="local",
        registry={"registry_type": "file", "path": str(root / "registry.db")},
        online_store={"type": "sqlite", "path": str(root / "online.db")},
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
    )
    fs = FeatureStore(config=config)
    fs.apply(objects)
    return fs, lake, {t: df.toPandas() for t, df in tables.items()}


def entity_rows(lake, day, n=300):
    imp = lake["impressions"]
    rows = imp[imp["shown_at"].dt.date == day].head(n)
    category = lake["items"].drop_duplicates("item_id").set_index("item_id")["category"]
    return pd.DataFrame(
        {
            "user_id": rows["user_id"].to_numpy(),
            "item_id": rows["item_id"].to_numpy(),
            "category": category[rows["item_id"]].to_numpy(),
            "event_timestamp": rows["shown_at"].dt.tz_localize("UTC").to_numpy(),
        }
    )


def test_the_feature_service_joins_the_previous_days_snapshot(store):
    fs, lake, tables = store
    rows = entity_rows(lake, DAYS[10])
    got = join_service(rows, fs, "ranker_v1")
    assert len(got) == len(rows)  # every impression, with or without a snapshot row
    got = got.sort_values(["user_id", "item_id", "event_timestamp"], ignore_index=True)
    snap_user = tables["user"][tables["user"]["date"] == DAYS[9].isoformat()].set_index("user_id")
    snap_item = tables["item"][tables["item"]["date"] == DAYS[9].isoformat()].set_index("item_id")
    want_user = snap_user["user_clicks_7d"].reindex(got["user_id"]).fillna(0).to_numpy()
    np.testing.assert_array_equal(got["user_clicks_7d"].fillna(0).to_numpy(), want_user)
    want_item = snap_item["item_impressions_30d"].reindex(got["item_id"]).fillna(0).to_numpy()
    np.testing.assert_array_equal(got["item_impressions_30d"].fillna(0).to_numpy(), want_item)
    # the item as it was at the request: its last change at or before the impression
    changes = lake["items"].sort_values("updated_at")
    for r in got.head(50).itertuples():
        seen = changes[
            (changes["item_id"] == r.item_id) & (changes["updated_at"] <= r.event_timestamp.tz_localize(None))
        ]
        assert r.price == pytest.approx(seen["price"].iloc[-1])
    assert got["uc_click_share_30d"].notna().any()


def test_online_serves_what_the_offline_join_gives(store):
    fs, lake, _ = store
    fs.materialize(
        dt.datetime.combine(DAYS[0], dt.time()),
        dt.datetime.combine(DAYS[10], dt.time()) + dt.timedelta(hours=12),
    )
    rows = entity_rows(lake, DAYS[10]).drop_duplicates(["user_id", "item_id"]).head(100)
    at = pd.Timestamp(DAYS[10], tz="UTC") + pd.Timedelta(hours=12)
    offline = join_service(rows.assign(event_timestamp=at), fs, "ranker_v1")
    online = fs.get_online_features(
        features=fs.get_feature_service("ranker_v1"),
        entity_rows=rows[["user_id", "item_id", "category"]].to_dict("records"),
    ).to_df()
    key = ["user_id", "item_id", "category"]
    offline = offline.sort_values(key, ignore_index=True)
    online = online.sort_values(key, ignore_index=True)
    for column in ("user_clicks_7d", "item_ctr_7d", "uc_clicks_30d", "price", "launched_at_s"):
        np.testing.assert_allclose(
            online[column].astype(float).fillna(-1).to_numpy(),
            offline[column].astype(float).fillna(-1).to_numpy(),
            err_msg=column,
        )
