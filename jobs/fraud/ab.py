"""Fraud's online A/B test (``UseCase.ab``, run by :mod:`jobs.platform.ab_analysis`).

The canary splits traffic by customer (the serving routing key), so customers are the randomisation
unit: the bootstrap moves whole cards. The primary metric is average
precision; the guardrails are AUC ROC (shown non-inferior: not worse than the champion by more than
the gate's tolerance), card precision@k (a deterioration test: refused only when shown worse by more
than the tolerance; at a canary's k it is too noisy to be shown non-inferior) and the alert rate (a
deterioration test too: refused when the interval shows it above ``max_decision_rate_ratio`` times
the champion's; alerts cluster on a few compromised cards, so a 10 % canary's ratio was inconclusive
for 3 of 20 planted challengers with the champion's alert share in ``benchmarks.ab_decisions``).
Card precision@k depends on how many cards an arm sees, so each arm uses ``k`` scaled by its share
of the period's cards (a 10% canary gets k = 10 when the champion gets 90).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jobs.fraud.evaluation import CP_K
from jobs.fraud.metrics import CARD, LABEL, TIME, WeightedCardPrecision, card_precision_arrays
from jobs.platform.ab_analysis import ArmSample, auc_roc, average_precision, weighted_binary
from jobs.platform.use_case import ABGuardrail, ABMetric, ABSpec

LOG_COLUMNS = ("transaction_id", CARD, TIME, "score", "decision", "model_version", "arm")


def arm_k(sample: ArmSample, k: int = CP_K) -> int:
    """The arm's card budget: ``k`` times its share of the period's cards (at least 1)."""
    return max(1, round(k * sample.share))


def card_precision(sample: ArmSample) -> float:
    """Card precision@k of the arm (:func:`jobs.fraud.metrics.card_precision_at_k` on arrays)."""
    return card_precision_arrays(sample.day, sample.unit, sample.s, sample.y, arm_k(sample))


def weighted_card_precision(arm: ArmSample):
    """``ABMetric.weighted`` of card precision@k: :class:`jobs.fraud.metrics.WeightedCardPrecision`
    over the arm's cards with its share's ``k`` (a card drawn twice is two cards, as in
    :func:`card_precision`)."""
    cards = arm.clusters.units[arm.idx]
    return WeightedCardPrecision(arm.day, cards, arm.s, arm.y, arm_k(arm), arm.clusters.codes[arm.idx])


def decision_rate(sample: ArmSample) -> float:
    return float(np.mean(sample.d)) if len(sample) else math.nan


def arm_details(sample: ArmSample) -> dict[str, Any]:
    return {"cp_k": arm_k(sample)}


AP = ABMetric(
    "average_precision", lambda a: average_precision(a.y, a.s), weighted=weighted_binary("average_precision")
)
AUC = ABMetric("auc_roc", lambda a: auc_roc(a.y, a.s), weighted=weighted_binary("auc_roc"))
CARD_PRECISION = ABMetric(
    "card_precision_at_k", card_precision, costly=True, weighted=weighted_card_precision
)
DECISION_RATE = ABMetric("decision_rate", decision_rate, higher_is_better=False)

AB_SPEC = ABSpec(
    log_columns=LOG_COLUMNS,
    unit=CARD,
    row_id="transaction_id",
    label=LABEL,
    time_column=TIME,
    primary=AP,
    guardrails=(
        ABGuardrail(AUC),
        ABGuardrail(CARD_PRECISION, test="deterioration"),
        ABGuardrail(DECISION_RATE, rule="ratio", test="deterioration"),
    ),
    support="frauds",
    decision="decision",
    arm_details=arm_details,
)


def ab_spec(settings=None) -> ABSpec:
    return AB_SPEC
