"""``make decisions-calibration``: the error rates of the platform's three automatic decisions,
measured by simulation on the default world, each against its bound, in one table:

* the champion/challenger gate (:mod:`benchmarks.decisions`);
* the online A/B engine with its pre-registered sequential plan (:mod:`benchmarks.ab_decisions`);
* the drift monitor's retraining decision (:mod:`benchmarks.monitor_decisions`).

Each part also runs alone (``python -m benchmarks.<part>``). Exit code 1 when any figure is outside
its bound. ``--out`` writes the combined JSON report; ``--only gate,ab,monitor`` picks parts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._calibration_common import RESULT

PARTS = {
    "gate": "benchmarks.decisions",
    "ab": "benchmarks.ab_decisions",
    "monitor": "benchmarks.monitor_decisions",
}


def main(argv: list[str] | None = None) -> int:
    import importlib

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.calibration", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: gate, ab, monitor")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.monotonic()
    reports: dict[str, dict] = {}
    codes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for part in [p.strip() for p in args.only.split(",") if p.strip()]:
            if part not in PARTS:
                parser.error(f"--only: unknown part {part!r}; one of {sorted(PARTS)}")
            print(f"\n=== {part} ({PARTS[part]}) ===", flush=True)
            out = Path(tmp) / f"{part}.json"
            codes[part] = importlib.import_module(PARTS[part]).main(["--out", str(out)])
            reports[part] = json.loads(out.read_text())
    print(f"\n{'part':<8} {'decision':<48} {'measured':>22}  {'bound':<9} result")
    for part, report in reports.items():
        for row in report["rows"]:
            if "rate" in row:
                n = row.get("trials")
                count = row.get("promoted", row.get("count"))
                measured = f"{count}/{n} = {row['rate']:.1%}"
            else:
                measured = "never" if row["value"] is None else f"{row['value']:.2f}"
            name = row["decision"] + (f" [{row['rule']}]" if "rule" in row else "")
            result = RESULT[row["within_bound"]]
            print(f"{part:<8} {name[:48]:<48} {measured:>22}  {row['bound']:<9} {result}")
    print(f"total {time.monotonic() - started:.0f}s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(reports, indent=2, default=str) + "\n")
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
