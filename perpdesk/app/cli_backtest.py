"""``perpdesk backtest ...`` commands."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from perpdesk.app.common import ConfigOpt, console, parse_date_ns
from perpdesk.config import Settings, load_settings
from perpdesk.errors import PerpdeskError

backtest_app = typer.Typer(help="Backtest a strategy over a Parquet catalog.", no_args_is_help=True)


def _print_backtest(bt: object) -> None:
    from perpdesk.research.carry_backtest import CarryBacktest
    from perpdesk.research.report import _COLUMNS, fmt_cell

    assert isinstance(bt, CarryBacktest)
    table = Table(
        title=f"Funding carry — {bt.run.panel.venue}, {len(bt.rows)} symbols", show_lines=False
    )
    for _, title, _ in _COLUMNS:
        table.add_column(title, justify="left" if title == "symbol" else "right")
    for r in bt.rows:
        table.add_row(*(fmt_cell(r[k], f) for k, _, f in _COLUMNS))
    table.add_section()
    table.add_row(*(fmt_cell(bt.portfolio[k], f) for k, _, f in _COLUMNS), style="bold")
    console.print(table)
    p = bt.portfolio
    console.print(
        f"[bold]portfolio[/]: return {p['return_pct']:.2f}%  Sharpe {fmt_cell(p['sharpe'], '{:.2f}')}  "
        f"max DD {p['max_dd_pct']:.2f}%  entries {p['entries']}  exits {p['exits']}  "
        f"funding {p['funding_usd']:,.0f} USD  costs {p['costs_usd']:,.0f} USD  "
        f"price/basis {p['price_pnl_usd']:,.0f} USD  final equity {p['final_equity_usd']:,.0f} USD"
    )
    console.print(
        "[dim]symbol bps are of each pair's leg notional; the portfolio row's bps are of the bankroll[/]"
    )


def _run_and_report(
    settings: Settings,
    data: Path,
    venue: str | None,
    symbols: list[str] | None,
    start_ns: int | None,
    end_ns: int | None,
    out: Path | None,
    bars: str = "perp_bars_5m",
) -> None:
    from perpdesk.research.carry_backtest import run_carry_backtest, write_outputs

    t0 = time.perf_counter()
    with console.status("running carry backtest…"):
        bt = run_carry_backtest(settings, data, venue, symbols, start_ns, end_ns, bars)
    _print_backtest(bt)
    out_dir = out if out is not None else settings.paths.runs_dir.expanduser() / bt.run_id
    with console.status("writing report…"):
        paths = write_outputs(bt, out_dir)
    for name in ("report", "trades", "equity", "summary"):
        console.print(f"{name:>8}: {paths[name]}")
    console.print(f"[dim]done in {time.perf_counter() - t0:.1f}s[/]")


def _print_engine_run(eng: object, comparison: list[dict]) -> None:
    from perpdesk.research.carry_engine import EngineCarryRun, cost_impact_line, describe_costs
    from perpdesk.research.report import fmt_cell

    assert isinstance(eng, EngineCarryRun)
    table = Table(
        title=f"Funding carry on the event engine — {eng.venue}, {len(eng.symbols)} symbols "
        f"({describe_costs(eng.costs)}; {eng.lots} lots)"
    )
    for col in ("pair", "price USD", "funding USD", "fees USD", "slippage USD", "PnL USD"):
        table.add_column(col, justify="left" if col == "pair" else "right")
    keys = ("price_pnl_usd", "funding_usd", "fees_usd", "slippage_usd", "total_usd")
    for r in eng.pair_rows:
        table.add_row(r["symbol"], *(f"{r[k]:,.2f}" for k in keys))
    table.add_section()
    table.add_row(
        "TOTAL", *(f"{sum(r[k] for r in eng.pair_rows):,.2f}" for k in keys), style="bold"
    )
    console.print(table)
    cmp = Table(title="vectorised vs event engine")
    for col in ("", "vectorised", "event engine", "difference", "change %"):
        cmp.add_column(col, justify="left" if not col else "right")
    for r in comparison:
        cmp.add_row(
            r["item"],
            f"{r['vector']:,.6f}" if "USD" in r["item"] else f"{r['vector']:,.0f}",
            f"{r['engine']:,.6f}" if "USD" in r["item"] else f"{r['engine']:,.0f}",
            f"{r['diff']:+,.6f}" if "USD" in r["item"] else f"{r['diff']:+,.0f}",
            fmt_cell(r["change_pct"], "{:+.4f}"),
        )
    console.print(cmp)
    m, c = eng.metrics, eng.counts
    console.print(
        f"[bold]engine[/]: return {m['total_return_pct']:.2f}%  CAGR {fmt_cell(m['cagr_pct'], '{:.2f}')}%  "
        f"Sharpe {fmt_cell(m['sharpe'], '{:.2f}')}  Sortino {fmt_cell(m['sortino'], '{:.2f}')}  "
        f"max DD {m['max_dd_pct']:.2f}%  win rate {fmt_cell(m['win_rate_pct'], '{:.0f}')}%  "
        f"fills {c['fills']}  rejections {c['rejections']}  late decisions {c['late_decisions']}  "
        f"events {c['events']:,} in {eng.seconds:.1f}s"
    )
    console.print(cost_impact_line(comparison, eng.costs))


def _run_engine_and_report(
    settings: Settings,
    data: Path,
    venue: str | None,
    symbols: list[str] | None,
    start_ns: int | None,
    end_ns: int | None,
    out: Path | None,
    bars: str,
    slippage_bps: float,
    latency_ms: float,
    fees: str,
    lots: str,
) -> None:
    from perpdesk.research.carry_backtest import run_carry_backtest
    from perpdesk.research.carry_engine import (
        compare_with_vector,
        matching_costs,
        realistic_costs,
        run_engine_carry,
        write_engine_outputs,
    )

    t0 = time.perf_counter()
    if fees == "config":
        costs = realistic_costs(slippage_bps, latency_ms)
        costs = type(costs)(matching_costs(settings).fees, costs.slippage, costs.latency)
    else:
        costs = realistic_costs(slippage_bps, latency_ms, fees)
    with console.status("running the vectorised carry backtest…"):
        vec = run_carry_backtest(settings, data, venue, symbols, start_ns, end_ns, bars)
    with console.status("running carry on the event engine…"):
        eng = run_engine_carry(
            settings, data, venue, symbols, start_ns, end_ns, bars, costs=costs, lots=lots
        )
    comparison = compare_with_vector(vec, eng)
    _print_engine_run(eng, comparison)
    out_dir = out if out is not None else settings.paths.runs_dir.expanduser() / eng.run_id
    with console.status("writing report…"):
        paths = write_engine_outputs(eng, out_dir, comparison)
    for name in ("report", "fills", "orders", "equity", "funding", "pnl", "trades", "comparison"):
        console.print(f"{name:>10}: {paths[name]}")
    console.print(f"[dim]done in {time.perf_counter() - t0:.1f}s[/]")


@backtest_app.command("carry")
def backtest_carry(
    data: Annotated[
        Path,
        typer.Option(
            "--data", "-d", help="Catalog root directory (venue/dataset/symbol/date Parquet)."
        ),
    ],
    venue: Annotated[
        str | None,
        typer.Option(help="Venue inside the catalog (default: the only one with funding)."),
    ] = None,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated symbols (default: all with funding data).")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="First settlement to include, UTC (YYYY-MM-DD[THH:MM]).")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Stop before this time, UTC (YYYY-MM-DD[THH:MM]).")
    ] = None,
    bars: Annotated[
        str,
        typer.Option(
            help="Perp bar dataset for prices and 24h volume (e.g. perp_bars_15m); spot legs "
            "come from spot_bars_<same tf> when present, else a perfect hedge is assumed."
        ),
    ] = "perp_bars_5m",
    config: ConfigOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: <paths.runs_dir>/<run id>).")
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="vector: the vectorised settlement-grid backtest; event: the strategy on the "
            "event engine with real legs (fills, fees, slippage, latency), compared with vector."
        ),
    ] = "vector",
    slippage_bps: Annotated[
        float, typer.Option(help="--engine event: slippage of every taker fill (bps).")
    ] = 0.0,
    latency_ms: Annotated[
        float, typer.Option(help="--engine event: delay from decision to the venue (ms).")
    ] = 0.0,
    fees: Annotated[
        str,
        typer.Option(
            help="--engine event: 'config' = carry.cost_bps_per_leg as the taker fee of both "
            "legs (the vectorised cost), or a Binance tier VIP0..VIP6 (USD-M perp tier, spot VIP0)."
        ),
    ] = "config",
    lots: Annotated[
        str,
        typer.Option(
            help="--engine event: 'fractional' (fine decimal lots, reproduces vector) or "
            "'exchange' (the catalog's lot sizes)."
        ),
    ] = "fractional",
) -> None:
    """Run the funding-carry backtest (short perp + long spot) over any catalog."""
    settings = load_settings(config)
    start_ns = parse_date_ns(start, "--start") if start else None
    end_ns = parse_date_ns(end, "--end") if end else None
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise PerpdeskError(f"--end {end} must be after --start {start}")
    syms = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
    if not bars.startswith("perp_bars_"):
        raise PerpdeskError(f"--bars {bars!r}: must name a perp bar dataset (perp_bars_<tf>)")
    if engine not in ("vector", "event"):
        raise PerpdeskError(f"--engine {engine!r}: use 'vector' or 'event'")
    if engine == "vector":
        if slippage_bps or latency_ms or fees != "config" or lots != "fractional":
            raise PerpdeskError(
                "--slippage-bps/--latency-ms/--fees/--lots apply to --engine event only"
            )
        _run_and_report(settings, data, venue, syms, start_ns, end_ns, out, bars)
        return
    if not slippage_bps >= 0 or not latency_ms >= 0:
        raise PerpdeskError(
            f"--slippage-bps {slippage_bps} / --latency-ms {latency_ms}: must be >= 0"
        )
    if fees != "config" and not fees.startswith("VIP"):
        raise PerpdeskError(f"--fees {fees!r}: use 'config' or a Binance tier VIP0..VIP6")
    _run_engine_and_report(
        settings, data, venue, syms, start_ns, end_ns, out, bars, slippage_bps, latency_ms,
        fees, lots,
    )  # fmt: skip
