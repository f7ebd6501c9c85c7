"""``perpdesk data ls`` and ``perpdesk data check``: what the catalog holds, and its health."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from perpdesk.app.cli_data import data_app
from perpdesk.app.common import console, err_console

CatalogOpt = Annotated[Path, typer.Option("--catalog", help="Catalog root to inspect.")]
VenueOpt = Annotated[str | None, typer.Option(help="Only this venue.")]
DatasetOpt = Annotated[str | None, typer.Option(help="Only this dataset (e.g. perp_bars_5m).")]
SymbolsOpt = Annotated[
    str | None, typer.Option(help="Only these symbols, comma-separated (e.g. BTCUSDT,ETHUSDT).")
]

PROGRESS_AFTER_S = 1.0


@contextmanager
def _progress(what: str) -> Iterator[Callable[[int, int, str], None]]:
    """A ``progress(done, total, label)`` callback that shows a rich progress bar (on
    stderr, removed when done) only once the scan has run for more than a second."""
    t0 = time.perf_counter()
    bar: Progress | None = None
    task = None

    def update(done: int, total: int, label: str) -> None:
        nonlocal bar, task
        if bar is None:
            if time.perf_counter() - t0 <= PROGRESS_AFTER_S or done >= total:
                return
            bar = Progress(
                TextColumn(f"[bold]{what}[/] {{task.description}}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            )
            bar.start()
            task = bar.add_task(label, total=total)
        bar.update(task, completed=done, total=total, description=label)

    try:
        yield update
    finally:
        if bar is not None:
            bar.stop()


def _symbols(text: str | None) -> list[str] | None:
    return None if text is None else [s.strip() for s in text.split(",") if s.strip()]


def _duration(ns: int) -> str:
    s = ns / 1e9
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.3g} {unit}"
    return f"{s:.3g} s"


@data_app.command("ls")
def data_ls(
    catalog: CatalogOpt,
    venue: VenueOpt = None,
    dataset: DatasetOpt = None,
    symbols: SymbolsOpt = None,
) -> None:
    """List what the catalog holds: one row per venue / dataset / symbol with rows, first
    and last timestamp (UTC), partition files and gaps (missing bars, or missing funding
    settlements given each row's funding_interval_h; for tick datasets the largest
    spacing between events)."""
    from perpdesk.data.catalog import fmt_ts
    from perpdesk.data.check import inventory

    with _progress("scanning") as progress:
        rows = inventory(catalog, venue, dataset, _symbols(symbols), progress=progress)
    table = Table(title=f"catalog {catalog}")
    for col in ("venue", "dataset", "symbol", "rows", "first", "last", "files", "gaps"):
        table.add_column(col, justify="right" if col in ("rows", "files") else "left")
    for r in rows:
        if r.missing is not None:
            gaps = "0" if not r.missing else f"{r.missing:,} missing in {r.gap_runs:,} hole(s)"
        elif r.max_gap_ns is not None:
            gaps = f"max spacing {_duration(r.max_gap_ns)}"
        else:
            gaps = "-"
        files = f"{r.files}" + (f" ({r.bad_files} unreadable)" if r.bad_files else "")
        table.add_row(
            r.venue,
            r.dataset,
            r.symbol,
            f"{r.rows:,}",
            fmt_ts(r.first_ts_ns) if r.first_ts_ns is not None else "-",
            fmt_ts(r.last_ts_ns) if r.last_ts_ns is not None else "-",
            files,
            gaps,
        )
    console.print(table)
    if not rows:
        console.print("no data matches the selection")


@data_app.command("check")
def data_check(
    catalog: CatalogOpt,
    venue: VenueOpt = None,
    dataset: DatasetOpt = None,
    symbols: SymbolsOpt = None,
    jump_k: Annotated[
        float,
        typer.Option(
            help="Flag a bar whose close-to-close log return exceeds this many robust sds "
            "(rolling MAD); real crypto moves reach ~150."
        ),
    ] = 200.0,
    open_k: Annotated[
        float,
        typer.Option(help="Flag a bar whose open is this many robust sds from the last close."),
    ] = 8.0,
    show: Annotated[int, typer.Option(help="Print at most this many issues.")] = 200,
) -> None:
    """Check the catalog's health: unreadable or malformed files, gaps, duplicate keys,
    out-of-order rows and outliers, each named by file, row and timestamp. Exits 1 when
    there are issues, 0 when the selection is clean."""
    from perpdesk.data.catalog import fmt_ts
    from perpdesk.data.check import check

    with _progress("checking") as progress:
        issues = check(
            catalog,
            venue,
            dataset,
            _symbols(symbols),
            jump_k=jump_k,
            open_k=open_k,
            progress=progress,
        )
    if not issues:
        console.print(f"catalog {catalog}: no issues")
        return
    table = Table(title=f"catalog {catalog}: {len(issues):,} issue(s)")
    for col in ("kind", "file", "row", "ts (UTC)", "problem"):
        table.add_column(col, justify="right" if col == "row" else "left", overflow="fold")
    for i in issues[:show]:
        table.add_row(
            i.kind,
            i.file or "/".join(x for x in (i.venue, i.dataset, i.symbol) if x),
            "" if i.row is None else str(i.row),
            "" if i.ts_ns is None else fmt_ts(i.ts_ns),
            i.message,
        )
    console.print(table)
    if len(issues) > show:
        console.print(f"… {len(issues) - show:,} more not shown (raise --show)")
    counts = Counter(i.kind for i in issues)
    console.print("issues: " + ", ".join(f"{k} {n:,}" for k, n in sorted(counts.items())))
    raise typer.Exit(1)


@data_app.command("compact")
def data_compact(
    catalog: CatalogOpt,
    venue: VenueOpt = None,
    dataset: DatasetOpt = None,
    symbols: SymbolsOpt = None,
) -> None:
    """Fold the tick collector's append-only part files into their daily files (what the
    collector does at UTC midnight and at stop; run it after a crash or before a backtest of
    the current day). Crash-safe: an interrupted compaction loses and doubles nothing, and
    running it again finishes the job."""
    from perpdesk.data.catalog import Catalog

    cat = Catalog(catalog)
    wanted = _symbols(symbols)
    todo = []
    for v in cat.venues():
        if venue is not None and v != venue:
            continue
        root = cat.root / v
        for ds in sorted(p.name for p in root.iterdir() if p.is_dir()):
            if dataset is not None and ds != dataset:
                continue
            for s in cat.symbols(v, ds):
                if (wanted is None or s in wanted) and cat.pending_partitions(v, ds, s):
                    todo.append((v, ds, s))
    done = 0
    with _progress("compacting") as progress:
        for k, (v, ds, s) in enumerate(todo):
            progress(k, len(todo), f"{v}/{ds}/{s}")
            rewritten = cat.compact(v, ds, s)
            done += len(rewritten)
            for path in rewritten:
                console.print(f"compacted {path.relative_to(cat.root)}")
    console.print(f"catalog {catalog}: {done} partition(s) compacted")
