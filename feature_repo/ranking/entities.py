"""Entities: who or what a feature describes. Join keys are the lake's int64 ids."""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A shopper (simulator user id).",
)

item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.INT64,
    description="A catalogue item (simulator item id).",
)

category = Entity(
    name="category",
    join_keys=["category"],
    value_type=ValueType.INT64,
    description="An item category; with ``user``, keys the user's affinity to the candidate's category.",
)
