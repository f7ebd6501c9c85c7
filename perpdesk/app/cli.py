"""The ``perpdesk`` command line (typer + rich). Thin: every command calls library code.

Sub-command groups live in sibling modules (``cli_backtest``, ``cli_data``, ...); this
module assembles them and holds ``demo`` and the entry point.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from perpdesk.app import cli_data_query, cli_download, cli_grid  # noqa: F401  (register data sub-commands)
from perpdesk.app.cli_backtest import _run_and_report, backtest_app
from perpdesk.app.cli_data import data_app
from perpdesk.app.cli_live import live_app
from perpdesk.app.cli_optimize import optimize_app
from perpdesk.app.cli_run import run_app
from perpdesk.app.cli_scan import scan_app
from perpdesk.app.cli_store import store_app
from perpdesk.app.common import ConfigOpt, console, err_console
from perpdesk.config import load_settings
from perpdesk.errors import PerpdeskError

app = typer.Typer(
    help="perpdesk: crypto perpetual-futures trading from research to live.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(backtest_app, name="backtest")
app.add_typer(data_app, name="data")
app.add_typer(optimize_app, name="optimize")
app.registered_commands += store_app.registered_commands
app.registered_commands += live_app.registered_commands
app.registered_commands += scan_app.registered_commands
app.registered_commands += run_app.registered_commands


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
