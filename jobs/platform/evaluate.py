"""Offline evaluation on a holdout window, and the champion/challenger gate.

Protocol (handbook chapter 5.2, "train/test with delay"): a model trained on days
``[train_start, train_end]`` is tested on a later window ``[holdout_start, holdout_end]`` with at
least ``label_delay_days`` days between them (in production, the most recent labels are not known
yet when a model is trained) and only once the holdout's own labels have matured (every fraud of a
holdout day has been reported ``label_delay_days`` later).

On the holdout the use case evaluates the scores (``UseCase.evaluate``: its metrics, slices and
decision policy; fraud's are in :mod:`jobs.fraud.evaluation`) and the gate compares a challenger
with the champion re-scored on the SAME holdout, by the rules the use case declares
(``UseCase.gate``, a :class:`jobs.platform.use_case.GateSpec`).

CLI::

    python -m jobs.platform.evaluate model --alias champion --start 2018-04-22 --end 2018-04-28
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from jobs.platform import metrics as M
from jobs.platform import resampling
from jobs.platform.config import Settings, get_settings
from jobs.platform.resampling import PairedResamples
from jobs.platform.storage import StorageLayout, as_date
from jobs.platform.use_case import GateSpec, MetricSpec, get_use_case


# --- windows and the label delay ------------------------------------------------------------
@dataclass(frozen=True)
class Windows:
    train_start: dt.date
    train_end: dt.date
    holdout_start: dt.date
    holdout_end: dt.date

    def as_params(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Windows:
        return cls(**{f.name: as_date(data[f.name]) for f in dataclasses.fields(cls)})


def default_windows(
    as_of: dt.date | str,
    train_days: int,
    holdout_days: int,
    label_delay_days: int,
    earliest: dt.date | str | None = None,
) -> Windows:
    """Windows ending at the last matured day before ``as_of``:

    holdout = the ``holdout_days`` days ending ``label_delay_days`` before ``as_of`` (their labels
    are complete), a ``label_delay_days`` gap, then ``train_days`` of training (clipped at
    ``earliest``, the first day with data)."""
    as_of = as_date(as_of)
    holdout_end = as_of - dt.timedelta(days=label_delay_days)
    holdout_start = holdout_end - dt.timedelta(days=holdout_days - 1)
    train_end = holdout_start - dt.timedelta(days=label_delay_days + 1)
    train_start = train_end - dt.timedelta(days=train_days - 1)
    if earliest is not None:
        train_start = max(train_start, as_date(earliest))
    if train_start > train_end:
        raise ValueError(
            f"as_of: value {as_of} leaves no training days; rule: need train + {label_delay_days}-day gap"
            f" + {holdout_days} holdout days + {label_delay_days} days of label maturity after "
            f"{earliest or 'the first day'}"
        )
    return Windows(train_start, train_end, holdout_start, holdout_end)


def check_protocol(w: Windows, label_delay_days: int, labels_through: dt.date | None = None) -> None:
    """Raise ValueError (naming the field, value and rule) when the windows break the protocol."""
    if w.train_start > w.train_end:
        raise ValueError(f"train_start: value {w.train_start} is after train_end {w.train_end}")
    if w.holdout_start > w.holdout_end:
        raise ValueError(f"holdout_start: value {w.holdout_start} is after holdout_end {w.holdout_end}")
    gap = (w.holdout_start - w.train_end).days - 1
    if gap < label_delay_days:
        raise ValueError(
            f"holdout_start: value {w.holdout_start} is {gap} day(s) after train_end {w.train_end}; "
            f"rule: the gap must be >= label_delay_days ({label_delay_days}) so that training never "
            "sees the holdout period nor labels it could not have known"
        )
    if labels_through is not None:
        matured = labels_through - dt.timedelta(days=label_delay_days)
        if w.holdout_end > matured:
            raise ValueError(
                f"holdout_end: value {w.holdout_end} has immature labels (labels arrived through "
                f"{labels_through}); rule: holdout_end <= last label day - {label_delay_days} = {matured}"
            )


def labels_through(layout: StorageLayout) -> dt.date | None:
    """The last day whose label events have been ingested: the last partition of the use case's
    ``ModelSpec.label_dataset`` (fraud: the chargeback reports)."""
    parts = layout.partitions(label_dataset(layout.settings))
    return parts[-1] if parts else None


def label_dataset(settings: Settings) -> str:
    model = get_use_case(settings).model
    if not model.label_dataset:
        raise ValueError(
            f"model.label_dataset: missing for use case {settings.use_case!r}; rule: name the dataset "
            "whose arrival matures the labels"
        )
    return model.label_dataset


# --- evaluation -----------------------------------------------------------------------------
@dataclass
class Evaluation:
    """Metrics of one model on one scored window, as a use case's ``evaluate`` returns them.

    ``slices`` maps a slice name to its metrics (``flat`` logs the ``slice_metrics`` of each, all of
    them when empty); ``threshold`` is the decision policy's choice when the use case has one;
    ``per_day`` an optional per-day table, stored in the summary under ``per_day_name``."""

    window: tuple[str, str]
    metrics: dict[str, float]
    slices: dict[str, dict[str, float]] = field(default_factory=dict)
    threshold: Any = None  # a dataclass: the decision policy's choice (fraud: ThresholdChoice)
    per_day: pd.DataFrame | None = None
    per_day_name: str = "per_day"
    slice_metrics: tuple[str, ...] = ()
    model_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def flat(self, prefix: str = "holdout_") -> dict[str, float]:
        """Flat numeric metrics for MLflow (slice metrics as ``<prefix>slice.<slice>.<metric>``)."""
        out = {f"{prefix}{k}": v for k, v in self.metrics.items()}
        for name, row in self.slices.items():
            key = name.replace("=", ".").replace(">", "ge").replace("<", "lt")
            for metric in self.slice_metrics or tuple(row):
                out[f"{prefix}slice.{key}.{metric}"] = row[metric]
        return {k: float(v) for k, v in out.items() if v is not None and not _isnan(v)}

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (also stored in the audit log and as an MLflow artifact)."""
        out: dict[str, Any] = {
            "window": list(self.window),
            "model_version": self.model_version,
            "metrics": M.json_safe(self.metrics),
            "threshold": None if self.threshold is None else M.json_safe(dataclasses.asdict(self.threshold)),
        }
        if self.per_day is not None:
            days = self.per_day.assign(day=self.per_day["day"].astype(str))
            out[self.per_day_name] = M.json_safe(days.to_dict("records"))
        out["slices"] = M.json_safe(self.slices)
        return out


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


