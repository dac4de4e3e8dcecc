"""Entities: who or what a feature describes. Join keys are the lake's int64 ids."""

from feast import Entity, ValueType

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A card holder (simulator customer id).",
)

terminal = Entity(
    name="terminal",
    join_keys=["terminal_id"],
    value_type=ValueType.INT64,
    description="A point-of-sale terminal (simulator terminal id).",
)

transaction = Entity(
    name="transaction",
    join_keys=["transaction_id"],
    value_type=ValueType.INT64,
    description="One card transaction: keys features that describe the moment just before it.",
)
