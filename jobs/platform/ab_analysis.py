"""Online A/B analysis of a canary (or shadow) period: should the challenger become champion?

Input: the serving prediction log of ``[start, end]`` (``prediction_log/date=D``, one row per scored
unit of traffic with ``arm`` = champion | challenger | shadow) joined with the labels known at
``as_of`` (default ``end + label_delay_days``), as the use case declares them (``UseCase.ab``,
:class:`jobs.platform.use_case.ABSpec`: the randomisation unit, the label, the primary metric and the
guardrails; fraud: average precision, AUC ROC, card precision@k and the alert rate by customer,
:mod:`jobs.fraud.ab`).

An experiment is **planned before its first look** (:func:`plan_experiment`,
:mod:`jobs.platform.ab_plan`: metric, mde, one-sided alpha, power, the sample size of a power
calculation on the champion's pilot traffic, the maximum duration; recorded as an MLflow run), and
every analysis is one **look** of a group-sequential test (:mod:`jobs.platform.sequential`):
Lan-DeMets alpha spending over the information fraction (matured positives seen over the planned
ones), so that looking every week keeps the false-promotion rate of the whole experiment at alpha.
Each look is appended to the plan's run; a look's boundary depends on the earlier looks.

Per arm: the primary metric and the guardrail metrics, each with a bootstrap confidence interval.
The design decides the resampling unit:

* **canary** (champion and challenger serve *different units*, split by the routing key, e.g.
  customers): arms are independent; the bootstrap resamples whole units within each arm (a unit's
  rows are correlated, so rows are not independent);
* **shadow** (the challenger scores the *same* rows as the champion): paired; the bootstrap resamples
  units jointly, so the variance the two models share cancels in the difference.

The statistic of a look is ``z = difference / bootstrap standard error`` in the good direction.
Each arm's sample carries its ``share`` of the period's units, for metrics that scale with the
traffic an arm sees (fraud's card precision@k uses ``k`` times the share).

Recommendation of a look:

* ``promote`` when ``z`` crosses the look's efficacy boundary, the bootstrap bound of the difference
  at the look's level is above 0 as well (a skewed bootstrap with a positive estimate is no win), and
  every guardrail passed its test (:func:`guardrail_check`: non-inferiority by the bootstrap interval,
  or, for a figure the use case marks too noisy, no shown deterioration);
* ``keep`` when a guardrail is shown breached, the challenger is significantly worse (stopping for
  harm never raises the false-promotion rate), or the final look (planned information reached or
  maximum duration) did not cross;
* ``extend`` at an interim look that did not cross, or when an arm has fewer than
  ``min_positives`` matured positives;
* ``blocked`` whatever the metrics say when a canary's randomisation failed a check
  (:func:`design_checks`): a sample ratio mismatch against the configured canary share, or units
  logged in both arms.

``promote`` goes through :func:`jobs.platform.registry.promote`, the same audited operation the training gate
uses (recorded with who, why, the metrics and the previous champion), and only with ``--apply``.

CLI::

    python -m jobs.platform.ab_analysis plan --start 2018-05-10 [--mde 0.05] [--max-days 56]
    python -m jobs.platform.ab_analysis --start 2018-05-10 --end 2018-05-23 [--as-of 2018-05-30] [--apply]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

from jobs.platform.ab_plan import (
    ABPlan,
    Look,
    design_plan,
    experiment_name,
    find_plan,
    now_iso,
    record_look,
    record_plan,
    sequential_look,
)
from jobs.platform.assignment import assigned_to_challenger, experiment_salt
from jobs.platform.config import Settings, get_settings
from jobs.platform.evaluate import label_dataset, labels_through
from jobs.platform.logs import get_logger
from jobs.platform.metrics import json_safe
from jobs.platform.params import ABConfig
from jobs.platform.resampling import CHUNK_CELLS, WeightedBinary
from jobs.platform.storage import StorageLayout, as_date, staged_directory
from jobs.platform.use_case import ABGuardrail, ABMetric, ABSpec, get_use_case

CHAMPION, CHALLENGER, SHADOW = "champion", "challenger", "shadow"
SCORE = "score"


# --- fast binary metrics for the resampling loops (use cases build their ABMetric from them) -------
def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision, sklearn's definition (step-wise, ties as one threshold), without its overhead:
    it runs thousands of times in the bootstrap loops."""
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


def auc_roc(y: np.ndarray, s: np.ndarray) -> float:
    """AUC ROC as the Mann-Whitney statistic (average ranks for ties)."""
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


@dataclass
class ArmSample:
    """One arm's rows (or a resample of them) as arrays: labels ``y``, scores ``s``, decisions ``d``
    (NaN without a decision policy), ``day`` (integer days of the row time), ``unit`` (an id per
    resampled unit copy: a unit drawn twice counts as two units) and the arm's ``share`` of the
    period's units."""

    clusters: Clusters
    idx: np.ndarray
    share: float = 1.0
    scores: np.ndarray | None = None  # replaces the clusters' scores

    @cached_property
    def y(self) -> np.ndarray:
        return self.clusters.y[self.idx]

    @cached_property
    def s(self) -> np.ndarray:
        return (self.clusters.s if self.scores is None else self.scores)[self.idx]

    @cached_property
    def d(self) -> np.ndarray:
        return self.clusters.d[self.idx]

    @cached_property
    def day(self) -> np.ndarray:
        return self.clusters.day[self.idx]

    @cached_property
    def unit(self) -> np.ndarray:
        return _copy_ids(self.clusters, self.idx)

    def __len__(self) -> int:
        return len(self.idx)


