"""Data contracts shared by the simulator, ingestion, features, training and serving.

Raw landing files are CSV with a header. The lake holds typed parquet. Column names are
lower-case snake case everywhere after landing.
"""

from __future__ import annotations

# raw transactions as the card network drops them (landing/transactions/date=D/*.csv)
RAW_TRANSACTION_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "tx_datetime",
    "customer_id",
    "terminal_id",
    "tx_amount",
)
# raw chargeback / fraud reports (landing/labels/date=R/*.csv): one row per reported fraud
RAW_LABEL_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "tx_datetime",
    "reported_at",
    "tx_fraud",
)

# lake column -> Spark SQL type
TRANSACTION_SCHEMA: dict[str, str] = {
    "transaction_id": "bigint",
    "tx_datetime": "timestamp",
    "customer_id": "bigint",
    "terminal_id": "bigint",
    "tx_amount": "double",
}
LABEL_SCHEMA: dict[str, str] = {
    "transaction_id": "bigint",
    "tx_datetime": "timestamp",
    "reported_at": "timestamp",
    "tx_fraud": "int",
}

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"

# quarantine rows carry the raw values as strings plus these columns
QUARANTINE_COLUMNS: tuple[str, ...] = ("source_file", "source_line", "reasons", "raw_record")
