"""``perpdesk run``, ``perpdesk watchdog``, ``perpdesk audit``: the live runtime.

Thin: the runner, the watchdog and the audit are library code in :mod:`perpdesk.live`.
"""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from perpdesk.app.common import ConfigOpt, console
from perpdesk.errors import PerpdeskError

run_app = typer.Typer(help="Run the trading runtime.")

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Ledger database URL (default: store.url, else SQLite <paths.data_dir>/ledger.sqlite).",
    ),
]


def _pairs(symbols: str) -> tuple[Any, ...]:
    from perpdesk.domain import spot_symbol
    from perpdesk.live.runner import PairSpec

    syms = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    if not syms:
        raise PerpdeskError("--symbols: give at least one perp symbol, e.g. BTCUSDT")
    return tuple(PairSpec(s, spot_symbol(s)) for s in syms)


def live_allowed(risk: Any, layer: str = "carry") -> str | None:
    """Why ``--live`` is refused (None when allowed): it needs ``risk.enable_live_orders``
    AND ``layer`` in ``risk.live_layers``."""
    if not risk.enable_live_orders:
        return "--live refused: risk.enable_live_orders is false (set it in the config to trade)"
    if layer not in risk.live_layers:
        return f"--live refused: layer {layer!r} is not in risk.live_layers"
    return None


