"""The paired bootstrap's weighted metrics equal the reference implementations for any resample:
at unit counts the holdout's own figures, at any counts the figures of the holdout with each unit's
rows repeated as often as it was drawn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from jobs.platform import metrics as M
from jobs.platform.resampling import (
    WeightedBinary,
    WeightedGroupMean,
    paired_bootstrap,
    unit_codes,
    unit_count_chunks,
)


def _binary(n=3000, units=200, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.08).astype(int)
    s = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    if ties:
        s = np.round(s, 2)  # many runs of equal scores, positives and negatives mixed in them
    return y, s, rng.integers(0, units, n), units


@pytest.mark.parametrize("ties", [True, False])
def test_weighted_ap_and_auc_equal_scikit_learn_with_sample_weights(ties):
    y, s, codes, units = _binary(ties=ties)
    metric = WeightedBinary(y, s, codes, units)
    counts = np.vstack([np.ones(units), next(unit_count_chunks(units, 5, seed=3))])
    ap, auc = metric(counts)
    for i, c in enumerate(counts):
        w = c[codes]
        assert ap[i] == pytest.approx(average_precision_score(y, s, sample_weight=w), abs=1e-12)
        assert auc[i] == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)


def test_a_resample_without_positives_is_undefined_not_zero():
    y = np.array([1, 0, 0, 0])
    metric = WeightedBinary(y, np.array([0.9, 0.8, 0.1, 0.2]), np.array([0, 1, 1, 1]), 2)
    ap, auc = metric(np.array([[0.0, 2.0], [2.0, 0.0], [1.0, 1.0]]))
    assert np.isnan(ap[0]) and np.isnan(auc[0])  # only negatives drawn
    assert ap[1] == 1.0 and np.isnan(auc[1])  # only the positive drawn: AP defined, AUC not
    assert ap[2] == 1.0 and auc[2] == 1.0


def test_group_means_weigh_each_group_by_its_units_draws():
    group = np.array(["r1", "r1", "r2", "r2", "r3", "r3"])
    rel = np.array([1, 0, 0, 1, 0, 0])
    score = np.array([0.9, 0.1, 0.8, 0.2, 0.5, 0.4])
    ndcg = M.ndcg_per_group(group, rel, score, 10)  # r1 1.0, r2 1/log2(3); r3 has no click
    rows = M.relevant_group_rows(group, rel)
    assert list(group[rows]) == ["r1", "r2"]
    mean = WeightedGroupMean(ndcg, np.array([0, 1]))
    out = mean(np.array([[1.0, 1.0], [3.0, 1.0], [0.0, 0.0]]))
    assert out[0] == pytest.approx(M.ndcg_at_k(group, rel, score, 10))
    assert out[1] == pytest.approx((3 * 1.0 + 1 / np.log2(3)) / 4)
    assert np.isnan(out[2])


def test_paired_bootstrap_is_seeded_and_pairs_the_two_models():
    y, s, codes, units = _binary(ties=False)
    frame = pd.DataFrame({"unit": codes, "y": y})

    def statistics(f, scores, c, u):
        metric = WeightedBinary(f["y"].to_numpy(), scores, c, u)
        return lambda counts: {"average_precision": metric(counts)[0]}

    a = paired_bootstrap(frame, s, s, statistics, unit="unit", resamples=200, seed=7)
    b = paired_bootstrap(frame, s, s, statistics, unit="unit", resamples=200, seed=7)
    np.testing.assert_array_equal(a.draws["average_precision"], b.draws["average_precision"])
    # the same scores on the same resamples: every paired difference is exactly zero
    estimate, d = a.difference("average_precision")
    assert estimate == 0.0 and len(d) == 200 and not d.any()
    assert a.estimates["average_precision"][0] == pytest.approx(average_precision_score(y, s))
    spread = a.draws["average_precision"][:, 0]
    assert spread.std() > 0.005  # unpaired, the resampled AP itself varies
    with pytest.raises(ValueError, match="bootstrap.unit: column 'card' is not in the holdout"):
        unit_codes(frame, "card")
