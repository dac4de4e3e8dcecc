"""Fraud's offline metrics: the handbook's card precision@k, the cost-optimal decision threshold
(fraud's decision policy) and the slices of a transaction frame.

Card precision@k (handbook, chapter 4.2.3): an investigator can check ``k`` cards a day. Each day
the cards (customers) are ranked by the maximum fraud score of their transactions that day; the
precision of the day is the number of the top ``k`` cards with at least one fraudulent transaction
that day, divided by ``k``. As in the handbook, a card found compromised on a day (a true positive
in that day's top ``k``) is blocked, so it is removed from the following days. The reported value is
the mean over days. :func:`card_precision_arrays` is the same figure on arrays, for the A/B
analysis's resampling loops.

Pure functions of a scored frame (pandas), tested on tiny hand-computed examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jobs.platform.metrics import SCORE, SliceFn, check_columns

LABEL = "tx_fraud"
CARD = "customer_id"
TIME = "tx_datetime"


def card_precision_at_k_per_day(
    df: pd.DataFrame,
    k: int = 100,
    *,
    score_col: str = SCORE,
    label_col: str = LABEL,
    card_col: str = CARD,
    time_col: str = TIME,
    remove_detected: bool = True,
) -> pd.DataFrame:
    """Per day: cards ranked by their max score; hits among the top ``k``; precision = hits / k.

    Returns one row per day (ascending): day, n_cards, n_compromised_cards, hits, precision.
    Ties in the max score are broken by card id (deterministic)."""
    if k <= 0:
        raise ValueError(f"k: value {k} is invalid; rule: k must be a positive integer")
    check_columns(df, (score_col, label_col, card_col, time_col))
    frame = pd.DataFrame(
        {
            "day": pd.to_datetime(df[time_col]).dt.normalize(),
            "card": df[card_col].to_numpy(),
            "score": df[score_col].to_numpy(dtype=float),
            "label": df[label_col].to_numpy(dtype=int),
        }
    )
    detected: set = set()
    rows = []
    for day, day_df in frame.groupby("day", sort=True):
        if remove_detected and detected:
            day_df = day_df[~day_df["card"].isin(detected)]
        cards = day_df.groupby("card", sort=True).agg(score=("score", "max"), label=("label", "max"))
        cards = cards.reset_index().sort_values(["score", "card"], ascending=[False, True], kind="stable")
        top = cards.head(k)
        hits = top.loc[top["label"] == 1, "card"]
        if remove_detected:
            detected.update(hits.tolist())
        rows.append(
            {
                "day": day.date(),
                "n_cards": int(len(cards)),
                "n_compromised_cards": int(cards["label"].sum()),
                "hits": int(len(hits)),
                "precision": len(hits) / k,
            }
        )
    return pd.DataFrame(rows, columns=["day", "n_cards", "n_compromised_cards", "hits", "precision"])


def card_precision_at_k(df: pd.DataFrame, k: int = 100, **kwargs) -> float:
    """Mean over days of the daily card precision@k (NaN for an empty frame)."""
    per_day = card_precision_at_k_per_day(df, k, **kwargs)
    return float(per_day["precision"].mean()) if len(per_day) else math.nan


def card_precision_arrays(
    day: np.ndarray, card: np.ndarray, score: np.ndarray, label: np.ndarray, k: int
) -> float:
    """:func:`card_precision_at_k` on arrays (integer days and card ids), for resampling loops:
    per day, cards ranked by max score (ties by card id), hits among the top k, detected cards
    removed from the following days; mean over days."""
    if len(day) == 0:
        return math.nan
    detected = np.zeros(int(card.max()) + 1, dtype=bool)
    precisions = []
    for d in np.unique(day):
        m = (day == d) & ~detected[card]
        c, s, y = card[m], score[m], label[m]
        if len(c) == 0:
            precisions.append(0.0)
            continue
        order = np.lexsort((-s, c))  # by card, then score descending
        c, s, y = c[order], s[order], y[order]
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        cards, best = c[starts], s[starts]
        hit = np.maximum.reduceat(y, starts) > 0
        top = np.lexsort((cards, -best))[:k]
        found = cards[top][hit[top]]
        detected[found] = True
        precisions.append(len(found) / k)
    return float(np.mean(precisions))


class WeightedCardPrecision:
    """Card precision@k for any card weights (a card drawn twice by a card bootstrap is two cards),
    :func:`card_precision_at_k` at unit weights: the day's cards are ranked once; per resample a
    day's top ``k`` are the first ``k`` units of weight down that ranking, cards detected on earlier
    days removed. ``codes`` is each row's resampled unit (its card, or a unit holding whole cards);
    the resample is given as unit counts."""

    def __init__(
        self,
        day: np.ndarray,
        card: np.ndarray,
        score: np.ndarray,
        label: np.ndarray,
        k: int,
        codes: np.ndarray,
    ):
        if k <= 0:
            raise ValueError(f"k: value {k} is invalid; rule: k must be a positive integer")
        self.k = k
        card_codes, cards = pd.factorize(np.asarray(card), sort=True)
        self.n_cards = len(cards)
        frame = pd.DataFrame(
            {
                "day": np.asarray(day),
                "code": card_codes,
                "card": np.asarray(card),
                "score": np.asarray(score, dtype="float64"),
                "label": np.asarray(label, dtype="int64"),
                "row": np.arange(len(card_codes)),
            }
        )
        per = (
            frame.groupby(["day", "code"], sort=True)
            .agg(card=("card", "first"), score=("score", "max"), label=("label", "max"), row=("row", "first"))
            .reset_index()
            .sort_values(["day", "score", "card"], ascending=[True, False, True], kind="stable")
        )
        self.code = per["code"].to_numpy()
        self.label = per["label"].to_numpy(dtype="float64")
        self.unit = np.asarray(codes)[per["row"].to_numpy()]  # the unit of the card that day
        days = per["day"].to_numpy()
        self.bounds = np.flatnonzero(np.r_[True, days[1:] != days[:-1], True]) if len(days) else np.array([0])

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        w_all = np.atleast_2d(counts)[:, self.unit]
        b = w_all.shape[0]
        if len(self.bounds) < 2:
            return np.full(b, np.nan)
        detected = np.zeros((b, self.n_cards), dtype=bool)
        total = np.zeros(b)
        for lo, hi in zip(self.bounds[:-1], self.bounds[1:], strict=True):
            code = self.code[lo:hi]
            w = np.where(detected[:, code], 0.0, w_all[:, lo:hi])
            before = np.cumsum(w, axis=1) - w  # weight ranked above each card
            taken = np.clip(self.k - before, 0.0, w)
            hit = taken * self.label[lo:hi]
            total += hit.sum(axis=1) / self.k
            rows, cols = np.nonzero(hit > 0)
            detected[rows, code[cols]] = True
        return total / (len(self.bounds) - 1)


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float  # flag a transaction as fraud when score >= threshold
    expected_cost: float  # total cost on the frame at that threshold
    cost_per_transaction: float
    false_positives: int
    false_negatives: int
    true_positives: int
    flagged: int
    cost_flag_nothing: float  # baseline: approve everything


def _labels_and_scores(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores as arrays of one length, at least one row (ValueError otherwise)."""
    y = np.asarray(y_true, dtype=int)
    s = np.asarray(scores, dtype=float)
    if len(y) != len(s):
        raise ValueError(f"scores: length {len(s)} != labels length {len(y)}; rule: equal lengths")
    if len(y) == 0:
        raise ValueError("scores: empty; rule: need at least one scored transaction")
    return y, s


