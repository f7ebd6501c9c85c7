"""Point-in-time panels: catalog datasets aligned onto a common decision grid.

The carry panel's grid is the union of every symbol's funding settlement times. At a grid
time t a value is *as of t*: the last 5-minute bar that **closed at or before t** gives
the price, and the trailing 24h quote volume sums the bars that opened at or after
t − 24h and closed at or before t. Nothing stamped after t is ever used for t. Funding
settled at t is recorded at t (a decision at t may only use settlements before t).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perpdesk.data.catalog import NS_PER_S, Catalog, bar_interval_s
from perpdesk.domain import InstrumentKind
from perpdesk.errors import CatalogError

DAY_NS = 86_400 * NS_PER_S
MAX_PRICE_AGE_NS = 3600 * NS_PER_S
"""A price older than this (no bar closed in the last hour) is stale: it may mark the
book but never trade."""


@dataclass(frozen=True, slots=True)
class CarryPanel:
    """Per-symbol arrays on the union settlement grid (shape ``(n_symbols, n_grid)``).

    - ``settles``: True where the symbol settles funding at that grid time.
    - ``funding_rate``: rate settled at that time (fraction per settlement), NaN elsewhere.
    - ``interval_h``: the settled interval in hours, 0 elsewhere.
    - ``mark_px``: mark price at settlement (NaN elsewhere or when the source lacks it).
    - ``perp_px`` / ``spot_px``: last bar close at or before t; NaN before the first bar.
    - ``px_fresh``: True where both trade prices are at most ``MAX_PRICE_AGE_NS`` old.
    - ``quote_volume_24h_usd``: trailing 24h perp quote volume; NaN while < 24h of bars.
    - ``has_spot``: per symbol, whether spot bars exist (else the spot leg is priced at
      the perp price, i.e. a perfect hedge is assumed and price PnL is not reported).
    """

    venue: str
    symbols: tuple[str, ...]
    grid_ts_ns: np.ndarray
    settles: np.ndarray
    funding_rate: np.ndarray
    interval_h: np.ndarray
    mark_px: np.ndarray
    perp_px: np.ndarray
    spot_px: np.ndarray
    px_fresh: np.ndarray
    quote_volume_24h_usd: np.ndarray
    has_spot: np.ndarray

    @property
    def n_symbols(self) -> int:
        return len(self.symbols)


def _asof_close(
    bar_open_ns: np.ndarray, bar_s: int, close: np.ndarray, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Close of the last bar with close time <= t, and its age in ns (inf if none)."""
    close_ts = bar_open_ns + bar_s * NS_PER_S
    idx = np.searchsorted(close_ts, grid, side="right") - 1
    ok = idx >= 0
    px = np.full(grid.shape, np.nan)
    age = np.full(grid.shape, np.inf)
    px[ok] = close[idx[ok]]
    age[ok] = (grid[ok] - close_ts[idx[ok]]).astype(np.float64)
    return px, age


def _trailing_sum(
    bar_open_ns: np.ndarray, bar_s: int, values: np.ndarray, grid: np.ndarray, window_ns: int
) -> np.ndarray:
    """Sum of ``values`` over bars inside [t − window, t] (opened at or after t − window,
    closed at or before t); NaN where the data does not cover the whole window."""
    close_ts = bar_open_ns + bar_s * NS_PER_S
    cs = np.concatenate([[0.0], np.cumsum(values)])
    hi = np.searchsorted(close_ts, grid, side="right")
    lo = np.searchsorted(bar_open_ns, grid - window_ns, side="left")
    out = cs[hi] - cs[np.minimum(lo, hi)]
    covered = (bar_open_ns.size > 0) & (
        grid - window_ns >= (bar_open_ns[0] if bar_open_ns.size else 0)
    )
    return np.where(covered, out, np.nan)


