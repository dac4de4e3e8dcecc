"""Calibration of the online A/B engine by simulation (part of ``make decisions-calibration``).

Experiments are run the way the platform runs them, on the default simulator world: a champion
(the platform's model, trained once on 14 days after the features' warm-up), a canary split of the
customers by serving's own salted hash (:func:`jobs.platform.assignment.canary_bucket`, a new salt per
experiment, recorded in the plan so that the analysis reads the exposure as the platform does) at the
configured share, a plan sized by :func:`jobs.platform.ab_plan.design_plan` on the
champion's traffic of the 14 days before the start (pilot variance by
:func:`jobs.platform.ab_analysis.pilot_variance`), and weekly looks of
:func:`jobs.platform.ab_analysis.analyse` (fraud's spec: AP primary, AUC / card precision@k / alert
rate guardrails) until a verdict or the plan's last day:

* **A/A**: both arms score with the champion -> the share of experiments promoted must be <= alpha
  (the plan's one-sided level, all looks included); reported beside it, the rate the same looks
  would promote with a fixed 1.96 at every look (peeking, the engine before the plan);
* **planted effect of the mde**: the challenger arm's scores are the champion's with ``delta * y``
  added to the log-odds (``y`` the true label), ``delta`` set so that on the whole simulated period
  the challenger's AP is the champion's + mde -> the share promoted must be >= the planned power.

The mde is the smallest (in steps of 0.005) whose plan at the configured canary share fits within
``--max-days`` on the first pilot; every experiment's plan is then sized on its own pilot. A/A and
planted experiments use the same starts and salts. Experiments overlap in time (starts a week apart,
several salts per start): the splits differ, the traffic is shared, so the rates are unbiased but
their intervals (Wilson, shown) are somewhat optimistic.

Run: ``python -m benchmarks.ab_decisions [--starts 12] [--aa-salts 84] [--salts 10]``; exit code 1 when a rate is
outside its bound. ``--out`` writes the JSON report.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._calibration_common import FEATURES, RESULT, finish, wilson

START = dt.date(2018, 4, 1)
WARM_UP_DAYS, TRAIN_DAYS, DELAY_DAYS, PILOT_DAYS = 30, 14, 7, 14
ALERT_RATE = 0.01  # each arm flags its top 1 % (the decision the alert-rate guardrail reads)

_WORLD: dict[str, object] = {}  # the scored world, shared with the forked workers


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def planted_scores(champion: np.ndarray, y: np.ndarray, delta: float) -> np.ndarray:
    return 1 / (1 + np.exp(-(logit(champion) + delta * y)))


def plant(champion: np.ndarray, y: np.ndarray, mde: float) -> tuple[float, float]:
    """(delta, achieved AP gain): the log-odds boost of the positives giving an AP gain of ``mde``."""
    from sklearn.metrics import average_precision_score

    base = average_precision_score(y, champion)
    lo, hi = 0.0, 8.0
    for _ in range(40):
        mid = (lo + hi) / 2
        gain = average_precision_score(y, planted_scores(champion, y, mid)) - base
        lo, hi = (mid, hi) if gain < mde else (lo, mid)
    delta = (lo + hi) / 2
    return delta, float(average_precision_score(y, planted_scores(champion, y, delta)) - base)


def pilot_window(frame: pd.DataFrame, start: dt.date) -> pd.DataFrame:
    """The champion's traffic of the ``PILOT_DAYS`` whose labels matured by the day before ``start``."""
    end = start - dt.timedelta(days=DELAY_DAYS + 1)
    pilot = frame[(frame["day"] > end - dt.timedelta(days=PILOT_DAYS)) & (frame["day"] <= end)]
    return pilot.assign(score=pilot["champion"], arm="champion", model_version="1")


def plan_on_pilot(pilot: pd.DataFrame, variance: float, cfg, start: dt.date):
    """The platform's plan (:func:`jobs.platform.ab_plan.design_plan`) of a canary starting on ``start``."""
    from jobs.platform.ab_plan import design_plan

    frauds = int(pilot["tx_fraud"].sum())
    return design_plan(
        variance, frauds, frauds / PILOT_DAYS, cfg, design="canary", share=cfg.canary_share, start=start,
        metric="average_precision", higher_is_better=True, challenger_version="2", champion_version="1",
    )  # fmt: skip


