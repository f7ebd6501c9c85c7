"""Live-runtime commands: ``perpdesk collect`` (and later ``scan``, ``run``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.logging import RichHandler
from rich.text import Text

from perpdesk.app.common import console, err_console
from perpdesk.errors import PerpdeskError

live_app = typer.Typer(help="Live runtime commands.")


def _status_line(col, now_ns: int) -> Text:
    """One line: rate, rows per stream kind, anomalies, connection state."""
    col.refresh_counts()
    st = col.stats
    age = st.last_message_age_s(now_ns)
    kinds: dict[str, int] = {}
    for stream, n in st.per_stream.items():
        k = stream.split("@", 1)[1]
        kinds[k] = kinds.get(k, 0) + n
    per = "  ".join(f"{k} {n:,}" for k, n in sorted(kinds.items()))
    up = (now_ns - st.started_ns) / 1e9
    t = Text()
    t.append(f"{up:7.0f}s ", style="dim")
    t.append(f"{st.messages_per_s(now_ns):9,.0f} msg/s ", style="bold")
    t.append(f"{st.messages:,} msgs  {per}  ")
    t.append(f"pending {col.pending_rows:,}  written {sum(st.rows_written.values()):,}  ")
    bad = st.gaps or st.duplicates or st.out_of_order or st.malformed
    t.append(
        f"gaps {st.gaps} (missing {st.missing_ids})  dups {st.duplicates}  "
        f"ooo {st.out_of_order}  bad {st.malformed}  ",
        style="yellow" if bad else "",
    )
    t.append(f"reconnects {st.reconnects}  ", style="yellow" if st.reconnects else "")
    t.append("last msg " + ("-" if age is None else f"{age:.1f}s ago"))
    if st.write_errors or st.rejected_rows:
        t.append(f"  write errors {st.write_errors}  rejected {st.rejected_rows}", style="red")
    return t


@live_app.command("collect")
def collect(
    symbols: Annotated[
        str, typer.Option("--symbols", help="Comma-separated USD-M symbols, e.g. BTCUSDT,ETHUSDT.")
    ],
    catalog: Annotated[Path, typer.Option("--catalog", help="Catalog root to write into.")],
    venue: Annotated[str, typer.Option(help="Venue name in the catalog.")] = "binance",
    ws_url: Annotated[
        str, typer.Option("--ws-url", help="Websocket base URL (combined streams at /stream).")
    ] = "wss://fstream.binance.com",
    streams: Annotated[
        str,
        typer.Option(
            "--streams", help="Stream kinds: aggTrade, trade, bookTicker, forceOrder (comma list)."
        ),
    ] = "aggTrade,bookTicker,forceOrder",
    flush_seconds: Annotated[
        float, typer.Option("--flush-seconds", help="Write to the catalog at least this often.")
    ] = 60.0,
    flush_rows: Annotated[
        int, typer.Option("--flush-rows", help="…or as soon as this many rows are pending.")
    ] = 2_000_000,
    duration: Annotated[
        float | None,
        typer.Option("--duration", help="Stop after SECONDS (default: run until Ctrl-C)."),
    ] = None,
) -> None:
    """Collect ticks (aggTrade, bookTicker, forceOrder liquidations) from Binance USD-M
    websockets into the catalog's daily partitions, with reconnects, sequence-gap checks and
    a live status line. Ctrl-C stops after writing what is buffered."""
    from perpdesk.live.collector import TickCollector

    syms = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    kinds = [k.strip() for k in streams.split(",") if k.strip()]
    if flush_seconds <= 0:
        raise PerpdeskError(f"--flush-seconds {flush_seconds}: must be above 0")
    col = TickCollector(
        syms,
        catalog,
        venue=venue,
        ws_url=ws_url,
        kinds=kinds,
        flush_seconds=flush_seconds,
        flush_rows=flush_rows,
    )
    handler = RichHandler(console=err_console, show_path=False, markup=False)
    logging.getLogger("perpdesk.live").addHandler(handler)
    logging.getLogger("perpdesk.live").setLevel(logging.INFO)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off Unix
            loop.add_signal_handler(signal.SIGINT, col.stop)
            loop.add_signal_handler(signal.SIGTERM, col.stop)
        task = asyncio.create_task(col.run(duration))
        with Live(_status_line(col, time.time_ns()), console=console, refresh_per_second=4) as live:
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)
                live.update(_status_line(col, time.time_ns()))
        await task

    try:
        asyncio.run(main())  # SIGINT/SIGTERM: stop, parse and write what is buffered
    finally:
        logging.getLogger("perpdesk.live").removeHandler(handler)
    st = col.stats
    written = ", ".join(f"{k} {v:,}" for k, v in sorted(st.rows_written.items())) or "none"
    console.line()
    console.print(
        f"collected {st.messages:,} messages; rows written {written}; gaps {st.gaps} (missing ids {st.missing_ids}), duplicates {st.duplicates}, "
        f"out of order {st.out_of_order}, malformed {st.malformed}, reconnects {st.reconnects}"
    )