@run_app.command("run")
def run_cmd(
    paper: Annotated[
        bool, typer.Option("--paper", help="Paper trading (simulated fills).")
    ] = False,
    live: Annotated[
        bool, typer.Option("--live", help="Real orders (needs the risk switches).")
    ] = False,
    symbols: Annotated[
        str, typer.Option(help="Comma-separated perps; each pairs with its spot.")
    ] = "BTCUSDT",
    replay: Annotated[
        Path | None, typer.Option(help="Paper: a Binance USD-M websocket capture to replay.")
    ] = None,
    replay_spot: Annotated[
        Path | None, typer.Option(help="Paper: the spot capture of the same time.")
    ] = None,
    replay_rate: Annotated[float, typer.Option(help="Paper replay speed, events/s.")] = 1000.0,
    journal: Annotated[
        Path | None,
        typer.Option(help="Paper venue journal (default <paths.data_dir>/paper-<run id>.sqlite)."),
    ] = None,
    cycle_s: Annotated[float, typer.Option(help="Seconds between cycle starts.")] = 300.0,
    cycle_timeout_s: Annotated[float, typer.Option(help="Hard timeout of one cycle (s).")] = 60.0,
    run_id: Annotated[str, typer.Option(help="Client order id prefix (≤ 8 chars).")] = "pd",
    max_cycles: Annotated[int | None, typer.Option(help="Stop after N cycles.")] = None,
    exchange: Annotated[str, typer.Option(help="ccxt exchange id (live).")] = "binanceusdm",
    api_url: Annotated[str | None, typer.Option(hidden=True)] = None,
    ws_url: Annotated[str | None, typer.Option(hidden=True)] = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
) -> None:
    """Run the carry runner: `perpdesk run --paper` or `perpdesk run --live`. Every order
    passes the safeguards; the ledger is reconciled with the venue before trading."""
    from perpdesk.app.cli_store import ledger_url
    from perpdesk.config import load_settings
    from perpdesk.live.runner import (
        DurablePaperVenue,
        LiveExecutions,
        MarkFundingSignals,
        Runner,
        RunnerConfig,
        ScannerSignals,
        capture_events,
        paper_instruments,
        replay_feed,
    )
    from perpdesk.risk.safeguards import Limits
    from perpdesk.store import Ledger, init_db
    from perpdesk.store.snapshot import default_snapshot_path
    from perpdesk.strategies.carry import CarryRules

    if paper == live:
        raise PerpdeskError("run: give exactly one of --paper or --live")
    s = load_settings(config)
    if live and (why := live_allowed(s.risk)) is not None:
        raise PerpdeskError(why)
    pairs = _pairs(symbols)
    data_dir = Path(s.paths.data_dir).expanduser()
    cfg = RunnerConfig(
        mode="live" if live else "paper",
        run_id=run_id,
        pairs=pairs,
        bankroll_usd=Decimal(repr(s.account.bankroll_usd)),
        allocation_pct=Decimal(repr(s.carry.allocation_pct)),
        perp_leverage=Decimal(repr(s.carry.perp_leverage)),
        cycle_s=cycle_s,
        cycle_timeout_s=cycle_timeout_s,
        snapshot_path=default_snapshot_path(s.store.snapshot_path, data_dir),
    )
    rules = CarryRules(
        s.carry.entry_ann_pct,
        s.carry.exit_ann_pct,
        s.carry.min_quote_volume_24h_usd,
        s.carry.max_positions,
    )
    limits = Limits.from_config(s.risk)
    if paper and replay is None:
        raise PerpdeskError(
            "run --paper: give --replay CAPTURE [--replay-spot CAPTURE] (live market data for "
            "the paper venue is not wired yet)"
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        feed = None
        lurl = ledger_url(s, url)
        if paper:
            init_db(lurl)  # idempotent; a live ledger must be created with `perpdesk init-db`
        with Ledger(lurl) as ledger:
            if paper:
                venue: Any = DurablePaperVenue(
                    journal or data_dir / f"paper-{run_id}.sqlite",
                    paper_instruments("paper", pairs),
                    cfg.bankroll_usd,
                )
                await venue.open()
                caps = [(replay, None)]
                if replay_spot is not None:
                    caps.append((replay_spot, pairs[0].spot))
                events = capture_events(caps)
                signals: Any = MarkFundingSignals({p.perp: 8 for p in pairs})
                feed = asyncio.ensure_future(replay_feed(venue, events, replay_rate))
            else:
                from perpdesk.data.catalog import Catalog
                from perpdesk.data.sources.ccxt_download import CcxtDownloader
                from perpdesk.execution.ccxt_live import LiveVenue

                lv = LiveVenue.from_env(exchange, api_url=api_url, ws_url=ws_url)
                await lv.connect()
                venue = LiveExecutions(lv, [x for p in pairs for x in (p.perp, p.spot)])
                client = CcxtDownloader(exchange, Catalog(data_dir), api_url=api_url)
                signals = ScannerSignals([client], rules, [p.perp for p in pairs])
            runner = Runner(cfg, venue, ledger, limits, rules, signals)

            def on_cycle(k: int, status: str) -> None:
                console.print(f"cycle {k}: {status}")

            try:
                await runner.run(max_cycles=max_cycles, stop=stop, on_cycle=on_cycle)
            finally:
                if feed is not None:
                    feed.cancel()
                await venue.close()

    asyncio.run(main())


@run_app.command(
    "watchdog", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def watchdog_cmd(
    ctx: typer.Context,
    snapshot: Annotated[
        Path | None, typer.Option(help="Runner state snapshot to watch for staleness.")
    ] = None,
    stale_s: Annotated[float, typer.Option(help="Kill and restart when older (0 = off).")] = 0.0,
    restart_delay_s: Annotated[float, typer.Option(help="First restart delay (s).")] = 5.0,
    max_restarts: Annotated[int | None, typer.Option(help="Give up after N restarts.")] = None,
) -> None:
    """Keep a runner alive: `perpdesk watchdog [--snapshot P --stale-s 900] -- perpdesk run
    --paper ...` restarts the command whenever it exits (or hangs)."""
    from perpdesk.live.watchdog import Watchdog

    cmd = [a for a in ctx.args if a != "--"]
    if not cmd:
        raise PerpdeskError("watchdog: give the command to supervise after --")
    wd = Watchdog(
        cmd,
        snapshot_path=snapshot,
        stale_s=stale_s,
        restart_delay_s=restart_delay_s,
        max_restarts=max_restarts,
        log_line=lambda line: console.print(line, markup=False),
    )
    old = signal.signal(signal.SIGTERM, wd.stop)
    try:
        n = wd.run()
    finally:
        signal.signal(signal.SIGTERM, old)
    console.print(f"watchdog: {n} restart(s)")


@run_app.command("audit")
def audit_cmd(
    exchange: Annotated[str, typer.Option(help="ccxt exchange id.")] = "binanceusdm",
    api_url: Annotated[str | None, typer.Option(hidden=True)] = None,
    ws_url: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> None:
    """Read-only check of the venue: connectivity, markets, balances, positions, open
    orders, API key permissions. Never places an order."""
    from perpdesk.execution.ccxt_live import LiveVenue
    from perpdesk.live.runner import audit_venue

    async def main() -> list[tuple[str, bool, str]]:
        v = LiveVenue.from_env(exchange, api_url=api_url, ws_url=ws_url)
        try:
            return await audit_venue(v)
        finally:
            await v.close()

    rows = asyncio.run(main())
    t = Table(title=f"audit {exchange}")
    for col in ("check", "ok", "detail"):
        t.add_column(col)
    for name, ok, detail in rows:
        t.add_row(name, "[green]ok[/]" if ok else "[red]FAIL[/]", detail)
    console.print(t)
    if not all(ok for _, ok, _ in rows):
        raise typer.Exit(1)
