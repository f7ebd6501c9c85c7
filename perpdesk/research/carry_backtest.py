"""The carry backtest end to end: catalog → point-in-time panel → rules → accounting →
per-symbol and portfolio figures → HTML report and Parquet outputs."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from perpdesk.config import Settings
from perpdesk.data.catalog import Catalog, atomic_write_parquet
from perpdesk.data.panel import CarryPanel, load_carry_panel
from perpdesk.errors import CatalogError
from perpdesk.research.metrics import (
    HOURS_PER_YEAR,
    max_drawdown_pct,
    periods_per_year_from_ts,
    sharpe,
    total_return_pct,
)
from perpdesk.sim.carry import CarryRun, CarrySizing, simulate_carry
from perpdesk.strategies.carry import CarryRules, CarryStrategy

PORTFOLIO = "PORTFOLIO"


@dataclass(frozen=True, slots=True)
class CarryBacktest:
    """A finished carry backtest: the run, one summary row per symbol, the portfolio row
    and the portfolio equity curve (``equity_ts_ns[0]`` is the start, before any trade)."""

    settings: Settings
    run: CarryRun
    rows: list[dict]
    portfolio: dict
    equity_ts_ns: np.ndarray
    equity_usd: np.ndarray
    run_id: str


def rules_from_settings(settings: Settings) -> CarryRules:
    c = settings.carry
    return CarryRules(c.entry_ann_pct, c.exit_ann_pct, c.min_quote_volume_24h_usd, c.max_positions)


def sizing_from_settings(settings: Settings) -> CarrySizing:
    c = settings.carry
    return CarrySizing(
        bankroll_usd=settings.account.bankroll_usd,
        slot_capital_usd=settings.carry_capital_usd() / c.max_positions,
        perp_leverage=c.perp_leverage,
        cost_bps_per_leg=c.cost_bps_per_leg,
        close_at_end=c.close_at_end,
    )


def _bps(x: float, base: float) -> float:
    return x / base * 1e4


def summarise(run: CarryRun) -> tuple[list[dict], dict, np.ndarray, np.ndarray]:
    """Per-symbol rows, the portfolio row and the portfolio equity curve of ``run``.

    Per symbol, returns and drawdowns are on the slot capital C, sampled at the symbol's
    own settlements (Sharpe annualised with 8760 / interval_h periods); bps are of the leg
    notional X. The portfolio is on the bankroll, sampled on the union settlement grid
    (Sharpe annualised with that grid's spacing); its bps are of the bankroll.
    """
    p: CarryPanel = run.panel
    sz = run.sizing
    C, X = sz.slot_capital_usd, sz.leg_notional_usd
    pnl = run.pnl_usd
    rows = []
    for i, sym in enumerate(p.symbols):
        cum = np.cumsum(pnl[i])
        idx = np.flatnonzero(p.settles[i])
        if idx.size == 0 or idx[-1] != p.grid_ts_ns.size - 1:
            idx = np.append(idx, p.grid_ts_ns.size - 1)
        eq = np.concatenate([[C], C + cum[idx]])
        ints = p.interval_h[i][p.settles[i]]
        interval = int(np.bincount(ints).argmax()) if ints.size else 0
        ppy = HOURS_PER_YEAR / interval if interval else math.nan
        f, c, pp = run.funding_usd[i].sum(), run.cost_usd[i].sum(), run.price_pnl_usd[i].sum()
        held_settlements = int((run.held[i] & p.settles[i]).sum())
        rows.append(
            {
                "symbol": sym,
                "interval_h": interval,
                "return_pct": total_return_pct(eq),
                "sharpe": sharpe(eq, ppy),
                "max_dd_pct": max_drawdown_pct(eq),
                "entries": int(run.entries[i].sum()),
                "exits": int(run.exits[i].sum()),
                "closed_at_end": bool(run.closed_at_end[i]),
                "settlements_held": held_settlements,
                "time_in_market_pct": 100.0 * held_settlements / max(1, int(p.settles[i].sum())),
                "funding_bps": _bps(f, X),
                "costs_bps": _bps(c, X),
                "price_pnl_bps": _bps(pp, X) if p.has_spot[i] else math.nan,
                "funding_usd": float(f),
                "costs_usd": float(c),
                "price_pnl_usd": float(pp),
                "pnl_usd": float(f - c + pp),
            }
        )
    B = sz.bankroll_usd
    total = pnl.sum(axis=0)
    eq = np.concatenate([[B], B + np.cumsum(total)])
    grid = p.grid_ts_ns
    step = int(np.median(np.diff(grid))) if grid.size > 1 else 0
    eq_ts = np.concatenate([[grid[0] - step], grid]) if grid.size else grid
    f, c, pp = run.funding_usd.sum(), run.cost_usd.sum(), run.price_pnl_usd.sum()
    portfolio = {
        "symbol": PORTFOLIO,
        "interval_h": step / 3.6e12 if step else 0,
        "return_pct": total_return_pct(eq),
        "sharpe": sharpe(eq, periods_per_year_from_ts(grid)),
        "max_dd_pct": max_drawdown_pct(eq),
        "entries": int(run.entries.sum()),
        "exits": int(run.exits.sum()),
        "closed_at_end": int(run.closed_at_end.sum()),
        "avg_open_pairs": float(run.held.sum(axis=0).mean()) if grid.size else 0.0,
        "funding_bps": _bps(f, B),
        "costs_bps": _bps(c, B),
        "price_pnl_bps": _bps(pp, B),
        "funding_usd": float(f),
        "costs_usd": float(c),
        "price_pnl_usd": float(pp),
        "pnl_usd": float(f - c + pp),
        "final_equity_usd": float(eq[-1]),
    }
    return rows, portfolio, eq_ts, eq


def run_id(
    settings: Settings,
    catalog_root: Path,
    venue: str,
    symbols: tuple[str, ...],
    start_ns: int | None,
    end_ns: int | None,
) -> str:
    """Identity of a run: hash of the config and of the data range it read."""
    blob = json.dumps(
        [
            settings.content_hash(),
            str(Path(catalog_root).resolve()),
            venue,
            list(symbols),
            start_ns,
            end_ns,
        ]
    ).encode()
    return f"carry-{hashlib.sha256(blob).hexdigest()[:12]}"


def pick_venue(catalog: Catalog, venue: str | None) -> str:
    """``venue`` if given, else the catalog's only venue with funding data."""
    if venue is not None:
        if not (catalog.root / venue).is_dir():
            raise CatalogError(
                f"catalog {catalog.root}: no venue '{venue}' (have: {', '.join(catalog.venues())})"
            )
        return venue
    with_funding = [v for v in catalog.venues() if (catalog.root / v / "funding").is_dir()]
    if len(with_funding) != 1:
        raise CatalogError(
            f"catalog {catalog.root}: {'no venue has' if not with_funding else 'several venues have'} "
            f"funding data ({', '.join(with_funding) or 'none'}); pass --venue"
        )
    return with_funding[0]


def run_carry_backtest(
    settings: Settings,
    catalog_root: str | Path,
    venue: str | None = None,
    symbols: list[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    bars: str = "perp_bars_5m",
) -> CarryBacktest:
    """Run the carry backtest over ``catalog_root`` with ``settings``; ``bars`` names the
    perp bar dataset used for prices and volume (spot legs use ``spot_bars_<same tf>``)."""
    catalog = Catalog(catalog_root)
    v = pick_venue(catalog, venue)
    spot_bars = "spot_" + bars.removeprefix("perp_")
    panel = load_carry_panel(catalog, v, symbols, start_ns, end_ns, bars=bars, spot_bars=spot_bars)
    run = simulate_carry(
        panel, CarryStrategy(rules_from_settings(settings)), sizing_from_settings(settings)
    )
    rows, portfolio, eq_ts, eq = summarise(run)
    rid = run_id(settings, catalog.root, v, panel.symbols, start_ns, end_ns)
    return CarryBacktest(settings, run, rows, portfolio, eq_ts, eq, rid)


def trades_table(bt: CarryBacktest) -> pa.Table:
    """The round trips as an Arrow table (timestamps ns UTC, prices in USD)."""
    schema = pa.schema(
        [
            ("symbol", pa.string()),
            ("entry_ts_ns", pa.int64()),
            ("exit_ts_ns", pa.int64()),
            ("exit_reason", pa.string()),
            ("entry_perp_px", pa.float64()),
            ("entry_spot_px", pa.float64()),
            ("exit_perp_px", pa.float64()),
            ("exit_spot_px", pa.float64()),
            ("q_perp", pa.float64()),
            ("q_spot", pa.float64()),
            ("settlements", pa.int64()),
            ("funding_usd", pa.float64()),
            ("cost_usd", pa.float64()),
            ("price_pnl_usd", pa.float64()),
        ]
    )
    return pa.Table.from_pylist(bt.run.trades, schema=schema)


def write_outputs(bt: CarryBacktest, out_dir: Path) -> dict[str, Path]:
    """Write trades, equity and summary as Parquet and the HTML report into ``out_dir``
    (each file atomically). Returns their paths by name."""
    from perpdesk.research.report import write_carry_report

    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "trades": out_dir / "trades.parquet",
        "equity": out_dir / "equity.parquet",
        "summary": out_dir / "summary.parquet",
        "report": out_dir / "report.html",
    }
    atomic_write_parquet(trades_table(bt), paths["trades"])
    atomic_write_parquet(
        pa.table({"ts_ns": pa.array(bt.equity_ts_ns, pa.int64()), "equity_usd": bt.equity_usd}),
        paths["equity"],
    )
    keys = [k for k in bt.rows[0] if k in bt.portfolio] if bt.rows else []
    summary = [{k: r[k] for k in keys} for r in [*bt.rows, bt.portfolio]]
    for r in summary:
        r["interval_h"] = float(r["interval_h"])
        r["closed_at_end"] = int(r["closed_at_end"])
    atomic_write_parquet(pa.Table.from_pylist(summary), paths["summary"])
    write_carry_report(bt, paths["report"])
    return paths
