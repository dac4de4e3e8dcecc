"""The core's listwise metrics (NDCG@k, MRR, recall@k over query groups) on hand-computed examples
and against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jobs.platform import metrics as M


def test_ndcg_hand_computed():
    # one query, relevance [0, 2, 1] ranked by score as [2, 1, 0]: items 1 (rel 2), 2 (rel 1), 0 (rel 0)
    group, rel, score = [7, 7, 7], [0, 2, 1], [0.1, 0.9, 0.5]
    assert M.ndcg_at_k(group, rel, score, k=3) == pytest.approx(1.0)
    # the reverse order: DCG = 0/1 + 1/log2(3) + 3/log2(4); ideal = 3/1 + 1/log2(3)
    reverse = [0.9, 0.1, 0.5]
    dcg = 1 / math.log2(3) + 3 / 2
    ideal = 3 + 1 / math.log2(3)
    assert M.ndcg_at_k(group, rel, reverse, k=3) == pytest.approx(dcg / ideal)
    # k=1 sees only the top row (rel 0 when reversed)
    assert M.ndcg_at_k(group, rel, reverse, k=1) == 0.0


def test_groups_without_a_relevant_row_are_left_out():
    group = [1, 1, 2, 2]
    rel = [1, 0, 0, 0]
    assert M.ndcg_per_group(group, rel, [0.9, 0.1, 0.3, 0.2], 10).tolist() == [1.0]
    assert math.isnan(M.ndcg_at_k([1, 1], [0, 0], [0.5, 0.4], 10))
    assert math.isnan(M.mrr([1], [0], [0.3]))


def test_ndcg_matches_sklearn_for_binary_relevance():
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(3)
    n_q, n_items = 50, 30
    rel = (rng.random((n_q, n_items)) < 0.1).astype(int)
    rel[:, 0] = 1  # every query has a relevant item
    score = rng.random((n_q, n_items)) + 0.3 * rel
    group = np.repeat(np.arange(n_q), n_items)
    order = rng.permutation(n_q * n_items)  # rows of a group need not be contiguous
    ours = M.ndcg_at_k(group[order], rel.ravel()[order], score.ravel()[order], k=10)
    assert ours == pytest.approx(ndcg_score(rel, score, k=10), abs=1e-12)


def test_mrr_and_recall():
    group = [1, 1, 1, 2, 2, 2]
    rel = [0, 1, 0, 1, 1, 0]
    score = [0.9, 0.8, 0.1, 0.2, 0.7, 0.9]
    # query 1: first relevant at rank 2; query 2: order (0.9 rel0, 0.7 rel1, 0.2 rel1) -> rank 2
    assert M.mrr(group, rel, score) == pytest.approx(0.5)
    # recall@2: query 1 finds 1/1, query 2 finds 1/2
    assert M.recall_at_k(group, rel, score, 2) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="k"):
        M.recall_at_k(group, rel, score, 0)
    with pytest.raises(ValueError, match="relevance"):
        M.ndcg_at_k(group, [-1, 0, 0, 0, 0, 0], score)
