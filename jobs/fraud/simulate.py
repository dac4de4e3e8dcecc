"""Transaction simulator: the stand-in for the card network.

Follows the simulator of *Reproducible Machine Learning for Credit Card Fraud Detection - Practical
Handbook* (Le Borgne et al.), chapter 3.2:

* customers and terminals placed uniformly on a 100x100 grid; a customer uses the terminals within
  radius 5 of its location;
* customer profile: mean amount ~ U(5, 100), std = mean / 2, mean transactions per day ~ U(0, 4);
* per day, a Poisson number of transactions per customer, time of day ~ N(noon, 20000 s) (times
  outside the day are discarded), amount ~ N(mean, std) (a negative draw is redrawn ~ U(0, 2 mean)),
  terminal drawn uniformly from the customer's terminals;
* fraud scenario 1: every amount over 220 is fraud;
* fraud scenario 2: each day 2 terminals are compromised; their transactions in the next 28 days
  are fraud;
* fraud scenario 3: each day 3 customers are compromised; in the next 14 days a third of their
  transactions have their amount multiplied by 5 and are fraud.

Differences from the handbook's code, on purpose: each day draws from its own seeded stream
(``SeedSequence([seed, day, stream])``), so any day is reproducible alone and a range can be
generated incrementally; scenario 3 picks each compromised transaction with probability 1/3
instead of exactly a third of a 14-day window (the window is not known day by day).

Extras for the platform: ``--scale`` multiplies customers and terminals; a drift knob shifts the
amount distribution and/or the fraud mix from a given date; ``--dup-rate`` makes the network
re-send some records (so ingestion must deduplicate); labels (chargebacks) are written separately,
each fraud reported 1..``label_delay_days`` days after the transaction, so later parts must deal
with late labels.
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from jobs.fraud.schema import (
    LABEL_SCHEMA,
    RAW_LABEL_COLUMNS,
    RAW_TRANSACTION_COLUMNS,
    TIMESTAMP_FORMAT,
    TRANSACTION_SCHEMA,
)
from jobs.platform.config import get_settings
from jobs.platform.landing import mark_landed
from jobs.platform.logs import get_logger
from jobs.platform.storage import StorageLayout, as_date, staged_directory, staged_file

SECONDS_PER_DAY = 86_400
ID_STRIDE = 10**8  # transaction ids are day_index * ID_STRIDE + sequence within the day

# stream ids of the per-day random generators
_TX, _TERMINALS, _CUSTOMERS, _S3_PICK, _LABELS, _DUPS = range(6)


@dataclass(frozen=True)
class DriftConfig:
    """From ``start`` on, amounts are multiplied by ``amount_factor`` and the number of compromised
    terminals and customers per day by ``fraud_factor``."""

    start: dt.date | None = None
    amount_factor: float = 1.0
    fraud_factor: float = 1.0

    def active(self, day: dt.date) -> bool:
        return self.start is not None and day >= self.start


@dataclass(frozen=True)
class SimulatorConfig:
    n_customers: int = 5_000
    n_terminals: int = 10_000
    radius: float = 5.0
    start_date: dt.date = dt.date(2018, 4, 1)  # the simulation epoch: day index 0
    seed: int = 0
    scale: float = 1.0
    dup_rate: float = 0.001
    label_delay_days: int = 7
    compromised_terminals_per_day: int = 2
    compromised_terminal_days: int = 28
    compromised_customers_per_day: int = 3
    compromised_customer_days: int = 14
    drift: DriftConfig = field(default_factory=DriftConfig)

    @property
    def customers(self) -> int:
        return max(1, int(round(self.n_customers * self.scale)))

    @property
    def terminals(self) -> int:
        return max(1, int(round(self.n_terminals * self.scale)))


def _rng(cfg: SimulatorConfig, day: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, day, stream]))


class Simulator:
    def __init__(self, cfg: SimulatorConfig) -> None:
        self.cfg = cfg

    # --- static world ---------------------------------------------------------------
    @cached_property
    def customers(self) -> pd.DataFrame:
        rng = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, 1_000_001]))
        n = self.cfg.customers
        mean_amount = rng.uniform(5, 100, n)
        return pd.DataFrame(
            {
                "customer_id": np.arange(n, dtype=np.int64),
                "x": rng.uniform(0, 100, n),
                "y": rng.uniform(0, 100, n),
                "mean_amount": mean_amount,
                "std_amount": mean_amount / 2,
                "mean_nb_tx_per_day": rng.uniform(0, 4, n),
            }
        )

    @cached_property
    def terminals(self) -> pd.DataFrame:
        rng = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, 1_000_002]))
        n = self.cfg.terminals
        return pd.DataFrame(
            {
                "terminal_id": np.arange(n, dtype=np.int64),
                "x": rng.uniform(0, 100, n),
                "y": rng.uniform(0, 100, n),
            }
        )

    @cached_property
    def _available_terminals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR layout of each customer's terminals within the radius: (offsets, counts, flat ids)."""
        tree = cKDTree(self.terminals[["x", "y"]].to_numpy())
        lists = tree.query_ball_point(self.customers[["x", "y"]].to_numpy(), r=self.cfg.radius)
        counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        flat = np.fromiter((t for x in lists for t in sorted(x)), dtype=np.int64, count=int(counts.sum()))
        return offsets, counts, flat

    # --- per-day draws --------------------------------------------------------------
    def day_index(self, day: dt.date) -> int:
        idx = (day - self.cfg.start_date).days
        if idx < 0:
            raise ValueError(f"date {day} is before the simulation start {self.cfg.start_date}")
        return idx

    def _compromised(self, k: int, stream: int, per_day: int, population: int) -> np.ndarray:
        day = self.cfg.start_date + dt.timedelta(days=k)
        n = per_day
        if self.cfg.drift.active(day):
            n = int(round(per_day * self.cfg.drift.fraud_factor))
        n = min(n, population)
        return _rng(self.cfg, k, stream).choice(population, size=n, replace=False)

    def _compromised_union(
        self, d: int, stream: int, per_day: int, window: int, population: int
    ) -> np.ndarray:
        ks = range(max(0, d - window + 1), d + 1)
        parts = [self._compromised(k, stream, per_day, population) for k in ks]
        return np.unique(np.concatenate(parts)) if parts else np.array([], dtype=np.int64)

    def transactions(self, day: dt.date) -> pd.DataFrame:
        """All transactions of one day, with ground truth (tx_fraud, tx_fraud_scenario)."""
        cfg = self.cfg
        d = self.day_index(day)
        rng = _rng(cfg, d, _TX)
        cust = self.customers
        nb = rng.poisson(cust["mean_nb_tx_per_day"].to_numpy())
        cidx = np.repeat(np.arange(len(cust)), nb)
        n = len(cidx)
        seconds = rng.normal(SECONDS_PER_DAY / 2, 20_000, n).astype(np.int64)
        mean = cust["mean_amount"].to_numpy()[cidx]
        std = cust["std_amount"].to_numpy()[cidx]
        amount = rng.normal(mean, std)
        redraw = rng.uniform(0, mean * 2)
        amount = np.where(amount < 0, redraw, amount)
        if cfg.drift.active(day):
            amount = amount * cfg.drift.amount_factor
        offsets, counts, flat = self._available_terminals
        pick = rng.random(n)
        has_terminal = counts[cidx] > 0
        tpos = offsets[cidx] + np.minimum(
            (pick * counts[cidx]).astype(np.int64), np.maximum(counts[cidx] - 1, 0)
        )
        terminal = np.where(has_terminal, flat[np.minimum(tpos, max(len(flat) - 1, 0))], -1)
        keep = (seconds > 0) & (seconds < SECONDS_PER_DAY) & has_terminal
        df = pd.DataFrame(
            {
                "seconds": seconds[keep],
                "customer_id": cidx[keep].astype(np.int64),
                "terminal_id": terminal[keep].astype(np.int64),
                "tx_amount": np.round(amount[keep], 2),
            }
        )
        df = df.sort_values(["seconds", "customer_id", "terminal_id"], kind="stable").reset_index(drop=True)
        df.insert(0, "transaction_id", np.int64(d) * ID_STRIDE + np.arange(len(df), dtype=np.int64))
        df["tx_datetime"] = pd.Timestamp(day) + pd.to_timedelta(df["seconds"], unit="s")

        fraud = np.zeros(len(df), dtype=np.int8)
        scenario = np.zeros(len(df), dtype=np.int8)
        s1 = df["tx_amount"].to_numpy() > 220
        fraud[s1], scenario[s1] = 1, 1
        bad_terminals = self._compromised_union(
            d, _TERMINALS, cfg.compromised_terminals_per_day, cfg.compromised_terminal_days, cfg.terminals
        )
        s2 = df["terminal_id"].isin(bad_terminals).to_numpy()
        fraud[s2], scenario[s2] = 1, 2
        bad_customers = self._compromised_union(
            d, _CUSTOMERS, cfg.compromised_customers_per_day, cfg.compromised_customer_days, cfg.customers
        )
        s3 = df["customer_id"].isin(bad_customers).to_numpy() & (
            _rng(cfg, d, _S3_PICK).random(len(df)) < 1 / 3
        )
        df.loc[s3, "tx_amount"] = np.round(df.loc[s3, "tx_amount"] * 5, 2)
        fraud[s3], scenario[s3] = 1, 3
        df["tx_fraud"] = fraud
        df["tx_fraud_scenario"] = scenario
        delay = _rng(cfg, d, _LABELS).integers(1, cfg.label_delay_days + 1, len(df))
        df["report_delay_days"] = np.where(fraud == 1, delay, 0)
        return df.drop(columns="seconds")

    def raw_transactions(self, day: dt.date) -> pd.DataFrame:
        """What the network sends: no ground truth, a few records re-sent (duplicates)."""
        df = self.transactions(day)[list(RAW_TRANSACTION_COLUMNS)]
        if self.cfg.dup_rate > 0 and len(df):
            rng = _rng(self.cfg, self.day_index(day), _DUPS)
            dups = df[rng.random(len(df)) < self.cfg.dup_rate]
            df = pd.concat([df, dups]).sort_index(kind="stable").reset_index(drop=True)
        return df

    def labels_reported_on(self, report_day: dt.date) -> pd.DataFrame:
        """Chargebacks reported on ``report_day``: frauds of the previous ``label_delay_days`` days."""
        frames = []
        r = self.day_index(report_day)
        for back in range(1, self.cfg.label_delay_days + 1):
            if r - back < 0:
                break
            tx_day = report_day - dt.timedelta(days=back)
            tx = self.transactions(tx_day)
            hit = tx[(tx["tx_fraud"] == 1) & (tx["report_delay_days"] == back)]
            frames.append(hit)
        if not frames:
            return pd.DataFrame(columns=list(RAW_LABEL_COLUMNS))
        out = pd.concat(frames, ignore_index=True)
        # a report arrives during the report day, after the bank's investigation
        report_time = pd.Timestamp(report_day) + pd.to_timedelta(
            (out["transaction_id"] % 36_000 + 25_200).astype("int64"), unit="s"
        )
        out = out.assign(reported_at=report_time)
        return out[list(RAW_LABEL_COLUMNS)].sort_values("transaction_id").reset_index(drop=True)


