"""Point-in-time: appending future data never changes past decisions or past figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perpdesk.config import load_settings
from perpdesk.research.carry_backtest import run_carry_backtest
from tests.helpers import H_NS, T0, write_symbol

DAYS = 12


def _market(root: Path, cutoff_ns: int | None) -> None:
    """Three symbols (8h, 4h, 1h) with random-walk funding and prices; everything stamped
    at or after ``cutoff_ns`` is left out when a cutoff is given."""
    rng = np.random.default_rng(42)
    for sym, interval in (("AAAUSDT", 8), ("BBBUSDT", 4), ("CCCUSDT", 1)):
        n = DAYS * 24 // interval
        settle = np.array([T0 + interval * H_NS * k for k in range(1, n + 1)])
        ann = 25 + np.cumsum(rng.normal(0, 8, n))  # annualised %, wanders across the band
        rates = ann / 100 / (24 / interval * 365)
        steps = rng.normal(0, 0.002, DAYS * 288 + 400)
        spot = 100 * np.exp(np.cumsum(steps))
        basis = rng.normal(0, 0.0005, steps.size)

        def px(series):
            return lambda t, s=series: float(s[(t - (T0 - 86_400 * 10**9)) // (300 * 10**9)])

        bars_to = None
        if cutoff_ns is not None:
            keep = settle < cutoff_ns
            settle, rates = settle[keep], rates[keep]
            bars_to = cutoff_ns
        write_symbol(
            root,
            sym,
            list(settle),
            list(rates),
            interval,
            px(spot * (1 + basis)),
            px(spot),
            quote_volume_per_bar=50_000.0,
            bars_to=bars_to,
        )


@pytest.mark.parametrize("cut_days", [3.5, 7, 10.25])
def test_future_data_leaves_past_unchanged(tmp_path: Path, cut_days: float) -> None:
    s = load_settings(
        None, carry={"close_at_end": False}, paths={"data_dir": "/x", "runs_dir": "/x"}
    )
    cutoff = T0 + int(cut_days * 24) * H_NS
    _market(tmp_path / "full", None)
    _market(tmp_path / "cut", cutoff)
    full = run_carry_backtest(s, tmp_path / "full")
    cut = run_carry_backtest(s, tmp_path / "cut")
    k = cut.run.panel.grid_ts_ns.size
    assert k > 10 and full.run.panel.grid_ts_ns.size > k
    np.testing.assert_array_equal(full.run.panel.grid_ts_ns[:k], cut.run.panel.grid_ts_ns)
    for name in ("held", "entries", "exits", "funding_usd", "cost_usd", "price_pnl_usd"):
        np.testing.assert_array_equal(
            getattr(full.run, name)[:, :k], getattr(cut.run, name), err_msg=name
        )
    np.testing.assert_array_equal(full.equity_usd[: k + 1], cut.equity_usd)
    assert (
        cut.portfolio["entries"] > 0 and cut.portfolio["exits"] > 0
    )  # the test exercises decisions
    closed = [t for t in cut.run.trades if t["exit_reason"] != "open"]
    assert closed == [
        t for t in full.run.trades if t["exit_ts_ns"] is not None and t["exit_ts_ns"] < cutoff
    ]


def test_decision_ignores_the_rate_settled_at_the_same_instant(tmp_path: Path) -> None:
    # the rate settled at t is huge, every earlier one is 0: nothing may enter at t
    settle = [T0 + 8 * H_NS * k for k in range(1, 4)]
    write_symbol(tmp_path, "AAAUSDT", settle, [0.0, 0.0, 0.05], 8, lambda t: 1.0, lambda t: 1.0)
    bt = run_carry_backtest(
        load_settings(None, paths={"data_dir": "/x", "runs_dir": "/x"}), tmp_path
    )
    assert bt.rows[0]["entries"] == 0 and bt.rows[0]["funding_usd"] == 0.0


def test_price_at_t_is_the_bar_that_closed_by_t(tmp_path: Path) -> None:
    # a price jump in the bar opening exactly at settlement t must not be the entry price
    settle = [T0 + 8 * H_NS * k for k in range(1, 4)]
    jump = settle[1]
    write_symbol(
        tmp_path,
        "AAAUSDT",
        settle,
        [0.001] * 3,
        8,
        lambda t: 100.0 if t < jump else 200.0,
        lambda t: 100.0 if t < jump else 200.0,
    )
    bt = run_carry_backtest(
        load_settings(None, paths={"data_dir": "/x", "runs_dir": "/x"}), tmp_path
    )
    assert bt.run.trades[0]["entry_ts_ns"] == jump
    assert bt.run.trades[0]["entry_perp_px"] == 100.0
