"""Online A/B analysis of a canary (or shadow) period: should the challenger become champion?

Input: the serving prediction log of ``[start, end]`` (``prediction_log/date=D``, one row per scored
request with ``arm`` = champion | challenger | shadow) joined with the labels known at ``as_of``
(default ``end + label_delay_days``: every fraud of the period has been reported by then).

Per arm: the primary metric, average precision (AP), and the guardrails AUC ROC, card precision@k
and the decision (alert) rate, each with a bootstrap confidence interval. The design decides the
resampling unit:

* **canary** (champion and challenger score *different customers*, split by customer): arms are
  independent; the bootstrap resamples customers within each arm (a card's transactions are
  correlated, so transactions are not independent), and the significance test of the AP difference
  is a *permutation test over customers* (re-randomising the customer split, which is exactly the
  experiment's randomisation).
* **shadow** (the challenger scores the *same* transactions as the champion): paired; the bootstrap
  resamples customers jointly, and the permutation test swaps the two arms' scores per customer.

Card precision@k depends on how many cards an arm sees, so each arm uses ``k`` scaled by its share
of the period's cards (a 10% canary gets k = 10 when the champion gets 90).

Recommendation:

* ``extend`` when underpowered: fewer than ``min_frauds`` matured frauds in an arm, or the AP
  difference is not significant while its confidence interval is still wider than ±``mde`` (a
  relevant improvement cannot be ruled out yet);
* ``promote`` when the challenger's AP is significantly higher (p < alpha and the CI of the
  difference above 0) and no guardrail broke (AUC and card precision not lower by more than the
  gate's ``guardrail_tolerance``, decision rate not more than ``max_decision_rate_ratio`` times the
  champion's);
* ``keep`` otherwise.

``promote`` goes through :func:`jobs.platform.registry.promote`, the same audited operation the training gate
uses (recorded with who, why, the metrics and the previous champion), and only with ``--apply``.

CLI::

    python -m jobs.platform.ab_analysis --start 2018-05-10 --end 2018-05-23 [--as-of 2018-05-30] [--apply]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from jobs.platform.config import Settings, get_settings
from jobs.platform.logs import get_logger
from jobs.platform.metrics import json_safe
from jobs.platform.params import ABConfig
from jobs.platform.storage import StorageLayout, as_date, staged_directory
from jobs.platform.use_case import get_use_case

CHAMPION, CHALLENGER, SHADOW = "champion", "challenger", "shadow"
LABEL, SCORE = "tx_fraud", "score"
LOG_COLUMNS = ("transaction_id", "customer_id", "tx_datetime", "score", "decision", "model_version", "arm")


# --- metrics -------------------------------------------------------------------------------
def _ap(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision, sklearn's definition (step-wise, ties as one threshold), without its overhead:
    it runs thousands of times in the bootstrap and permutation loops."""
    pos = int(y.sum())
    if pos == 0 or pos == len(y):
        return math.nan
    order = np.argsort(-s, kind="stable")
    ss, yy = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(ss[1:] != ss[:-1]), len(ss) - 1]
    tp = np.cumsum(yy)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall = tp / pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """AUC ROC as the Mann-Whitney statistic (average ranks for ties)."""
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def card_precision(frame: pd.DataFrame, k: int) -> float:
    """Card precision@k of a frame (the handbook metric, :func:`jobs.platform.metrics.card_precision_at_k`)."""
    from jobs.platform.metrics import card_precision_at_k

    return card_precision_at_k(frame, k) if len(frame) else math.nan


def _cp_arrays(day: np.ndarray, card: np.ndarray, score: np.ndarray, label: np.ndarray, k: int) -> float:
    """The same card precision@k on arrays, for the bootstrap loop (checked against jobs.platform.metrics in tests):
    per day, cards ranked by max score (ties by card id), hits among the top k, detected cards removed
    from the following days; mean over days."""
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
        first = np.r_[True, c[1:] != c[:-1]]
        starts = np.flatnonzero(first)
        cards, best = c[starts], s[starts]
        hit = np.maximum.reduceat(y, starts) > 0
        top = np.lexsort((cards, -best))[:k]
        found = cards[top][hit[top]]
        detected[found] = True
        precisions.append(len(found) / k)
    return float(np.mean(precisions))


