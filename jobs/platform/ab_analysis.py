"""Online A/B analysis of a canary (or shadow) period: should the challenger become champion?

Input: the serving prediction log of ``[start, end]`` (``prediction_log/date=D``, one row per scored
unit of traffic with ``arm`` = champion | challenger | shadow) joined with the labels known at
``as_of`` (default ``end + label_delay_days``), as the use case declares them (``UseCase.ab``,
:class:`jobs.platform.use_case.ABSpec`: the randomisation unit, the label, the primary metric and the
guardrails; fraud: average precision, AUC ROC, card precision@k and the alert rate by customer,
:mod:`jobs.fraud.ab`).

Per arm: the primary metric and the guardrail metrics, each with a bootstrap confidence interval.
The design decides the resampling unit:

* **canary** (champion and challenger serve *different units*, split by the routing key, e.g.
  customers): arms are independent; the bootstrap resamples whole units within each arm (a unit's
  rows are correlated, so rows are not independent), and the significance test of the primary
  difference is a *permutation test over units* (re-randomising the split, which is exactly the
  experiment's randomisation).
* **shadow** (the challenger scores the *same* rows as the champion): paired; the bootstrap resamples
  units jointly, and the permutation test swaps the two arms' scores per unit.

Each arm's sample carries its ``share`` of the period's units, for metrics that scale with the
traffic an arm sees (fraud's card precision@k uses ``k`` times the share).

Recommendation:

* ``extend`` when underpowered: fewer than ``min_positives`` matured positives in an arm, or the
  primary difference is not significant while its confidence interval is still wider than
  ±``mde`` (a relevant improvement cannot be ruled out yet);
* ``promote`` when the challenger's primary metric is significantly better (p < alpha, the whole
  ``1 - alpha`` CI of the difference and its estimate on the good side of 0) and no guardrail broke (``tolerance`` guardrails not worse
  than the champion by more than the gate's widest guardrail tolerance, ``ratio`` guardrails not
  above ``max_decision_rate_ratio`` times the champion's);
* ``keep`` when the CI lies wholly on the bad side (whatever the estimate), or otherwise;
* ``blocked`` whatever the metrics say when a canary's randomisation failed a check
  (:func:`design_checks`): a sample ratio mismatch against the configured canary share, or units
  logged in both arms.

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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from jobs.platform.config import Settings, get_settings
from jobs.platform.evaluate import labels_through
from jobs.platform.logs import get_logger
from jobs.platform.metrics import json_safe
from jobs.platform.params import ABConfig
from jobs.platform.storage import StorageLayout, as_date, staged_directory
from jobs.platform.use_case import ABMetric, ABSpec, get_use_case

CHAMPION, CHALLENGER, SHADOW = "champion", "challenger", "shadow"
SCORE = "score"


# --- fast binary metrics for the resampling loops (use cases build their ABMetric from them) -------
def average_precision(y: np.ndarray, s: np.ndarray) -> float:
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
    scores: np.ndarray | None = None  # replaces the clusters' scores (paired permutations)

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
    """The primary metric then each guardrail's (once each, by name)."""
    out: dict[str, ABMetric] = {spec.primary.name: spec.primary}
    for g in spec.guardrails:
        out.setdefault(g.metric.name, g.metric)
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
    v = values[np.isfinite(values)]
    if len(v) < 10:
        return [None, None]
    return [float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))]


def bootstrap(
    arms: Sequence[Clusters], spec: ABSpec, cfg: ABConfig, rng: np.random.Generator, share: float = 1.0
) -> list[dict[str, np.ndarray]]:
    """Bootstrap samples of every metric, one dict per arm: whole units resampled from the first
    arm's clusters and the same rows taken from every arm (one arm alone for a canary; the paired
    champion and shadow arms, row-aligned, for a shadow test); the costly metrics get fewer."""
    out: list[dict[str, np.ndarray]] = [{} for _ in arms]
    for costly, n in ((False, cfg.n_boot), (True, cfg.n_boot_costly)):
        metrics = [m for m in _metrics(spec) if m.costly == costly]
        if not metrics:
            continue
        for values in out:
            values.update({m.name: np.empty(n) for m in metrics})
        for b in range(n):
            idx = arms[0].resample(rng)
            samples = [ArmSample(cl, idx, share) for cl in arms]
            for sample in samples[1:]:
                sample.__dict__["unit"] = samples[0].unit  # the same unit copies on every side
            for values, sample in zip(out, samples, strict=True):
                for m in metrics:
                    values[m.name][b] = m.stat(sample) if len(sample) else math.nan
    return out


