"""Benchmark: generate and write the default synthetic market (16 symbols × 365 days).

Run ``python bench/bench_synthetic.py``. Prints one line with the elapsed seconds and the
throughput in rows written per second (all datasets), then removes the temporary catalog.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from perpdesk.data.synthetic import SyntheticSpec, generate_market

BUDGET_S = 20.0  # the demo needs the market well inside this


def main() -> int:
    spec = SyntheticSpec(n_symbols=16, days=365)
    root = Path(tempfile.mkdtemp(prefix="perpdesk-bench-synthetic-"))
    try:
        t0 = time.perf_counter()
        summary = generate_market(spec, root)
        elapsed = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = summary.total_rows
    verdict = "ok" if elapsed < BUDGET_S else f"SLOW (budget {BUDGET_S:.0f} s)"
    print(
        f"synthetic market {spec.n_symbols} symbols x {spec.days} days: "
        f"{elapsed:.2f} s, {rows:,} rows, {rows / elapsed:,.0f} rows/s [{verdict}]"
    )
    return 0 if elapsed < BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
