"""Benchmark: the monitoring step on a month of the default dataset (~290k transactions).

Data: the default simulator world (5,000 customers, 10,000 terminals); the reference is the month
before (the champion's training period), the current window the month after. Features are the
model's 15 inputs with the same definitions as the feature job (customer count / mean amount and
terminal count / delayed fraud share over 1, 7 and 30 days as of the previous day, weekend and
night flags), computed here with pandas so the benchmark times monitoring, not Spark. A real
XGBoost model trained on the reference month provides the scores.

Timed, side by side:

* **baseline** — Evidently's ``DataDriftPreset`` with its defaults on the full frames (both months,
  every column, no sampling);
* **configured** — ``jobs.platform.monitor``'s step: seeded samples (reference 20k rows, current capped at
  100k), one ``ValueDrift`` per feature with pinned methods + ``DriftedColumnsCount`` + score drift,
  scoring the window with the champion, quality on the matured week (AUC, AP, card precision@100),
  and writing the HTML report.

Target: the configured step < 60 s. Run: ``python -m benchmarks.monitor`` (or ``make bench``).
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.fraud.simulate import Simulator, SimulatorConfig

WINDOWS = (1, 7, 30)
DELAY = 7
TARGET_SECONDS = 60.0


def simulate(start: dt.date, days: int) -> pd.DataFrame:
    sim = Simulator(SimulatorConfig())
    frames = [sim.transactions(start + dt.timedelta(days=i)) for i in range(days)]
    return pd.concat(frames, ignore_index=True)


def _rolling(
    daily: pd.DataFrame, key: str, days: pd.DatetimeIndex, cols: list[str], lag: int
) -> pd.DataFrame:
    """Per entity and day: sums of ``cols`` over the windows ending ``lag`` days before the day."""
    wide = {
        c: daily.pivot_table(index="day", columns=key, values=c, aggfunc="sum").reindex(days).fillna(0)
        for c in cols
    }
    out = []
    for w in WINDOWS:
        sums = {c: wide[c].rolling(w, min_periods=1).sum().shift(lag).fillna(0) for c in cols}
        stacked = pd.concat({c: s.stack() for c, s in sums.items()}, axis=1)
        stacked.columns = [f"{c}_{w}" for c in cols]
        out.append(stacked)
    res = pd.concat(out, axis=1)
    res.index.names = ["day", key]
    return res.reset_index()


def features(tx: pd.DataFrame) -> pd.DataFrame:
    tx = tx.copy()
    tx["day"] = tx["tx_datetime"].dt.normalize()
    days = pd.date_range(tx["day"].min(), tx["day"].max(), freq="D")
    tx["one"] = 1.0
    cust_daily = tx.groupby(["customer_id", "day"], as_index=False).agg(
        n=("one", "sum"), amt=("tx_amount", "sum")
    )
    cust = _rolling(cust_daily, "customer_id", days, ["n", "amt"], lag=1)
    for w in WINDOWS:
        cust[f"customer_nb_tx_{w}d"] = cust[f"n_{w}"].astype("int64")
        cust[f"customer_avg_amount_{w}d"] = np.where(
            cust[f"n_{w}"] > 0, cust[f"amt_{w}"] / cust[f"n_{w}"].clip(lower=1), 0.0
        )
    term_daily = tx.groupby(["terminal_id", "day"], as_index=False).agg(
        n=("one", "sum"), f=("tx_fraud", "sum")
    )
    term = _rolling(term_daily, "terminal_id", days, ["n", "f"], lag=DELAY)
    for w in WINDOWS:
        term[f"terminal_nb_tx_{w}d"] = term[f"n_{w}"].astype("int64")
        term[f"terminal_risk_{w}d"] = np.where(
            term[f"n_{w}"] > 0, term[f"f_{w}"] / term[f"n_{w}"].clip(lower=1), 0.0
        )
    cust_cols = [c for c in cust.columns if c.startswith("customer_") and c != "customer_id"]
    term_cols = [c for c in term.columns if c.startswith("terminal_") and c != "terminal_id"]
    out = tx.merge(cust[["day", "customer_id", *cust_cols]], on=["day", "customer_id"], how="left")
    out = out.merge(term[["day", "terminal_id", *term_cols]], on=["day", "terminal_id"], how="left")
    out["tx_during_weekend"] = (out["tx_datetime"].dt.dayofweek >= 5).astype("int64")
    out["tx_during_night"] = (out["tx_datetime"].dt.hour < 6).astype("int64")
    return out.drop(columns=["one"]).fillna(0)


def main() -> int:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset
    from xgboost import XGBClassifier

    from jobs.fraud.monitoring import quality_metrics
    from jobs.platform.monitor import SCORE, MonitorConfig, compute_drift

    t0 = time.monotonic()
    start = dt.date(2018, 4, 1)
    tx = simulate(start, 90)  # 30 days of feature warm-up + reference month + current month
    feats = features(tx)
    day = feats["tx_datetime"].dt.date
    ref_full = feats[
        (day >= start + dt.timedelta(days=30)) & (day < start + dt.timedelta(days=60))
    ].reset_index(drop=True)
    cur_full = feats[day >= start + dt.timedelta(days=60)].reset_index(drop=True)
    columns = [
        "tx_amount", "tx_during_weekend", "tx_during_night",
        *[f"customer_{k}_{w}d" for w in WINDOWS for k in ("nb_tx", "avg_amount")],
        *[f"terminal_{k}_{w}d" for w in WINDOWS for k in ("nb_tx", "risk")],
    ]  # fmt: skip
    model = XGBClassifier(n_estimators=100, max_depth=6, learning_rate=0.3, n_jobs=2)
    model.fit(ref_full[columns].astype("float64"), ref_full["tx_fraud"])
    print(
        f"data: reference {len(ref_full):,} rows, current {len(cur_full):,} rows, "
        f"{len(columns)} features (prepared in {time.monotonic() - t0:.1f}s)"
    )

    # --- baseline: DataDriftPreset defaults on the full frames --------------------------------
    t = time.monotonic()
    cols_all = [*columns, "tx_fraud"]
    baseline = Report([DataDriftPreset()])
    snap = baseline.run(
        Dataset.from_pandas(cur_full[cols_all], data_definition=DataDefinition()),
        Dataset.from_pandas(ref_full[cols_all], data_definition=DataDefinition()),
    )
    with tempfile.TemporaryDirectory() as tmp:
        snap.save_html(str(Path(tmp) / "baseline.html"))
    baseline_s = time.monotonic() - t
    print(f"baseline   DataDriftPreset (defaults, full frames)          {baseline_s:7.1f}s")

    # --- the configured monitoring step ---------------------------------------------------------
    cfg = MonitorConfig()
    t = time.monotonic()
    ref = ref_full.sample(n=cfg.reference_rows, random_state=cfg.seed).reset_index(drop=True)
    ref[SCORE] = model.predict_proba(ref[columns].astype("float64"))[:, 1]
    cur = cur_full.sample(n=min(cfg.current_rows or len(cur_full), len(cur_full)), random_state=cfg.seed)
    cur = cur.reset_index(drop=True)
    cur[SCORE] = model.predict_proba(cur[columns].astype("float64"))[:, 1]
    figures, snapshot = compute_drift(ref, cur, columns, cfg)
    matured = cur_full[cur_full["tx_datetime"].dt.date < start + dt.timedelta(days=67)].copy()
    matured[SCORE] = model.predict_proba(matured[columns].astype("float64"))[:, 1]
    quality = quality_metrics(matured)
    with tempfile.TemporaryDirectory() as tmp:
        snapshot.save_html(str(Path(tmp) / "report.html"))
    configured_s = time.monotonic() - t
    print(f"configured jobs.platform.monitor step (sampled, pinned methods)     {configured_s:7.1f}s")
    print(
        f"  drift share {figures['drift_share']:.2f} {figures['drifted_features']}, "
        f"score drift {figures['prediction']['score']:.3f}, matured AP {quality['average_precision']:.3f}, "
        f"CP@100 {quality['card_precision_at_100']:.3f}"
    )
    print(
        f"speed-up vs baseline: {baseline_s / configured_s:.1f}x; target < {TARGET_SECONDS:.0f}s: "
        f"{'met' if configured_s < TARGET_SECONDS else 'MISSED'}"
    )
    return 0 if configured_s < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