# --- significance -------------------------------------------------------------------------
def permutation_test_unpaired(
    cl: Clusters, in_b: np.ndarray, stat: ABMetric, n_perm: int, rng
) -> tuple[float, float]:
    """(observed stat(b) - stat(a), two-sided p) re-randomising whole units between the arms;
    ``in_b`` marks the rows of arm b in the pooled clusters ``cl``."""
    n_a_units = len(np.unique(cl.units[~in_b]))

    def diff(mask_rows: np.ndarray) -> float:
        b = ArmSample(cl, np.flatnonzero(mask_rows))
        a = ArmSample(cl, np.flatnonzero(~mask_rows))
        return stat.stat(b) - stat.stat(a)

    observed = diff(in_b)
    n_clusters = len(cl.starts)
    exceed = 0
    valid = 0
    for _ in range(n_perm):
        to_b = np.ones(n_clusters, dtype=bool)
        to_b[rng.choice(n_clusters, n_a_units, replace=False)] = False
        d = diff(np.repeat(to_b, cl.sizes))
        if math.isfinite(d):
            valid += 1
            exceed += abs(d) >= abs(observed) - 1e-12
    return observed, (exceed + 1) / (valid + 1)


def permutation_test_paired(
    cl: Clusters, s_b: np.ndarray, stat: ABMetric, n_perm: int, rng
) -> tuple[float, float]:
    """Paired arms on the same rows (``cl`` holds arm a's scores, ``s_b`` arm b's in the same row
    order): swap the arms' scores per unit."""
    everything = np.arange(len(cl.y))
    s_a = cl.s

    def diff(sb: np.ndarray, sa: np.ndarray) -> float:
        return stat.stat(ArmSample(cl, everything, scores=sb)) - stat.stat(
            ArmSample(cl, everything, scores=sa)
        )

    observed = diff(s_b, s_a)
    exceed = 0
    for _ in range(n_perm):
        swap = np.repeat(rng.random(len(cl.starts)) < 0.5, cl.sizes)
        d = diff(np.where(swap, s_a, s_b), np.where(swap, s_b, s_a))
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
    recommendation: str  # promote | keep | extend | blocked (the randomisation failed a check)
    reasons: list[str] = field(default_factory=list)
    promotion: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)  # the design's validity checks

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def analyse(
    log: pd.DataFrame, spec: ABSpec, cfg: ABConfig | None = None, *, start="", end="", as_of=""
) -> ABResult:
    """Analyse a labelled prediction log (the spec's log columns, ``arm``, ``model_version`` and the
    label). Pure: no I/O."""
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
    if paired:  # the shadow arm scores the champion's rows: compare on the common ones
        common = np.intersect1d(champ[spec.row_id], chal[spec.row_id])
        champ = champ[champ[spec.row_id].isin(common)].drop_duplicates(spec.row_id)
        chal = chal[chal[spec.row_id].isin(common)].drop_duplicates(spec.row_id)
    validity = [] if paired else design_checks(champ[spec.unit], chal[spec.unit], cfg)
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
    for name in arms:
        arms[name]["ci"] = {m: _ci(v, cfg.alpha) for m, v in boots[name].items()}

    # the difference challenger - champion: CI by bootstrap, p by permutation
    primary = spec.primary
    if paired:
        observed, p = permutation_test_paired(cl_c, cl_o.s, primary, cfg.n_perm, rng)
    else:
        pooled = Clusters(pd.concat([champ.assign(_arm=0), chal.assign(_arm=1)], ignore_index=True), spec)
        observed, p = permutation_test_unpaired(
            pooled, pooled.frame["_arm"].to_numpy() == 1, primary, cfg.n_perm, rng
        )
    difference: dict[str, Any] = {
        "metric": primary.name,
        "value": observed,
        "ci": _ci(boots[other_arm][primary.name] - boots[CHAMPION][primary.name], cfg.alpha),
        "p_value": p,
        "test": f"paired {spec.unit}-swap permutation"
        if paired
        else f"{spec.unit} permutation (re-randomised split)",
    }
    for m in _metrics(spec)[1:]:
        if not m.costly:
            difference[m.name] = {
                "value": arms[other_arm][m.name] - arms[CHAMPION][m.name],
                "ci": _ci(boots[other_arm][m.name] - boots[CHAMPION][m.name], cfg.alpha),
            }

    c, h = arms[CHAMPION], arms[other_arm]
    guardrails = {}
    for g in spec.guardrails:
        name = g.metric.name
        if g.rule == "ratio":
            passed = bool(h[name] <= cfg.max_decision_rate_ratio * max(c[name], 1e-9))
        else:
            passed = _within(h[name], c[name], cfg.guardrail_tolerance, g.metric.higher_is_better)
        guardrails[name] = {"passed": passed, "challenger": h[name], "champion": c[name]}
    recommendation, reasons = recommend(arms, difference, guardrails, cfg, spec)
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
    )


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


