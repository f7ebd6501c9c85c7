"""``perpdesk backtest grid``: the volatility-adaptive grid on the event engine."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from perpdesk.app.cli_backtest import backtest_app
from perpdesk.app.common import ConfigOpt, console, parse_date_ns
from perpdesk.config import load_settings
from perpdesk.errors import PerpdeskError

_COLS = [
    ("bars", "bars", "{:,}"),
    ("total_return_pct", "return %", "{:.2f}"),
    ("bh_return_pct", "buy&hold %", "{:.2f}"),
    ("max_dd_pct", "max DD %", "{:.2f}"),
    ("calmar", "Calmar", "{:.2f}"),
    ("sharpe", "Sharpe", "{:.2f}"),
    ("trades", "closed trades", "{:,.0f}"),
    ("fills", "fills", "{:,.0f}"),
    ("funding_usd", "funding USD", "{:,.0f}"),
    ("fees_usd", "fees USD", "{:,.0f}"),
    ("cb", "CB triggers", "{:,}"),
    ("trail", "trailing shifts", "{:,}"),
    ("var", "VaR blocks", "{:,}"),
]


def load_grid_params_file(path: Path) -> dict[str, Any]:
    """GridParams overrides from a TOML or JSON file: flat keys, a ``[grid]`` table, or the
    ``best_params`` of an optimiser's ``best.json``. One-line errors name the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise PerpdeskError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PerpdeskError(
            f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'} ({exc})"
        ) from None
    for key in ("best_params", "grid"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict):
        raise PerpdeskError(f"{path}: expected a table of GridParams fields")
    return data


@backtest_app.command("grid")
def backtest_grid(
    data: Annotated[
        Path, typer.Option("--data", "-d", help="Catalog root directory (Parquet catalog).")
    ],
    symbol: Annotated[
        str,
        typer.Option(help="Perp symbol(s), comma-separated (e.g. BTCUSDT,ETHUSDT,1000PEPEUSDT)."),
    ],
    venue: Annotated[
        str | None, typer.Option(help="Venue inside the catalog (default: the only one).")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="First bar close to trade, UTC (YYYY-MM-DD[THH:MM]).")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Stop before this time, UTC (YYYY-MM-DD[THH:MM]).")
    ] = None,
    bars: Annotated[str, typer.Option(help="Perp bar dataset.")] = "perp_bars_15m",
    config: ConfigOpt = None,
    params: Annotated[
        Path | None,
        typer.Option(
            help="GridParams overrides: TOML/JSON, flat, a \\[grid] table, or an optimiser best.json."
        ),
    ] = None,
    capital: Annotated[
        float | None,
        typer.Option(help="Grid capital in USD (default: account.bankroll_usd of the config)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Output directory (default: <paths.runs_dir>/<run id>; one per symbol)."),
    ] = None,
) -> None:
    """Backtest GridStrategyV4 (hedge mode, 8h funding, conservative bar fills) and write the
    report, fills with labels, equity and summary per symbol."""
    from perpdesk.research.grid_backtest import (
        params_with,
        run_grid_backtest,
        write_grid_report,
    )
    from perpdesk.strategies.grid import GridParams

    settings = load_settings(config)
    start_ns = parse_date_ns(start, "--start") if start else None
    end_ns = parse_date_ns(end, "--end") if end else None
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise PerpdeskError(f"--end {end} must be after --start {start}")
    gp = GridParams()
    if params is not None:
        gp = params_with(gp, load_grid_params_file(params))
    cap = capital if capital is not None else settings.account.bankroll_usd
    if not cap > 0:
        raise PerpdeskError(f"--capital {cap}: must be > 0")
    symbols = [s.strip() for s in symbol.split(",") if s.strip()]
    if not symbols:
        raise PerpdeskError("--symbol: no symbol given")
    t0 = time.perf_counter()
    table = Table(title=f"Grid V4 backtest — {bars}, capital {cap:,.0f} USD per symbol")
    table.add_column("symbol", justify="left", no_wrap=True, min_width=12)
    for _, title, _ in _COLS:
        table.add_column(title, justify="right")
    results = []
    for sym in symbols:
        with console.status(f"running grid backtest on {sym}…"):
            bt = run_grid_backtest(
                data,
                sym,
                venue=venue,
                start_ns=start_ns,
                end_ns=end_ns,
                bars=bars,
                params=gp,
                capital_usd=cap,
            )
        h = bt.headline()
        row = {
            **h,
            "bars": bt.n_bars,
            "cb": bt.strategy.counters.breaker_triggers,
            "trail": bt.strategy.counters.trailing_shifts,
            "var": bt.strategy.counters.var_blocks,
        }
        table.add_row(sym, *(_cell(row[k], f) for k, _, f in _COLS))
        out_dir = (
            (out / sym if len(symbols) > 1 else out)
            if out is not None
            else settings.paths.runs_dir.expanduser() / bt.run_id
        )
        results.append((bt, write_grid_report(bt, out_dir)))
    console.print(table)
    for bt, paths in results:
        console.print(f"[bold]{bt.symbol}[/]: {bt.funding_source}; {'; '.join(bt.notes)}")
        labels = ", ".join(f"{k} {v:,}" for k, v in sorted(bt.label_counts.items()))
        console.print(f"  fills by label: {labels}")
        console.print(f"  report: {paths['report']}  ({bt.seconds:.1f}s)")
    console.print(f"[dim]done in {time.perf_counter() - t0:.1f}s[/]")


def _cell(v: float, pattern: str) -> str:
    if isinstance(v, float) and v != v:
        return "–"
    return pattern.format(v)