class Clusters:
    """Rows grouped by customer, for fast cluster resampling (index arrays, no pandas in the loop)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        order = np.argsort(frame["customer_id"].to_numpy(), kind="stable")
        self.frame = frame.iloc[order].reset_index(drop=True)
        cust = self.frame["customer_id"].to_numpy()
        starts = np.flatnonzero(np.r_[True, cust[1:] != cust[:-1]]) if len(cust) else np.array([], int)
        self.starts = starts
        self.sizes = np.diff(np.r_[starts, len(cust)])
        self.customers = cust[starts] if len(cust) else cust
        self.y = self.frame[LABEL].to_numpy(dtype=int)
        self.s = self.frame[SCORE].to_numpy(dtype=float)
        self.d = self.frame["decision"].to_numpy(dtype=float)
        days = (
            pd.to_datetime(self.frame["tx_datetime"]).dt.normalize() if "tx_datetime" in self.frame else None
        )
        self.day = (
            days.to_numpy().astype("datetime64[D]").astype(np.int64)
            if days is not None
            else np.zeros(len(cust), np.int64)
        )

    def rows(self, picked: np.ndarray) -> np.ndarray:
        """Row indices of the picked clusters (with repetition)."""
        sizes = self.sizes[picked]
        if sizes.sum() == 0:
            return np.array([], dtype=int)
        offsets = np.repeat(self.starts[picked] - np.r_[0, np.cumsum(sizes)[:-1]], sizes)
        return np.arange(sizes.sum()) + offsets

    def resample(self, rng: np.random.Generator) -> np.ndarray:
        return self.rows(rng.integers(0, len(self.starts), len(self.starts)))


def arm_metrics(frame: pd.DataFrame, k: int) -> dict[str, float]:
    y = frame[LABEL].to_numpy(dtype=int)
    s = frame[SCORE].to_numpy(dtype=float)
    return {
        "rows": int(len(frame)),
        "customers": int(frame["customer_id"].nunique()),
        "frauds": int(y.sum()),
        "average_precision": _ap(y, s),
        "auc_roc": _auc(y, s),
        "card_precision_at_k": card_precision(frame, k),
        "cp_k": int(k),
        "decision_rate": float(frame["decision"].mean()) if len(frame) else math.nan,
    }


def _ci(values: np.ndarray, alpha: float) -> list[float | None]:
    v = values[np.isfinite(values)]
    if len(v) < 10:
        return [None, None]
    return [float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))]


def bootstrap_arm(cl: Clusters, k: int, cfg: ABConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Bootstrap samples (customer clusters) of AP, AUC, decision rate and card precision of one arm."""
    ap, auc, rate = (np.empty(cfg.n_boot) for _ in range(3))
    for b in range(cfg.n_boot):
        idx = cl.resample(rng)
        y, s = cl.y[idx], cl.s[idx]
        ap[b], auc[b], rate[b] = _ap(y, s), _auc(y, s), cl.d[idx].mean() if len(idx) else math.nan
    cp = np.empty(cfg.n_boot_cp)
    for b in range(cfg.n_boot_cp):
        idx = cl.resample(rng)
        # a card drawn twice counts as two cards: each copy gets its own id
        cp[b] = _cp_arrays(cl.day[idx], _copy_ids(cl, idx), cl.s[idx], cl.y[idx], k)
    return {"average_precision": ap, "auc_roc": auc, "decision_rate": rate, "card_precision_at_k": cp}


def _copy_ids(cl: Clusters, idx: np.ndarray) -> np.ndarray:
    """A distinct id per resampled cluster copy (so a card drawn twice counts as two cards)."""
    # rows of one copy are contiguous in ``idx`` and start where the customer changes or restarts
    cust = cl.frame["customer_id"].to_numpy()[idx]
    new_copy = np.r_[True, (cust[1:] != cust[:-1]) | (np.diff(idx) != 1)]
    return np.cumsum(new_copy)


