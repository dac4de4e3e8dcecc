"""The offline evaluation's pieces that decide its verdicts: the paired bootstrap CI of a difference,
slates topped up without repeats, ranking by score, and the checks read from the figures."""

from __future__ import annotations

import numpy as np
import pandas as pd

from jobs.ranking.offline_eval import _ranked, _rule_ablations, _slates, bootstrap_diff, checks
from jobs.ranking.rerank import Rules


def test_bootstrap_ci_covers_the_true_difference_and_excludes_zero_when_clear():
    rng = np.random.default_rng(1)
    a = rng.normal(0.5, 0.1, 2000)
    diff, lo, hi = bootstrap_diff(a + 0.02, a + rng.normal(0, 0.05, 2000))
    assert lo < 0.02 < hi and lo > 0 and abs(diff - 0.02) < 0.01
    diff, lo, hi = bootstrap_diff(a, a + rng.normal(0, 0.05, 2000))  # no difference: the CI holds 0
    assert lo < 0 < hi


def test_slates_are_topped_up_without_repeats_and_ranked_by_score():
    slates = _slates({1: np.array([5, 6])}, np.array([6, 7, 8]), np.array([1, 2]), k=3)
    assert slates[slates["user_id"] == 1]["item_id"].tolist() == [5, 6, 7]
    assert slates[slates["user_id"] == 2]["item_id"].tolist() == [6, 7, 8]
    frame = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [10, 11, 12]})
    ranked = _ranked(frame, np.array([0.1, 0.9, 0.5]), k=2)
    assert ranked["item_id"].tolist() == [11, 12] and ranked["slot"].tolist() == [0, 1]


def test_checks_read_the_bars_from_the_figures():
    strategies = {"full funnel": {"share_of_oracle_ctr": 0.72}}
    minus = {"ALS alone": {"ci_lo": 0.01}, "popularity": {"ci_lo": -0.01}}
    retrieval = {"cf": {"recall_at_500_true": 0.5}, "merged": {"recall_at_500_true": 0.6}}
    got = checks({"strategies": strategies, "funnel_minus": minus, "retrieval": retrieval})
    assert list(got.values()) == [True, False, True, True]


def test_each_rule_is_switched_off_alone_then_all_together():
    rules = Rules()
    got = _rule_ablations(rules)
    assert got["sponsored slots"] == (Rules(sponsored_slots=()), True)
    assert got["freshness boost"][0].fresh_boost == 0.0 and got["freshness boost"][0].sponsored_slots == (
        2,
        7,
    )
    assert got["category diversity"][0].max_per_window > 10 and got["category diversity"][1]
    assert got["seen/bought filter"] == (rules, False)
    everything, filtered = got["all rules"]
    assert not filtered and everything.sponsored_slots == () and everything.fresh_boost == 0.0
