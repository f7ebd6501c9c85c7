"""``perpdesk scan``: the carry candidate table of every perpetual, once or ``--watch``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from perpdesk.app.common import ConfigOpt, console
from perpdesk.errors import PerpdeskError

scan_app = typer.Typer()


def parse_api_urls(text: str | None, exchanges: list[str]) -> dict[str, str | None]:
    """``--api-url``: one URL for every exchange, or ``id=url,id=url`` per exchange (the
    others use their real hosts). For loopback fakes and proxies."""
    if not text:
        return dict.fromkeys(exchanges)
    parts = [x.strip() for x in text.split(",") if x.strip()]
    if not any("=" in x for x in parts):
        return dict.fromkeys(exchanges, text.strip())
    urls: dict[str, str | None] = dict.fromkeys(exchanges)
    for part in parts:
        ex_id, sep, url = part.partition("=")
        if not sep or ex_id.strip() not in urls:
            raise PerpdeskError(f"--api-url {part!r}: expected id=url with id one of {exchanges}")
        urls[ex_id.strip()] = url.strip()
    return urls


def scan_table(ts_ns: int, rows: list, top: int) -> Table:
    """A rich table of the first ``top`` rows and every candidate."""
    from perpdesk.data.catalog import fmt_ts

    shown = [r for i, r in enumerate(rows) if i < top or r.candidate]
    t = Table(
        title=f"carry scan {fmt_ts(ts_ns)} — {sum(r.candidate for r in rows)} candidates "
        f"of {len(rows)} perps"
    )
    for col in (
        "venue",
        "symbol",
        "rate %",
        "int h",
        "ann %",
        "basis bps",
        "24h vol $M",
        "OI $M",
        "next funding",
        "decision",
    ):
        t.add_column(col, justify="left" if col in ("venue", "symbol", "decision") else "right")

    def num(x: float, fmt: str) -> str:
        return "–" if x != x else fmt.format(x)

    for r in shown:
        t.add_row(
            r.venue,
            r.symbol,
            num(r.funding_rate * 100, "{:.4f}"),
            str(r.funding_interval_h or "–"),
            num(r.ann_pct, "{:.1f}"),
            num(r.basis_bps, "{:.1f}"),
            num(r.quote_volume_24h_usd / 1e6, "{:,.1f}"),
            num(r.open_interest_usd / 1e6, "{:,.1f}"),
            fmt_ts(r.next_funding_ts_ns) if r.next_funding_ts_ns else "–",
            r.note,
            style="bold green" if r.candidate else None,
        )
    return t


@scan_app.command("scan")
def scan_cmd(
    exchanges: Annotated[
        str,
        typer.Option(help="Comma-separated ccxt exchange ids: binanceusdm, bybit, okx."),
    ] = "binanceusdm",
    symbols: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated symbols, e.g. BTCUSDT (default: all linear perps); "
            "exchange ids (BTC-USDT-SWAP) and ccxt symbols (BTC/USDT:USDT) work too."
        ),
    ] = None,
    top: Annotated[int, typer.Option(help="Rows to show besides the candidates.")] = 25,
    oi_top: Annotated[int, typer.Option(help="Fetch open interest for this many top rows.")] = 10,
    watch: Annotated[bool, typer.Option("--watch", help="Rescan every --every seconds.")] = False,
    every: Annotated[float, typer.Option(help="Seconds between scans with --watch.")] = 300.0,
    count: Annotated[
        int, typer.Option(hidden=True, help="Stop --watch after N scans (0 = never).")
    ] = 0,
    config: ConfigOpt = None,
    api_url: Annotated[
        str | None,
        typer.Option(hidden=True, help="Override the REST API host: one URL, or id=url,id=url."),
    ] = None,
) -> None:
    """Rank every linear perpetual of the venues for funding carry by the configured rules:
    funding annualised with each symbol's own interval, basis, 24h volume, open interest;
    candidates in green."""
    from perpdesk.config import load_settings
    from perpdesk.data.catalog import Catalog
    from perpdesk.data.sources.ccxt_download import CcxtDownloader
    from perpdesk.live.scanner import scan
    from perpdesk.strategies.carry import CarryRules

    s = load_settings(config)
    rules = CarryRules(
        s.carry.entry_ann_pct,
        s.carry.exit_ann_pct,
        s.carry.min_quote_volume_24h_usd,
        s.carry.max_positions,
    )
    ids = [e.strip() for e in exchanges.split(",") if e.strip()]
    urls = parse_api_urls(api_url or os.environ.get("PERPDESK_DOWNLOAD_API_URL"), ids)
    cat = Catalog(Path(s.paths.data_dir).expanduser())
    clients = [CcxtDownloader(e, cat, api_url=urls[e]) for e in ids]
    syms = [x.strip() for x in symbols.split(",") if x.strip()] if symbols else None
    n = 0
    while True:
        with console.status("scanning…"):
            ts, rows = scan(clients, rules, syms, oi_top)
        console.print(scan_table(ts, rows, top))
        n += 1
        if not watch or (count and n >= count):
            return
        time.sleep(every)