class Clusters:
    """Rows grouped by the randomisation unit, for fast cluster resampling (index arrays, no pandas
    in the loop)."""

    def __init__(self, frame: pd.DataFrame, spec: ABSpec) -> None:
        order = np.argsort(frame[spec.unit].to_numpy(), kind="stable")
        self.frame = frame.iloc[order].reset_index(drop=True)
        self.units = self.frame[spec.unit].to_numpy()
        n = len(self.units)
        starts = np.flatnonzero(np.r_[True, self.units[1:] != self.units[:-1]]) if n else np.array([], int)
        self.starts = starts
        self.sizes = np.diff(np.r_[starts, n])
        self.codes = np.repeat(np.arange(len(starts)), self.sizes)  # each row's unit index
        self.y = self.frame[spec.label].to_numpy(dtype=int)
        self.s = self.frame[SCORE].to_numpy(dtype=float)
        self.d = (
            self.frame[spec.decision].to_numpy(dtype=float)
            if spec.decision and spec.decision in self.frame
            else np.full(n, np.nan)
        )
        if spec.time_column in self.frame:
            days = pd.to_datetime(self.frame[spec.time_column]).dt.normalize()
            self.day = days.to_numpy().astype("datetime64[D]").astype(np.int64)
        else:
            self.day = np.zeros(n, np.int64)

    def rows(self, picked: np.ndarray) -> np.ndarray:
        """Row indices of the picked clusters (with repetition)."""
        sizes = self.sizes[picked]
        if sizes.sum() == 0:
            return np.array([], dtype=int)
        offsets = np.repeat(self.starts[picked] - np.r_[0, np.cumsum(sizes)[:-1]], sizes)
        return np.arange(sizes.sum()) + offsets

    def resample(self, rng: np.random.Generator) -> np.ndarray:
        return self.rows(rng.integers(0, len(self.starts), len(self.starts)))

    def all(self, share: float = 1.0) -> ArmSample:
        return ArmSample(self, np.arange(len(self.y)), share)


def _copy_ids(cl: Clusters, idx: np.ndarray) -> np.ndarray:
    """A distinct id per resampled cluster copy (so a unit drawn twice counts as two units)."""
    # rows of one copy are contiguous in ``idx`` and start where the unit changes or restarts
    if not len(idx):
        return np.array([], dtype=np.int64)
    unit = cl.units[idx]
    new_copy = np.r_[True, (unit[1:] != unit[:-1]) | (np.diff(idx) != 1)]
    return np.cumsum(new_copy)


def _metrics(spec: ABSpec) -> tuple[ABMetric, ...]:
    """The primary metric, each guardrail's, then the secondary ones (once each, by name)."""
    out: dict[str, ABMetric] = {spec.primary.name: spec.primary}
    for m in (*(g.metric for g in spec.guardrails), *spec.secondary):
        out.setdefault(m.name, m)
    return tuple(out.values())


def arm_metrics(sample: ArmSample, spec: ABSpec) -> dict[str, Any]:
    y = sample.y
    out: dict[str, Any] = {
        "rows": int(len(sample)),
        "units": int(len(sample.clusters.starts)),
        spec.support: int(y.sum()),
    }
    for metric in _metrics(spec):
        out[metric.name] = metric.stat(sample) if len(sample) else math.nan
    out.update(spec.arm_details(sample))
    return out


def _ci(values: np.ndarray, alpha: float) -> list[float | None]:
    """The two-sided ``1 - alpha`` percentile interval (None with too few finite draws)."""
    lo, hi = _one_sided(values, alpha / 2)
    return [None, None] if math.isnan(lo) else [lo, hi]