def experiment(job: tuple[int, int, bool]) -> dict[str, object]:
    """One experiment: plan on its pilot, then weekly looks until a verdict or the last day."""
    from jobs.fraud.ab import AB_SPEC
    from jobs.platform.ab_analysis import analyse, pilot_variance
    from jobs.platform.ab_plan import Look
    from jobs.platform.assignment import canary_bucket

    start_index, salt_index, planted = job
    frame: pd.DataFrame = _WORLD["frame"]  # type: ignore[assignment]
    cfg = _WORLD["cfg"]
    start: dt.date = _WORLD["starts"][start_index]  # type: ignore[index]
    salt = f"calibration/{start_index}/{salt_index}"
    pilot = pilot_window(frame, start)
    _, variance = pilot_variance(pilot, AB_SPEC, cfg)
    plan = dataclasses.replace(plan_on_pilot(pilot, variance, cfg, start), salt=salt)
    period = frame[(frame["day"] >= start) & (frame["day"] <= plan.last_day)]
    customers = period["customer_id"].unique()
    canary = {c for c in customers.tolist() if canary_bucket(int(c), salt) < cfg.canary_share}
    to_challenger = period["customer_id"].isin(canary).to_numpy()
    chall_scores = period["planted"] if planted else period["champion"]
    chall_threshold = _WORLD["planted_threshold"] if planted else _WORLD["champion_threshold"]
    score = np.where(to_challenger, chall_scores, period["champion"])
    threshold = np.where(to_challenger, chall_threshold, _WORLD["champion_threshold"])
    log = pd.DataFrame(
        {
            "transaction_id": period["transaction_id"].to_numpy(),
            "customer_id": period["customer_id"].to_numpy(),
            "tx_datetime": period["tx_datetime"].to_numpy(),
            "score": score,
            "decision": (score >= threshold).astype(int),
            "model_version": np.where(to_challenger, "2", "1"),
            "arm": np.where(to_challenger, "challenger", "champion"),
            "tx_fraud": period["tx_fraud"].to_numpy(),
            "day": period["day"].to_numpy(),
        }
    )
    looks: list[Look] = []
    differences: list[float] = []
    ses: list[float] = []
    naive = False  # would a fixed 1.96 at each look have promoted (peeking)?
    verdict = "extend"
    k = 0
    while True:
        k += 1
        end = min(start + dt.timedelta(days=cfg.look_every_days * k - 1), plan.last_day)
        part = log[log["day"] <= end].drop(columns="day")
        r = analyse(part, AB_SPEC, cfg, start=start.isoformat(), end=end.isoformat(), plan=plan, looks=looks)
        lk = r.look
        differences.append(r.difference["value"])
        ses.append(r.difference["se"])
        naive = naive or (math.isfinite(lk["z"]) and lk["z"] >= 1.959964)
        looks.append(
            Look(
                k,
                end.isoformat(),
                end.isoformat(),
                lk["positives"],
                lk["information"],
                lk["z"],
                lk["boundary"],
                lk["alpha_spent"],
                lk["final"],
                r.recommendation,
            )  # fmt: skip
        )
        verdict = r.recommendation
        if verdict in ("promote", "keep", "blocked") or lk["final"]:
            break
    return {
        "start": start.isoformat(),
        "salt": salt,
        "planted": planted,
        "verdict": verdict,
        "looks": len(looks),
        "last_z": looks[-1].z,
        "z": [x.z for x in looks],
        "difference": differences,
        "se": ses,
        "naive_promote": naive,
        "planned_positives": plan.planned_positives,
        "planned_days": plan.planned_days,
        "power_at_max_days": plan.power_at_max_days,
        "blocked_by": [c for c in r.reasons if c.startswith(("sample ratio", "contamination"))],
        "reasons": r.reasons,
        "guardrails": {g: v["status"] for g, v in r.guardrails.items()},
    }


