"""Benchmark: the carry backtest over the synthetic market (16 symbols × 365 days).

Prints settlement-rows/s (symbol settlements replayed per second, from the catalog to the
finished summary) and 5m bar rows/s read and aligned. Run: ``make bench``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from perpdesk.config import load_settings
from perpdesk.data.synthetic import SyntheticSpec, build_cached
from perpdesk.research.carry_backtest import run_carry_backtest


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spec = SyntheticSpec(seed=7, n_symbols=16, days=365)
        root = build_cached(spec, Path(tmp))
        settings = load_settings(None, paths={"data_dir": tmp, "runs_dir": tmp})
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            bt = run_carry_backtest(settings, root)
            best = min(best, time.perf_counter() - t0)
        p = bt.run.panel
        settlements = int(p.settles.sum())
        bars = 2 * spec.n_symbols * spec.days * 288
        print(
            f"carry backtest: {spec.n_symbols} symbols x {spec.days} days, {settlements} settlements, "
            f"{p.grid_ts_ns.size} grid instants, best of 3: {best:.2f} s = "
            f"{settlements / best:,.0f} settlements/s, {bars / best:,.0f} bar rows/s (perp+spot)"
        )


if __name__ == "__main__":
    main()