def bootstrap(
    arms: Sequence[Clusters], spec: ABSpec, cfg: ABConfig, rng: np.random.Generator, share: float = 1.0
) -> list[dict[str, np.ndarray]]:
    """Bootstrap samples of every metric, one dict per arm: whole units resampled from the first
    arm's clusters and the same rows taken from every arm (one arm alone for a canary; the paired
    champion and shadow arms, row-aligned, for a shadow test); the costly metrics get fewer. Metrics
    with a ``weighted`` form are computed for all resamples at once from the unit counts of the same
    draws."""
    out: list[dict[str, np.ndarray]] = [{} for _ in arms]
    n_units = len(arms[0].starts)
    for costly, n in ((False, cfg.n_boot), (True, cfg.n_boot_costly)):
        metrics = [m for m in _metrics(spec) if m.costly == costly]
        if not metrics:
            continue
        picks = [rng.integers(0, n_units, n_units) for _ in range(n)]
        fast = [m for m in metrics if m.weighted is not None]
        if fast:
            per_chunk = max(1, CHUNK_CELLS // max(1, n_units))
            chunks = [
                np.stack([np.bincount(p, minlength=n_units) for p in picks[i : i + per_chunk]]).astype(
                    "float64"
                )
                for i in range(0, n, per_chunk)
            ]
            for values, cl in zip(out, arms, strict=True):
                everything = cl.all(share)
                built = {m.name: m.weighted(everything) for m in fast}
                parts: dict[str, list[np.ndarray]] = {name: [] for name in built}
                for c in chunks:  # chunk by chunk: metrics of one pass (AP and AUC) share it
                    for name, f in built.items():
                        parts[name].append(np.asarray(f(c), dtype="float64"))
                values.update({name: np.concatenate(v) for name, v in parts.items()})
        slow = [m for m in metrics if m.weighted is None]
        if not slow:
            continue
        for values in out:
            values.update({m.name: np.empty(n) for m in slow})
        for b, picked in enumerate(picks):
            idx = arms[0].rows(picked)
            samples = [ArmSample(cl, idx, share) for cl in arms]
            for sample in samples[1:]:
                sample.__dict__["unit"] = samples[0].unit  # the same unit copies on every side
            for values, sample in zip(out, samples, strict=True):
                for m in slow:
                    values[m.name][b] = m.stat(sample) if len(sample) else math.nan
    return out


def pilot_variance(frame: pd.DataFrame, spec: ABSpec, cfg: ABConfig) -> tuple[float, float]:
    """(value, bootstrap variance) of the primary metric on a plan's pilot traffic, resampling units."""
    clusters = Clusters(frame, spec)
    value = spec.primary.stat(clusters.all())
    draws = bootstrap(
        [clusters], dataclasses.replace(spec, guardrails=()), cfg, np.random.default_rng(cfg.seed)
    )
    finite = draws[0][spec.primary.name]
    finite = finite[np.isfinite(finite)]
    if len(finite) < 10:
        raise ValueError(
            f"pilot: the primary metric {spec.primary.name} is undefined on the pilot's resamples; rule: "
            "the pilot needs positives and negatives"
        )
    return float(value), float(np.var(finite, ddof=1))


def weighted_binary(which: str) -> Callable[[ArmSample], Callable[[np.ndarray], np.ndarray]]:
    """``ABMetric.weighted`` of ``average_precision`` or ``auc_roc`` on the arm's labels and scores
    (:class:`jobs.platform.resampling.WeightedBinary`: exact, equal to the row metrics at any counts).
    Both come out of one pass: the arm's pass is kept for the last count matrix it saw, so AP and AUC
    of the same resamples cost one."""
    position = {"average_precision": 0, "auc_roc": 1}[which]

    def build(arm: ArmSample) -> Callable[[np.ndarray], np.ndarray]:
        memo = arm.clusters.__dict__.setdefault("_weighted_binary", {})
        key = (id(arm.idx), len(arm.idx))
        if key not in memo:
            wb = WeightedBinary(arm.y, arm.s, arm.clusters.codes[arm.idx], len(arm.clusters.starts))
            memo.clear()
            memo[key] = {"wb": wb, "counts": None, "values": None}
        entry = memo[key]

        def f(counts: np.ndarray) -> np.ndarray:
            if entry["counts"] is not counts:
                entry["counts"], entry["values"] = counts, entry["wb"](counts)
            return entry["values"][position]

        return f

    return build


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
    recommendation: str  # promote | keep | extend | blocked (the randomisation failed a check)
    reasons: list[str] = field(default_factory=list)
    promotion: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)  # the design's validity checks
    look: dict[str, Any] = field(default_factory=dict)  # the sequential look: fraction, z, boundary, final
    plan: dict[str, Any] | None = None  # the pre-registered plan (None: a single fixed-sample look)
    truth: dict[str, Any] = field(default_factory=dict)  # beyond the log (ABSpec.truth), e.g. a simulator's

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def _one_sided(draws: np.ndarray, level: float) -> tuple[float, float]:
    """(lower, upper) percentile bounds at one-sided ``level`` each (NaN with too few draws)."""
    v = draws[np.isfinite(draws)]
    if len(v) < 10:
        return math.nan, math.nan
    return float(np.quantile(v, level)), float(np.quantile(v, 1 - level))


