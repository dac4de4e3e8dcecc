"""Daily ingestion: landing CSV -> validated lake partitions (transactions of day D, labels reported on day D)."""

from __future__ import annotations

from _common import (
    DAILY,
    DEFAULT_ARGS,
    END_DATE,
    INGEST_PRIORITY,
    LABELS,
    SPARK_POOL,
    START_DATE,
    TRANSACTIONS,
    data_wait,
    fail_without_retry,
    nothing_missing,
    processing_date,
)
from airflow.sdk import Param, dag, task

DOC_MD = """
### Ingest transactions and labels

A run with logical date **D** (data interval D 00:00 → D+1 00:00 UTC) ingests

* `landing/transactions/date=D/*.csv` → `lake/transactions/date=D` (asset `lake_transactions`), and
* `landing/labels/date=D/*.csv` (chargebacks that *arrived* on D) → `lake/labels/date=D` (asset `lake_labels`).

`wait_for_landing` first waits for both landing folders to be complete (a `*.csv` and the producer's
`_SUCCESS` marker, `landing_done_marker` in settings; a sensor in reschedule mode: the files of D
arrive after D has ended; it fails after `landing_wait_seconds`, settings). The two ingest tasks run in the
`spark` pool, which bounds how many Spark jobs hit the Spark service at once. Each task parses, casts, de-duplicates on `transaction_id` and validates with the Great Expectations suite in
`expectations/<dataset>.json`. Bad rows go to `quarantine/<dataset>/date=D` with their reasons; GX data docs to
`reports/gx_data_docs/<dataset>/date=D`; a run summary to `reports/ingest/<dataset>/date=D/summary.json`.
Rows in = rows published + rows quarantined is asserted on every run.

**Gate**: if the share of bad rows is above `max_bad_fraction` (settings, or the `max_bad_fraction` param of a
manual run) the task fails without retrying and **nothing is published** for D. A broken file (empty, missing or
unknown column) fails the same way with the file, column and rule in the error. Re-running a day is safe:
partitions are replaced atomically and the same input gives byte-identical files.

Each asset event carries `extra={"date": "YYYY-MM-DD"}` so asset-triggered consumers know which day changed.

**Backfill** a range: `airflow backfill create --dag-id ingest_transactions --from-date 2018-04-01 --to-date 2018-04-30`
(the scheduler itself does not catch up from 2018: `catchup=False`).
Code: `jobs/platform/ingest.py` (`python -m jobs.platform.ingest --date D` runs the same logic without Airflow).
"""


def _override_settings(params):
    from jobs.platform.config import get_settings

    settings = get_settings()
    if params.get("max_bad_fraction") is not None:
        settings = settings.model_copy(update={"max_bad_fraction": float(params["max_bad_fraction"])})
    return settings


def _day(context) -> str:
    return context["params"].get("date") or processing_date(context)


def _ingest(dataset: str, asset, context) -> dict:
    from jobs.platform.ingest import IngestError, ingest

    day = _day(context)
    with fail_without_retry(IngestError):  # deterministic data problem: retrying cannot help
        result = ingest(dataset, day, _override_settings(context["params"]))
    context["outlet_events"][asset].extra = {
        "date": day,
        "rows": result.published,
        "quarantined": result.quarantined,
    }
    return result.as_dict()


@dag(
    dag_id="ingest_transactions",
    schedule=DAILY,
    start_date=START_DATE,
    end_date=END_DATE,
    catchup=False,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    doc_md=DOC_MD,
    tags=["fraud", "ingestion"],
    params={
        "date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Process this day (YYYY-MM-DD) instead of the run's data interval start.",
        ),
        "max_bad_fraction": Param(
            None,
            type=["null", "number"],
            minimum=0,
            maximum=1,
            description="Override the gate for this run (default: settings.max_bad_fraction).",
        ),
    },
)
def ingest_transactions():
    @task.sensor(task_id="wait_for_landing", **data_wait())
    def wait_for_landing(**context) -> bool:
        """Day D's files land after D has ended: wait for them (reschedule mode), fail after the timeout."""
        from jobs.platform.ingest import missing_landing

        day = _day(context)
        return nothing_missing("ingest_transactions", day, missing_landing(day))

    @task(outlets=[TRANSACTIONS], pool=SPARK_POOL, **INGEST_PRIORITY)
    def ingest_transactions(**context) -> dict:
        """Landing transactions of D -> lake/transactions/date=D (or quarantine)."""
        return _ingest("transactions", TRANSACTIONS, context)

    @task(outlets=[LABELS], pool=SPARK_POOL, **INGEST_PRIORITY)
    def ingest_labels(**context) -> dict:
        """Chargebacks that arrived on D -> lake/labels/date=D (or quarantine)."""
        return _ingest("labels", LABELS, context)

    @task
    def log_counts(transactions: dict, labels: dict) -> dict:
        """One structured line with the day's counts (also the task's return value)."""
        from jobs.platform.logs import get_logger

        counts = {
            name: {k: r[k] for k in ("rows_in", "published", "quarantined", "bad_fraction", "seconds")}
            for name, r in (("transactions", transactions), ("labels", labels))
        }
        get_logger("ingest_transactions", transactions["date"]).info("ingest counts", **counts)
        return counts

    transactions, labels = ingest_transactions(), ingest_labels()
    wait_for_landing() >> [transactions, labels]
    log_counts(transactions, labels)


ingest_transactions()
