"""Calibration of the champion/challenger gate by simulation: ``make decisions-calibration``.

The platform promotes models automatically, so the gate's error rates are measured, not assumed:

* **equal challengers**: two models equal in truth - the platform's model with independent noise
  added to each transaction's log-odds (``N(0, 0.5)``, drawn afresh for each copy), so that on the
  whole population both have exactly the same AP and any difference on a holdout is the holdout's
  and the noise's luck; each is judged as the challenger of the other -> the share promoted must be
  <= 5 %;
* **clearly better challengers**: the platform's model on all 15 features against a champion
  without the terminal features (the signal of the compromised-terminal frauds) -> the share
  promoted must be >= 95 %;
* reported, without a bound: **a small gain** (the model fitted on all the window's customers
  against one fitted on half of them) and **two halves** (the same configuration fitted on two random
  halves of the customers: exchangeable, but each pair differs in truth by the model variance, so
  the gate may rightly tell them apart).

Each rate is measured for the gate as configured (paired bootstrap over cards, one-sided
``alpha``) and, as the baseline in the same run, for the point rule the gate used before (challenger
AP > champion AP + margin, guardrails and slices on point estimates).

Data: the default simulator world (5,000 customers, 10,000 terminals, ~9,600 transactions a day),
``--weeks`` replicates along its timeline. Replicate ``r`` trains on 14 days, leaves the 7-day label
delay, and gates on the next 7 days; the holdouts of different replicates are disjoint weeks. The
features are the model's 15 inputs with the feature job's definitions, computed with pandas
(:mod:`benchmarks.monitor`) so that the run measures the decision rule, not Spark; the models are the
platform's (:func:`jobs.platform.train.fit_model`, default parameters) and the decisions the
platform's own :func:`jobs.platform.evaluate.gate` with fraud's :func:`jobs.fraud.use_case.gate_spec`.

Run: ``python -m benchmarks.decisions [--weeks 20] [--resamples 1000]``; exit code 1 when a rate is
outside its bound. The report is also written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._calibration_common import FEATURES, RESULT, finish, wilson

START = dt.date(2018, 4, 1)
WARM_UP_DAYS = 30  # the features' longest window
TRAIN_DAYS, DELAY_DAYS, HOLDOUT_DAYS = 14, 7, 7
EQUAL_BOUND, BETTER_BOUND = 0.05, 0.95
TERMINAL_PREFIX = "terminal_"
NOISE_SD = 0.5  # log-odds noise of the equal copies


def noisy_copy(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    p = np.clip(np.asarray(scores, dtype="float64"), 1e-9, 1 - 1e-9)
    logit = np.log(p / (1 - p)) + rng.normal(0.0, NOISE_SD, len(p))
    return 1.0 / (1.0 + np.exp(-logit))


@dataclasses.dataclass
class Tally:
    trials: int = 0
    bootstrap: int = 0
    point: int = 0
    differences: list[float] = dataclasses.field(default_factory=list)
    lower_bounds: list[float] = dataclasses.field(default_factory=list)


def windows(replicate: int) -> tuple[dt.date, dt.date, dt.date, dt.date]:
    train_start = START + dt.timedelta(days=WARM_UP_DAYS + HOLDOUT_DAYS * replicate)
    train_end = train_start + dt.timedelta(days=TRAIN_DAYS - 1)
    holdout_start = train_end + dt.timedelta(days=DELAY_DAYS + 1)
    return train_start, train_end, holdout_start, holdout_start + dt.timedelta(days=HOLDOUT_DAYS - 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.decisions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--weeks", type=int, default=20, help="replicates (disjoint holdout weeks)")
    parser.add_argument("--resamples", type=int, default=1000, help="the gate's bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the customer half-splits")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)

    from benchmarks.monitor import features, simulate
    from jobs.fraud.evaluation import evaluate_scores
    from jobs.fraud.settings import Costs, Gate
    from jobs.fraud.use_case import MODEL, gate_spec
    from jobs.platform.evaluate import gate, paired_resamples
    from jobs.platform.params import TrainParams
    from jobs.platform.registry import predict_scores
    from jobs.platform.train import fit_model

    started = time.monotonic()
    policy = Gate(resamples=args.resamples)
    spec = gate_spec(policy)
    costs = Costs()
    last = windows(args.weeks - 1)[3]
    days = (last - START).days + 1
    tx = simulate(START, days)
    frame = features(tx)
    frame["day"] = frame["tx_datetime"].dt.date
    columns = FEATURES
    weaker = [c for c in columns if not c.startswith(TERMINAL_PREFIX)]
    print(
        f"world: {days} days simulated, {len(frame):,} transactions, {int(frame['tx_fraud'].sum()):,} frauds "
        f"({time.monotonic() - started:.0f}s); {args.weeks} replicates of {TRAIN_DAYS}-day training, "
        f"{DELAY_DAYS}-day delay, {HOLDOUT_DAYS}-day holdout; gate alpha {policy.alpha} one-sided, "
        f"{policy.resamples} paired resamples over {policy.bootstrap_unit}",
        flush=True,
    )
    params = TrainParams()
    rng = np.random.default_rng(args.seed)
    equal, better, small, halves = Tally(), Tally(), Tally(), Tally()

    def decide(holdout: pd.DataFrame, challenger: np.ndarray, champion: np.ndarray, tally: Tally) -> None:
        champ = evaluate_scores(holdout, champion, costs=costs, model_version="champion")
        chall = evaluate_scores(holdout, challenger, costs=costs, model_version="challenger")
        paired = paired_resamples(holdout, challenger, champion, spec)
        boot = gate(chall, champ, spec, paired)
        point = gate(chall, champ, spec)
        primary = next(c for c in boot.checks if c["check"] == "primary.average_precision")
        tally.trials += 1
        tally.bootstrap += boot.promote
        tally.point += point.promote
        tally.differences.append(primary["estimate"])
        tally.lower_bounds.append(primary["value"])

    for r in range(args.weeks):
        t0 = time.monotonic()
        ts, te, hs, he = windows(r)
        train = frame[(frame["day"] >= ts) & (frame["day"] <= te)].reset_index(drop=True)
        holdout = frame[(frame["day"] >= hs) & (frame["day"] <= he)].reset_index(drop=True)
        customers = train["customer_id"].unique()
        half = set(rng.permutation(customers)[: len(customers) // 2].tolist())
        in_half = train["customer_id"].isin(half).to_numpy()
        a, _ = fit_model(train[in_half], columns, params, MODEL)
        b, _ = fit_model(train[~in_half], columns, params, MODEL)
        full, _ = fit_model(train, columns, params, MODEL)
        weak, _ = fit_model(train, weaker, params, MODEL)
        sa, sb = predict_scores(a, holdout), predict_scores(b, holdout)
        s_full = predict_scores(full, holdout)
        copy_a, copy_b = noisy_copy(s_full, rng), noisy_copy(s_full, rng)
        decide(holdout, copy_b, copy_a, equal)  # each of two equal copies as the other's challenger
        decide(holdout, copy_a, copy_b, equal)
        decide(holdout, s_full, predict_scores(weak, holdout), better)
        decide(holdout, s_full, sa, small)
        decide(holdout, sb, sa, halves)
        print(
            f"  replicate {r + 1:>2}/{args.weeks}: holdout {hs}..{he} ({len(holdout):,} rows, "
            f"{int(holdout['tx_fraud'].sum())} frauds)  equal dAP {equal.differences[-2]:+.4f}/"
            f"{equal.differences[-1]:+.4f} -> promoted {equal.bootstrap} (point rule {equal.point}) of "
            f"{equal.trials}; better dAP {better.differences[-1]:+.4f} (lower {better.lower_bounds[-1]:+.4f}) "
            f"-> promoted {better.bootstrap}/{better.trials}; twice the data dAP {small.differences[-1]:+.4f} "
            f"-> {small.bootstrap}/{small.trials}; halves dAP {halves.differences[-1]:+.4f} -> "
            f"{halves.bootstrap}/{halves.trials}  [{time.monotonic() - t0:.0f}s]",
            flush=True,
        )

    rows = []
    for name, tally, bound, rule in (
        ("equal challengers promoted", equal, EQUAL_BOUND, "<="),
        ("clearly better promoted", better, BETTER_BOUND, ">="),
        ("twice the data promoted", small, None, None),
        ("one half over the other", halves, None, None),
    ):
        for method, count in (
            ("paired bootstrap (gate)", tally.bootstrap),
            ("point rule (before)", tally.point),
        ):
            rate = count / tally.trials
            lo, hi = wilson(count, tally.trials)
            gated = method.endswith("(gate)") and bound is not None
            ok = (rate <= bound if rule == "<=" else rate >= bound) if gated else None
            rows.append(
                {
                    "decision": name,
                    "rule": method,
                    "trials": tally.trials,
                    "promoted": count,
                    "rate": rate,
                    "ci95": [lo, hi],
                    "bound": f"{rule} {bound:.0%}"
                    if gated
                    else ("reported" if bound is None else "baseline"),
                    "within_bound": ok,
                    "median_ap_difference": float(np.median(tally.differences)),
                }
            )
    print(f"\n{'decision':<28} {'rule':<24} {'promoted':>10} {'rate':>7} {'95% CI':>15}  {'bound':<9} result")
    for row in rows:
        lo, hi = row["ci95"]
        result = RESULT[row["within_bound"]]
        print(
            f"{row['decision']:<28} {row['rule']:<24} {row['promoted']:>4}/{row['trials']:<5} "
            f"{row['rate']:>7.1%} [{lo:5.1%}, {hi:5.1%}]  {row['bound']:<9} {result}"
        )
    gains = np.asarray(better.differences)
    widths = np.asarray(better.differences) - np.asarray(better.lower_bounds)
    print(
        f"\nclearly better: median AP gain {np.median(gains):+.4f} (range {gains.min():+.4f}..{gains.max():+.4f});"
        f" twice the data: median gain {np.median(small.differences):+.4f};"
        f" equal pairs: median |dAP| {np.median(np.abs(equal.differences)):.4f}; the gate's one-sided "
        f"lower bound sits a median {np.median(widths):.4f} AP below the estimate (the smallest gain it "
        f"promotes at this holdout size); total {time.monotonic() - started:.0f}s"
    )
    report = {
        "world": {"start": str(START), "days": days, "transactions": len(frame)},
        "protocol": {"train_days": TRAIN_DAYS, "delay_days": DELAY_DAYS, "holdout_days": HOLDOUT_DAYS},
        "gate": {"alpha": policy.alpha, "resamples": policy.resamples, "unit": policy.bootstrap_unit},
        "rows": rows,
        "seconds": round(time.monotonic() - started, 1),
    }
    return finish(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
