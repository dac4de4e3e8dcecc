"""Ingestion on simulated data: happy path, byte-identical re-runs, the gate, and a writer killed mid-commit."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from jobs.fraud.simulate import Simulator, SimulatorConfig, simulate
from jobs.platform.config import REPO_ROOT, Settings
from jobs.platform.ingest import IngestGateError, ingest_labels, ingest_transactions
from jobs.platform.storage import TMP_PREFIX, StorageLayout

CFG = SimulatorConfig(n_customers=300, n_terminals=600, dup_rate=0.01)
DAY = dt.date(2018, 4, 12)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def world(tmp_path_factory, spark):
    home = tmp_path_factory.mktemp("ingest")
    settings = Settings(home=home)
    layout = StorageLayout(settings)
    simulate(CFG, DAY, DAY, layout)
    tx = ingest_transactions(DAY, settings, spark)
    labels = ingest_labels(DAY, settings, spark)
    return settings, layout, tx, labels


def test_happy_path_publishes_exactly_the_simulated_day(world):
    settings, layout, tx, _ = world
    sim = Simulator(CFG)
    truth = sim.transactions(DAY)
    raw = sim.raw_transactions(DAY)
    lake = pd.read_parquet(layout.path("transactions", DAY))
    assert tx.status == "published" and tx.gx_success is True
    assert tx.rows_in == len(raw) == tx.published + tx.quarantined
    assert tx.quarantined == len(raw) - len(truth) > 0  # the network's re-sent records, nothing else
    assert tx.rules == {"duplicate transaction_id": tx.quarantined}
    expected = truth[["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount"]]
    expected = expected.sort_values(["tx_datetime", "transaction_id"]).reset_index(drop=True)
    got = lake.assign(tx_datetime=lake["tx_datetime"].astype("datetime64[ns]"))
    pd.testing.assert_frame_equal(got, expected, check_dtype=True)
    summary = json.loads(Path(tx.report_path).read_text())
    assert summary["published"] == len(truth) and summary["status"] == "published"
    docs = layout.path("reports", DAY, "gx_data_docs", "transactions")
    assert (docs / "index.html").exists() and list(docs.rglob("validations/**/*.html"))


def test_labels_are_the_reports_of_the_day(world):
    _, layout, _, labels = world
    expected = Simulator(CFG).labels_reported_on(DAY)
    lake = pd.read_parquet(layout.path("labels", DAY))
    assert labels.status == "published" and labels.published == len(expected) > 0
    assert sorted(lake["transaction_id"]) == sorted(expected["transaction_id"])
    assert (lake["tx_fraud"] == 1).all() and (lake["reported_at"] >= lake["tx_datetime"]).all()
    assert (lake["reported_at"].dt.date == DAY).all()


def test_rerun_is_byte_identical(world, spark):
    settings, layout, _, _ = world
    lake, quarantine = layout.path("transactions", DAY), layout.path("quarantine_transactions", DAY)
    before = digest(lake), digest(quarantine)
    again = ingest_transactions(DAY, settings, spark)
    assert (digest(lake), digest(quarantine)) == before
    assert list(before[0]) == ["part-00000.snappy.parquet"]
    assert again.published == len(pd.read_parquet(lake))
    assert not [p for p in lake.parent.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_gate_publishes_nothing(tmp_path, spark):
    settings = Settings(home=tmp_path, max_bad_fraction=0.05)
    layout = StorageLayout(settings)
    raw = Simulator(CFG).raw_transactions(DAY)
    bad = raw.index[::10]  # 10% of the rows get a negative amount
    raw.loc[bad, "tx_amount"] = -1.0
    landing = layout.path("landing_transactions", DAY)
    landing.mkdir(parents=True)
    raw.to_csv(landing / "transactions.csv", index=False, date_format="%Y-%m-%d %H:%M:%S")
    with pytest.raises(
        IngestGateError, match=r"bad fraction 0\.1\d+ > max_bad_fraction 0\.05.*nothing published"
    ):
        ingest_transactions(DAY, settings, spark)
    assert not layout.path("transactions", DAY).exists()
    quarantine = pd.read_parquet(layout.path("quarantine_transactions", DAY))
    negative = quarantine[quarantine["rules"].map(lambda r: "tx_amount: amount must be >= 0" in r)]
    assert len(negative) >= len(bad) - 1  # a re-sent copy of a bad row is quarantined as a duplicate
    summary = json.loads((layout.path("reports", DAY, "ingest", "transactions") / "summary.json").read_text())
    assert summary["status"] == "gate_failed" and summary["published"] == 0
    assert summary["rows_in"] == len(raw)
    assert (layout.path("reports", DAY, "gx_data_docs", "transactions") / "index.html").exists()


def test_writer_killed_mid_commit_leaves_the_previous_partition(world, spark):
    """Run the CLI in its own process group, SIGKILL it while its staged partition is fully written but not yet
    committed (``--hold-before-commit`` holds it there), and check that readers still see the old partition."""
    settings, layout, _, _ = world
    final = layout.path("transactions", DAY)
    before = digest(final)
    # the next run would publish different rows: drop a tenth of the landing file
    landing = layout.path("landing_transactions", DAY) / "transactions.csv"
    original = landing.read_text()
    lines = original.splitlines(keepends=True)
    landing.write_text("".join(lines[: len(lines) * 9 // 10]))
    env = {**os.environ, **settings.service_env(), "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.platform.ingest", "--date", DAY.isoformat(), "--what", "transactions"]
        + ["--hold-before-commit", "120"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    staged = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            ready = [
                p
                for p in final.parent.glob(f"{TMP_PREFIX}{final.name}-*")
                if (p / "part-00000.snappy.parquet").exists()
            ]
            if ready:
                staged = ready[0]
                break
            time.sleep(0.05)
        assert staged is not None, f"the writer never staged a partition: {proc.stderr.read()[-3000:]!r}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert digest(final) == before, "the committed partition changed although the writer was killed"
    assert staged.exists()  # the killed run's leftovers: invisible to readers (not a date= folder)
    assert layout.partitions("transactions") == [DAY]
    # the next run cleans up and commits; then restore the original landing file and prove we return to `before`
    rerun = ingest_transactions(DAY, settings, spark)
    assert not staged.exists() and rerun.rows_in == len(lines) * 9 // 10 - 1
    landing.write_text(original)
    ingest_transactions(DAY, settings, spark)
    assert digest(final) == before
