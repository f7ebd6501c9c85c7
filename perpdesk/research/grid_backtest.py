"""Run GridStrategyV4 on the event engine from a catalog, and the walk-forward evaluator.

:func:`run_grid_backtest` loads one perp's bars (``perp_bars_15m`` by default) and its 8 h
funding from a catalog, builds the instrument and a **hedge-mode** account, computes the grid's
features (causal batch kernels, with up to :func:`warmup_bars` bars before ``start`` as warm-up
so a window starts warm), runs :class:`~perpdesk.sim.engine.Engine` with the conservative
:class:`~perpdesk.sim.fills.BarFillModel` and Binance VIP0 fees, and computes the metrics with
:func:`perpdesk.research.metrics.summarize`. :func:`write_grid_report` writes the HTML report
(:func:`perpdesk.research.report.write_run_report`) with the counters and buy-and-hold beside
the strategy, plus ``fills.parquet`` (every fill with its label), ``equity.parquet`` and
``summary.json``.

Data rules:

* **Funding** comes from the catalog's ``funding`` dataset (settled by the engine on the
  account at each settlement: payment = −qty × mark × rate per book, Binance USD-M). When the
  catalog has no funding for the symbol, a constant :data:`SYNTHETIC_FUNDING_RATE_8H` (0.01 %
  per 8 h: Binance's default interest component with a zero premium, the rate most
  settlements print) is settled at 00:00, 08:00 and 16:00 UTC — and the result says so
  (``funding_source``; the report intro repeats it). The synthetic rows go to a private
  overlay catalog (the bars are symlinked), never into the user's catalog.
* **Mark prices**: ``mark_bars_<same timeframe>`` when the catalog has them; coarser mark bars
  (the freqtrade 8 h marks) are not used for liquidation checks and equity — the perp bar
  closes are (the engine's fallback) — and the notes say so. Funding settles at the funding
  row's own mark price when present.
* **Instrument** filters (tick, lot): the catalog's ``instruments.parquet`` when it lists the
  perp; else Binance USD-M exchangeInfo filters for the symbols in :data:`BINANCE_FILTERS`;
  else derived from the median price (tick = 10^(⌊log10 p⌋ − 5), lot = 10^⌊log10(1 USD/p)⌋),
  noted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perpdesk.data.catalog import NS_PER_S, Catalog, bar_interval_s, fmt_ts
from perpdesk.domain import Instrument, InstrumentKind
from perpdesk.errors import PerpdeskError
from perpdesk.files import atomic_write, atomic_write_text
from perpdesk.research.metrics import summarize
from perpdesk.sim.costs import Costs, FeeModel
from perpdesk.sim.engine import AccountConfig, EngineResult, run_backtest
from perpdesk.sim.fills import BarFillModel
from perpdesk.sim.replay import StreamSpec
from perpdesk.strategies.grid.params import GridParams
from perpdesk.strategies.grid.strategy import GridFeatures, GridStrategyV4

__all__ = [
    "BINANCE_FILTERS",
    "SYNTHETIC_FUNDING_RATE_8H",
    "GridBacktest",
    "GridBacktestError",
    "GridEvaluator",
    "grid_instrument",
    "grid_streams",
    "load_grid_features",
    "run_grid_backtest",
    "warmup_bars",
    "write_grid_report",
]

SYNTHETIC_FUNDING_RATE_8H = 0.0001
"""Funding settled every 8 h when the catalog has none for the symbol (a fraction: 0.01 %)."""

BINANCE_FILTERS: dict[str, tuple[float, float]] = {
    "BTCUSDT": (0.1, 0.001),
    "ETHUSDT": (0.01, 0.001),
    "1000PEPEUSDT": (0.0000001, 1.0),
}
"""(tick_size, lot_size) of Binance USD-M perps: PRICE_FILTER.tickSize and LOT_SIZE.stepSize
of ``GET /fapi/v1/exchangeInfo`` (BTCUSDT and ETHUSDT as in the recorded response under
``shared/data/exchange-responses``; 1000PEPEUSDT from the exchange's trading rules)."""

H8_NS = 8 * 3_600 * NS_PER_S


class GridBacktestError(PerpdeskError):
    """A grid backtest cannot run (names the catalog, symbol or dataset and the problem)."""


# --------------------------------------------------------------------------- inputs


def _pick_venue(cat: Catalog, symbol: str, bars: str, venue: str | None) -> str:
    if venue is not None:
        if symbol not in cat.symbols(venue, bars):
            raise GridBacktestError(f"{cat.root / venue / bars}: no bars for '{symbol}'")
        return venue
    have = [v for v in cat.venues() if symbol in cat.symbols(v, bars)]
    if len(have) != 1:
        what = "no venue" if not have else f"venues {', '.join(have)} (choose one with --venue)"
        raise GridBacktestError(f"catalog {cat.root}: {what} with {bars} for '{symbol}'")
    return have[0]


def grid_instrument(
    cat: Catalog, venue: str, symbol: str, median_price: float
) -> tuple[Instrument, str]:
    """The perp and where its filters came from (see the module docstring)."""
    try:
        table = cat.instruments(venue)
    except PerpdeskError:
        table = {}
    inst = table.get((symbol, InstrumentKind.PERP))
    if inst is not None:
        return inst, "instrument filters from the catalog"
    if symbol in BINANCE_FILTERS:
        tick, lot = BINANCE_FILTERS[symbol]
        src = f"Binance USD-M filters for {symbol} (tick {tick:g}, lot {lot:g})"
    else:
        if not median_price > 0:
            raise GridBacktestError(f"{symbol}: no prices to derive tick and lot sizes from")
        tick = 10.0 ** (math.floor(math.log10(median_price)) - 5)
        lot = 10.0 ** math.floor(math.log10(1.0 / median_price))
        src = f"no instrument table: tick {tick:g} and lot {lot:g} derived from the median price"
    base = symbol[:-4] if symbol.endswith("USDT") else symbol
    inst = Instrument(venue, symbol, InstrumentKind.PERP, base, "USDT", tick, lot, 8)
    return inst, src


def warmup_bars(params: GridParams) -> int:
    """Bars before ``start`` read for the features' warm-up: the longest lookback + 1."""
    p = params
    return max(p.vol_window, p.kama_period + 1, p.cb_sma_period, p.atr_period) + 1


def load_grid_features(
    catalog_root: str | os.PathLike[str],
    venue: str,
    symbol: str,
    bars: str,
    params: GridParams,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> GridFeatures:
    """Features of the bars whose close lies in [start, end), plus the warm-up bars before
    (bars closing at or before ``start`` are data known at ``start``: no lookahead)."""
    cat = Catalog(catalog_root)
    iv = bar_interval_s(bars) * NS_PER_S
    lo = None if start_ns is None else start_ns - iv - warmup_bars(params) * iv
    hi = None if end_ns is None else end_ns - iv
    t = cat.read(venue, bars, symbol, lo, hi, columns=["high", "low", "close"])
    return GridFeatures.compute(
        t.column("ts_ns").to_numpy(),
        t.column("high").to_numpy(),
        t.column("low").to_numpy(),
        t.column("close").to_numpy(),
        params,
    )


def grid_streams(
    cat: Catalog, venue: str, symbol: str, bars: str
) -> tuple[list[StreamSpec], bool, str | None]:
    """(streams, has funding, mark dataset used or None)."""
    streams = [StreamSpec(venue, bars, symbol)]
    has_funding = symbol in cat.symbols(venue, "funding")
    if has_funding:
        streams.append(StreamSpec(venue, "funding", symbol))
    mark = "mark_bars_" + bars.removeprefix("perp_bars_")
    mark_used = None
    if symbol in cat.symbols(venue, mark):
        streams.append(StreamSpec(venue, mark, symbol))
        mark_used = mark
    return streams, has_funding, mark_used


def _synthetic_overlay(
    cat: Catalog, venue: str, symbol: str, streams: list[StreamSpec], lo: int, hi: int
) -> Path:
    """A private catalog: the streams' folders symlinked, plus constant 8 h funding rows."""
    root = Path(tempfile.mkdtemp(prefix="perpdesk-grid-"))
    for s in streams:
        src = cat.root / s.venue / s.dataset / s.symbol
        dst = root / s.venue / s.dataset / s.symbol
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src.resolve(), target_is_directory=True)
    inst = cat.root / venue / "instruments.parquet"
    if inst.is_file():
        (root / venue / "instruments.parquet").symlink_to(inst.resolve())
    first = -(-lo // H8_NS) * H8_NS
    ts = np.arange(first, hi + 1, H8_NS, dtype=np.int64)
    n = ts.size
    Catalog(root).write(
        venue,
        "funding",
        symbol,
        pa.table(
            {
                "ts_ns": pa.array(ts, pa.int64()),
                "funding_rate": pa.array(np.full(n, SYNTHETIC_FUNDING_RATE_8H)),
                "funding_interval_h": pa.array(np.full(n, 8, np.int32)),
                "mark_price": pa.array([None] * n, pa.float64()),
            }
        ),
    )
    return root


# --------------------------------------------------------------------------- the run


@dataclass
class GridBacktest:
    """What :func:`run_grid_backtest` produced.

    ``equity_ts_ns``/``equity_usd`` the engine's equity samples (every bar); ``bh_usd``
    buy-and-hold of the same capital at the last bar close known at each sample (price only:
    no funding, no fees); ``metrics`` from :func:`summarize` plus ``bh_return_pct``;
    ``counts`` the strategy's counters; ``fills`` every execution with its ``label``;
    ``label_counts`` fills per label; ``notes`` data decisions the report states.
    """

    symbol: str
    venue: str
    bars: str
    params: GridParams
    capital_usd: float
    engine: EngineResult
    strategy: GridStrategyV4
    equity_ts_ns: np.ndarray
    equity_usd: np.ndarray
    bh_usd: np.ndarray
    metrics: dict[str, float]
    counts: dict[str, int]
    label_counts: dict[str, int]
    funding_source: str
    notes: list[str]
    seconds: float
    n_bars: int
    run_id: str = ""

    @property
    def fills(self) -> pa.Table:
        """Every fill (Decimal money columns, ``label`` = the :class:`TradeLabel`)."""
        return self.engine.fills

    def headline(self) -> dict[str, float]:
        """Metrics for the console and the walk-forward evaluator."""
        m = self.metrics
        return {
            "total_return_pct": m["total_return_pct"],
            "bh_return_pct": m["bh_return_pct"],
            "max_dd_pct": m["max_dd_pct"],
            "calmar": m["calmar"],
            "sharpe": m["sharpe"],
            "trades": m["trades"],
            "fills": float(self.engine.fills.num_rows),
            "funding_usd": m["funding_usd"],
            "fees_usd": m["fees_usd"],
        }


def run_grid_backtest(
    catalog_root: str | os.PathLike[str],
    symbol: str,
    *,
    venue: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    bars: str = "perp_bars_15m",
    params: GridParams | None = None,
    capital_usd: float = 100_000.0,
    leverage: int = 3,
    costs: Costs | None = None,
    switches: Mapping[str, bool] | None = None,
) -> GridBacktest:
    """Backtest the grid on ``symbol`` over bars closing in [start, end) (see the module
    docstring). ``switches`` turns mechanisms off (``breaker``, ``trailing``, ``stops``,
    ``pruning``, ``var_gate``)."""
    t_start = time.perf_counter()
    p = params or GridParams()
    if not bars.startswith("perp_bars_"):
        raise GridBacktestError(f"bars {bars!r}: must name a perp bar dataset (perp_bars_<tf>)")
    cat = Catalog(catalog_root)
    venue = _pick_venue(cat, symbol, bars, venue)
    feats = load_grid_features(cat.root, venue, symbol, bars, p, start_ns, end_ns)
    iv = bar_interval_s(bars) * NS_PER_S
    if start_ns is not None:
        n_bars = int(np.count_nonzero(feats.ts_ns + iv >= start_ns))
    else:
        n_bars = int(feats.ts_ns.size)
    if n_bars < 2:
        raise GridBacktestError(
            f"{cat.root / venue / bars / symbol}: fewer than 2 bars closing in the period"
        )
    inst, inst_src = grid_instrument(cat, venue, symbol, float(np.median(feats.close)))
    streams, has_funding, mark_used = grid_streams(cat, venue, symbol, bars)
    notes = [inst_src]
    first_close = int(feats.ts_ns[-n_bars]) + iv
    last_close = int(feats.ts_ns[-1]) + iv
    root: Path = cat.root
    overlay: Path | None = None
    if has_funding:
        funding_source = "real funding from the catalog, settled every 8 h on the account"
    else:
        overlay = _synthetic_overlay(cat, venue, symbol, streams, first_close, last_close)
        root = overlay
        streams.append(StreamSpec(venue, "funding", symbol))
        funding_source = (
            f"SYNTHETIC funding: the catalog has no funding for {symbol}, so a constant "
            f"{SYNTHETIC_FUNDING_RATE_8H:.4%} per 8 h was settled at 00/08/16 UTC"
        )
    coarse = [d for d in cat_mark_datasets(cat, venue, symbol) if d != mark_used]
    if mark_used:
        notes.append(f"marks from {mark_used}")
    else:
        extra = (
            f" ({', '.join(coarse)} present but coarser than the bars: not used)" if coarse else ""
        )
        notes.append(f"marks = perp bar closes{extra}")
    strat = GridStrategyV4(
        symbol, p, feats, capital_usd, inst.tick_size, inst.lot_size, **dict(switches or {})
    )
    try:
        res = run_backtest(
            strat,
            root,
            [inst],
            AccountConfig(capital_usd, hedge_mode=True, leverage={symbol: leverage}),
            BarFillModel(),
            costs if costs is not None else Costs(fees=FeeModel.binance("VIP0")),
            streams=streams,
            start_ns=start_ns if start_ns is not None else first_close,
            end_ns=end_ns,
            equity_every_ns=iv,
        )
    finally:
        if overlay is not None:
            _remove_overlay(overlay)
    return _result(
        res,
        strat,
        symbol,
        venue,
        bars,
        p,
        capital_usd,
        feats,
        iv,
        funding_source,
        notes,
        time.perf_counter() - t_start,
        n_bars,
    )


def cat_mark_datasets(cat: Catalog, venue: str, symbol: str) -> list[str]:
    """The ``mark_bars_*`` datasets of ``symbol`` in the catalog."""
    d = cat.root / venue
    if not d.is_dir():
        return []
    return sorted(
        x.name for x in d.iterdir() if x.name.startswith("mark_bars_") and (x / symbol).is_dir()
    )


def _remove_overlay(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False, followlinks=False):
        for name in filenames + dirnames:
            p = Path(dirpath) / name
            if p.is_symlink() or p.is_file():
                p.unlink()
            else:
                p.rmdir()
    root.rmdir()


def _result(
    res: EngineResult,
    strat: GridStrategyV4,
    symbol: str,
    venue: str,
    bars: str,
    p: GridParams,
    capital: float,
    feats: GridFeatures,
    iv: int,
    funding_source: str,
    notes: list[str],
    seconds: float,
    n_bars: int,
) -> GridBacktest:
    eq_ts = res.equity.column("ts_ns").to_numpy()
    eq = res.equity.column("equity_usd").to_numpy()
    close_ts = feats.ts_ns + iv
    k = np.searchsorted(close_ts, eq_ts, side="right") - 1  # last close at or before the sample
    if eq_ts.size and close_ts.size:
        # reference: the last close known at the first sample (the first close if none yet)
        ref = float(feats.close[max(int(k[0]), 0)])
        px = np.where(k >= 0, feats.close[np.maximum(k, 0)], ref)
        bh = capital * px / ref
    else:
        bh = np.full(eq.size, capital)
    gts = np.asarray(strat.gross_ts_ns, dtype=np.int64)
    gusd = np.asarray(strat.gross_usd, dtype=float)
    if gts.size:
        gi = np.searchsorted(gts, eq_ts, side="right") - 1
        gross = np.where(gi >= 0, gusd[np.maximum(gi, 0)], 0.0)
    else:
        gross = np.zeros(eq.size)
    m = summarize(
        eq_ts,
        eq,
        trade_pnl_usd=np.asarray(strat.trade_pnl_usd, dtype=float),
        gross_notional_usd=gross,
        traded_notional_usd=strat.traded_notional_usd,
    )
    m["bh_return_pct"] = float((bh[-1] / bh[0] - 1.0) * 100.0) if bh.size else math.nan
    acct = res.account
    m["funding_usd"] = float(acct.funding_usd)
    m["fees_usd"] = float(acct.fees_usd)
    labels = res.fills.column("label").to_pylist()
    label_counts: dict[str, int] = {}
    for lab in labels:
        label_counts[lab] = label_counts.get(lab, 0) + 1
    counts = strat.summary()
    run_id = hashlib.sha256(
        json.dumps(
            [
                symbol,
                venue,
                bars,
                p.content_hash(),
                capital,
                int(eq_ts[0]) if eq_ts.size else 0,
                int(eq_ts[-1]) if eq_ts.size else 0,
            ]
        ).encode()
    ).hexdigest()[:12]
    return GridBacktest(
        symbol,
        venue,
        bars,
        p,
        capital,
        res,
        strat,
        eq_ts,
        eq,
        bh,
        m,
        counts,
        label_counts,
        funding_source,
        notes,
        seconds,
        n_bars,
        f"grid-{symbol}-{run_id}",
    )


# --------------------------------------------------------------------------- outputs


def _breakdown(bt: GridBacktest) -> list[dict]:
    return [
        {
            "strategy_id": r.strategy_id,
            "symbol": r.symbol,
            "price_pnl_usd": float(r.price_pnl_usd),
            "funding_usd": float(r.funding_usd),
            "fees_usd": float(r.fees_usd),
            "slippage_usd": float(r.slippage_usd),
        }
        for r in bt.engine.pnl
    ]


def report_intro(bt: GridBacktest) -> str:
    """The report's opening paragraph (plain text): funding source first."""
    m = bt.metrics
    t0, t1 = bt.equity_ts_ns[0], bt.equity_ts_ns[-1]
    return (
        f"{bt.funding_source}. GridStrategyV4 on {bt.venue}:{bt.symbol}, {bt.bars} "
        f"({bt.n_bars:,} bars), {fmt_ts(t0)} → {fmt_ts(t1)}; hedge mode, capital "
        f"{bt.capital_usd:,.0f} USD, conservative bar fills, Binance VIP0 fees. Strategy return "
        f"{m['total_return_pct']:.2f}% vs buy-and-hold {m['bh_return_pct']:.2f}% (price only). "
        f"Params {bt.params.content_hash()}. " + "; ".join(bt.notes) + "."
    )


def write_grid_report(bt: GridBacktest, out_dir: Path) -> dict[str, Path]:
    """``report.html``, ``fills.parquet``, ``equity.parquet`` and ``summary.json`` (atomic)."""
    from perpdesk.research.report import write_run_report

    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {
        **bt.counts,
        **{f"fills {k}": v for k, v in sorted(bt.label_counts.items())},
    }
    metrics = dict(bt.metrics)
    paths = {
        "report": write_run_report(
            out_dir / "report.html",
            f"Grid V4 backtest — {bt.symbol}",
            report_intro(bt),
            bt.equity_ts_ns,
            bt.equity_usd,
            metrics,
            _breakdown(bt),
            counts=counts,
            benchmark_usd=bt.bh_usd,
        )
    }
    fills_path = out_dir / "fills.parquet"
    atomic_write(fills_path, lambda tmp: pq.write_table(bt.fills, tmp))
    eq = pa.table(
        {
            "ts_ns": pa.array(bt.equity_ts_ns, pa.int64()),
            "equity_usd": pa.array(bt.equity_usd, pa.float64()),
            "buy_hold_usd": pa.array(bt.bh_usd, pa.float64()),
        }
    )
    eq_path = out_dir / "equity.parquet"
    atomic_write(eq_path, lambda tmp: pq.write_table(eq, tmp))
    summary = {
        "symbol": bt.symbol,
        "venue": bt.venue,
        "bars": bt.bars,
        "funding_source": bt.funding_source,
        "notes": bt.notes,
        "metrics": bt.metrics,
        "counts": counts,
        "params": {f.name: getattr(bt.params, f.name) for f in fields(bt.params)},
    }
    s_path = out_dir / "summary.json"
    atomic_write_text(json.dumps(summary, indent=2, default=float) + "\n", s_path)
    return {"report": paths["report"], "fills": fills_path, "equity": eq_path, "summary": s_path}


# --------------------------------------------------------------------------- walk-forward


def params_with(base: GridParams, overrides: Mapping[str, Any]) -> GridParams:
    """``base`` with ``overrides`` (ints stay ints: optuna may hand 5.0 for an int field)."""
    known = {f.name: f for f in fields(GridParams)}
    kw: dict[str, Any] = {}
    for k, v in overrides.items():
        if k not in known:
            raise GridBacktestError(f"GridParams has no field '{k}'")
        if known[k].type in ("int", int) and isinstance(v, float) and v.is_integer():
            v = int(v)
        kw[k] = v
    return replace(base, **kw)


@dataclass(frozen=True)
class GridEvaluator:
    """Picklable evaluator for :func:`perpdesk.research.walkforward.optimize`:
    ``params`` (overrides of ``base_params``) on ``coin`` over [start, end) → metrics
    (``calmar``, ``trades`` = closed trades, ``total_return_pct``, ``max_dd_pct``, ``sharpe``,
    ``bh_return_pct``, ``fills``, ``funding_usd``, ``fees_usd``).

    ``coin`` is a catalog symbol or a base (``BTC`` → ``BTCUSDT``, ``PEPE`` → ``1000PEPEUSDT``).
    """

    catalog_root: str
    venue: str
    base_params: GridParams = field(default_factory=GridParams)
    bars: str = "perp_bars_15m"
    capital_usd: float = 100_000.0

    def symbol_of(self, coin: str) -> str:
        """The catalog symbol for ``coin``."""
        have = Catalog(self.catalog_root).symbols(self.venue, self.bars)
        for cand in (coin, f"{coin}USDT", f"1000{coin}USDT"):
            if cand in have:
                return cand
        raise GridBacktestError(
            f"{self.catalog_root}/{self.venue}/{self.bars}: no symbol for coin '{coin}'"
        )

    def __call__(
        self, params: Mapping[str, Any], coin: str, start_ns: int, end_ns: int
    ) -> dict[str, float]:
        bt = run_grid_backtest(
            self.catalog_root,
            self.symbol_of(coin),
            venue=self.venue,
            start_ns=start_ns,
            end_ns=end_ns,
            bars=self.bars,
            params=params_with(self.base_params, params),
            capital_usd=self.capital_usd,
        )
        return bt.headline()

    def cache_key(self) -> str:
        """Evaluator identity: catalog path and its bar/funding files (name, size, mtime),
        venue, dataset, capital and the base parameters' hash."""
        cat = Catalog(self.catalog_root)
        files = []
        for ds in (self.bars, "funding"):
            for sym in cat.symbols(self.venue, ds):
                for f in cat.partitions(self.venue, ds, sym):
                    st = f.stat()
                    files.append([ds, sym, f.name, st.st_size, st.st_mtime_ns])
        blob = json.dumps(
            [
                "GridEvaluator/1",
                str(cat.root.resolve()),
                self.venue,
                self.bars,
                self.capital_usd,
                self.base_params.content_hash(),
                files,
            ]
        ).encode()
        return hashlib.sha256(blob).hexdigest()[:24]
