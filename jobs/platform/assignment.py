"""The canary's randomisation, one definition for the service that routes and the analysis that reads
the experiment: a unit (fraud: the customer) goes to the challenger when its salted hash falls below
the canary share, and the salt names the experiment (the challenger's model name and version), so a
new challenger draws new canary units while each unit stays in its arm for the whole experiment."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np


def canary_bucket(key: Any, salt: str = "") -> float:
    """Deterministic position in [0, 1) of a routing key's value for the canary split, stable across
    processes; integral values hash as their decimal digits. ``salt`` names the experiment
    (:func:`experiment_salt`): each experiment draws its own canary units, so the same customers are
    not the canary of every challenger (their carry-over would bias each test)."""
    text = str(int(key)) if isinstance(key, int | np.integer) else str(key)
    digest = hashlib.blake2b(f"{salt}\x1f{text}".encode() if salt else text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def experiment_salt(model_name: str, version: str) -> str:
    """The salt of a canary experiment: the challenger's model name and version (a new challenger
    is a new experiment)."""
    return f"{model_name}/{version}"


def assigned_to_challenger(units: Iterable[Any], salt: str, share: float) -> set[Any]:
    """The units among ``units`` that the canary of experiment ``salt`` routes to the challenger."""
    return {u for u in dict.fromkeys(units) if canary_bucket(u, salt) < share}