def _within(challenger: float, champion: float, tolerance: float, higher_is_better: bool) -> bool:
    """The challenger is not worse than the champion by more than ``tolerance`` (NaN never is)."""
    if not (math.isfinite(challenger) and math.isfinite(champion)):
        return False
    if higher_is_better:
        return bool(challenger >= champion - tolerance)
    return bool(challenger <= champion + tolerance)


def _single(values: pd.Series) -> str | None:
    uniq = sorted({str(v) for v in values.dropna().unique()})
    return uniq[0] if len(uniq) == 1 else (",".join(uniq) or None)


def recommend(
    arms: Mapping[str, Mapping[str, Any]],
    difference: Mapping[str, Any],
    guardrails: Mapping[str, Mapping[str, Any]],
    cfg: ABConfig,
    spec: ABSpec,
) -> tuple[str, list[str]]:
    support, metric = spec.support, spec.primary
    short = metric.name
    low_power = [a for a, m in arms.items() if m[support] < cfg.min_positives]
    if low_power:
        return "extend", [
            f"arm {a}: {arms[a][support]} matured {support} < min_positives {cfg.min_positives}"
            for a in low_power
        ]
    diff, (lo, hi), p = difference["value"], difference["ci"], difference["p_value"]
    level = f"{1 - cfg.alpha:.0%}"
    tested = p < cfg.alpha and lo is not None and hi is not None
    # a win needs the whole interval AND the estimate on the better side: a CI wholly on the worse side
    # with an estimate on the better one (a skewed bootstrap) is a loss, the reverse is no verdict
    if metric.higher_is_better:
        wins, loses = tested and lo > 0 and diff > 0, tested and hi < 0
    else:
        wins, loses = tested and hi < 0 and diff < 0, tested and lo > 0
    broken = [g for g, v in guardrails.items() if not v["passed"]]
    if wins:
        if broken:
            return "keep", [f"{short} {diff:+.4f} (p={p:.3f}) but guardrail(s) broke: {', '.join(broken)}"]
        return "promote", [
            f"{short} {diff:+.4f}, {level} CI [{lo:.4f}, {hi:.4f}], p={p:.3f}; guardrails passed"
        ]
    if loses:
        return "keep", [
            f"challenger {short} is worse: {diff:+.4f}, {level} CI [{lo:.4f}, {hi:.4f}] on the worse side, p={p:.3f}"
        ]
    if lo is None or hi is None or (hi - lo) / 2 > cfg.mde:
        half = "unknown" if lo is None else f"{(hi - lo) / 2:.4f}"
        return "extend", [
            f"{short} difference {diff:+.4f} not significant (p={p:.3f}); CI half-width {half} > mde {cfg.mde}"
        ]
    return "keep", [
        f"{short} difference {diff:+.4f} not significant (p={p:.3f}) and CI within ±{cfg.mde}: no gain"
    ]


# --- I/O -----------------------------------------------------------------------------------
def ab_spec(settings: Settings) -> ABSpec:
    """The use case's A/B declaration (ValueError when it declares none)."""
    use_case = get_use_case(settings)
    if use_case.ab is None:
        raise ValueError(f"use_case: {use_case.name!r} declares no online A/B analysis (UseCase.ab)")
    return use_case.ab()


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
    """Analyse a period, write ``reports/ab_analysis/date=<end>/result.json`` and (``apply``) act on it."""
    settings = settings or get_settings()
    layout = StorageLayout(settings)
    start, end = as_date(start), as_date(end)
    delay = settings.case.label_delay_days
    as_of = as_date(as_of) if as_of else end + dt.timedelta(days=delay)
    check_label_maturity(end, as_of, delay, labels_through(layout))
    log = get_logger("ab_analysis", end.isoformat())
    cfg = cfg or ABConfig.from_settings(settings)
    frame = load_period(layout, start, end, as_of)
    result = analyse(
        frame, ab_spec(settings), cfg, start=start.isoformat(), end=end.isoformat(), as_of=as_of.isoformat()
    )
    log.info(
        "ab analysis",
        recommendation=result.recommendation,
        reasons=result.reasons,
        metric=result.difference["metric"],
        difference=result.difference["value"],
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
    spec = ab_spec(settings or get_settings())
    keys = (*(m.name for m in _metrics(spec)), spec.support, "rows")
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
