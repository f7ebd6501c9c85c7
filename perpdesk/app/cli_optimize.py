"""``perpdesk optimize grid`` (walk-forward search, local pool or Ray) and
``perpdesk optimize apply`` (write the chosen parameters into a config file)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from perpdesk.app.common import ConfigOpt, console, parse_date_ns
from perpdesk.errors import PerpdeskError

optimize_app = typer.Typer(
    help="Walk-forward parameter search (optuna) on a local pool or a Ray cluster.",
    no_args_is_help=True,
)


@optimize_app.command("grid")
def optimize_grid(
    data: Annotated[Path, typer.Option("--data", "-d", help="Catalog root with 15m perp bars.")],
    coins: Annotated[
        list[str], typer.Option("--coins", help="Coins (BTC, ETH, PEPE → 1000PEPEUSDT); repeat.")
    ],
    trials: Annotated[int | None, typer.Option(help="Trials (default optimize.trials).")] = None,
    windows: Annotated[int | None, typer.Option(help="Walk-forward windows.")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampler seed.")] = None,
    venue: Annotated[str, typer.Option(help="Venue in the catalog.")] = "binance",
    bars: Annotated[str, typer.Option(help="Bar dataset.")] = "perp_bars_15m",
    start: Annotated[str | None, typer.Option(help="Span start, UTC (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option(help="Span end (exclusive), UTC.")] = None,
    ray: Annotated[
        str | None,
        typer.Option("--ray", help="Run trials on Ray: local | auto | ray://host:port."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local worker processes (default: CPUs).")
    ] = None,
    config: ConfigOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default runs_dir/opt-...).")
    ] = None,
) -> None:
    """Search the grid's parameters with walk-forward windows over several coins at once
    (fitness: Calmar on train segments averaged over coins, minus penalties for variance
    across windows and over-trading), then score the best on the test segments and the
    held-out tail. Trials, best parameters and out-of-sample metrics go to Parquet/JSON."""
    from perpdesk.config import load_settings
    from perpdesk.data.catalog import Catalog
    from perpdesk.research.grid_backtest import GridEvaluator, params_with
    from perpdesk.research.pools import make_pool
    from perpdesk.research.walkforward import Fitness, optimize, parse_space
    from perpdesk.strategies.grid.params import GridParams

    s = load_settings(config)
    o = s.optimize
    base = params_with(GridParams(), s.grid.params)
    ev = GridEvaluator(str(data), venue, base, bars, capital_usd=s.account.bankroll_usd)
    syms = [ev.symbol_of(c) for c in coins]
    cat = Catalog(data)
    lo, hi = [], []
    for sym in syms:
        t = cat.read(venue, bars, sym, columns=["close"])
        if t.num_rows == 0:
            raise PerpdeskError(f"{data}/{venue}/{bars}/{sym}: no bars")
        ts = t.column("ts_ns").to_numpy()
        lo.append(int(ts[0]))
        hi.append(int(ts[-1]))
    start_ns = parse_date_ns(start, "--start") if start else max(lo)
    end_ns = parse_date_ns(end, "--end") if end else min(hi)
    if end_ns <= start_ns:
        raise PerpdeskError("the coins' bar histories do not overlap in the requested span")
    n_trials = trials or o.trials
    run_dir = out or (s.paths.runs_dir.expanduser() / f"opt-grid-{time.strftime('%Y%m%dT%H%M%S')}")
    pool = make_pool(ray, workers)
    t0 = time.perf_counter()
    try:
        with Progress(
            TextColumn(f"[bold]optimize grid[/] on {pool.name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("trials", total=n_trials)
            res = optimize(
                ev,
                parse_space(o.grid_space),
                coins,
                start_ns,
                end_ns,
                n_trials=n_trials,
                n_windows=windows or o.windows,
                train_frac=o.train_frac,
                holdout_frac=o.holdout_frac,
                seed=o.seed if seed is None else seed,
                batch_size=o.batch_size,
                pool=pool,
                fitness=Fitness(o.var_penalty, o.trade_penalty, o.max_trades_per_day),
                cache_dir=run_dir / "cache",
                progress=lambda d, n: progress.update(task, completed=d),
            )
    finally:
        pool.close()
    paths = res.save(run_dir)
    table = Table(title=f"best of {n_trials} trials (fitness {res.best_fitness:.3f})")
    table.add_column("parameter")
    table.add_column("value", justify="right")
    for k, v in res.best_params.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(table)
    oos = Table(title="out of sample (best parameters)")
    for col in ("segment", "coin", "calmar", "return %", "max DD %", "trades"):
        oos.add_column(col, justify="left" if col in ("segment", "coin") else "right")
    for r in res.oos + res.holdout:
        oos.add_row(
            r["segment"],
            r["coin"],
            f"{r.get('calmar', float('nan')):.2f}",
            f"{r.get('total_return_pct', float('nan')):.2f}",
            f"{r.get('max_dd_pct', float('nan')):.2f}",
            f"{r.get('trades', 0):.0f}",
        )
    console.print(oos)
    for name, p in paths.items():
        console.print(f"{name:>8}: {p}")
    console.print(
        f"[dim]{pool.name} pool, {time.perf_counter() - t0:.1f}s; apply with: "
        f"perpdesk optimize apply {run_dir} --config perpdesk.toml[/]"
    )


@optimize_app.command("apply")
def optimize_apply(
    run_dir: Annotated[Path, typer.Argument(help="An optimize output directory (with best.json).")],
    config_file: Annotated[
        Path, typer.Option("--config", "-c", help="TOML file to write [grid.params] into.")
    ] = Path("perpdesk.toml"),
) -> None:
    """Write the best parameters of a run into ``[grid.params]`` of a config file, keeping
    its other content and comments; the result is validated before it replaces the file."""
    write_best_params(run_dir, config_file)
    console.print(f"wrote [grid.params] of {run_dir / 'best.json'} into {config_file}")


def write_best_params(run_dir: Path, config_file: Path) -> None:
    """Library form of ``optimize apply`` (atomic; validated with :func:`load_settings`)."""
    import tomlkit

    from perpdesk.config import load_settings
    from perpdesk.files import atomic_write_text

    best_path = run_dir / "best.json"
    try:
        best = json.loads(best_path.read_text())["best_params"]
    except FileNotFoundError:
        raise PerpdeskError(f"{best_path}: no such file (run perpdesk optimize first)") from None
    except (ValueError, KeyError) as exc:
        raise PerpdeskError(f"{best_path}: not an optimize result ({exc})") from None
    doc = tomlkit.parse(config_file.read_text()) if config_file.exists() else tomlkit.document()
    grid = doc.get("grid")
    if grid is None:
        grid = tomlkit.table()
        doc["grid"] = grid
    params = grid.get("params")
    if params is None:
        params = tomlkit.table()
        grid["params"] = params
    for k, v in best.items():
        params[k] = v
    text = tomlkit.dumps(doc)
    tmp = config_file.with_name(f".{config_file.name}.check.toml")
    try:
        tmp.write_text(text)
        load_settings(tmp)  # one-line ConfigError if the result is not a valid config
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_text(text, config_file)
