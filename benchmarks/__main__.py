"""Run the benchmarks: ``python -m benchmarks [name ...]`` (``make bench``).

Each ``benchmarks/<name>.py`` measures one part of the platform against its baseline in the same run
and prints its own table; this runner runs them one after the other in fresh processes (so one
benchmark's JVM or caches do not warm the next) and prints a summary of exit codes and wall times.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


AGGREGATES = {"calibration"}  # runs other benchmarks (decisions, ab_decisions, monitor_decisions)


def available() -> list[str]:
    return sorted(
        p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_") and p.stem not in AGGREGATES
    )


def main(argv: list[str]) -> int:
    names = argv or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available()}")
        return 2
    summary = []
    for name in names:
        print(f"\n##### benchmark: {name}", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"], cwd=HERE.parent)
        summary.append((name, code, time.monotonic() - start))
    print("\n##### summary")
    for name, code, seconds in summary:
        print(f"  {name:<20} {'ok' if code == 0 else f'FAILED ({code})':<12} {seconds:8.1f}s")
    return 0 if all(code == 0 for _, code, _ in summary) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