# --- the gate ---------------------------------------------------------------------------------
@dataclass
class GateDecision:
    promote: bool
    reason: str
    checks: list[dict[str, Any]]

    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["passed"]]

    def as_dict(self) -> dict[str, Any]:
        return M.json_safe({"promote": self.promote, "reason": self.reason, "checks": self.checks})


def gate(
    challenger: Evaluation,
    champion: Evaluation | None,
    spec: GateSpec,
    paired: PairedResamples | None = None,
) -> GateDecision:
    """Should the challenger replace the champion? Both must be evaluated on the same holdout.

    The use case declares the rules (:class:`jobs.platform.use_case.GateSpec`):

    * absolute floors always apply — they alone decide for the first model;
    * primary metric: the challenger beats the champion by more than the margin;
    * guardrails: each may not regress by more than its tolerance, absolute or relative to the
      champion's value;
    * slices: in every champion slice with enough support, the slice metric may not regress by more
      than the slice tolerance (a slice the challenger lacks fails).

    With ``paired`` (the paired bootstrap of the spec's ``bootstrap`` on this holdout) the champion
    comparisons are tests at level ``alpha`` on the difference ``d`` (challenger minus champion, in
    the good direction): the primary metric passes only when the one-sided ``1 - alpha`` lower
    bound of ``d`` exceeds the margin (an equal challenger is promoted with probability about
    ``alpha``, not one half); a guardrail is a non-inferiority test (lower bound of ``d`` above
    ``-tolerance``); a slice refuses only when ``d < -tolerance`` is significant after Holm's
    correction over the slices tested (about nine slices with a few dozen positives each would
    otherwise refuse equal challengers by chance). A metric the bootstrap has no statistic for
    (ranking's funnel coverage) keeps the point rule; each check says which it used."""
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float, rule: str, bound: float, passed: bool, **extra: Any) -> None:
        checks.append(
            {"check": name, "value": value, "rule": rule, "bound": bound, "passed": bool(passed), **extra}
        )

    c = challenger.metrics
    for floor in spec.floors:
        m = floor.metric
        value = c.get(m.name, math.nan)
        check(f"floor.{m.name}", value, m.rule(), floor.bound, m.beats(value, floor.bound))

    primary = spec.primary
    boot = spec.bootstrap if paired is not None else None
    if champion is not None:
        if champion.window != challenger.window or champion.metrics["rows"] != c["rows"]:
            raise ValueError(
                f"champion evaluation: window {champion.window} ({champion.metrics['rows']:.0f} rows) != "
                f"challenger window {challenger.window} ({c['rows']:.0f} rows); rule: same holdout"
            )
        ch = champion.metrics
        if boot is not None and primary.name in paired:
            test = _lower_bound_test(paired, primary, spec.margin, boot.alpha)
            check(f"primary.{primary.name}", test.pop("lower"), "lower bound >", spec.margin, **test)
        else:
            bound = primary.shifted(ch[primary.name], spec.margin)
            value = c.get(primary.name, math.nan)
            check(
                f"primary.{primary.name}",
                value,
                primary.rule(strict=True),
                bound,
                primary.beats(value, bound, strict=True),
                method="point",
            )
        for guard in spec.guardrails:
            m = guard.metric
            if _isnan(ch.get(m.name, math.nan)):
                continue
            allowed = guard.allowed(ch[m.name])
            if boot is not None and m.name in paired:
                test = _lower_bound_test(paired, m, -allowed, boot.alpha, strict=False)
                check(f"guardrail.{m.name}", test.pop("lower"), "lower bound >=", -allowed, **test)
                continue
            bound = m.shifted(ch[m.name], -allowed)
            value = c.get(m.name, math.nan)
            check(f"guardrail.{m.name}", value, m.rule(), bound, m.beats(value, bound), method="point")
        rule = spec.slices
        harm: dict[str, dict[str, Any]] = {}
        for name, row in sorted(champion.slices.items()) if rule is not None else ():
            m = rule.metric
            if row[rule.support] < rule.min_support or _isnan(row[m.name]):
                continue
            key = f"{name}/{m.name}"
            mine = challenger.slices.get(name)
            if boot is not None and key in paired and mine is not None:
                estimate, d = paired.difference(key, m.higher_is_better)
                harm[name] = {
                    "estimate": estimate,
                    "ci": _ci(d, boot.alpha),
                    # H0: the slice did not regress by more than the tolerance (d >= -tolerance)
                    "p_value": (1.0 + float(np.sum(d >= -rule.tolerance))) / (len(d) + 1.0),
                    "resamples": len(d),
                }
                continue
            value = math.nan if mine is None else mine[m.name]
            bound = m.shifted(row[m.name], -rule.tolerance)
            check(f"slice.{name}.{m.name}", value, m.rule(), bound, m.beats(value, bound), method="point")
        if harm:
            decided = resampling.holm({k: v["p_value"] for k, v in harm.items()}, boot.alpha)
            for name, test in harm.items():
                rejected, level = decided[name]
                check(
                    f"slice.{name}.{rule.metric.name}",
                    test["estimate"],
                    "no significant drop beyond",
                    -rule.tolerance,
                    not rejected,
                    method="paired bootstrap, Holm",
                    holm_level=level,
                    slices_tested=len(harm),
                    **test,
                )

    failed = [x for x in checks if not x["passed"]]
    if failed:
        return GateDecision(False, "refused: " + "; ".join(_describe_check(x) for x in failed), checks)
    if champion is None:
        return GateDecision(True, "first champion: passes the absolute floors", checks)
    if boot is not None and primary.name in paired:
        first = next(x for x in checks if x["check"] == f"primary.{primary.name}")
        return GateDecision(
            True,
            f"beats champion v{champion.model_version}: {_describe_check(first)}; guardrails "
            "non-inferior and no slice regressed significantly",
            checks,
        )
    return GateDecision(
        True,
        f"beats champion v{champion.model_version}: {primary.name} {c[primary.name]:.4f} "
        f"{primary.rule(strict=True)} {champion.metrics[primary.name]:.4f} "
        f"{'+' if primary.higher_is_better else '-'} margin {spec.margin}; no guardrail or slice regressed",
        checks,
    )


