"""Production profile of the feature store: SQL registry in PostgreSQL, online store in Redis.

Uses its own Feast project and Redis database number so it never touches a running platform.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from jobs.fraud import training_data as td
from jobs.fraud.features import CURRENT_FEATURES, build_features, snapshot_timestamp
from jobs.fraud.online import get_online_features
from jobs.platform import feature_store as fs
from jobs.platform.config import Settings
from jobs.platform.storage import StorageLayout
from tests.support.features import expected_features, offline_snapshot, write_simulated_lake
from tests.support.recent_activity import assert_no_skew, replay_through_serving

pytestmark = [pytest.mark.production, pytest.mark.spark]

PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_START = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'
REDIS_DB = 13
PROJECT = "fraud_test_features"


def _require_services(settings: Settings) -> None:
    import psycopg2
    import redis

    try:
        conn = psycopg2.connect(
            host=settings.postgres_host,
            port=settings.postgres_port,
            user=settings.postgres_user,
            dbname="postgres",
        )
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable ({exc}); start it with: {PG_START}")
    conn.autocommit = True
    with conn.cursor() as cur:  # the registry database `make db-production` creates
        name = settings.postgres_databases["feast"]
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    try:
        redis.Redis(host=settings.redis_host, port=settings.redis_port, db=REDIS_DB).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable ({exc}); start it with: {REDIS_START}")


def online_equals_offline(settings, layout, snap_day: dt.date, customers, terminals) -> pd.DataFrame:
    day = snap_day + dt.timedelta(days=1)
    rows = [
        {
            "transaction_id": 10**12 + i,
            "customer_id": int(c),
            "terminal_id": int(t),
            "tx_datetime": f"{day} 08:00:00",
            "tx_amount": 3.0,
        }
        for i, (c, t) in enumerate(zip(customers, terminals, strict=True))
    ]
    online = get_online_features(rows, settings=settings, store=fs.get_store(settings))
    offline = td.historical_features(
        pd.DataFrame(rows)[["transaction_id", "customer_id", "terminal_id"]].assign(
            event_timestamp=pd.Timestamp(f"{day} 08:00")
        ),
        settings=settings,
    )
    # a probe is no lake transaction: its windows ending at it have no offline row (the replay below checks them)
    stored = [f for f in td.FEAST_FEATURES if f not in CURRENT_FEATURES]
    pd.testing.assert_frame_equal(online[stored], offline[stored])
    for row in online.itertuples():
        want = expected_features(layout, row.customer_id, row.terminal_id, day)
        assert {k: getattr(row, k) for k in want} == pytest.approx(want)
    return online


def test_apply_materialize_and_read_with_postgres_registry_and_redis(spark, tmp_path):
    import redis

    settings = Settings(
        profile="production", home=tmp_path, redis_db=REDIS_DB, case={"feast_project": PROJECT}
    )
    _require_services(settings)
    client = redis.Redis(host=settings.redis_host, port=settings.redis_port, db=REDIS_DB)
    client.flushdb()
    store = fs.get_store(settings)
    assert type(store.registry).__name__ == "SqlRegistry"
    assert store.config.online_store.type == "redis"
    for view in store.list_feature_views():  # a previous run's watermark belongs to another lake
        store.registry.delete_feature_view(view.name, PROJECT, commit=True)

    layout = StorageLayout(settings)
    write_simulated_lake(layout, dt.date(2018, 4, 1), dt.date(2018, 4, 12))
    build_features(dt.date(2018, 4, 10), dt.date(2018, 4, 12), settings=settings, spark=spark)
    summary = fs.apply(settings)
    assert (
        summary["feature_services"] == ["fraud_v1", "fraud_v2", "fraud_v3"] and summary["project"] == PROJECT
    )
    done = fs.materialize(dt.date(2018, 4, 11), settings=settings)
    assert {v["mode"] for v in done.values()} == {"full"}
    assert client.dbsize() > 0  # written to our Redis database

    rng = np.random.default_rng(2)
    day_tx = pd.read_parquet(layout.path("transactions", dt.date(2018, 4, 11)))
    victim = int(day_tx.customer_id.iloc[0])  # a customer with a transaction on 04-11
    customers = [
        victim,
        *rng.choice(list(offline_snapshot(layout, "customer", dt.date(2018, 4, 11)).index), 29),
    ]
    terminals = rng.choice(list(offline_snapshot(layout, "terminal", dt.date(2018, 4, 11)).index), 30)
    online_equals_offline(settings, layout, dt.date(2018, 4, 11), customers, terminals)

    # a recomputed snapshot (late correction of day 04-11) replaces the values with the SAME
    # event timestamp in Redis (skip_dedup) when the day is re-materialized
    path = next(layout.path("transactions", dt.date(2018, 4, 11)).glob("*.parquet"))
    tx = pd.read_parquet(path)
    extra = (
        tx[tx.customer_id == victim]
        .head(1)
        .assign(transaction_id=tx.transaction_id.max() + 1, tx_amount=999.0)
    )
    pd.concat([tx, extra]).to_parquet(path, index=False, coerce_timestamps="us")
    before = offline_snapshot(layout, "customer", dt.date(2018, 4, 11)).loc[victim]
    build_features(dt.date(2018, 4, 11), settings=settings, spark=spark)
    after = offline_snapshot(layout, "customer", dt.date(2018, 4, 11)).loc[victim]
    assert after["customer_nb_tx_1d"] == before["customer_nb_tx_1d"] + 1
    done = fs.materialize(dt.date(2018, 4, 11), settings=settings, start=dt.date(2018, 4, 11))
    assert {v["end"] for v in done.values()} == {snapshot_timestamp("2018-04-11").isoformat()}
    online = online_equals_offline(settings, layout, dt.date(2018, 4, 11), customers, terminals)
    assert online.loc[online.customer_id == victim, "customer_nb_tx_1d"].iloc[0] == after["customer_nb_tx_1d"]

    # the watermark lives in PostgreSQL: a fresh process (new store object) sees it
    assert set(fs.watermarks(settings).values()) == {snapshot_timestamp("2018-04-11")}

    # the stream features: served from the snapshot of 04-11 and the pushed view in Redis == the batch
    # values training sees for the transactions of 04-12 (rebuilt: they read the corrected 04-11)
    build_features(dt.date(2018, 4, 12), settings=settings, spark=spark)
    assert_no_skew(*replay_through_serving(settings, dt.date(2018, 4, 12)))
    client.flushdb()