def load_carry_panel(
    catalog: Catalog,
    venue: str,
    symbols: list[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    bars: str = "perp_bars_5m",
    spot_bars: str = "spot_bars_5m",
) -> CarryPanel:
    """Read funding, perp bars and spot bars of ``symbols`` (default: every symbol with
    funding on ``venue``) for settlements in ``[start_ns, end_ns)`` and align them as of
    each settlement time. Bars are read from 24h before ``start_ns`` so the volume filter
    is defined from the first settlement on."""
    if symbols is None:
        symbols = catalog.symbols(venue, "funding")
        if not symbols:
            raise CatalogError(f"{catalog.root / venue / 'funding'}: no funding data")
    if (catalog.root / venue / "instruments.parquet").is_file():
        inst = catalog.instruments(venue)
        for s in symbols:
            if (s, InstrumentKind.PERP) not in inst:
                raise CatalogError(
                    f"{catalog.root / venue / 'instruments.parquet'}: unknown perp symbol '{s}'"
                )
    bar_s = bar_interval_s(bars)
    spot_s = bar_interval_s(spot_bars)
    bar_start = None if start_ns is None else start_ns - DAY_NS - bar_s * NS_PER_S
    funding = {s: catalog.read(venue, "funding", s, start_ns, end_ns) for s in symbols}
    for s, t in funding.items():
        if t.num_rows == 0:
            raise CatalogError(f"{catalog.root / venue / 'funding' / s}: no settlements in range")
    grid = np.unique(np.concatenate([t.column("ts_ns").to_numpy() for t in funding.values()]))
    n, m = len(symbols), grid.size
    settles = np.zeros((n, m), dtype=bool)
    rate = np.full((n, m), np.nan)
    interval = np.zeros((n, m), dtype=np.int32)
    mark = np.full((n, m), np.nan)
    perp_px = np.full((n, m), np.nan)
    spot_px = np.full((n, m), np.nan)
    fresh = np.zeros((n, m), dtype=bool)
    vol = np.full((n, m), np.nan)
    has_spot = np.zeros(n, dtype=bool)
    grid_end = int(grid[-1]) + 1
    for i, s in enumerate(symbols):
        f = funding[s]
        pos = np.searchsorted(grid, f.column("ts_ns").to_numpy())
        settles[i, pos] = True
        rate[i, pos] = f.column("funding_rate").to_numpy()
        interval[i, pos] = f.column("funding_interval_h").to_numpy()
        mark[i, pos] = f.column("mark_price").to_numpy(zero_copy_only=False)
        if (interval[i, pos] <= 0).any():
            raise CatalogError(f"{catalog.root / venue / 'funding' / s}: funding_interval_h <= 0")
        b = catalog.read(venue, bars, s, bar_start, grid_end, columns=["close", "volume_quote"])
        if b.num_rows == 0:
            raise CatalogError(f"{catalog.root / venue / bars / s}: no bars before the settlements")
        b_ts = b.column("ts_ns").to_numpy()
        perp_px[i], age_p = _asof_close(b_ts, bar_s, b.column("close").to_numpy(), grid)
        vol[i] = _trailing_sum(b_ts, bar_s, b.column("volume_quote").to_numpy(), grid, DAY_NS)
        if catalog.partitions(venue, spot_bars, s):
            sp = catalog.read(venue, spot_bars, s, bar_start, grid_end, columns=["close"])
            sp_ts = sp.column("ts_ns").to_numpy()
            spot_px[i], age_s = _asof_close(sp_ts, spot_s, sp.column("close").to_numpy(), grid)
            has_spot[i] = sp.num_rows > 0
        if not has_spot[i]:
            spot_px[i], age_s = perp_px[i], age_p
        fresh[i] = (age_p <= MAX_PRICE_AGE_NS) & (age_s <= MAX_PRICE_AGE_NS)
    return CarryPanel(
        venue=venue,
        symbols=tuple(symbols),
        grid_ts_ns=grid,
        settles=settles,
        funding_rate=rate,
        interval_h=interval,
        mark_px=mark,
        perp_px=perp_px,
        spot_px=spot_px,
        px_fresh=fresh,
        quote_volume_24h_usd=vol,
        has_spot=has_spot,
    )
