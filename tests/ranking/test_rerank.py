"""The re-ranking rules, each alone on tiny hand-made candidates, then composed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.ranking.rerank import Rules, boost_fresh, compose, diversify, drop_consumed, rerank

NOW = pd.Timestamp("2024-02-01 12:00")


def cands(categories, scores=None, sponsored=None, age_days=None) -> pd.DataFrame:
    n = len(categories)
    return pd.DataFrame(
        {
            "item_id": np.arange(100, 100 + n),
            "score": np.linspace(1.0, 0.1, n) if scores is None else scores,
            "category": categories,
            "sponsored": np.zeros(n, int) if sponsored is None else sponsored,
            "launched_at": NOW - pd.to_timedelta(np.full(n, 30) if age_days is None else age_days, unit="D"),
        }
    )


def max_in_window(categories, window):
    return max(
        max(pd.Series(categories[i : i + window]).value_counts())
        for i in range(max(1, len(categories) - window + 1))
    )


def test_drop_consumed_removes_bought_and_tired_items():
    c = cands([0, 1, 2, 3])
    out = drop_consumed(c, bought={101}, seen={102: 3, 103: 2}, max_seen=3)
    assert out["item_id"].tolist() == [100, 103]


def test_fresh_items_get_the_boost_only():
    c = cands([0, 1], scores=[0.5, 0.5], age_days=[2, 20])
    out = boost_fresh(c, NOW, fresh_days=7, boost=0.1)
    assert out["score"].tolist() == pytest.approx([0.6, 0.5])
    with pytest.raises(ValueError, match="launched_at"):
        boost_fresh(c.drop(columns="launched_at"), NOW, 7, 0.1)


def test_at_most_two_of_a_category_in_any_five_slots():
    c = cands([0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 5])
    slate, violations = diversify(c, 10, max_per_window=2, window=5)
    assert violations == 0 and len(slate) == 10
    assert max_in_window(slate["category"].tolist(), 5) <= 2
    # greedy by score: the best item comes first, the second too (same category is allowed twice)
    assert slate["item_id"].tolist()[:2] == [100, 101]


def test_diversity_gives_way_when_no_item_fits_and_says_so():
    slate, violations = diversify(cands([0] * 6), 4, max_per_window=2, window=5)
    assert len(slate) == 4 and violations == 2
    assert slate["item_id"].tolist() == [100, 101, 102, 103]  # score order kept


def test_sponsored_items_take_their_fixed_slots_within_the_diversity_rule():
    # organic 0,0,1,1,2,2 by score; ads of category 0 (best) and 3
    c = cands([0, 0, 1, 1, 2, 2, 0, 3], scores=[9, 8, 7, 6, 5, 4, 10, 1], sponsored=[0] * 6 + [1, 1])
    slate, violations = compose(c, 6, max_per_window=2, window=5, sponsored_slots=(1, 4))
    assert slate["sponsored"].tolist() == [0, 1, 0, 0, 1, 0]
    # the best ad (category 0) takes slot 1, so the next organic 0 would be a third 0 in five slots
    assert slate["item_id"].tolist()[:3] == [100, 106, 102] and violations == 0
    assert max_in_window(slate["category"].tolist(), 5) <= 2
    only_one = c[c["item_id"] != 107]  # one ad: slot 4 falls back to organic
    slate, _ = compose(only_one, 6, max_per_window=2, window=5, sponsored_slots=(1, 4))
    assert slate["sponsored"].tolist().count(1) == 1 and len(slate) == 6


def test_rerank_composes_the_rules():
    c = cands(
        [0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        sponsored=[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
        age_days=[30] * 12 + [1],
    )
    slate, did = rerank(c, now=NOW, k=10, bought={100}, seen={101: 5})
    assert 100 not in slate["item_id"].tolist() and 101 not in slate["item_id"].tolist()
    assert did["dropped_consumed"] == 2 and did["diversity_violations"] == 0
    assert slate["slot"].tolist() == list(range(10))
    assert set(slate.loc[slate["slot"].isin([2, 7]), "sponsored"]) == {1} and did["sponsored_placed"] == 2
    assert max_in_window(slate["category"].tolist(), 5) <= 2
    with pytest.raises(ValueError, match="window"):
        Rules(window=0)


def test_a_sponsored_slot_gives_way_to_diversity():
    # the only ad is a third category-0 item within five slots: the slot goes to an organic item
    c = cands([0, 0, 1, 2, 0], scores=[9, 8, 7, 6, 10], sponsored=[0, 0, 0, 0, 1])
    slate, violations = compose(c, 4, max_per_window=2, window=5, sponsored_slots=(2,))
    assert slate["item_id"].tolist() == [100, 101, 102, 103] and violations == 0