# --- significance -------------------------------------------------------------------------
def permutation_test_unpaired(
    a: pd.DataFrame, b: pd.DataFrame, stat: Callable[[np.ndarray, np.ndarray], float], n_perm: int, rng
) -> tuple[float, float]:
    """(observed stat(b) - stat(a), two-sided p) re-randomising whole customers between the arms."""
    both = pd.concat([a.assign(_arm=0), b.assign(_arm=1)], ignore_index=True)
    cl = Clusters(both)
    n_a_customers = a["customer_id"].nunique()
    y, s = cl.y, cl.s
    arm_of_row = cl.frame["_arm"].to_numpy()

    def diff(mask_rows: np.ndarray) -> float:
        return stat(y[mask_rows], s[mask_rows]) - stat(y[~mask_rows], s[~mask_rows])

    observed = diff(arm_of_row == 1)
    n_clusters = len(cl.starts)
    exceed = 0
    valid = 0
    for _ in range(n_perm):
        to_b = np.ones(n_clusters, dtype=bool)
        to_b[rng.choice(n_clusters, n_a_customers, replace=False)] = False
        mask = np.repeat(to_b, cl.sizes)
        d = diff(mask)
        if math.isfinite(d):
            valid += 1
            exceed += abs(d) >= abs(observed) - 1e-12
    return observed, (exceed + 1) / (valid + 1)


def permutation_test_paired(
    frame: pd.DataFrame, stat: Callable[[np.ndarray, np.ndarray], float], n_perm: int, rng
) -> tuple[float, float]:
    """Paired frame (transaction_id, customer_id, tx_fraud, score_a, score_b): swap arms per customer."""
    cl_frame = frame.rename(columns={"score_a": SCORE}).assign(decision=0)
    cl = Clusters(cl_frame)
    sa = cl.frame[SCORE].to_numpy(dtype=float)
    sb = cl.frame["score_b"].to_numpy(dtype=float)
    y = cl.y
    observed = stat(y, sb) - stat(y, sa)
    exceed = 0
    for _ in range(n_perm):
        swap = np.repeat(rng.random(len(cl.starts)) < 0.5, cl.sizes)
        d = stat(y, np.where(swap, sa, sb)) - stat(y, np.where(swap, sb, sa))
        exceed += abs(d) >= abs(observed) - 1e-12
    return observed, (exceed + 1) / (n_perm + 1)


