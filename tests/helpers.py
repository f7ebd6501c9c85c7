"""Builders of small hand-made catalogs for tests (real Parquet files, written through the
catalog's own writer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from perpdesk.data.catalog import Catalog
from perpdesk.domain import Instrument, InstrumentKind

H_NS = 3_600 * 1_000_000_000
DAY_NS = 24 * H_NS
BAR_NS = 300 * 1_000_000_000
T0 = int(np.datetime64("2024-01-01T00:00", "ns").astype(np.int64))


def funding_table(ts_ns, rates, interval_h, mark=None) -> pa.Table:
    n = len(ts_ns)
    return pa.table(
        {
            "ts_ns": pa.array(ts_ns, pa.int64()),
            "funding_rate": pa.array(rates, pa.float64()),
            "funding_interval_h": pa.array([interval_h] * n, pa.int32()),
            "mark_price": pa.array(mark if mark is not None else [None] * n, pa.float64()),
        }
    )


def bar_table(ts_ns: np.ndarray, close: np.ndarray, quote_volume: float) -> pa.Table:
    n = len(ts_ns)
    v = np.full(n, float(quote_volume))
    return pa.table(
        {
            "ts_ns": pa.array(ts_ns, pa.int64()),
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume_base": v / close,
            "volume_quote": v,
            "taker_buy_volume_quote": v / 2,
        }
    )


def write_symbol(
    root: Path,
    symbol: str,
    settle_ts: list[int],
    rates: list[float],
    interval_h: int,
    perp_px,
    spot_px,
    mark=None,
    quote_volume_per_bar: float = 100_000.0,
    bars_from: int = T0 - DAY_NS,
    bars_to: int | None = None,
    venue: str = "test",
) -> None:
    """One perp (+ spot when ``spot_px`` is not None) with constant-volume 5m bars from
    ``bars_from`` to ``bars_to`` (default: last settlement + 1h). ``perp_px``/``spot_px``
    are functions of the bar open time (ns) → price."""
    cat = Catalog(root)
    cat.write(venue, "funding", symbol, funding_table(settle_ts, rates, interval_h, mark))
    end = bars_to if bars_to is not None else settle_ts[-1] + H_NS
    ts = np.arange(bars_from, end, BAR_NS, dtype=np.int64)
    cat.write(
        venue,
        "perp_bars_5m",
        symbol,
        bar_table(ts, np.array([perp_px(t) for t in ts]), quote_volume_per_bar),
    )
    if spot_px is not None:
        cat.write(
            venue,
            "spot_bars_5m",
            symbol,
            bar_table(ts, np.array([spot_px(t) for t in ts]), quote_volume_per_bar),
        )
    existing = []
    if (root / venue / "instruments.parquet").is_file():
        existing = list(cat.instruments(venue).values())
    existing += [
        Instrument(
            venue,
            symbol,
            InstrumentKind.PERP,
            symbol[:-4],
            "USDT",
            0.01,
            0.001,
            interval_h,
            0.03,
            -0.03,
        ),
        Instrument(venue, symbol, InstrumentKind.SPOT, symbol[:-4], "USDT", 0.01, 0.001),
    ]
    cat.write_instruments(venue, existing)
