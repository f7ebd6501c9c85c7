"""``perpdesk run``, ``perpdesk watchdog``, ``perpdesk audit``: the live runtime.

Thin: the runner, the watchdog and the audit are library code in :mod:`perpdesk.live`.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from perpdesk.app.common import ConfigOpt, console
from perpdesk.errors import PerpdeskError
from perpdesk.sim.costs import Costs, FeeModel

run_app = typer.Typer(help="Run the trading runtime.")

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Ledger database URL (default: store.url, else SQLite <paths.data_dir>/ledger.sqlite).",
    ),
]


def live_allowed(risk: Any, layer: str = "carry") -> str | None:
    """Why ``--live`` is refused (None when allowed): it needs ``risk.enable_live_orders``
    AND ``layer`` in ``risk.live_layers``."""
    if not risk.enable_live_orders:
        return "--live refused: risk.enable_live_orders is false (set it in the config to trade)"
    if layer not in risk.live_layers:
        return f"--live refused: layer {layer!r} is not in risk.live_layers"
    return None


def _runner_overrides(
    symbols: str | None,
    cycle_s: float | None,
    cycle_timeout_s: float | None,
    run_id: str | None,
    exchange: str | None,
) -> dict[str, Any]:
    """The ``[runner]`` keys given on the command line (they override the config)."""
    out: dict[str, Any] = {}
    if symbols is not None:
        out["symbols"] = [x for x in symbols.split(",") if x.strip()]
    for key, val in (
        ("cycle_s", cycle_s),
        ("cycle_timeout_s", cycle_timeout_s),
        ("run_id", run_id),
        ("venue", exchange),
    ):
        if val is not None:
            out[key] = val
    return out


async def open_paper_on_live_data(
    s: Any,
    cfg: Any,
    rules: Any,
    journal: Path,
    *,
    api_url: str | None = None,
    ws_url: str | None = None,
    spot_api_url: str | None = None,
    spot_ws_url: str | None = None,
) -> tuple[Any, Any, asyncio.Future[None], Any]:
    """``(venue, signals, feed task, market data)`` of `perpdesk run --paper` on live data:
    keyless public streams of ``runner.venue`` (perps) and its spot exchange
    (:class:`~perpdesk.live.paper_feed.LiveMarketData`) feed a journaled paper venue on the
    real instruments; signals per ``runner.signals``. Close the market data after the venue."""
    from perpdesk.live.paper_feed import LiveMarketData, live_feed
    from perpdesk.live.runner import DurablePaperVenue, MarkFundingSignals, ScannerSignals

    r = s.runner
    perps = [p.perp for p in cfg.pairs]
    market = LiveMarketData.public(
        r.venue,
        perps,
        spot_exchange_id=r.spot_venue or None,
        api_url=api_url,
        ws_url=ws_url,
        spot_api_url=spot_api_url,
        spot_ws_url=spot_ws_url,
    )
    try:
        await market.connect()
        inst = market.instruments("paper")
        # the exchange's own regular-user fee schedule (FeeModel.for_venue), not Binance's
        try:
            fees = FeeModel.for_venue(r.venue)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        venue = DurablePaperVenue(
            journal, inst, cfg.paper_cash_usd or cfg.bankroll_usd, costs=Costs(fees=fees)
        )
        await venue.open()
    except BaseException:
        await market.close()
        raise
    signals: Any
    if r.signals == "mark":
        signals = MarkFundingSignals(
            {i.symbol: i.funding_interval_h for i in inst if i.funding_interval_h}
        )
    else:
        from perpdesk.data.catalog import Catalog
        from perpdesk.data.sources.ccxt_download import CcxtDownloader

        data_dir = Path(s.paths.data_dir).expanduser()
        client = CcxtDownloader(r.venue, Catalog(data_dir), api_url=api_url)
        signals = ScannerSignals([client], rules, perps)
    feed = asyncio.ensure_future(live_feed(venue, market.events, flush_s=r.paper_flush_s))
    return venue, signals, feed, market


@run_app.command("run")
def run_cmd(
    paper: Annotated[
        bool, typer.Option("--paper", help="Paper trading (simulated fills).")
    ] = False,
    live: Annotated[
        bool, typer.Option("--live", help="Real orders (needs the risk switches).")
    ] = False,
    symbols: Annotated[
        str | None,
        typer.Option(help="Comma-separated perps; each pairs with its spot (runner.symbols)."),
    ] = None,
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
    cycle_s: Annotated[
        float | None, typer.Option(help="Seconds between cycle starts (runner.cycle_s).")
    ] = None,
    cycle_timeout_s: Annotated[
        float | None, typer.Option(help="Hard timeout of one cycle, s (runner.cycle_timeout_s).")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Client order id prefix, ≤ 8 chars (runner.run_id).")
    ] = None,
    max_cycles: Annotated[int | None, typer.Option(help="Stop after N cycles.")] = None,
    exchange: Annotated[
        str | None, typer.Option(help="ccxt id of the perp exchange (runner.venue).")
    ] = None,
    api_url: Annotated[str | None, typer.Option(hidden=True)] = None,
    ws_url: Annotated[str | None, typer.Option(hidden=True)] = None,
    spot_api_url: Annotated[str | None, typer.Option(hidden=True)] = None,
    spot_ws_url: Annotated[str | None, typer.Option(hidden=True)] = None,
    spot_ws_api_url: Annotated[str | None, typer.Option(hidden=True)] = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
) -> None:
    """Run the carry runner: `perpdesk run --paper` (paper fills on live market data, or on a
    recorded capture with --replay) or `perpdesk run --live`; without either flag,
    runner.mode decides. Settings come from the config's runner section (flags override
    them). Every order
    passes the safeguards; the ledger is reconciled with the venue before trading."""
    from perpdesk.app.cli_store import ledger_url
    from perpdesk.config import load_settings
    from perpdesk.live.runner import (
        DurablePaperVenue,
        LiveExecutions,
        MarkFundingSignals,
        Runner,
        ScannerSignals,
        capture_events,
        paper_instruments,
        replay_feed,
        runner_config,
    )
    from perpdesk.risk.safeguards import Limits
    from perpdesk.store import Ledger, init_db
    from perpdesk.store.snapshot import default_snapshot_path
    from perpdesk.strategies.carry import CarryRules

    if paper and live:
        raise PerpdeskError("run: give exactly one of --paper or --live")
    s = load_settings(
        config, runner=_runner_overrides(symbols, cycle_s, cycle_timeout_s, run_id, exchange)
    )
    if not paper and not live:
        live = s.runner.mode == "live"
        paper = not live
    if live and (why := live_allowed(s.risk)) is not None:
        raise PerpdeskError(why)
    run_id = s.runner.run_id
    exchange = s.runner.venue
    data_dir = Path(s.paths.data_dir).expanduser()
    cfg = runner_config(
        s,
        "live" if live else "paper",
        snapshot_path=default_snapshot_path(s.store.snapshot_path, data_dir),
    )
    pairs = cfg.pairs
    if journal is None and s.runner.paper_journal:
        journal = Path(s.runner.paper_journal).expanduser()
    rules = CarryRules(
        s.carry.entry_ann_pct,
        s.carry.exit_ann_pct,
        s.carry.min_quote_volume_24h_usd,
        s.carry.max_positions,
    )
    limits = Limits.from_config(s.risk)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        feed = None
        market: Any = None
        lurl = ledger_url(s, url)
        if paper:
            init_db(lurl)  # idempotent; a live ledger must be created with `perpdesk init-db`
        with Ledger(lurl) as ledger:
            if paper and replay is not None:  # paper on a recorded capture
                # a Binance USD-M capture: Binance's own fee schedule, a spot buy's commission
                # in the coin bought (FeeModel.for_venue), as on a live Binance account
                venue: Any = DurablePaperVenue(
                    journal or data_dir / f"paper-{run_id}.sqlite",
                    paper_instruments("paper", pairs),
                    cfg.paper_cash_usd or cfg.bankroll_usd,
                    costs=Costs(fees=FeeModel.for_venue("binanceusdm")),
                )
                await venue.open()
                caps = [(replay, None)]
                if replay_spot is not None:
                    caps.append((replay_spot, pairs[0].spot))
                events = capture_events(caps)
                signals: Any = MarkFundingSignals({p.perp: 8 for p in pairs})
                feed = asyncio.ensure_future(replay_feed(venue, events, replay_rate))
            elif paper:  # paper on live market data
                venue, signals, feed, market = await open_paper_on_live_data(
                    s,
                    cfg,
                    rules,
                    journal or data_dir / f"paper-{run_id}.sqlite",
                    api_url=api_url,
                    ws_url=ws_url,
                    spot_api_url=spot_api_url,
                    spot_ws_url=spot_ws_url,
                )
            else:
                from perpdesk.data.catalog import Catalog
                from perpdesk.data.sources.ccxt_download import CcxtDownloader
                from perpdesk.execution.ccxt_live import open_spot_perp_venue

                # the perp leg on `exchange`, the spot leg on the same exchange's spot account
                lv = await open_spot_perp_venue(
                    exchange,
                    spot_exchange_id=s.runner.spot_venue or None,
                    api_url=api_url,
                    ws_url=ws_url,
                    spot_api_url=spot_api_url,
                    spot_ws_url=spot_ws_url,
                    spot_ws_api_url=spot_ws_api_url,
                )
                venue = LiveExecutions(lv, [x for p in pairs for x in (p.perp, p.spot)])
                if s.runner.signals == "mark":  # the venue's mark stream, as in --paper
                    inst = await lv.instruments()
                    signals = MarkFundingSignals(
                        {
                            p.perp: inst[p.perp].funding_interval_h or 8
                            for p in pairs
                            if p.perp in inst
                        }
                    )
                else:
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
                if market is not None:
                    await market.close()

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
    exchange: Annotated[str, typer.Option(help="ccxt id of the perp exchange.")] = "binanceusdm",
    api_url: Annotated[str | None, typer.Option(hidden=True)] = None,
    ws_url: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> None:
    """Read-only check of both legs of the carry — the perp venue and its spot account
    (Binance's spot account; Bybit's and OKX's unified account through a spot client):
    connectivity, markets, balances, positions, open orders, API key permissions. One row
    per check, prefixed by leg; exit code 1 if any fails. Never places an order."""
    from rich.text import Text

    from perpdesk.execution.ccxt_live import SPOT_EXCHANGE, LiveVenue
    from perpdesk.live.runner import audit_venue
    from perpdesk.secrets import redact

    async def leg(exchange_id: str, spot: bool) -> list[tuple[str, bool, str]]:
        # one key trades both legs; the spot client talks to the same host (api_url)
        v = LiveVenue.from_env(
            exchange_id, api_url=api_url, ws_url=None if spot else ws_url, spot=spot
        )
        try:
            return await audit_venue(v)
        finally:
            await v.close()

    async def main() -> list[tuple[str, bool, str]]:
        rows = [(f"perp: {n}", ok, d) for n, ok, d in await leg(exchange, False)]
        spot_id = SPOT_EXCHANGE.get(exchange)
        if spot_id is None:
            return [*rows, ("spot: connect", False, f"no spot account wired for {exchange}")]
        try:
            spot_rows = await leg(spot_id, True)
        except Exception as exc:  # e.g. the spot client cannot be built: a row, not a crash
            first = (str(exc).strip().splitlines() or [""])[0]
            spot_rows = [("connect", False, redact(f"{type(exc).__name__}: {first}"))]
        return [*rows, *((f"spot: {n}", ok, d) for n, ok, d in spot_rows)]

    rows = asyncio.run(main())
    t = Table(title=f"audit {exchange} (perp + spot)")
    for col in ("check", "ok", "detail"):
        t.add_column(col)
    for name, ok, detail in rows:
        t.add_row(name, "[green]ok[/]" if ok else "[red]FAIL[/]", Text(detail))
    console.print(t)
    if not all(ok for _, ok, _ in rows):
        raise typer.Exit(1)