def cost_at_threshold(
    y_true, scores, threshold: float, cost_false_positive: float, cost_false_negative: float
) -> ThresholdChoice:
    """The outcome of flagging ``score >= threshold`` (a threshold chosen elsewhere) on these rows."""
    y, s = _labels_and_scores(y_true, scores)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold: value {threshold} is not finite; rule: a probability cut")
    flag = s >= threshold
    tp = int(np.sum(flag & (y == 1)))
    fp = int(np.sum(flag)) - tp
    fn = int(y.sum()) - tp
    cost = cost_false_positive * fp + cost_false_negative * fn
    return ThresholdChoice(
        threshold=float(threshold),
        expected_cost=float(cost),
        cost_per_transaction=float(cost / len(y)),
        false_positives=fp,
        false_negatives=fn,
        true_positives=tp,
        flagged=int(np.sum(flag)),
        cost_flag_nothing=float(cost_false_negative * int(y.sum())),
    )


def cost_optimal_threshold(
    y_true, scores, cost_false_positive: float, cost_false_negative: float
) -> ThresholdChoice:
    """The threshold minimising ``c_fp * FP + c_fn * FN`` over every distinct cut of the scores.

    Cut candidates are midpoints between consecutive distinct scores (so the chosen value does not
    sit on a training score), plus "flag nothing" (just above the max) and "flag everything"."""
    y, s = _labels_and_scores(y_true, scores)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # last index of each block of equal scores: cutting after it flags every score >= that value
    distinct_end = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    tp = np.cumsum(y_sorted)[distinct_end]
    flagged = distinct_end + 1
    fp = flagged - tp
    positives = int(y.sum())
    fn = positives - tp
    costs = cost_false_positive * fp + cost_false_negative * fn
    cost_nothing = cost_false_negative * positives
    best = int(np.argmin(costs))
    if costs[best] >= cost_nothing:  # flagging nothing is at least as good
        top = float(s_sorted[0])
        return ThresholdChoice(
            threshold=float(np.nextafter(top, np.inf)),
            expected_cost=float(cost_nothing),
            cost_per_transaction=float(cost_nothing / len(y)),
            false_positives=0,
            false_negatives=positives,
            true_positives=0,
            flagged=0,
            cost_flag_nothing=float(cost_nothing),
        )
    cut = distinct_end[best]
    low = s_sorted[cut]
    nxt = s_sorted[cut + 1] if cut + 1 < len(s_sorted) else None
    threshold = float(low if nxt is None else (low + nxt) / 2.0)
    if nxt is not None and not threshold > nxt:  # float rounding for nearly equal scores
        threshold = float(low)
    return ThresholdChoice(
        threshold=threshold,
        expected_cost=float(costs[best]),
        cost_per_transaction=float(costs[best] / len(y)),
        false_positives=int(fp[best]),
        false_negatives=int(fn[best]),
        true_positives=int(tp[best]),
        flagged=int(flagged[best]),
        cost_flag_nothing=float(cost_nothing),
    )


