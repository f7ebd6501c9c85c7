"""``perpdesk data ...`` commands: import, and (in sibling modules) download."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from perpdesk.app.common import console

data_app = typer.Typer(help="Bring market data into a Parquet catalog.", no_args_is_help=True)


@data_app.command("import")
def data_import(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="freqtrade futures data folders or files (*.feather, *.json.gz), Binance "
            "archive files (BTCUSDT-aggTrades-2024-01-01.zip, BTCUSDT-5m-2024-01.csv, ...), "
            "websocket captures (*.gz, *.dat.gz), Binance fundingRate JSON (*.json) or "
            "Binance website funding exports (*.csv)."
        ),
    ],
    catalog: Annotated[Path, typer.Option("--catalog", help="Catalog root to import into.")],
    venue: Annotated[str, typer.Option(help="Venue name in the catalog.")] = "binance",
    symbol: Annotated[
        str | None,
        typer.Option(
            help="Symbol for JSON/CSV funding files (e.g. BTCUSDT); other inputs name their own."
        ),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            help="Archive kind of kline files whose name does not say it: markPriceKlines, "
            "indexPriceKlines or premiumIndexKlines (default: klines, or the parent folder's "
            "name). Any other kind must match the file name (aggTrades, bookDepth, ...)."
        ),
    ] = None,
    market: Annotated[
        str | None,
        typer.Option(help="Archive market: um (USD-M futures, default) or spot."),
    ] = None,
    quarantine: Annotated[
        Path | None,
        typer.Option(
            "--quarantine",
            help="Set bad rows aside in DIR/quarantine.csv (file,row,reason,raw_line) and "
            "import the good ones. Without it any bad row fails the whole import.",
        ),
    ] = None,
) -> None:
    """Import files into the catalog. Every input is read and validated before anything
    is written, and rows that would conflict with the catalog's are found before the
    first write: a bad row fails the command with one line (file, row, reason) and
    nothing is written — or, with --quarantine, the row is set aside with its reason.
    Re-importing the same data changes nothing."""
    from perpdesk.data.catalog import Catalog
    from perpdesk.data.sources import import_paths

    cat = Catalog(catalog)
    report = import_paths(
        paths,
        cat,
        venue=venue,
        symbol=symbol,
        kind=kind,
        market=market,
        quarantine_dir=quarantine,
    )
    out = Table(title=f"imported into {cat.root}")
    out.add_column("source", overflow="fold")
    for col in ("venue", "dataset", "symbol", "rows", "quarantined"):
        out.add_column(col, justify="right" if col in ("rows", "quarantined") else "left")
    for inp in report.inputs:
        nq = f"{len(inp.quarantined):,}"
        if not inp.writes:
            out.add_row(inp.source, venue, "-", "-", "0", nq)
        for k, (v, ds, sym, t) in enumerate(inp.writes):
            out.add_row(inp.source, v, ds, sym, f"{t.num_rows:,}", nq if k == 0 else "")
    out.add_section()
    out.add_row("total", "", "", "", f"{report.rows_imported:,}", f"{report.rows_quarantined:,}")
    console.print(out)
    for name, reason in report.skipped:
        console.print(f"[yellow]skipped[/] {name}: {reason}", highlight=False)
    for note in report.notes:
        console.print(f"[dim]note: {note}[/]", highlight=False)
    if report.quarantine_file is not None:
        console.print(
            f"quarantined {report.rows_quarantined:,} row(s) → {report.quarantine_file}",
            highlight=False,
        )
