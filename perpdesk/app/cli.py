"""The ``perpdesk`` command line (typer + rich). Thin: every command calls library code."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from perpdesk.config import Settings, load_settings
from perpdesk.errors import PerpdeskError

app = typer.Typer(
    help="perpdesk: crypto perpetual-futures trading from research to live.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
backtest_app = typer.Typer(help="Backtest a strategy over a Parquet catalog.", no_args_is_help=True)
app.add_typer(backtest_app, name="backtest")
data_app = typer.Typer(help="Bring market data into a Parquet catalog.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML settings file (default: $PERPDESK_CONFIG, else ./perpdesk.toml if present). "
        "PERPDESK_* environment variables override it, e.g. PERPDESK_CARRY__ENTRY_ANN_PCT=25.",
    ),
]


def parse_date_ns(text: str, option: str) -> int:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS]`` (UTC) → ns since epoch."""
    try:
        return int(np.datetime64(text.rstrip("Z"), "ns").astype(np.int64))
    except ValueError:
        raise PerpdeskError(
            f"{option} {text!r}: not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)"
        ) from None


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


@app.command()
def demo(
    config: ConfigOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: <paths.runs_dir>/<run id>).")
    ] = None,
) -> None:
    """Build the embedded synthetic market (first run only; cached under paths.data_dir) and
    run the funding-carry backtest over it: per-symbol table, portfolio line, HTML report,
    trades as Parquet."""
    from perpdesk.data.synthetic import SyntheticSpec, build_cached

    settings = load_settings(config)
    d = settings.demo
    spec = SyntheticSpec(seed=d.seed, n_symbols=d.n_symbols, days=d.days, start=d.start)
    data_dir = settings.paths.data_dir.expanduser()
    with Progress(
        TextColumn("[bold]synthetic market[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("checking cache", total=spec.n_symbols)

        def on_progress(done: int, total: int, symbol: str) -> None:
            progress.update(task, completed=done, total=total, description=symbol)

        root = build_cached(spec, data_dir, progress=on_progress)
        progress.update(task, completed=spec.n_symbols, description="ready")
    console.print(f" catalog: {root}")
    _run_and_report(settings, root, None, None, None, None, out)


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


@data_app.command("import")
def data_import(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="freqtrade futures data folders, Binance fundingRate JSON files (*.json) or "
            "Binance website funding exports (*.csv)."
        ),
    ],
    catalog: Annotated[Path, typer.Option("--catalog", help="Catalog root to import into.")],
    venue: Annotated[str, typer.Option(help="Venue name in the catalog.")] = "binance",
    symbol: Annotated[
        str | None,
        typer.Option(
            help="Symbol for JSON/CSV funding files (e.g. BTCUSDT); folders name their own."
        ),
    ] = None,
) -> None:
    """Import files into the catalog. Each input (a file, or a whole folder) is read and
    validated before any of it is written; funding files are all validated before the first
    is written. Re-importing the same data changes nothing; a source with a missing
    nullable value (e.g. no mark price) merges with one that has it."""
    from perpdesk.data.catalog import Catalog
    from perpdesk.data.sources import (
        import_freqtrade_dir,
        read_binance_funding_json,
        read_binance_funding_web_csv,
        write_funding,
    )

    cat = Catalog(catalog)
    pending = []
    for p in paths:
        if p.is_dir():
            continue
        if not p.is_file():
            raise PerpdeskError(f"{p}: no such file or directory")
        if p.suffix not in (".json", ".csv"):
            raise PerpdeskError(f"{p}: unknown format (expected a folder, *.json or *.csv)")
        if symbol is None:
            raise PerpdeskError(f"{p}: pass --symbol for JSON/CSV funding files")
        reader = read_binance_funding_json if p.suffix == ".json" else read_binance_funding_web_csv
        table = reader(p, symbol) if p.suffix == ".json" else reader(p)
        pending.append((p, table))
    table_out = Table(title=f"imported into {cat.root} ({venue})")
    for col in ("source", "dataset", "symbol", "rows"):
        table_out.add_column(col, justify="right" if col == "rows" else "left")
    for p, t in pending:
        write_funding(cat, venue, symbol or "", t)
        table_out.add_row(str(p), "funding", symbol or "", f"{t.num_rows:,}")
    for p in paths:
        if p.is_dir():
            summary = import_freqtrade_dir(p, cat, venue=venue)
            for name, dataset, sym, rows in summary.imported:
                table_out.add_row(str(p / name), dataset, sym, f"{rows:,}")
            for name, reason in summary.skipped:
                console.print(f"[yellow]skipped[/] {p / name}: {reason}", highlight=False)
            for note in summary.notes:
                console.print(f"[dim]note: {note}[/]", highlight=False)
    console.print(table_out)


def main() -> None:
    """Console-script entry point: user errors print one line and exit 2, no traceback."""
    try:
        app()
    except PerpdeskError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