def z_calibration(aa: list[dict[str, object]]) -> dict[str, object] | None:
    """The A/A experiments' z at their first look (no experiment has stopped yet, so no selection):
    a calibrated statistic is N(0, 1) there. Its sd is far more precise than the false-promotion rate
    (about +-2 % at 1,000 experiments against the rate's +-1 point on 2.5 %)."""
    from scipy.stats import chi2

    z = np.array([r["z"][0] for r in aa if r["z"] and math.isfinite(r["z"][0])], dtype=float)  # type: ignore[index]
    if len(z) < 10:
        return None
    n = len(z)
    sd = float(z.std(ddof=1))
    lo, hi = (sd * math.sqrt((n - 1) / chi2.ppf(q, n - 1)) for q in (0.975, 0.025))
    return {
        "n": n,
        "mean": float(z.mean()),
        "mean_se": sd / math.sqrt(n),
        "sd": sd,
        "sd_ci": [lo, hi],
        "above": float((z > 1.959964).mean()),
        "below": float((z < -1.959964).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ab_decisions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--starts", type=int, default=12, help="experiment starts, a week apart")
    parser.add_argument("--salts", type=int, default=10, help="canary splits per start (planted effect)")
    parser.add_argument(
        "--aa-salts",
        type=int,
        default=84,
        help="canary splits per start of the A/A experiments (their rate is compared with alpha = 2.5 %%: "
        "1,008 experiments resolve it to about +-1 %%)",
    )
    parser.add_argument("--max-days", type=int, default=28, help="the plans' maximum duration")
    parser.add_argument(
        "--share", type=float, default=None, help="canary share (default: the serving setting)"
    )
    parser.add_argument("--n-boot", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--parts", default="aa,planted", help="which experiments: aa, planted or both")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from benchmarks.monitor import features, simulate
    from jobs.fraud.ab import AB_SPEC
    from jobs.fraud.use_case import MODEL
    from jobs.platform.ab_analysis import pilot_variance
    from jobs.platform.config import get_settings
    from jobs.platform.params import ABConfig, TrainParams
    from jobs.platform.registry import predict_scores
    from jobs.platform.train import fit_model

    started = time.monotonic()
    settings = get_settings()
    share = args.share if args.share is not None else settings.serving_canary_share
    base = ABConfig.from_settings(settings)
    cfg = dataclasses.replace(
        base,
        canary_share=share,
        max_days=args.max_days,
        n_boot=args.n_boot,
        n_boot_costly=min(100, args.n_boot),
    )
    first_start = START + dt.timedelta(days=WARM_UP_DAYS + TRAIN_DAYS + DELAY_DAYS + PILOT_DAYS + DELAY_DAYS)
    starts = [first_start + dt.timedelta(days=7 * i) for i in range(args.starts)]
    last = starts[-1] + dt.timedelta(days=args.max_days - 1)
    days = (last - START).days + 1
    frame = features(simulate(START, days))
    frame["day"] = frame["tx_datetime"].dt.date
    train_start = START + dt.timedelta(days=WARM_UP_DAYS)
    train = frame[
        (frame["day"] >= train_start) & (frame["day"] < train_start + dt.timedelta(days=TRAIN_DAYS))
    ]
    model, _ = fit_model(train.reset_index(drop=True), FEATURES, TrainParams(), MODEL)
    after = frame[frame["day"] >= train_start + dt.timedelta(days=TRAIN_DAYS + DELAY_DAYS)].reset_index(
        drop=True
    )
    after["champion"] = predict_scores(model, after)
    print(
        f"world: {days} days, {len(frame):,} transactions ({time.monotonic() - started:.0f}s); champion trained on "
        f"{TRAIN_DAYS} days; {args.starts} starts x {args.aa_salts} (A/A) / {args.salts} (planted) salts, "
        f"canary share {share}, looks every "
        f"{cfg.look_every_days} days, max {cfg.max_days} days, alpha {cfg.alpha} one-sided, power {cfg.power}, "
        f"{cfg.spending}",
        flush=True,
    )

    # the mde: the smallest whose plan on the first pilot fits within max_days
    pilot = pilot_window(after, starts[0])
    _, variance = pilot_variance(pilot, AB_SPEC, cfg)
    mde = 0.005
    while True:
        plan = plan_on_pilot(pilot, variance, dataclasses.replace(cfg, mde=mde), starts[0])
        if plan.feasible:
            break
        mde = round(mde + 0.005, 3)
    cfg = dataclasses.replace(cfg, mde=mde)
    period = after[after["day"] >= starts[0]]
    delta, gain = plant(period["champion"].to_numpy(), period["tx_fraud"].to_numpy(), mde)
    after["planted"] = planted_scores(after["champion"].to_numpy(), after["tx_fraud"].to_numpy(), delta)
    print(
        f"mde {mde} (first plan: {plan.planned_positives:.0f} frauds in {plan.planned_days} days, "
        f"{plan.planned_looks} looks, inflation {plan.inflation_factor:.3f}); planted: log-odds +{delta:.3f} on "
        f"frauds -> AP gain {gain:+.4f} over the experiment period",
        flush=True,
    )
    _WORLD.update(
        frame=after,
        cfg=cfg,
        starts=starts,
        champion_threshold=float(np.quantile(after["champion"], 1 - ALERT_RATE)),
        planted_threshold=float(np.quantile(after["planted"], 1 - ALERT_RATE)),
    )
    kinds = [k == "planted" for k in ("aa", "planted") if k in args.parts.split(",")]
    jobs = [
        (i, j, p)
        for p in kinds
        for i in range(args.starts)
        for j in range(args.salts if p else args.aa_salts)
    ]
    results: list[dict[str, object]] = []
    import multiprocessing

    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for n, res in enumerate(pool.map(experiment, jobs, chunksize=1), 1):
            results.append(res)
            if n % 20 == 0:
                print(f"  {n}/{len(jobs)} experiments [{time.monotonic() - started:.0f}s]", flush=True)

    aa = [r for r in results if not r["planted"]]
    ab = [r for r in results if r["planted"]]
    rows = []
    for name, group, key, bound, rule in tuple(
        g
        for g in (
            ("A/A promoted (sequential plan)", aa, "promote", cfg.alpha, "<="),
            ("A/A promoted (1.96 at each look)", aa, "naive", None, None),
            ("A/A blocked (SRM / contamination)", aa, "blocked", None, None),
            ("planted mde promoted (power)", ab, "promote", cfg.power, ">="),
        )
        if g[1]
    ):
        count = sum(1 for r in group if (r["naive_promote"] if key == "naive" else r["verdict"] == key))
        rate = count / len(group)
        lo, hi = wilson(count, len(group))
        ok = None if bound is None else (rate <= bound if rule == "<=" else rate >= bound)
        rows.append(
            {
                "decision": name,
                "trials": len(group),
                "count": count,
                "rate": rate,
                "ci95": [lo, hi],
                "bound": "reported" if bound is None else f"{rule} {bound:.1%}",
                "within_bound": ok,
            }
        )
    print(f"\n{'A/B decision':<36} {'count':>10} {'rate':>7} {'95% CI':>15}  {'bound':<9} result")
    for row in rows:
        lo, hi = row["ci95"]
        result = RESULT[row["within_bound"]]
        print(
            f"{row['decision']:<36} {row['count']:>4}/{row['trials']:<5} {row['rate']:>7.1%} "
            f"[{lo:5.1%}, {hi:5.1%}]  {row['bound']:<9} {result}"
        )
    calibration = z_calibration(aa)
    if calibration:
        c = calibration
        print(
            f"\nA/A z at the first look (all {c['n']} experiments, before any stop): mean {c['mean']:+.3f} "
            f"(se {c['mean_se']:.3f}), sd {c['sd']:.3f} (95% CI {c['sd_ci'][0]:.3f}-{c['sd_ci'][1]:.3f}; a "
            f"calibrated z has 1), above 1.96 {c['above']:.1%}, below -1.96 {c['below']:.1%} (2.5% each)"
        )
    looks_ab = np.array([r["looks"] for r in ab if r["verdict"] == "promote"])
    print(
        f"\nplanted: promoted at look {np.mean(looks_ab) if len(looks_ab) else math.nan:.2f} on average "
        f"(plans: median {np.median([r['planned_days'] for r in ab]):.0f} days); total "
        f"{time.monotonic() - started:.0f}s"
    )
    report = {
        "world": {"start": str(START), "days": days, "transactions": len(frame)},
        "design": {
            "share": share,
            "mde": mde,
            "alpha": cfg.alpha,
            "power": cfg.power,
            "spending": cfg.spending,
            "look_every_days": cfg.look_every_days,
            "max_days": cfg.max_days,
            "n_boot": cfg.n_boot,
            "planted_delta": delta,
            "planted_gain": gain,
        },  # fmt: skip
        "rows": rows,
        "aa_first_look_z": calibration,
        "experiments": results,
        "seconds": round(time.monotonic() - started, 1),
    }
    return finish(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
