"""Candidate generation: ALS + a faiss index, content, fresh and trending strategies, merged into
one de-duplicated list per user; recall measured on the next day's clicks."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from jobs.ranking.retrieval import ItemIndex, RetrievalConfig, Retriever, recall
from jobs.ranking.world import World, WorldConfig

SMALL = WorldConfig(
    seed=11, n_users=3_000, n_items=4_000, n_brands=60, new_items_per_day=60, requests_per_day=3_000
)
DAYS = [SMALL.start_date + dt.timedelta(days=i) for i in range(8)]
CFG = RetrievalConfig(
    factors=16, iterations=8, quotas={"cf": 60, "content": 30, "fresh": 10, "trending": 10}, total=100
)


@pytest.fixture(scope="module")
def fitted():
    world = World(SMALL)
    traffic = [world.traffic(d) for d in DAYS]
    end = pd.Timestamp(DAYS[-1])  # train on days 0..6, test on day 7
    imp = pd.concat([t.impressions for t in traffic[:-1]])
    clicks = pd.concat([t.clicks for t in traffic[:-1]])
    buys = pd.concat([t.purchases for t in traffic[:-1]])
    cat = world.catalogue(DAYS[-1])
    items = pd.DataFrame(
        {
            "item_id": cat.item_id,
            "category": cat.category,
            "brand": cat.brand,
            "launched_at": pd.Timestamp(SMALL.start_date) + pd.to_timedelta(cat.launch_day, unit="D"),
        }
    )
    retriever = Retriever.fit(
        imp,
        clicks[clicks["clicked_at"] < end],
        buys[buys["purchased_at"] < end],
        items,
        DAYS[-2],
        SMALL.n_users,
        CFG,
    )
    return world, retriever, traffic[-1].clicks, items


def test_merged_candidates_are_unique_tagged_and_filled(fitted):
    world, retriever, truth, _ = fitted
    users = np.r_[truth["user_id"].unique()[:200], [SMALL.n_users - 1]]
    cands = retriever.candidates(users)
    assert (cands.groupby("user_id").size() == CFG.total).all()
    assert not cands.duplicated(["user_id", "item_id"]).any()
    assert set(cands["strategy"]) <= {"cf", "content", "fresh", "trending", "popular"}
    assert cands.groupby("user_id")["rank"].apply(lambda r: r.tolist() == list(range(len(r)))).all()
    # each strategy keeps its quota's order: the first cf candidate is the user's nearest item
    u = int(users[0])
    first = cands[(cands["user_id"] == u)].iloc[0]
    if first["strategy"] == "cf":
        assert first["item_id"] == retriever.cf(np.array([u]), 1)[u][0]


def test_a_user_with_no_history_still_gets_a_full_list(fitted):
    _, retriever, _, _ = fitted
    never = np.setdiff1d(np.arange(SMALL.n_users), retriever.seen_users)[:3]
    cands = retriever.candidates(never)
    assert (cands.groupby("user_id").size() == CFG.total).all()
    assert set(cands["strategy"]) <= {"fresh", "trending", "popular"}


def test_fresh_items_are_recent_launches(fitted):
    _, retriever, _, items = fitted
    launched = items.set_index("item_id")["launched_at"]
    cutoff = pd.Timestamp(DAYS[-1]) - pd.Timedelta(days=CFG.fresh_days)
    assert len(retriever.fresh) and (launched[retriever.fresh] >= cutoff).all()


def test_every_strategy_finds_next_day_clicks_and_cf_learns(fitted):
    _, retriever, truth, _ = fitted
    users = truth["user_id"].unique()
    by_strategy = {
        s: recall(retriever.strategy(s, users, CFG.total), truth)
        for s in ("cf", "content", "fresh", "trending")
    }
    merged = recall(retriever.candidates(users), truth)
    assert all(v > 0 for v in by_strategy.values()), by_strategy
    assert merged > 0.2, (merged, by_strategy)
    # ALS beats a random pick of as many indexed items
    rng = np.random.default_rng(0)
    random = {int(u): rng.choice(retriever.index.item_ids, CFG.total, replace=False) for u in users}
    assert by_strategy["cf"] > 2 * recall(random, truth)


def test_recall_hand_computed():
    truth = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 11, 12]})
    cands = {1: np.array([10, 5]), 2: np.array([7])}
    assert recall(cands, truth) == pytest.approx((0.5 + 0.0) / 2)


def test_ivf_index_agrees_with_exact_search_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(60, 16))  # embeddings have structure (tastes), unlike white noise
    vectors = (centres[rng.integers(0, 60, 30_000)] + 0.4 * rng.normal(size=(30_000, 16))).astype(np.float32)
    ids = np.arange(30_000) * 3  # ids are not positions
    exact = ItemIndex.build(vectors, ids, RetrievalConfig(exact_below=10**9))
    approx = ItemIndex.build(vectors, ids, RetrievalConfig(exact_below=1_000, nprobe=64))
    assert exact.kind == "Flat" and approx.kind.startswith("IVF")
    queries = (centres[rng.integers(0, 60, 50)] + 0.4 * rng.normal(size=(50, 16))).astype(np.float32)
    e, _ = exact.search(queries, 100)
    a, _ = approx.search(queries, 100)
    overlap = np.mean([len(np.intersect1d(x, y)) / 100 for x, y in zip(e, a, strict=True)])
    assert overlap > 0.9
    brute = ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :100]]
    assert np.array_equal(np.sort(e, axis=1), np.sort(brute, axis=1))
    loaded = ItemIndex.load(approx.save(tmp_path / "index"), nprobe=64)
    np.testing.assert_array_equal(loaded.search(queries, 100)[0], a)
    assert not list((tmp_path / "index").glob("*.pkl"))


def test_a_saved_retriever_loads_back_identical(fitted, tmp_path):
    """The companion artifact: every strategy gives the same lists after save/load (no pickle)."""
    _, retriever, _, _ = fitted
    loaded = Retriever.load(retriever.save(tmp_path / "retrieval"))
    users = np.arange(0, SMALL.n_users, 7)
    a, b = retriever.candidates(users), loaded.candidates(users)
    pd.testing.assert_frame_equal(a, b)
    assert loaded.as_of == retriever.as_of and loaded.cfg == retriever.cfg
    assert not list(tmp_path.rglob("*.pkl"))
