"""The carry backtest on real Binance data (freqtrade folder in ``shared/data/bars``)
against a plain-loop reference of the same rules, one symbol at a time."""

from __future__ import annotations

import bisect
import math
from pathlib import Path

import pytest

from perpdesk.config import load_settings
from perpdesk.data.catalog import Catalog
from perpdesk.data.sources.freqtrade import import_freqtrade_dir
from perpdesk.research.carry_backtest import run_carry_backtest
from tests.realdata import SHARED_DATA

BAR_NS = 15 * 60 * 10**9


@pytest.fixture(scope="module")
def real_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = SHARED_DATA / "bars"
    if not src.is_dir():
        pytest.skip(f"real data not available: {src}")
    root = tmp_path_factory.mktemp("real")
    import_freqtrade_dir(src, Catalog(root), venue="binance")
    return root


def reference_carry(cat: Catalog, symbol: str, X: float, entry: float, exit_: float, bps: float):
    """Straight from the rules: signal = last settled rate × 3 × 365 × 100 (8h); trade at
    the close of the last 15m bar closed by t; funding q × mark × rate; no spot data, so
    the spot leg is priced at the perp price (perfect hedge)."""
    f = cat.read("binance", "funding", symbol).to_pylist()
    bars = cat.read("binance", "perp_bars_15m", symbol).to_pylist()
    close_ts = [b["ts_ns"] + BAR_NS for b in bars]

    def price_at(t: int) -> float:
        k = bisect.bisect_right(close_ts, t) - 1  # last bar closed at or before t
        assert k >= 0 and t - close_ts[k] <= 3600 * 10**9
        return bars[k]["close"]

    q = 0.0
    funding = costs = 0.0
    entries = exits = 0
    prev = None
    for row in f:
        t = row["ts_ns"]
        if prev is not None:
            ann = prev["funding_rate"] * 3 * 365 * 100
            p = price_at(t)
            if q > 0 and ann < exit_:
                costs += bps / 1e4 * 2 * q * p
                q = 0.0
                exits += 1
            elif q == 0 and ann > entry:
                q = X / p
                costs += bps / 1e4 * 2 * X
                entries += 1
        if q > 0:
            mark = row["mark_price"] if row["mark_price"] is not None else price_at(t)
            funding += q * mark * row["funding_rate"]
        prev = row
    return funding, costs, entries, exits


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT", "1000PEPEUSDT"])
def test_real_data_matches_plain_loop(real_catalog: Path, symbol: str) -> None:
    s = load_settings(
        None,
        carry={"min_quote_volume_24h_usd": 0.0, "close_at_end": False, "max_positions": 1},
        paths={"data_dir": "/x", "runs_dir": "/x"},
    )
    bt = run_carry_backtest(s, real_catalog, symbols=[symbol], bars="perp_bars_15m")
    X = 100_000 * 0.5 / 1 * 3 / 4
    funding, costs, entries, exits = reference_carry(
        Catalog(real_catalog), symbol, X, 20.0, 3.0, 8.0
    )
    r = bt.rows[0]
    assert entries > 0
    assert (r["entries"], r["exits"]) == (entries, exits)
    assert math.isclose(r["funding_usd"], funding, rel_tol=1e-9)
    assert math.isclose(r["costs_usd"], costs, rel_tol=1e-9)
    assert r["price_pnl_usd"] == 0.0  # no spot data: perfect hedge assumed