# --- the analysis ----------------------------------------------------------------------------
@dataclass
class ABResult:
    start: str
    end: str
    as_of: str
    design: str  # canary | shadow
    champion_version: str | None
    challenger_version: str | None
    arms: dict[str, dict[str, Any]]
    difference: dict[str, Any]
    guardrails: dict[str, Any]
    recommendation: str  # promote | keep | extend
    reasons: list[str] = field(default_factory=list)
    promotion: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def analyse(log: pd.DataFrame, cfg: ABConfig | None = None, *, start="", end="", as_of="") -> ABResult:
    """Analyse a labelled prediction log (columns LOG_COLUMNS + tx_fraud). Pure: no I/O."""
    cfg = cfg or ABConfig()
    missing = [c for c in (*LOG_COLUMNS, LABEL) if c not in log.columns]
    if missing:
        raise ValueError(f"prediction log: missing column(s) {missing}; rule: needs {[*LOG_COLUMNS, LABEL]}")
    rng = np.random.default_rng(cfg.seed)
    champ = log[log["arm"] == CHAMPION]
    other_arm = SHADOW if (log["arm"] == SHADOW).any() else CHALLENGER
    chal = log[log["arm"] == other_arm]
    if champ.empty or chal.empty:
        raise ValueError(
            f"arm: the period has {len(champ)} champion and {len(chal)} {other_arm} rows; "
            "rule: both arms need scored, labelled traffic"
        )
    paired = other_arm == SHADOW
    if paired:  # the shadow arm scores the champion's transactions: compare on the common ones
        common = np.intersect1d(champ["transaction_id"], chal["transaction_id"])
        champ = champ[champ["transaction_id"].isin(common)].drop_duplicates("transaction_id")
        chal = chal[chal["transaction_id"].isin(common)].drop_duplicates("transaction_id")
    n_cards_total = champ["customer_id"].nunique() + (0 if paired else chal["customer_id"].nunique())
    k_of = {
        CHAMPION: cfg.cp_k
        if paired
        else max(1, round(cfg.cp_k * champ["customer_id"].nunique() / n_cards_total)),
        other_arm: cfg.cp_k
        if paired
        else max(1, round(cfg.cp_k * chal["customer_id"].nunique() / n_cards_total)),
    }
    arms, boots = {}, {}
    for name, frame in ((CHAMPION, champ), (other_arm, chal)):
        arms[name] = arm_metrics(frame, k_of[name])
        arms[name]["model_version"] = _single(frame["model_version"])
    if paired:
        cl_c = Clusters(champ)
        # the shadow rows in the champion's (customer-sorted) row order, so index arrays apply to both
        cl_s = Clusters(
            chal.set_index("transaction_id").loc[cl_c.frame["transaction_id"].to_numpy()].reset_index()
        )
        boots[CHAMPION], boots[other_arm] = _paired_bootstrap(cl_c, cl_s, cfg, rng)
    else:
        boots[CHAMPION] = bootstrap_arm(Clusters(champ), k_of[CHAMPION], cfg, rng)
        boots[other_arm] = bootstrap_arm(Clusters(chal), k_of[other_arm], cfg, rng)
    for name in arms:
        arms[name]["ci"] = {m: _ci(v, cfg.alpha) for m, v in boots[name].items()}

    # the difference challenger - champion: CI by bootstrap, p by permutation
    diff_samples = {
        m: boots[other_arm][m] - boots[CHAMPION][m] for m in ("average_precision", "auc_roc", "decision_rate")
    }
    if paired:
        pair = (
            champ[["transaction_id", "customer_id", LABEL, SCORE]]
            .rename(columns={SCORE: "score_a"})
            .merge(chal[["transaction_id", SCORE]].rename(columns={SCORE: "score_b"}), on="transaction_id")
        )
        observed, p = permutation_test_paired(pair, _ap, cfg.n_perm, rng)
    else:
        observed, p = permutation_test_unpaired(champ, chal, _ap, cfg.n_perm, rng)
    ci = _ci(diff_samples["average_precision"], cfg.alpha)
    difference = {
        "metric": "average_precision",
        "value": observed,
        "ci": ci,
        "p_value": p,
        "test": "paired customer-swap permutation"
        if paired
        else "customer permutation (re-randomised split)",
        "auc_roc": {
            "value": arms[other_arm]["auc_roc"] - arms[CHAMPION]["auc_roc"],
            "ci": _ci(diff_samples["auc_roc"], cfg.alpha),
        },
        "decision_rate": {
            "value": arms[other_arm]["decision_rate"] - arms[CHAMPION]["decision_rate"],
            "ci": _ci(diff_samples["decision_rate"], cfg.alpha),
        },
    }

    c, h = arms[CHAMPION], arms[other_arm]
    tol = cfg.guardrail_tolerance
    guardrails = {
        "auc_roc": {
            "passed": _ge(h["auc_roc"], c["auc_roc"] - tol),
            "challenger": h["auc_roc"],
            "champion": c["auc_roc"],
        },
        "card_precision_at_k": {
            "passed": _ge(h["card_precision_at_k"], c["card_precision_at_k"] - tol),
            "challenger": h["card_precision_at_k"],
            "champion": c["card_precision_at_k"],
        },
        "decision_rate": {
            "passed": bool(h["decision_rate"] <= cfg.max_decision_rate_ratio * max(c["decision_rate"], 1e-9)),
            "challenger": h["decision_rate"],
            "champion": c["decision_rate"],
        },
    }
    recommendation, reasons = recommend(arms, difference, guardrails, cfg, other_arm)
    return ABResult(
        start=str(start),
        end=str(end),
        as_of=str(as_of),
        design="shadow" if paired else "canary",
        champion_version=c["model_version"],
        challenger_version=h["model_version"],
        arms=arms,
        difference=difference,
        guardrails=guardrails,
        recommendation=recommendation,
        reasons=reasons,
    )


