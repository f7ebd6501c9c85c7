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
    _run_and_report(settings, data, venue, syms, start_ns, end_ns, out, bars)