def analyse(
    log: pd.DataFrame,
    spec: ABSpec,
    cfg: ABConfig | None = None,
    *,
    start="",
    end="",
    as_of="",
    plan: ABPlan | None = None,
    looks: Sequence[Look] = (),
) -> ABResult:
    """Analyse a labelled prediction log (the spec's log columns, ``arm``, ``model_version`` and the
    label) as one look of the experiment ``plan`` after its earlier ``looks``; without a plan, as a
    single fixed-sample look at ``cfg.alpha``. Pure: no I/O (the caller records the look)."""
    cfg = cfg or ABConfig()
    needed = list(dict.fromkeys((*spec.log_columns, spec.unit, spec.row_id, SCORE, "arm", "model_version")))
    missing = [c for c in (*needed, spec.label) if c not in log.columns]
    if missing:
        raise ValueError(f"prediction log: missing column(s) {missing}; rule: needs {[*needed, spec.label]}")
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
    exposure: dict[str, Any] | None = None
    if not paired and plan is not None and plan.salt:
        champ, chal, exposure = served_as_assigned(champ, chal, spec, plan, cfg.max_contamination)
    if paired:  # the shadow arm scores the champion's rows: compare on the common ones
        common = np.intersect1d(champ[spec.row_id], chal[spec.row_id])
        champ = champ[champ[spec.row_id].isin(common)].drop_duplicates(spec.row_id)
        chal = chal[chal[spec.row_id].isin(common)].drop_duplicates(spec.row_id)
    validity = [] if paired else design_checks(champ[spec.unit], chal[spec.unit], cfg)
    if exposure is not None:
        validity.append(exposure)
    n_units = champ[spec.unit].nunique() + (0 if paired else chal[spec.unit].nunique())
    share = {
        CHAMPION: 1.0 if paired else champ[spec.unit].nunique() / n_units,
        other_arm: 1.0 if paired else chal[spec.unit].nunique() / n_units,
    }
    cl_c = Clusters(champ, spec)
    # paired: the shadow rows in the champion's (unit-sorted) row order, so index arrays apply to both
    cl_o = Clusters(
        chal.set_index(spec.row_id).loc[cl_c.frame[spec.row_id].to_numpy()].reset_index() if paired else chal,
        spec,
    )
    arms: dict[str, dict[str, Any]] = {}
    for name, cl in ((CHAMPION, cl_c), (other_arm, cl_o)):
        arms[name] = arm_metrics(cl.all(share[name]), spec)
        arms[name]["model_version"] = _single(cl.frame["model_version"])
    if paired:
        boots = dict(zip((CHAMPION, other_arm), bootstrap([cl_c, cl_o], spec, cfg, rng), strict=True))
    else:
        boots = {
            CHAMPION: bootstrap([cl_c], spec, cfg, rng, share[CHAMPION])[0],
            other_arm: bootstrap([cl_o], spec, cfg, rng, share[other_arm])[0],
        }
    two_sided = 2 * cfg.alpha  # the reported intervals: each side at the one-sided alpha
    for name in arms:
        arms[name]["ci"] = {m: _ci(v, two_sided) for m, v in boots[name].items()}
    c, h = arms[CHAMPION], arms[other_arm]

    # the primary difference (challenger - champion): bootstrap standard error, z in the good direction
    primary = spec.primary
    sign = 1.0 if primary.higher_is_better else -1.0
    draws = boots[other_arm][primary.name] - boots[CHAMPION][primary.name]
    finite = draws[np.isfinite(draws)]
    observed = float(h[primary.name] - c[primary.name])
    se_bootstrap = float(np.std(finite, ddof=1)) if len(finite) >= 10 else math.nan
    se = se_bootstrap
    if not paired:
        # the standard error under no difference, from the champion arm's variance per positive (as
        # the plan sizes it): each arm's own bootstrap variance falls as its metric rises (AP near 1
        # varies less), which makes z = d / se_bootstrap right-skewed and promotes equal arms too often
        # (measured by benchmarks.ab_decisions); the pooled-variance z-test of proportions, for AP
        se = null_standard_error(boots[CHAMPION][primary.name], c[spec.support], h[spec.support])
    z = sign * observed / se if se > 0 and math.isfinite(observed) else math.nan
    difference: dict[str, Any] = {
        "metric": primary.name,
        "value": observed,
        "se": se,
        "se_bootstrap": se_bootstrap,
        "z": z,
        "ci": _ci(draws, two_sided),
        "test": (
            f"paired {spec.unit} bootstrap"
            if paired
            else f"{spec.unit} bootstrap of independent arms, null variance from the champion arm"
        )
        + (", group-sequential" if plan else ", single fixed-sample look"),
    }
    for m in _metrics(spec)[1:]:
        if not m.costly:
            difference[m.name] = {
                "value": h[m.name] - c[m.name],
                "ci": _ci(boots[other_arm][m.name] - boots[CHAMPION][m.name], two_sided),
            }

    # the look: its information fraction and efficacy boundary
    support = spec.support
    positives = int(c[support] if paired else c[support] + h[support])
    end_day = as_date(end) if end else None
    if plan is None:
        info, boundary, alpha_spent, final = 1.0, float(norm.ppf(1 - cfg.alpha)), cfg.alpha, True
    else:
        info, boundary, alpha_spent, final = sequential_look(
            plan, list(looks), positives, end_day or as_date(plan.start), z if math.isfinite(z) else 0.0
        )
    level = float(norm.sf(boundary)) if math.isfinite(boundary) else 0.0
    # the basic (pivotal) bootstrap bound 2 d - q_{1-level}: a right-skewed difference (a small
    # canary arm's AP) needs the evidence of its long tail; the percentile bound would mirror it
    _, upper = _one_sided(sign * draws, level) if level > 0 else (math.nan, math.nan)
    lower = 2 * sign * observed - upper
    look = {
        "look": len(looks) + 1,
        "positives": positives,
        "information": info,
        "z": z,
        "boundary": boundary,
        "alpha_spent": alpha_spent,
        "final": final,
        "lower_at_boundary": lower,  # basic bootstrap bound of the good-direction difference at the look's level
        "harm_boundary": float(-norm.ppf(1 - cfg.alpha)),
    }

    guardrails = {}
    for g in spec.guardrails:
        guardrails[g.metric.name] = guardrail_check(g, h, c, boots[other_arm], boots[CHAMPION], cfg)
    recommendation, reasons = recommend(arms, difference, guardrails, cfg, spec, look)
    blocked = [c for c in validity if not c["passed"]]
    if blocked:  # a broken randomisation: no metric difference can be read as the model's effect
        recommendation = "blocked"
        reasons = [c["reason"] for c in blocked] + [f"(the metrics alone said: {'; '.join(reasons)})"]
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
        checks=validity,
        look=look,
        plan=None if plan is None else plan.to_dict(),
        truth={} if spec.truth is None else dict(spec.truth(c, h)),
    )


