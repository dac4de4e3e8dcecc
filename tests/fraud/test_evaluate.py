"""Offline metrics and the gate on tiny, hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from jobs.fraud import metrics as FM
from jobs.fraud.evaluation import evaluate_scores
from jobs.fraud.settings import Costs, Gate
from jobs.fraud.use_case import gate_spec
from jobs.platform import metrics as M
from jobs.platform.evaluate import Windows, check_protocol, default_windows, gate, paired_resamples
from jobs.platform.storage import as_date


def _tx(rows):
    return pd.DataFrame(rows, columns=["tx_datetime", "customer_id", "score", "tx_fraud"]).assign(
        tx_datetime=lambda d: pd.to_datetime(d["tx_datetime"])
    )


CP_EXAMPLE = _tx(
    [
        # day 1: cards by max score A .9 (fraud), B .8, C .3 (fraud), D .2 -> top-2 = A, B -> 1/2
        ("2018-04-01 10:00", "A", 0.9, 1),
        ("2018-04-01 11:00", "A", 0.1, 0),
        ("2018-04-01 12:00", "B", 0.8, 0),
        ("2018-04-01 13:00", "C", 0.3, 1),
        ("2018-04-01 14:00", "D", 0.2, 0),
        # day 2: A (found yesterday, blocked) .95 fraud, B .7 fraud, C .6, D .1 fraud
        #   with removal: top-2 = B, C -> 1/2; without: A, B -> 2/2
        ("2018-04-02 09:00", "A", 0.95, 1),
        ("2018-04-02 10:00", "B", 0.4, 0),
        ("2018-04-02 10:30", "B", 0.7, 1),
        ("2018-04-02 11:00", "C", 0.6, 0),
        ("2018-04-02 12:00", "D", 0.1, 1),
        # day 3: a single card, fraudulent: 1 hit / k=2 -> 1/2 (the handbook divides by k)
        ("2018-04-03 08:00", "E", 0.5, 1),
    ]
)


def test_card_precision_at_k_hand_computed():
    per_day = FM.card_precision_at_k_per_day(CP_EXAMPLE, k=2)
    assert per_day["precision"].tolist() == [0.5, 0.5, 0.5]
    assert per_day["hits"].tolist() == [1, 1, 1]
    assert per_day["n_cards"].tolist() == [4, 3, 1]  # day 2: card A removed (detected on day 1)
    assert per_day["n_compromised_cards"].tolist() == [2, 2, 1]
    assert FM.card_precision_at_k(CP_EXAMPLE, k=2) == pytest.approx(0.5)
    no_removal = FM.card_precision_at_k(CP_EXAMPLE, k=2, remove_detected=False)
    assert no_removal == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    # k larger than the number of cards: precision still divides by k
    assert FM.card_precision_at_k(CP_EXAMPLE, k=4, remove_detected=False) == pytest.approx(
        (2 / 4 + 3 / 4 + 1 / 4) / 3  # day 2: A, B and D are compromised
    )


def test_card_precision_uses_the_card_max_not_the_sum():
    # card X has many mediocre transactions, card Y one high: Y ranks first
    df = _tx(
        [("2018-04-01 01:00", "X", 0.5, 0)] * 5
        + [("2018-04-01 02:00", "Y", 0.6, 1), ("2018-04-01 03:00", "Z", 0.55, 1)]
    )
    assert FM.card_precision_at_k(df, k=1) == 1.0
    with pytest.raises(ValueError, match="k: value 0"):
        FM.card_precision_at_k(df, k=0)
    with pytest.raises(ValueError, match="missing column"):
        FM.card_precision_at_k(df.drop(columns="customer_id"), k=1)


def test_cost_optimal_threshold_hand_computed():
    y = [1, 0, 1, 0, 0]
    s = [0.9, 0.8, 0.7, 0.2, 0.1]
    # c_fp=1, c_fn=3: flag >=.9 -> 3, >=.8 -> 4, >=.7 -> 1 (best), >=.2 -> 2, >=.1 -> 3, nothing -> 6
    c = FM.cost_optimal_threshold(y, s, 1.0, 3.0)
    assert c.expected_cost == 1.0 and c.flagged == 3 and c.false_positives == 1 and c.false_negatives == 0
    assert c.threshold == pytest.approx(0.45)  # midpoint between .7 and .2
    assert FM.decision_cost(y, s, c.threshold, 1.0, 3.0) == 1.0
    # c_fn=0.5: flag >=.9 -> 0.5 (best) vs nothing -> 1.0
    c = FM.cost_optimal_threshold(y, s, 1.0, 0.5)
    assert (c.flagged, c.expected_cost, c.threshold) == (1, 0.5, pytest.approx(0.85))
    # false alarms so expensive that approving everything is optimal
    c = FM.cost_optimal_threshold([0, 1], [0.9, 0.1], 10.0, 1.0)
    assert c.flagged == 0 and c.expected_cost == 1.0 and c.threshold > 0.9


def test_threshold_brute_force_agrees_on_random_data():
    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.1
    s = np.round(np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1), 2)  # ties on purpose
    c = FM.cost_optimal_threshold(y, s, 2.0, 30.0)
    brute = min(FM.decision_cost(y, s, t, 2.0, 30.0) for t in np.r_[np.unique(s), 2.0])
    assert c.expected_cost == pytest.approx(brute)
    assert FM.decision_cost(y, s, c.threshold, 2.0, 30.0) == pytest.approx(brute)


def test_protocol_windows_respect_label_delay():
    w = default_windows("2018-05-05", train_days=7, holdout_days=7, label_delay_days=7)
    # handbook shape: train week, 7-day gap, test week, 7 days for the test labels to mature
    assert (w.train_start, w.train_end) == (as_date("2018-04-08"), as_date("2018-04-14"))
    assert (w.holdout_start, w.holdout_end) == (as_date("2018-04-22"), as_date("2018-04-28"))
    check_protocol(w, 7, labels_through=as_date("2018-05-05"))
    with pytest.raises(ValueError, match="holdout_end: value 2018-04-28 has immature labels"):
        check_protocol(w, 7, labels_through=as_date("2018-05-04"))
    bad = Windows(w.train_start, as_date("2018-04-15"), w.holdout_start, w.holdout_end)
    with pytest.raises(ValueError, match="holdout_start: value 2018-04-22 is 6 day"):
        check_protocol(bad, 7)
    clipped = default_windows("2018-05-05", 30, 7, 7, earliest="2018-04-01")
    assert clipped.train_start == as_date("2018-04-01")
    with pytest.raises(ValueError, match="leaves no training days"):
        default_windows("2018-04-20", 7, 7, 7, earliest="2018-04-01")


def _holdout(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.05).astype(int)
    return pd.DataFrame(
        {
            "transaction_id": np.arange(n),
            "tx_datetime": pd.Timestamp("2018-04-22") + pd.to_timedelta(rng.integers(0, 7 * 86400, n), "s"),
            "customer_id": rng.integers(0, 300, n),
            "tx_amount": np.where(rng.random(n) < 0.5, 20.0, 120.0),
            "tx_fraud": y,
        }
    )


def test_evaluation_and_gate_decisions():
    df = _holdout()
    y = df["tx_fraud"].to_numpy()
    rng = np.random.default_rng(1)
    good = np.clip(0.3 * y + 0.7 * rng.random(len(y)), 0, 1)
    costs = Costs(false_positive=1, false_negative=20)
    champion = evaluate_scores(df, good, costs=costs, model_version="1")
    assert set(champion.slices) == {"amount=0-25", "amount=75-150", "week=weekday", "week=weekend"}
    assert 0.8 < champion.metrics["auc_roc"] < 0.99 and champion.per_day["day"].nunique() == 7
    flat = champion.flat()
    assert "holdout_average_precision" in flat and "holdout_slice.amount.0-25.average_precision" in flat

    policy = gate_spec(Gate(margin=0.0, guardrail_tolerance=0.02, slice_tolerance=0.05, min_slice_frauds=20))
    first = gate(champion, None, policy)
    assert first.promote and first.reason.startswith("first champion")
    assert not gate(evaluate_scores(df, rng.random(len(y)), costs=costs), None, policy).promote  # floors

    def decide(scores, version, spec=policy):
        paired = paired_resamples(df, scores, good, spec)
        return gate(evaluate_scores(df, scores, costs=costs, model_version=version), champion, spec, paired)

    # same scores: every paired difference is 0, so the lower bound is 0, not above the margin
    same = decide(good, "2")
    assert not same.promote and "primary.average_precision difference +0.0000" in same.reason
    # an equal model (the same signal, its own noise): refused even when its AP happens to be higher
    equal = np.clip(0.3 * y + 0.7 * np.random.default_rng(2).random(len(y)), 0, 1)
    tie = decide(equal, "2")
    assert not tie.promote and "primary.average_precision" in [c["check"] for c in tie.failed()]

    # much better overall but weaker than the champion in the small-amount band -> refused there
    better = np.clip(0.5 * y + 0.6 * rng.random(len(y)), 0, 1)
    small = (df["tx_amount"] < 25).to_numpy()
    noise = np.random.default_rng(9).random(len(y))
    ruined = np.where(small, 0.1 * y + 0.9 * noise, np.clip(0.9 * y + 0.3 * noise, 0, 1))
    d = decide(ruined, "3")
    assert not d.promote and [c["check"] for c in d.failed()] == ["slice.amount=0-25.average_precision"]
    assert all(c["passed"] for c in d.checks if c["check"].startswith("floor"))

    ok = decide(better, "4")
    assert ok.promote, ok.reason
    checks = {c["check"]: c for c in ok.checks}
    assert {c["method"] for c in ok.checks if not c["check"].startswith("floor")} == {
        "paired bootstrap",
        "paired bootstrap, Holm",
    }
    assert checks["primary.average_precision"]["ci"][0] > 0.05  # clearly better, CI over cards
    strict = gate_spec(Gate(margin=0.5, min_slice_frauds=20))
    assert not decide(better, "5", strict).promote

    other = evaluate_scores(df.iloc[:-10], better[:-10], costs=costs)
    with pytest.raises(ValueError, match="rule: same holdout"):
        gate(other, champion, policy)


def test_slice_metrics_values():
    df = _tx(
        [
            ("2018-04-01 01:00", 1, 0.9, 1),
            ("2018-04-01 02:00", 2, 0.1, 0),
            ("2018-04-06 03:00", 3, 0.2, 1),  # a Friday
            ("2018-04-07 13:00", 4, 0.8, 0),  # a Saturday
        ]
    )
    out = M.slice_metrics(
        df, {"week": FM.weekday_weekend}, label_col=FM.LABEL, support="frauds", threshold=0.5
    )
    assert out["week=weekend"]["rows"] == 3 and out["week=weekday"]["rows"] == 1  # 04-01 is a Sunday
    assert math.isnan(out["week=weekday"]["auc_roc"])
    # weekend: fraud .9 above both genuine .1 and .8; flagged at .5: .9 (fraud) and .8 (genuine)
    assert out["week=weekend"]["auc_roc"] == 1.0 and out["week=weekend"]["frauds"] == 1
    assert out["week=weekend"]["recall_at_threshold"] == 1.0
    assert out["week=weekend"]["precision_at_threshold"] == pytest.approx(0.5)
    # weekday: the only fraud (.2) is missed; nothing flagged -> precision undefined
    assert out["week=weekday"]["recall_at_threshold"] == 0.0
    assert math.isnan(out["week=weekday"]["precision_at_threshold"])


def test_gate_statistics_equal_the_evaluation_and_a_card_bootstrap_repeats_cards():
    from jobs.fraud.evaluation import paired_statistics
    from jobs.platform.resampling import unit_codes

    df = _holdout(n=3000, seed=4)
    scores = np.round(np.clip(0.3 * df["tx_fraud"] + 0.7 * np.random.default_rng(5).random(len(df)), 0, 1), 2)
    codes, units = unit_codes(df, "customer_id")
    stats = paired_statistics(df, scores, codes, units)
    ev = evaluate_scores(df, scores, costs=Costs(false_positive=1, false_negative=20))
    at_one = {k: float(v[0]) for k, v in stats(np.ones((1, units))).items()}
    for key, value in at_one.items():
        name, _, metric = key.rpartition("/")
        expected = ev.slices[name][metric] if name else ev.metrics[key]
        assert value == pytest.approx(expected, abs=1e-12), key

    # a resample: customers drawn 0, 1 or 2 times == the holdout with each drawn card repeated as a
    # new card (same rows, a new id), dropped when not drawn
    counts = np.random.default_rng(6).integers(0, 3, units).astype(float)
    copies = [
        df[codes == u].assign(customer_id=lambda d, u=u, c=c: 10_000 * c + u, score=scores[codes == u])
        for u in range(units)
        for c in range(int(counts[u]))
    ]
    expanded = pd.concat(copies, ignore_index=True)
    drawn = stats(counts[None])
    y = expanded["tx_fraud"]
    assert drawn["average_precision"][0] == pytest.approx(
        M.binary_metrics(y, expanded["score"])["average_precision"]
    )
    assert drawn["auc_roc"][0] == pytest.approx(M.binary_metrics(y, expanded["score"])["auc_roc"])
    assert drawn["card_precision_at_100"][0] == pytest.approx(FM.card_precision_at_k(expanded, 100))


def test_a_threshold_chosen_elsewhere_is_reported_at_its_cost_beside_the_hindsight_optimum():
    y = np.array([1, 0, 1, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.6, 0.4, 0.2, 0.1])
    # flag score >= 0.5: TP 2 (.9, .6), FP 1 (.8), FN 0 -> cost 1 * 1 + 5 * 0 = 1
    c = FM.cost_at_threshold(y, s, 0.5, 1.0, 5.0)
    assert (c.true_positives, c.false_positives, c.false_negatives, c.flagged) == (2, 1, 0, 3)
    assert c.expected_cost == 1.0 and c.cost_per_transaction == pytest.approx(1 / 6)
    # flag score >= 0.85: only .9 -> FN 1 (.6) -> cost 5
    assert FM.cost_at_threshold(y, s, 0.85, 1.0, 5.0).expected_cost == 5.0
    with pytest.raises(ValueError, match="threshold: value nan is not finite"):
        FM.cost_at_threshold(y, s, math.nan, 1.0, 5.0)

    df = _holdout(n=2000, seed=3)
    scores = np.clip(0.3 * df["tx_fraud"] + 0.7 * np.random.default_rng(4).random(len(df)), 0, 1)
    costs = Costs(false_positive=1, false_negative=20)
    own = evaluate_scores(df, scores, costs=costs)
    fixed = evaluate_scores(df, scores, costs=costs, threshold=0.9)
    assert own.metrics["decision_threshold"] == own.metrics["optimal_threshold"]
    assert fixed.metrics["decision_threshold"] == 0.9 and fixed.threshold.threshold == 0.9
    assert fixed.metrics["optimal_threshold"] == own.metrics["optimal_threshold"]
    assert fixed.metrics["expected_cost_per_tx"] >= fixed.metrics["optimal_cost_per_tx"]
    flagged = scores >= 0.9
    assert fixed.metrics["recall_at_threshold"] == pytest.approx(
        (flagged & (df["tx_fraud"] == 1)).sum() / df["tx_fraud"].sum()
    )
