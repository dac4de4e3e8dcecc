"""Feature views: the handbook's baseline behaviour features (chapter 3.4), as daily snapshots, and
the customer's activity in the hour before each transaction.

TTL is one day: a row timestamped ``D+1 00:00`` serves requests of day ``D+1`` only. An entity
that leaves its look-back window gets one all-zero row, then none; a missing value means "no
activity" and every reader (training set and online serving) fills it with 0.
"""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, Int64

try:  # loaded as the ``feature_repo.fraud`` package (the platform)
    from .data_sources import customer_snapshots, recent_activity, terminal_snapshots, windows_at_tx
    from .entities import customer, terminal, transaction
    from .streaming import RECENT_ACTIVITY_VIEW
except ImportError:  # loaded by the ``feast`` CLI from this folder
    from data_sources import customer_snapshots, recent_activity, terminal_snapshots, windows_at_tx
    from entities import customer, terminal, transaction
    from streaming import RECENT_ACTIVITY_VIEW

WINDOWS = (1, 7, 30)
SNAPSHOT_TTL = timedelta(days=1)

customer_spending = FeatureView(
    name="customer_spending",
    entities=[customer],
    ttl=SNAPSHOT_TTL,
    schema=[
        field
        for w in WINDOWS
        for field in (
            Field(name=f"customer_nb_tx_{w}d", dtype=Int64, description=f"transactions in the last {w} days"),
            Field(
                name=f"customer_avg_amount_{w}d",
                dtype=Float64,
                description=f"mean amount over the last {w} days (0 if none)",
            ),
        )
    ],
    online=True,
    source=customer_snapshots,
    tags={"owner": "ml-platform", "handbook": "3.4"},
    description="Customer spending behaviour at the end of the previous day.",
)

terminal_risk = FeatureView(
    name="terminal_risk",
    entities=[terminal],
    ttl=SNAPSHOT_TTL,
    schema=[
        field
        for w in WINDOWS
        for field in (
            Field(
                name=f"terminal_nb_tx_{w}d",
                dtype=Int64,
                description=f"transactions in a {w}-day window ending label_delay_days ago",
            ),
            Field(
                name=f"terminal_risk_{w}d",
                dtype=Float64,
                description="share of them reported as fraud before the snapshot (0 if none)",
            ),
        )
    ],
    online=True,
    source=terminal_snapshots,
    tags={"owner": "ml-platform", "handbook": "3.4"},
    description="Terminal fraud risk over windows shifted back by the label delay, known labels only.",
)

customer_activity_1h = FeatureView(
    name="customer_activity_1h",
    entities=[transaction],
    # the PIT join matches each transaction's own row (event_timestamp = tx_datetime)
    ttl=timedelta(hours=1),
    schema=[
        Field(
            name="customer_nb_tx_1h",
            dtype=Int64,
            description="the customer's other transactions in [t - 1 h, t)",
        ),
        Field(name="customer_amount_1h", dtype=Float64, description="their total amount (0 if none)"),
    ],
    # Offline only: a transaction being scored is not in any table yet. Online, the same two
    # features are derived per request from the pushed view ``customer_recent_activity``
    # (feature_repo/fraud/streaming.py) with jobs.fraud.features.derive_recent; the tag tells readers where.
    online=False,
    source=recent_activity,
    tags={"owner": "ml-platform", "online_source": RECENT_ACTIVITY_VIEW},
    description="Customer activity in the hour before each transaction (batch twin of the stream path).",
)

customer_windows_at_tx = FeatureView(
    name="customer_windows_at_tx",
    entities=[transaction],
    ttl=timedelta(hours=1),  # each transaction's own row, as for customer_activity_1h
    schema=[
        Field(
            name="customer_nb_tx_today",
            dtype=Int64,
            description="the customer's transactions of the UTC day up to this one, itself included",
        ),
        Field(name="customer_amount_today", dtype=Float64, description="their total amount"),
        *(
            field
            for w in WINDOWS
            for field in (
                Field(
                    name=f"customer_nb_tx_{w}d_at_tx",
                    dtype=Int64,
                    description=f"transactions of the {w} days before the day, plus the day's up to this one",
                ),
                Field(
                    name=f"customer_avg_amount_{w}d_at_tx",
                    dtype=Float64,
                    description="their mean amount (this transaction included)",
                ),
                Field(
                    name=f"customer_amount_ratio_{w}d_at_tx",
                    dtype=Float64,
                    description="this transaction's amount / (that mean + 1)",
                ),
            )
        ),
    ],
    # Offline only, like customer_activity_1h: online the same features are the previous day's
    # customer_spending snapshot plus the day's activity from the pushed customer_recent_activity,
    # combined per request by jobs.fraud.features.windows_at_transaction (the batch job's function too).
    online=False,
    source=windows_at_tx,
    tags={"owner": "ml-platform", "online_source": RECENT_ACTIVITY_VIEW, "combines": "customer_spending"},
    description="The customer's 1/7/30-day spending windows ending at each transaction (batch twin of "
    "snapshot + stream).",
)