def _to_csv(df: pd.DataFrame, path) -> None:
    with staged_file(path) as tmp:
        df.to_csv(tmp, index=False, date_format=TIMESTAMP_FORMAT, float_format="%.2f")


def simulate(
    cfg: SimulatorConfig, start: dt.date, end: dt.date, layout: StorageLayout | None = None
) -> pd.DataFrame:
    """Write landing files for every day in [start, end]; returns per-day counts."""
    layout = layout or StorageLayout()
    log = get_logger("simulate")
    sim = Simulator(cfg)
    rows = []
    day = start
    while day <= end:
        raw = sim.raw_transactions(day)
        _to_csv(raw, layout.path("landing_transactions", day) / "transactions.csv")
        labels = sim.labels_reported_on(day)
        _to_csv(labels, layout.path("landing_labels", day) / "labels.csv")
        for dataset in ("landing_transactions", "landing_labels"):  # the day is complete: say so, last
            mark_landed(layout.path(dataset, day), layout.settings)
        truth = sim.transactions(day)
        row = {
            "date": day.isoformat(),
            "raw_rows": len(raw),
            "transactions": len(truth),
            "frauds": int(truth["tx_fraud"].sum()),
            "labels_reported": len(labels),
        }
        log.info("day written", **row)
        rows.append(row)
        day += dt.timedelta(days=1)
    return pd.DataFrame(rows)