def _paired_bootstrap(cl_c: Clusters, cl_s: Clusters, cfg: ABConfig, rng) -> tuple[dict, dict]:
    """Both arms on the same resampled customers (rows aligned by transaction)."""
    out_c = {m: np.empty(cfg.n_boot) for m in ("average_precision", "auc_roc", "decision_rate")}
    out_s = {m: np.empty(cfg.n_boot) for m in out_c}
    for b in range(cfg.n_boot):
        idx = cl_c.resample(rng)
        y = cl_c.y[idx]
        for out, cl in ((out_c, cl_c), (out_s, cl_s)):
            s = cl.s[idx]
            out["average_precision"][b], out["auc_roc"][b] = _ap(y, s), _auc(y, s)
            out["decision_rate"][b] = cl.d[idx].mean()
    cp_c, cp_s = np.empty(cfg.n_boot_cp), np.empty(cfg.n_boot_cp)
    for b in range(cfg.n_boot_cp):
        idx = cl_c.resample(rng)
        ids = _copy_ids(cl_c, idx)
        cp_c[b] = _cp_arrays(cl_c.day[idx], ids, cl_c.s[idx], cl_c.y[idx], cfg.cp_k)
        cp_s[b] = _cp_arrays(cl_s.day[idx], ids, cl_s.s[idx], cl_s.y[idx], cfg.cp_k)
    out_c["card_precision_at_k"], out_s["card_precision_at_k"] = cp_c, cp_s
    return out_c, out_s


def _ge(a: float, b: float) -> bool:
    return bool(math.isfinite(a) and math.isfinite(b) and a >= b)


def _single(values: pd.Series) -> str | None:
    uniq = sorted({str(v) for v in values.dropna().unique()})
    return uniq[0] if len(uniq) == 1 else (",".join(uniq) or None)


def recommend(
    arms: Mapping[str, Mapping[str, Any]],
    difference: Mapping[str, Any],
    guardrails: Mapping[str, Mapping[str, Any]],
    cfg: ABConfig,
    other_arm: str = CHALLENGER,
) -> tuple[str, list[str]]:
    reasons: list[str] = []
    low_power = [a for a, m in arms.items() if m["frauds"] < cfg.min_frauds]
    if low_power:
        return "extend", [
            f"arm {a}: {arms[a]['frauds']} matured frauds < min_frauds {cfg.min_frauds}" for a in low_power
        ]
    diff, (lo, hi), p = difference["value"], difference["ci"], difference["p_value"]
    significant = p < cfg.alpha and lo is not None and (lo > 0 or hi < 0)
    broken = [g for g, v in guardrails.items() if not v["passed"]]
    if significant and diff > 0:
        if broken:
            return "keep", [f"AP +{diff:.4f} (p={p:.3f}) but guardrail(s) broke: {', '.join(broken)}"]
        return "promote", [f"AP +{diff:.4f}, 95% CI [{lo:.4f}, {hi:.4f}], p={p:.3f}; guardrails passed"]
    if significant and diff < 0:
        return "keep", [f"challenger AP is lower: {diff:.4f}, CI [{lo:.4f}, {hi:.4f}], p={p:.3f}"]
    if lo is None or hi is None or (hi - lo) / 2 > cfg.mde:
        half = "unknown" if lo is None else f"{(hi - lo) / 2:.4f}"
        reasons.append(
            f"AP difference {diff:.4f} not significant (p={p:.3f}); CI half-width {half} > mde {cfg.mde}"
        )
        return "extend", reasons
    return "keep", [f"AP difference {diff:.4f} not significant (p={p:.3f}) and CI within ±{cfg.mde}: no gain"]