def _ci(d: np.ndarray, alpha: float) -> list[float]:
    """The two-sided ``1 - 2 alpha`` percentile interval (its ends are the one-sided bounds)."""
    if not len(d):
        return [math.nan, math.nan]
    return [float(np.quantile(d, alpha)), float(np.quantile(d, 1.0 - alpha))]


def _lower_bound_test(
    paired: PairedResamples, metric: MetricSpec, bound: float, alpha: float, *, strict: bool = True
) -> dict[str, Any]:
    """Is the one-sided ``1 - alpha`` lower bound of the paired difference above ``bound``?"""
    estimate, d = paired.difference(metric.name, metric.higher_is_better)
    lo, hi = _ci(d, alpha)
    passed = bool(len(d)) and (lo > bound if strict else lo >= bound)
    return {
        "lower": lo,
        "passed": passed,
        "method": "paired bootstrap",
        "estimate": estimate,
        "ci": [lo, hi],
        "p_value": (1.0 + float(np.sum(d <= bound))) / (len(d) + 1.0),
        "resamples": len(d),
        "alpha": alpha,
    }


def _describe_check(x: Mapping[str, Any]) -> str:
    if "ci" not in x:
        return f"{x['check']} = {x['value']:.4f} not {x['rule']} {x['bound']:.4f}"
    lo, hi = x["ci"]
    if x["check"].startswith("slice."):
        return (
            f"{x['check']} difference {x['estimate']:+.4f} (CI [{lo:+.4f}, {hi:+.4f}]), a drop beyond "
            f"{-x['bound']:.4f} significant after Holm (p {x['p_value']:.4f} <= {x['holm_level']:.4f})"
        )
    level = 1.0 - x["alpha"]
    verdict = "" if x["passed"] else "not "
    return (
        f"{x['check']} difference {x['estimate']:+.4f}, one-sided {level:.1%} lower bound {lo:+.4f} "
        f"{verdict}{x['rule'].removeprefix('lower bound ')} {x['bound']:+.4f} "
        f"(paired bootstrap, {x['resamples']} resamples)"
    )