_PANDAS_TYPES = {"bigint": "int64", "int": "int32", "double": "float64", "timestamp": "datetime64[us]"}


def _contract_frame(df: pd.DataFrame, schema: dict[str, str]) -> pd.DataFrame:
    return df[list(schema)].astype({col: _PANDAS_TYPES[kind] for col, kind in schema.items()})


def write_lake(
    sim: Simulator | SimulatorConfig, start: dt.date, end: dt.date, layout: StorageLayout | None = None
) -> int:
    """Write the lake partitions of [start, end] straight from the simulator, in the ingestion contract's
    columns and types (what ingestion publishes for clean input), atomically per partition.

    For benchmarks, tests and the handbook protocol, where running ingestion day by day is not the point.
    Returns the number of transactions written.
    """
    sim = sim if isinstance(sim, Simulator) else Simulator(sim)
    layout = layout or StorageLayout()
    total = 0
    day = start
    while day <= end:
        tx = _contract_frame(sim.transactions(day), TRANSACTION_SCHEMA)
        labels = _contract_frame(sim.labels_reported_on(day), LABEL_SCHEMA)
        for dataset, frame in (("transactions", tx), ("labels", labels)):
            with staged_directory(layout.path(dataset, day)) as tmp:
                tmp.mkdir(parents=True)
                frame.to_parquet(tmp / "part-00000.parquet", index=False)
        total += len(tx)
        day += dt.timedelta(days=1)
    return total


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    settings = get_settings()
    drift = DriftConfig(
        start=as_date(args.drift_start) if args.drift_start else None,
        amount_factor=args.drift_amount_factor,
        fraud_factor=args.drift_fraud_factor,
    )
    return SimulatorConfig(
        n_customers=args.customers,
        n_terminals=args.terminals,
        start_date=as_date(settings.case.start_date),
        seed=args.seed,
        scale=args.scale,
        dup_rate=args.dup_rate,
        label_delay_days=settings.case.label_delay_days,
        drift=drift,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.fraud.simulate", description=__doc__.split("\n\n")[0])
    p.add_argument("--start", help="first day to write (default: the simulation start)")
    p.add_argument("--days", type=int, default=30, help="number of days to write")
    p.add_argument("--customers", type=int, default=5_000)
    p.add_argument("--terminals", type=int, default=10_000)
    p.add_argument("--scale", type=float, default=1.0, help="multiply customers and terminals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dup-rate", type=float, default=0.001, help="share of records the network re-sends")
    p.add_argument("--drift-start", help="date from which the drift applies")
    p.add_argument("--drift-amount-factor", type=float, default=1.0)
    p.add_argument("--drift-fraud-factor", type=float, default=1.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    start = as_date(args.start) if args.start else cfg.start_date
    end = start + dt.timedelta(days=args.days - 1)
    counts = simulate(cfg, start, end)
    print(counts.to_string(index=False))
    print(f"total: {int(counts['transactions'].sum())} transactions, {int(counts['frauds'].sum())} frauds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
