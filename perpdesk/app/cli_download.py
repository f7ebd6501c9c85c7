"""``perpdesk data download``: fetch exchange history through ccxt into the catalog."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from perpdesk.app.cli_data import data_app
from perpdesk.app.common import console, err_console, parse_date_ns
from perpdesk.errors import PerpdeskError

API_URL_ENV = "PERPDESK_DOWNLOAD_API_URL"


@data_app.command("download")
def data_download(
    datasets: Annotated[
        str,
        typer.Option(
            help="Comma-separated: funding, ohlcv:<tf> (e.g. ohlcv:5m), open_interest:<tf>."
        ),
    ],
    symbols: Annotated[
        str,
        typer.Option(
            help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT (the same names on every "
            "exchange; exchange ids like BTC-USDT-SWAP and ccxt symbols work too)."
        ),
    ],
    since: Annotated[str, typer.Option(help="Start (UTC), YYYY-MM-DD[THH:MM].")],
    catalog: Annotated[Path, typer.Option("--catalog", help="Catalog root to write into.")],
    exchange: Annotated[
        str, typer.Option(help="ccxt exchange id: binanceusdm, bybit, okx.")
    ] = "binanceusdm",
    until: Annotated[
        str | None, typer.Option(help="End (UTC, exclusive), YYYY-MM-DD[THH:MM]; default now.")
    ] = None,
    venue: Annotated[
        str | None,
        typer.Option(help="Venue name in the catalog (default: binance for Binance, else the id)."),
    ] = None,
    timeout_ms: Annotated[int, typer.Option(help="Per-request timeout in ms.")] = 10_000,
    api_url: Annotated[
        str | None,
        typer.Option(hidden=True, help=f"Override the REST API host (also ${API_URL_ENV})."),
    ] = None,
) -> None:
    """Download funding, OHLCV and open-interest history into the catalog. Resumes: only
    what the catalog does not hold yet is fetched; every page is written as it arrives."""
    from perpdesk.data.catalog import Catalog
    from perpdesk.data.sources.ccxt_download import CcxtDownloader, parse_datasets

    reqs = parse_datasets(datasets)
    syms = [s.strip() for s in symbols.split(",") if s.strip()]
    if not syms:
        raise PerpdeskError("--symbols: no symbol given")
    since_ns = parse_date_ns(since, "--since")
    until_ns = None if until is None else parse_date_ns(until, "--until")
    if until_ns is not None and until_ns <= since_ns:
        raise PerpdeskError(f"--until {until} is not after --since {since}")
    dl = CcxtDownloader(
        exchange,
        Catalog(catalog),
        venue=venue,
        api_url=api_url or os.environ.get(API_URL_ENV) or None,
        timeout_ms=timeout_ms,
    )
    results = []
    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def on_progress(label: str, symbol: str, fraction: float) -> None:
            key = f"{symbol} {label}"
            if key not in tasks:
                tasks[key] = progress.add_task(key, total=1.0)
            progress.update(tasks[key], completed=fraction)

        for sym in syms:
            results += dl.download(
                reqs, [sym], since_ns, until_ns, on_progress=on_progress, raise_errors=False
            )

    out = Table(title=f"downloaded into {dl.catalog.root} ({dl.venue}, {dl.exchange.id})")
    for col in ("dataset", "symbol", "fetched rows", "new rows", "range"):
        out.add_column(col, justify="right" if "rows" in col else "left")
    for r in results:
        out.add_row(r.dataset, r.symbol, f"{r.fetched_rows:,}", f"{r.new_rows:,}", r.range_text)
    console.print(out)
    for r in results:
        for note in r.notes:
            console.print(f"[dim]note: {r.symbol} {r.dataset}: {note}[/]", highlight=False)
    errors = [r.error for r in results if r.error]
    for e in errors[1:]:
        err_console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
    if errors:
        raise PerpdeskError(errors[0])
