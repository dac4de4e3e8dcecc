"""What the calibration benchmarks (decisions, ab_decisions, monitor_decisions, calibration) share:
the model's feature columns, the Wilson interval of a rate, the verdict label of a row and the
JSON report with its exit code."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

FEATURES = [
    "tx_amount", "tx_during_weekend", "tx_during_night",
    *[f"customer_{k}_{w}d" for w in (1, 7, 30) for k in ("nb_tx", "avg_amount")],
    *[f"terminal_{k}_{w}d" for w in (1, 7, 30) for k in ("nb_tx", "risk")],
]  # fmt: skip
"""The model's 15 inputs, as :func:`benchmarks.monitor.features` computes them."""

RESULT = {True: "ok", False: "OUT OF BOUND", None: ""}  # a row's ``within_bound`` as printed


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a rate (honest about few replicates)."""
    if trials == 0:
        return math.nan, math.nan
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def finish(report: dict[str, Any], out: Path | None) -> int:
    """Write ``report`` as JSON to ``out`` (if given); exit code 1 when a row is outside its bound."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if all(r["within_bound"] is not False for r in report["rows"]) else 1