def decision_cost(y_true, scores, threshold: float, c_fp: float, c_fn: float) -> float:
    """Total cost on a frame of deciding ``score >= threshold``."""
    y = np.asarray(y_true, dtype=int)
    flag = np.asarray(scores, dtype=float) >= threshold
    return float(c_fp * np.sum(flag & (y == 0)) + c_fn * np.sum(~flag & (y == 1)))


# --- slices ------------------------------------------------------------------------------
AMOUNT_BANDS: tuple[float, ...] = (0.0, 25.0, 75.0, 150.0, 220.0, math.inf)


def amount_band(df: pd.DataFrame, edges: tuple[float, ...] = AMOUNT_BANDS) -> pd.Series:
    labels = [
        f"{int(lo)}-{int(hi)}" if math.isfinite(hi) else f">={int(lo)}"
        for lo, hi in zip(edges[:-1], edges[1:], strict=True)
    ]
    return pd.cut(df["tx_amount"], bins=list(edges), labels=labels, right=False).astype(str)


def customer_history(column: str) -> SliceFn:
    """``new`` when the customer had no transaction in the feature's window before, else ``known``."""

    def fn(df: pd.DataFrame) -> pd.Series:
        return pd.Series(np.where(df[column].fillna(0) > 0, "known", "new"), index=df.index)

    return fn


def time_of_day(df: pd.DataFrame) -> pd.Series:
    hour = pd.to_datetime(df[TIME]).dt.hour
    return pd.Series(np.where(hour < 6, "night", "day"), index=df.index)


def weekday_weekend(df: pd.DataFrame) -> pd.Series:
    dow = pd.to_datetime(df[TIME]).dt.dayofweek
    return pd.Series(np.where(dow >= 5, "weekend", "weekday"), index=df.index)