def gate_metrics(decision: GateDecision) -> dict[str, float]:
    """The bootstrap checks as MLflow metrics: ``gate.<check>.{difference,lower,upper,p_value}``."""
    out: dict[str, float] = {}
    for x in decision.checks:
        if "ci" not in x:
            continue
        key = "gate." + x["check"].replace("=", ".").replace(">", "ge").replace("<", "lt")
        out |= {
            f"{key}.difference": x["estimate"],
            f"{key}.lower": x["ci"][0],
            f"{key}.upper": x["ci"][1],
            f"{key}.p_value": x["p_value"],
        }
    return {k: float(v) for k, v in out.items() if not _isnan(v)}


def paired_resamples(
    frame: pd.DataFrame, scores: np.ndarray, champion_scores: np.ndarray, spec: GateSpec
) -> PairedResamples | None:
    """The paired bootstrap the spec declares, of the challenger's and champion's scores on ``frame``
    (None when the spec has none)."""
    boot = spec.bootstrap
    if boot is None:
        return None
    return resampling.paired_bootstrap(
        frame,
        scores,
        champion_scores,
        boot.statistics,
        unit=boot.unit,
        resamples=boot.resamples,
        seed=boot.seed,
    )


# --- MLflow -------------------------------------------------------------------------------------
FiguresFn = Callable[[pd.DataFrame, np.ndarray, Evaluation], Mapping[str, Any]]


def log_evaluation(
    run_id: str,
    df: pd.DataFrame,
    scores: np.ndarray,
    evaluation: Evaluation,
    figures: FiguresFn | None = None,
) -> None:
    """Attach holdout metrics, the use case's plots (``figures``: name -> matplotlib figure) and the
    full evaluation (per-day, slices) to an MLflow run."""
    import mlflow

    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(evaluation.flat())
        if figures is not None:
            import matplotlib.pyplot as plt

            for name, fig in figures(df, scores, evaluation).items():
                mlflow.log_figure(fig, f"plots/{name}")
                plt.close(fig)
        mlflow.log_dict(evaluation.summary(), "evaluation/holdout.json")
        slices = pd.DataFrame.from_dict(evaluation.slices, orient="index").rename_axis("slice")
        mlflow.log_text(slices.to_csv(), "evaluation/slices.csv")


# --- CLI ------------------------------------------------------------------------------------
def evaluate_registered(
    alias: str | None, version: str | None, start: str, end: str, settings: Settings | None = None
) -> Evaluation:
    """Score a registered model on a window of the feature service and evaluate it."""
    from jobs.platform import registry

    settings = settings or get_settings()
    layout = StorageLayout(settings)
    through = labels_through(layout)
    end_d = as_date(end)
    if through is None or end_d > through - dt.timedelta(days=settings.case.label_delay_days):
        raise ValueError(
            f"end: value {end} has immature labels (labels through {through}); "
            f"rule: end <= last label day - {settings.case.label_delay_days}"
        )
    model, mv, _ = registry.load_model(alias=alias, version=version, settings=settings)
    frame = get_use_case(settings).training_set(as_date(start), end_d, settings)
    scores = registry.predict_scores(model, frame)
    return get_use_case(settings).evaluate(frame, scores, settings=settings, model_version=mv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.platform.evaluate", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("model", help="evaluate a registered model on a matured window")
    p.add_argument("--alias", default=None, help="registry alias (default champion)")
    p.add_argument("--version", default=None, help="registry version (instead of an alias)")
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.add_argument("--json", action="store_true", help="print the full evaluation as JSON")
    args = parser.parse_args(argv)

    ev = evaluate_registered(args.alias if args.version is None else None, args.version, args.start, args.end)
    if args.json:
        json.dump(ev.summary(), sys.stdout, indent=2)
        print()
    else:
        print(get_use_case(get_settings()).describe(ev))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
