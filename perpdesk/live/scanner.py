"""The carry scanner: every linear perpetual of the configured venues, ranked for funding carry.

One scan reads, per venue (``binanceusdm``, ``bybit``, ``okx`` through the same ccxt calls
of :class:`~perpdesk.data.sources.ccxt_download.CcxtDownloader`), the current funding
estimate with each symbol's own interval (ccxt ``fetch_funding_rates``: Binance
``/fapi/v1/premiumIndex`` + ``/fapi/v1/fundingInfo`` (8 h unless listed); Bybit
``/v5/market/tickers`` + the instrument's ``fundingInterval`` in minutes; OKX
``/api/v5/public/funding-rate`` with interval ``nextFundingTime − fundingTime``), 24 h
quote volume (``fetch_tickers``; OKX gives base volume only for swaps: quote ≈ base × last),
mark and index price (OKX: ``/public/mark-price`` and ``/market/index-tickers``), and open
interest for the top rows (``fetch_open_interest``, one call per symbol, so it is fetched
only where it is shown). Symbols are engine names, the same on every venue (``BTCUSDT``;
:func:`~perpdesk.data.sources.ccxt_download.engine_symbol`); ``unified`` is ccxt's.

Annualised funding ``ann_pct = rate × 24 / interval_h × 365 × 100`` (the symbol's own
interval, :func:`perpdesk.domain.annualise_rate`); basis ``basis_bps = (mark / index − 1)
× 10⁴``. Candidates are chosen by the same pure rule the backtest uses
(:func:`perpdesk.strategies.carry.decide`) with nothing held: annualised funding above
``entry_ann_pct``, 24 h quote volume at least ``min_quote_volume_24h_usd``, best first,
at most ``max_positions``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perpdesk.data.sources.ccxt_download import CcxtDownloader
from perpdesk.domain import annualise_rate
from perpdesk.strategies.carry import CarryRules, decide


@dataclass(frozen=True, slots=True)
class ScanRow:
    """One perpetual in one scan. Floats are NaN where the venue gave nothing."""

    venue: str
    symbol: str
    funding_rate: float
    funding_interval_h: int
    ann_pct: float
    next_funding_ts_ns: int | None
    mark_px: float
    index_px: float
    basis_bps: float
    quote_volume_24h_usd: float
    open_interest_usd: float
    candidate: bool
    note: str
    unified: str = ""
    """ccxt's unified symbol (``BTC/USDT:USDT``)."""


def _f(x: object) -> float:
    return float(x) if isinstance(x, int | float) and x is not None else math.nan


def scan_venue(
    client: CcxtDownloader,
    rules: CarryRules,
    symbols: Sequence[str] | None = None,
    oi_top: int = 10,
) -> list[ScanRow]:
    """Scan one venue; rows sorted by annualised funding, highest first. Open interest is
    fetched for the first ``oi_top`` rows and every candidate."""
    snaps = client.funding_snapshot(symbols)
    vols = {t.symbol: _f(t.volume_quote) for t in client.tickers_24h(symbols)}
    n = len(snaps)
    rate = np.array([_f(s.funding_rate) for s in snaps])
    interval = np.array([s.funding_interval_h or 0 for s in snaps], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ann = np.where(
            interval > 0, annualise_rate(rate, np.where(interval > 0, interval, 1)), np.nan
        )
    qv = np.array([vols.get(s.symbol, math.nan) for s in snaps])
    mark = np.array([_f(s.mark_px) for s in snaps])
    index = np.array([_f(s.index_px) for s in snaps])
    tradable = np.isfinite(ann) & np.isfinite(mark)
    _, enter = decide(
        rules,
        np.zeros(n, dtype=bool),
        np.ones(n, dtype=bool),
        np.nan_to_num(ann, nan=-np.inf),
        np.nan_to_num(qv, nan=0.0),
        tradable,
    )
    order = sorted(
        range(n), key=lambda i: (-(ann[i] if np.isfinite(ann[i]) else -np.inf), snaps[i].symbol)
    )
    want_oi = {snaps[i].symbol for i in order[:oi_top]} | {
        snaps[i].symbol for i in range(n) if enter[i]
    }
    oi = client.open_interest_usd(sorted(want_oi), {s.symbol: _f(s.mark_px) for s in snaps})
    rows = []
    for i in order:
        s = snaps[i]
        if enter[i]:
            note = "enter"
        elif not tradable[i]:
            note = "no funding estimate" if not np.isfinite(ann[i]) else "no mark price"
        elif not ann[i] > rules.entry_ann_pct:
            note = f"funding ≤ {rules.entry_ann_pct:g}%"
        elif not qv[i] >= rules.min_quote_volume_24h_usd:
            note = "24h volume too low"
        else:
            note = f"beyond the {rules.max_positions} best"
        with np.errstate(divide="ignore", invalid="ignore"):
            basis = (mark[i] / index[i] - 1.0) * 1e4 if index[i] > 0 else math.nan
        rows.append(
            ScanRow(
                venue=client.venue,
                symbol=s.symbol,
                funding_rate=float(rate[i]),
                funding_interval_h=int(interval[i]),
                ann_pct=float(ann[i]),
                next_funding_ts_ns=s.next_funding_ts_ns,
                mark_px=float(mark[i]),
                index_px=float(index[i]),
                basis_bps=float(basis),
                quote_volume_24h_usd=float(qv[i]),
                open_interest_usd=oi.get(s.symbol, math.nan),
                candidate=bool(enter[i]),
                note=note,
                unified=s.unified or "",
            )
        )
    return rows


def scan(
    clients: Sequence[CcxtDownloader],
    rules: CarryRules,
    symbols: Sequence[str] | None = None,
    oi_top: int = 10,
) -> tuple[int, list[ScanRow]]:
    """Scan every venue: ``(ts_ns of the scan, rows of all venues by ann_pct)``."""
    ts = time.time_ns()
    rows = [r for c in clients for r in scan_venue(c, rules, symbols, oi_top)]
    rows.sort(
        key=lambda r: (-(r.ann_pct if math.isfinite(r.ann_pct) else -math.inf), r.venue, r.symbol)
    )
    return ts, rows
