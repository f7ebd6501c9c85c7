"""``perpdesk data ...`` commands: import, and (in sibling modules) download."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from perpdesk.app.common import console
from perpdesk.errors import PerpdeskError

data_app = typer.Typer(help="Bring market data into a Parquet catalog.", no_args_is_help=True)


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
