"""Streaming path (owned by serving): the push source that keeps short-window customer features fresh.

The daily snapshots (``feature_views.py``) are one day old at best. For features over the last hour the
scoring service pushes every scored transaction to ``customer_transactions_push``; the view
``customer_recent_activity`` holds, per customer, the ids, times (epoch seconds) and amounts of its
transactions of the last ``RECENT_WINDOW_SECONDS``. At request time ``serving.features`` derives from
them, strictly before the transaction being scored (``jobs.fraud.features.derive_recent``):

* ``customer_nb_tx_1h``     number of the customer's transactions in ``[t - 1 h, t)``
* ``customer_amount_1h``    their total amount

The batch path computes the same two columns with the same definition
(``jobs.fraud.features.compute_recent_activity``: a 1-hour range window per customer over
``lake/transactions``, excluding the current transaction) into the offline view
``customer_activity_1h`` of ``fraud_v2``, so training and batch scoring see them too; a skew test
(``tests/fraud/test_recent_activity.py``) keeps the served values equal to the batch ones.
"""

from datetime import timedelta

from feast import FeatureView, Field, FileSource, PushSource
from feast.data_format import ParquetFormat
from feast.types import Array, Float64, Int64

try:  # loaded as the ``feature_repo.fraud`` package (the platform)
    from .data_sources import feature_table
    from .entities import customer
except ImportError:  # loaded by the ``feast`` CLI from this folder
    from data_sources import feature_table
    from entities import customer

PUSH_SOURCE_NAME = "customer_transactions_push"
RECENT_ACTIVITY_VIEW = "customer_recent_activity"

customer_transactions_push = PushSource(
    name=PUSH_SOURCE_NAME,
    batch_source=FileSource(
        name="customer_recent_activity_offline",
        path=feature_table(RECENT_ACTIVITY_VIEW),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
    ),
    description="Scored transactions pushed by the scoring service (serving.streaming).",
)

customer_recent_activity = FeatureView(
    name=RECENT_ACTIVITY_VIEW,
    entities=[customer],
    ttl=timedelta(days=1),
    schema=[
        Field(name="recent_tx_ids", dtype=Array(Int64), description="ids of the recent transactions"),
        Field(name="recent_tx_epochs", dtype=Array(Int64), description="their times, epoch seconds UTC"),
        Field(name="recent_tx_amounts", dtype=Array(Float64), description="their amounts"),
    ],
    online=True,
    source=customer_transactions_push,
    tags={"owner": "serving", "path": "stream"},
    description="The customer's transactions of the last hour, pushed at scoring time.",
)