# --- I/O -----------------------------------------------------------------------------------
def load_period(layout: StorageLayout, start: dt.date, end: dt.date, as_of: dt.date) -> pd.DataFrame:
    """The prediction log of [start, end] with labels known at the end of ``as_of``."""
    parts = layout.partition_paths("prediction_log", start, end)
    if not parts:
        raise FileNotFoundError(
            f"prediction_log: no partition in [{start}, {end}] under {layout.dataset_root('prediction_log')}"
        )
    log = pd.concat([pd.read_parquet(p, columns=list(LOG_COLUMNS)) for p in parts], ignore_index=True)

    return get_use_case(layout.settings).monitoring.labels(log, layout, start, as_of)


def run_analysis(
    start: str | dt.date,
    end: str | dt.date,
    as_of: str | dt.date | None = None,
    cfg: ABConfig | None = None,
    apply: bool = False,
    actor: str | None = None,
    settings: Settings | None = None,
) -> ABResult:
    """Analyse a period, write ``reports/ab_analysis/date=<end>/result.json`` and (``apply``) act on it."""
    settings = settings or get_settings()
    layout = StorageLayout(settings)
    start, end = as_date(start), as_date(end)
    as_of = as_date(as_of) if as_of else end + dt.timedelta(days=settings.case.label_delay_days)
    log = get_logger("ab_analysis", end.isoformat())
    cfg = cfg or ABConfig.from_settings(settings)
    frame = load_period(layout, start, end, as_of)
    result = analyse(frame, cfg, start=start.isoformat(), end=end.isoformat(), as_of=as_of.isoformat())
    log.info(
        "ab analysis",
        recommendation=result.recommendation,
        reasons=result.reasons,
        ap_diff=result.difference["value"],
        p=result.difference["p_value"],
    )
    if apply and result.recommendation == "promote":
        result.promotion = promote_challenger(result, actor=actor, settings=settings)
    write_result(layout, end, result)
    return result


def promote_challenger(result: ABResult, actor: str | None = None, settings: Settings | None = None) -> dict:
    """The audited registry promotion (the training gate's operation), with the A/B evidence."""
    from jobs.platform import registry

    version = result.challenger_version
    if not version or "," in version:
        raise ValueError(
            f"challenger_version: value {version!r}; rule: one challenger version served the period"
        )
    champ = result.arms[CHAMPION]
    chal = result.arms[CHALLENGER if CHALLENGER in result.arms else SHADOW]
    keys = ("average_precision", "auc_roc", "card_precision_at_k", "decision_rate", "frauds", "rows")
    return registry.promote(
        version,
        reason=f"online A/B {result.start}..{result.end} ({result.design}): " + "; ".join(result.reasons),
        actor=actor or "ab_analysis",
        metrics={f"ab_{k}": chal[k] for k in keys} | {"ab_p_value": result.difference["p_value"]},
        champion_metrics={f"ab_{k}": champ[k] for k in keys},
        settings=settings,
    )


def write_result(layout: StorageLayout, end: dt.date, result: ABResult) -> Path:
    final = layout.path("reports", end, "ab_analysis")
    with staged_directory(final) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    return final / "result.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m jobs.platform.ab_analysis", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.add_argument("--as-of", help="labels known at the end of this day (default: end + label delay)")
    p.add_argument("--apply", action="store_true", help="promote through the registry when recommended")
    p.add_argument("--actor", help="who applies the recommendation (audit log)")
    p.add_argument("--n-boot", type=int, default=ABConfig.n_boot)
    args = p.parse_args(argv)
    settings = get_settings()
    cfg = dataclasses.replace(ABConfig.from_settings(settings), n_boot=args.n_boot)
    result = run_analysis(args.start, args.end, args.as_of, cfg, apply=args.apply, actor=args.actor)
    print(json.dumps(result.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