def null_standard_error(
    champion_draws: np.ndarray, champion_positives: int, challenger_positives: int
) -> float:
    """Standard error of a canary's primary difference if the arms were equal: the champion arm's
    bootstrap variance per positive ``w = var * P_c`` over both arms, ``sqrt(w (1/P_h + 1/P_c))``."""
    finite = champion_draws[np.isfinite(champion_draws)]
    if len(finite) < 10 or champion_positives <= 0 or challenger_positives <= 0:
        return math.nan
    w = float(np.var(finite, ddof=1)) * champion_positives
    return math.sqrt(w * (1.0 / challenger_positives + 1.0 / champion_positives))


def guardrail_check(
    g: ABGuardrail,
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any],
    challenger_draws: Mapping[str, np.ndarray],
    champion_draws: Mapping[str, np.ndarray],
    cfg: ABConfig,
) -> dict[str, Any]:
    """A guardrail as a non-inferiority test with a bootstrap interval (one-sided ``cfg.alpha`` each
    side): ``passed`` when the interval rules out a breach, ``breached`` when it lies wholly beyond
    the limit, otherwise inconclusive.

    * ``tolerance``: the challenger-minus-champion difference in the good direction; limit
      ``-guardrail_tolerance``;
    * ``ratio``: challenger over champion (e.g. the alert rate); limit ``max_decision_rate_ratio``.
    """
    name = g.metric.name
    h, c = float(challenger[name]), float(champion[name])
    hd, cd = challenger_draws[name], champion_draws[name]
    n = min(len(hd), len(cd))
    hd, cd = hd[:n], cd[:n]
    if g.rule == "ratio":
        limit = cfg.max_decision_rate_ratio
        estimate = h / c if c > 0 else (math.inf if h > 0 else 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(cd > 0, hd / cd, np.where(hd > 0, np.inf, 1.0))
        lower, upper = _one_sided(ratios, cfg.alpha)
        passed, breached = bool(upper <= limit), bool(lower > limit)
        rule = f"challenger/champion <= {limit}"
    else:
        sign = 1.0 if g.metric.higher_is_better else -1.0
        limit = -(cfg.guardrail_tolerance if g.tolerance is None else g.tolerance)
        estimate = sign * (h - c)
        lower, upper = _one_sided(sign * (hd - cd), cfg.alpha)
        passed, breached = bool(lower >= limit), bool(upper < limit)
        rule = f"challenger - champion (good direction) >= {limit}"
    if g.test == "deterioration":  # only a shown breach refuses
        passed = not breached
    return {
        "passed": passed,
        "breached": breached,
        "test": g.test,
        "status": "passed" if passed else "breached" if breached else "inconclusive",
        "challenger": h,
        "champion": c,
        "estimate": estimate,
        "ci": [lower, upper],
        "rule": rule,
    }


def served_as_assigned(
    champ: pd.DataFrame, chal: pd.DataFrame, spec: ABSpec, plan: ABPlan, bound: float
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The canary's rows as the experiment defines them, from the plan's salt and share (the split
    serving routes by, :mod:`jobs.platform.assignment`):

    * **exposure** starts at the challenger's first served row: the rows of both arms before it
      (the start day's traffic before the challenger alias moved or loaded) are not the experiment's;
    * a unit assigned to the challenger but served by the champion after that (a replica that had not
      loaded the challenger yet, a failed load) is the challenger's unit: those champion rows are
      set aside, not counted as the control's; their share of the assigned units' rows is the
      ``exposure`` check, which blocks beyond ``bound`` (``max_contamination``: the arm was not the
      challenger's);
    * a challenger row of a unit assigned to the champion is a routing fault: it stays, and the
      contamination check counts its unit.

    Returns (champion rows, challenger rows, the check)."""
    time = spec.time_column
    for name, frame in (("champion", champ), ("challenger", chal)):
        if time not in frame.columns:
            raise ValueError(
                f"prediction log: missing column {time!r} in the {name} arm; rule: exposure needs it"
            )
    started = pd.to_datetime(chal[time]).min()
    before = (pd.to_datetime(champ[time]) < started).to_numpy()
    champ_after = champ[~before]
    assigned = assigned_to_challenger(
        pd.concat([champ_after[spec.unit], chal[spec.unit]]).tolist(), plan.salt, plan.share
    )
    unserved = champ_after[spec.unit].isin(assigned).to_numpy()
    misrouted = int((~chal[spec.unit].isin(assigned)).sum())
    due = int(unserved.sum()) + int(len(chal) - misrouted)
    share = float(unserved.sum()) / due if due else 0.0
    check = {
        "check": "exposure",
        "exposure_start": started.isoformat(),
        "rows_before_exposure": int(before.sum()),
        "assigned_rows_served_by_champion": int(unserved.sum()),
        "share": share,
        "challenger_rows_of_champion_units": misrouted,
        "salt": plan.salt,
        "bound": bound,
        "passed": bool(share <= bound),
        "reason": f"exposure: {int(unserved.sum())} of the {due} rows of the challenger's units ({share:.2%}) were "
        f"served by the champion after the challenger's first row > max_contamination {bound:.2%}; rule: "
        "the canary arm must be served by the challenger",
    }
    return champ_after[~unserved], chal, check


def design_checks(
    champion_units: pd.Series, challenger_units: pd.Series, cfg: ABConfig
) -> list[dict[str, Any]]:
    """The canary's randomisation, checked before any metric is read:

    * **sample ratio mismatch**: the units in each arm against the configured canary share, by a
      chi-square goodness-of-fit test (1 degree of freedom); ``p < srm_alpha`` means the split is not
      the one configured (a routing bug, a challenger that was not loaded, lost log rows);
    * **contamination**: a unit logged in both arms (e.g. canary customers served by the champion while
      the challenger was loading) breaks the independence of the arms; more than ``max_contamination``
      of the units blocks the verdict.
    """
    from scipy.stats import chisquare

    a, b = set(champion_units.unique().tolist()), set(challenger_units.unique().tolist())
    both = a & b
    units = len(a | b)
    checks: list[dict[str, Any]] = []
    share = len(both) / units if units else 0.0
    checks.append(
        {
            "check": "contamination",
            "units_in_both_arms": len(both),
            "share": share,
            "bound": cfg.max_contamination,
            "passed": bool(share <= cfg.max_contamination),
            "reason": f"contamination: {len(both)} of {units} units ({share:.2%}) were logged in both arms > "
            f"max_contamination {cfg.max_contamination:.2%}; rule: each unit in one arm only",
        }
    )
    if cfg.canary_share is not None and 0 < cfg.canary_share < 1:
        observed = np.array([len(a - both), len(b - both)], dtype=float)
        expected = observed.sum() * np.array([1 - cfg.canary_share, cfg.canary_share])
        p = float(chisquare(observed, expected).pvalue) if observed.sum() else 1.0
        seen = observed[1] / observed.sum() if observed.sum() else math.nan
        checks.append(
            {
                "check": "sample_ratio",
                "challenger_units": int(observed[1]),
                "champion_units": int(observed[0]),
                "observed_share": seen,
                "expected_share": cfg.canary_share,
                "p_value": p,
                "bound": cfg.srm_alpha,
                "passed": bool(p >= cfg.srm_alpha),
                "reason": f"sample ratio mismatch: challenger share {seen:.4f} of {int(observed.sum())} units vs "
                f"configured {cfg.canary_share:.4f}, chi-square p={p:.2g} < srm_alpha {cfg.srm_alpha}; "
                "rule: the arms must have the configured split",
            }
        )
    return checks


def _single(values: pd.Series) -> str | None:
    uniq = sorted({str(v) for v in values.dropna().unique()})
    return uniq[0] if len(uniq) == 1 else (",".join(uniq) or None)


def recommend(
    arms: Mapping[str, Mapping[str, Any]],
    difference: Mapping[str, Any],
    guardrails: Mapping[str, Mapping[str, Any]],
    cfg: ABConfig,
    spec: ABSpec,
    look: Mapping[str, Any],
) -> tuple[str, list[str]]:
    """The verdict of one look:

    * ``extend``: an arm has fewer than ``min_positives`` matured positives; or, at an interim look,
      the primary did not cross its boundary (or crossed with a guardrail still inconclusive);
    * ``promote``: the primary's z crossed the look's efficacy boundary, its bootstrap bound at the
      look's level is above 0 too (a skewed bootstrap with a positive estimate is no win), and every
      guardrail passed its non-inferiority test;
    * ``keep``: a guardrail breached, the challenger is significantly worse, or the final look did
      not cross (no gain of the planned size at the planned sample).
    """
    support, metric = spec.support, spec.primary
    short = metric.name
    low_power = [a for a, m in arms.items() if m[support] < cfg.min_positives]
    if low_power:
        return "extend", [
            f"arm {a}: {arms[a][support]} matured {support} < min_positives {cfg.min_positives}"
            for a in low_power
        ]
    diff, z = difference["value"], difference["z"]
    boundary, final, k = look["boundary"], look["final"], look["look"]
    lower = look["lower_at_boundary"]
    where = f"look {k} ({'final' if final else 'interim'}, information {look['information']:.2f})"
    stat = f"{short} {diff:+.4f} (z={z:.2f}, boundary {boundary:.2f})"
    crossed = math.isfinite(z) and z >= boundary and math.isfinite(lower) and lower > 0
    breached = [g for g, v in guardrails.items() if v.get("breached")]
    unsure = [g for g, v in guardrails.items() if not v["passed"] and not v.get("breached")]
    if breached:
        return "keep", [f"{where}: guardrail(s) breached: {', '.join(breached)} ({stat})"]
    if crossed:
        if not unsure:
            return "promote", [f"{where}: {stat} crossed; guardrails non-inferior"]
        verdict = "keep" if final else "extend"
        return verdict, [
            f"{where}: {stat} crossed but guardrail(s) not shown non-inferior: {', '.join(unsure)}"
        ]
    if math.isfinite(z) and z <= look["harm_boundary"]:
        return "keep", [f"{where}: challenger is worse: {stat}, z <= {look['harm_boundary']:.2f}"]
    if math.isfinite(z) and z >= boundary:  # z crossed while the percentile bound did not
        reason = f"{stat} but its bootstrap bound at the look's level is {lower:+.4f} <= 0"
    else:
        reason = f"{stat} not crossed"
    if final:
        return "keep", [f"{where}: {reason}: no gain of the planned size"]
    return "extend", [f"{where}: {reason}; continue to the next look"]


# --- I/O -----------------------------------------------------------------------------------
def ab_spec(settings: Settings) -> ABSpec:
    """The use case's A/B declaration (ValueError when it declares none)."""
    use_case = get_use_case(settings)
    if use_case.ab is None:
        raise ValueError(f"use_case: {use_case.name!r} declares no online A/B analysis (UseCase.ab)")
    return use_case.ab(settings)


def load_period(layout: StorageLayout, start: dt.date, end: dt.date, as_of: dt.date) -> pd.DataFrame:
    """The prediction log of [start, end] with labels known at the end of ``as_of``."""
    spec = ab_spec(layout.settings)
    columns = list(
        dict.fromkeys(
            (*spec.log_columns, spec.unit, spec.row_id, spec.time_column, SCORE, "arm", "model_version")
        )
    )
    parts = layout.partition_paths("prediction_log", start, end)
    if not parts:
        raise FileNotFoundError(
            f"prediction_log: no partition in [{start}, {end}] under {layout.dataset_root('prediction_log')}"
        )
    log = pd.concat([pd.read_parquet(p, columns=columns) for p in parts], ignore_index=True)

    return get_use_case(layout.settings).monitoring.labels(log, layout, start, as_of)


def check_label_maturity(end: dt.date, as_of: dt.date, delay: int, through: dt.date | None) -> None:
    """Raise ValueError unless every label of the period is known at ``as_of``: ``as_of`` at least
    ``delay`` days after the period's last day, and the label events ingested through ``as_of``
    (otherwise the last days' positives are missing from both arms and the verdict reads a
    different, smaller sample than the one the experiment was sized for)."""
    if as_of < end + dt.timedelta(days=delay):
        raise ValueError(
            f"as_of: value {as_of} is {(as_of - end).days} day(s) after the period's end {end}; rule: "
            f"as_of >= end + label_delay_days ({delay}) = {end + dt.timedelta(days=delay)}, so that its labels matured"
        )
    if through is None or through < as_of:
        raise ValueError(
            f"as_of: value {as_of} is after the last ingested label day ({through}); rule: ingest the "
            "labels through as_of before analysing"
        )


def run_analysis(
    start: str | dt.date,
    end: str | dt.date,
    as_of: str | dt.date | None = None,
    cfg: ABConfig | None = None,
    apply: bool = False,
    actor: str | None = None,
    settings: Settings | None = None,
) -> ABResult:
    """One look at the experiment of the period's challenger: analyse ``[start, end]`` against its
    pre-registered plan, record the look in the plan's MLflow run, write
    ``reports/ab_analysis/date=<end>/result.json`` and (``apply``) act on it."""
    settings = settings or get_settings()
    layout = StorageLayout(settings)
    start, end = as_date(start), as_date(end)
    delay = settings.case.label_delay_days
    as_of = as_date(as_of) if as_of else end + dt.timedelta(days=delay)
    check_label_maturity(end, as_of, delay, labels_through(layout))
    log = get_logger("ab_analysis", end.isoformat())
    cfg = cfg or ABConfig.from_settings(settings)
    frame = load_period(layout, start, end, as_of)
    version = _single(frame.loc[frame["arm"] != CHAMPION, "model_version"])
    found = find_plan(version, settings) if version and "," not in version else None
    if found is None:
        raise ValueError(
            f"plan: challenger version {version!r} has no pre-registered A/B plan (MLflow experiment "
            f"{experiment_name(settings)!r}); rule: `python -m jobs.platform.ab_analysis plan --start "
            f"{start}` before the first look"
        )
    plan, run_id, looks = found
    if plan.start != start.isoformat():
        raise ValueError(
            f"start: value {start} is not the experiment's start {plan.start}; rule: every look analyses "
            "the experiment from its planned start"
        )
    earlier = [x for x in looks if x.end < end.isoformat()]
    if any(x.end > end.isoformat() for x in looks):
        raise ValueError(
            f"end: value {end} is before the experiment's last look ({looks[-1].end}); rule: looks move forward"
        )
    concluded = [x for x in earlier if x.concludes]
    if concluded:
        raise ValueError(
            f"end: the experiment concluded at look {concluded[0].look} ({concluded[0].end}, "
            f"{concluded[0].recommendation}); rule: no look after a verdict (plan a new experiment)"
        )
    result = analyse(
        frame,
        ab_spec(settings),
        dataclasses.replace(cfg, alpha=plan.alpha),
        start=start.isoformat(),
        end=end.isoformat(),
        as_of=as_of.isoformat(),
        plan=plan,
        looks=earlier,
    )
    lk = result.look
    record_look(
        run_id,
        [
            *earlier,
            Look(
                look=lk["look"],
                end=end.isoformat(),
                as_of=as_of.isoformat(),
                positives=lk["positives"],
                information=lk["information"],
                z=lk["z"],
                boundary=lk["boundary"],
                alpha_spent=lk["alpha_spent"],
                final=lk["final"],
                recommendation=result.recommendation,
            ),
        ],
        settings,
    )
    result.look["plan_run_id"] = run_id
    log.info(
        "ab analysis",
        recommendation=result.recommendation,
        reasons=result.reasons,
        metric=result.difference["metric"],
        difference=result.difference["value"],
        z=result.difference["z"],
        look=lk["look"],
        boundary=lk["boundary"],
    )
    if apply and result.recommendation == "promote":
        result.promotion = promote_challenger(result, actor=actor, settings=settings)
    write_result(layout, end, result)
    return result


def plan_experiment(
    start: str | dt.date,
    cfg: ABConfig | None = None,
    *,
    challenger_version: str | None = None,
    actor: str | None = None,
    settings: Settings | None = None,
) -> ABPlan:
    """Size and register the plan of the experiment that starts on ``start`` for the challenger
    (default: the registry's ``challenger`` alias), from the champion's labelled traffic of the
    ``pilot_days`` whose labels have matured by the day before the start."""
    from jobs.platform import registry

    settings = settings or get_settings()
    layout = StorageLayout(settings)
    cfg = cfg or ABConfig.from_settings(settings)
    start = as_date(start)
    version = challenger_version or registry.alias_version(registry.CHALLENGER, settings)
    if not version:
        raise ValueError(
            "challenger_version: no challenger is registered; rule: plan an experiment for a challenger"
        )
    design = "shadow" if settings.serving_challenger_mode == "shadow" else "canary"
    share = cfg.canary_share if cfg.canary_share is not None else settings.serving_canary_share
    delay = settings.case.label_delay_days
    through = labels_through(layout)
    if through is None:
        raise ValueError(
            f"pilot: no label has been ingested ({layout.dataset_root(label_dataset(settings))})"
        )
    as_of = min(start - dt.timedelta(days=1), through)
    pilot_end = as_of - dt.timedelta(days=delay)
    pilot_start = pilot_end - dt.timedelta(days=cfg.pilot_days - 1)
    spec = ab_spec(settings)
    frame = load_period(layout, pilot_start, pilot_end, as_of)
    days = frame[spec.time_column].pipe(pd.to_datetime).dt.date.nunique()
    positives = int(frame[spec.label].sum())  # the traffic's, all arms: volume does not depend on the model
    champion = frame[frame["arm"] == CHAMPION]
    value, variance = pilot_variance(champion, spec, cfg)
    champion_positives = int(champion[spec.label].sum())
    plan = design_plan(
        variance,
        champion_positives,
        positives / max(1, days),
        cfg,
        design=design,
        share=share,
        start=start,
        metric=spec.primary.name,
        higher_is_better=spec.primary.higher_is_better,
        challenger_version=version,
        champion_version=registry.champion_version(settings),
        pilot={
            "start": pilot_start.isoformat(),
            "end": pilot_end.isoformat(),
            "as_of": as_of.isoformat(),
            "days_with_traffic": int(days),
            "traffic_positives": positives,
            "rows": int(len(champion)),
            "units": int(champion[spec.unit].nunique()),
            "value": value,
        },
    )
    plan.created_at = now_iso()
    plan.created_by = actor or registry.default_actor()
    plan.salt = experiment_salt(settings.case.model_name, str(version))
    plan.pilot["run_id"] = record_plan(plan, settings)
    return plan


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
    spec = ab_spec(settings or get_settings())
    keys = (*(m.name for m in _metrics(spec)), spec.support, "rows")
    return registry.promote(
        version,
        reason=f"online A/B {result.start}..{result.end} ({result.design}): " + "; ".join(result.reasons),
        actor=actor or "ab_analysis",
        metrics={f"ab_{k}": chal[k] for k in keys}
        | {"ab_z": result.difference["z"], "ab_boundary": result.look.get("boundary")},
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
    argv = list(argv if argv is not None else __import__("sys").argv[1:])
    settings = get_settings()
    if argv[:1] == ["plan"]:
        p = argparse.ArgumentParser(
            prog="python -m jobs.platform.ab_analysis plan",
            description="size and register the plan of an experiment before its first look",
        )
        p.add_argument("--start", required=True, help="the experiment's first day")
        p.add_argument("--challenger-version", help="default: the registry's challenger alias")
        p.add_argument("--mde", type=float, help=f"default: settings ({ABConfig.mde})")
        p.add_argument("--power", type=float)
        p.add_argument("--max-days", type=int)
        p.add_argument("--actor")
        args = p.parse_args(argv[1:])
        cfg = ABConfig.from_settings(settings)
        changes = {"mde": args.mde, "power": args.power, "max_days": args.max_days}
        cfg = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
        plan = plan_experiment(args.start, cfg, challenger_version=args.challenger_version, actor=args.actor)
        print(json.dumps(plan.to_dict(), indent=2))
        return 0
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
    cfg = dataclasses.replace(ABConfig.from_settings(settings), n_boot=args.n_boot)
    result = run_analysis(args.start, args.end, args.as_of, cfg, apply=args.apply, actor=args.actor)
    print(json.dumps(result.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
