"""Ledger commands: ``perpdesk init-db``, ``perpdesk status``."""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from perpdesk.app.common import ConfigOpt, console
from perpdesk.config import Settings, load_settings
from perpdesk.secrets import redact, register_env_secrets

store_app = typer.Typer(help="Ledger commands.")

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Ledger database URL (default: store.url, else SQLite <paths.data_dir>/ledger.sqlite). "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db.",
    ),
]


def ledger_url(settings: Settings, url: str | None) -> str:
    """``url``, else ``store.url``, else the SQLite file under ``paths.data_dir``."""
    from perpdesk.store import default_url

    return url or settings.store.url or default_url(settings.paths.data_dir)


def _usd(x: Decimal | None, places: int = 2) -> str:
    return "—" if x is None else f"{x:,.{places}f}"


def _emit(render: object) -> None:
    """Print through a capture so every line is redacted of registered secrets. Piped
    output (not a terminal) is rendered 200 columns wide so tables do not wrap."""
    out = console if console.is_terminal else Console(width=max(console.width, 200))
    with out.capture() as cap:
        out.print(render)
    sys.stdout.write(redact(cap.get()))
    sys.stdout.flush()


@store_app.command("init-db")
def init_db_cmd(config: ConfigOpt = None, url: UrlOpt = None) -> None:
    """Create the ledger database or upgrade it to the latest schema (idempotent)."""
    from perpdesk.store import init_db, safe_url

    register_env_secrets()
    settings = load_settings(config)
    target = ledger_url(settings, url)
    rev = init_db(target)
    _emit(f"ledger ready: {safe_url(target)} (schema {rev})")


@store_app.command("status")
def status_cmd(config: ConfigOpt = None, url: UrlOpt = None) -> None:
    """Bankroll, equity, cash, at-risk, positions and layers from the ledger (read-only)."""
    from perpdesk.store import Ledger, safe_url

    register_env_secrets()
    settings = load_settings(config)
    target = ledger_url(settings, url)
    with Ledger(target) as ledger:
        st = ledger.status()
    risk = settings.risk
    bankroll = Decimal(repr(settings.account.bankroll_usd))

    summary = Table(title=f"ledger {safe_url(target)}", show_header=False)
    summary.add_column("item")
    summary.add_column("value", justify="right")
    pct = (st.at_risk_usd / st.equity_usd * 100) if st.equity_usd > 0 else None
    for name, value in [
        ("bankroll (config)", _usd(bankroll)),
        ("deposits", _usd(st.deposits_usd)),
        ("equity", _usd(st.equity_usd)),
        ("cash (wallet)", _usd(st.cash_usd)),
        ("at risk (gross notional)", _usd(st.at_risk_usd)),
        ("at risk % of equity", "—" if pct is None else f"{pct:.2f}"),
        ("open orders / orders / fills", f"{st.open_orders} / {st.n_orders} / {st.n_fills}"),
        ("kill switch", "ON (halted)" if st.kill_switch else "off"),
        ("live orders enabled", "yes" if risk.enable_live_orders else "no"),
    ]:
        summary.add_row(name, value)

    positions = Table(title="positions")
    for col in ("venue", "symbol", "layer", "qty", "mark", "notional USD", "entry", "uPnL USD"):
        positions.add_column(
            col, justify="left" if col in ("venue", "symbol", "layer") else "right"
        )
    for col in ("funding USD", "fees USD", "PnL USD"):
        positions.add_column(col, justify="right")
    for p in st.positions:
        positions.add_row(
            p.venue,
            p.symbol,
            p.layer,
            format(p.qty_base.normalize(), "f"),
            _usd(p.mark_price, 4),
            _usd(p.notional_usd),
            _usd(p.entry_price, 4),
            _usd(p.unrealised_pnl_usd),
            _usd(p.funding_usd),
            _usd(p.fees_usd),
            _usd(p.pnl_usd),
        )

    layers = Table(title="layers")
    for col in ("layer", "allocation %", "cap USD", "enabled", "live"):
        layers.add_column(col, justify="left" if col == "layer" else "right")
    alloc = risk.layer_allocation_pct.model_dump()
    for name in sorted(set(alloc) | set(st.layers)):
        a = alloc.get(name)
        enabled = st.layers.get(name, True) and not st.kill_switch
        live = risk.enable_live_orders and name in risk.live_layers
        layers.add_row(
            name,
            "—" if a is None else f"{a:g}",
            "—" if a is None else _usd(bankroll * Decimal(repr(a)) / 100),
            "yes" if enabled else "no",
            "yes" if live else "no",
        )
    _emit(summary)
    _emit(positions)
    _emit(layers)


OnOff = Annotated[
    str, typer.Argument(help="on (halt: flatten every position, open nothing) or off.")
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger's events).")]


@store_app.command("kill-switch")
def kill_switch_cmd(
    state: OnOff, reason: ReasonOpt = "", config: ConfigOpt = None, url: UrlOpt = None
) -> None:
    """Turn the kill switch on or off in the ledger. A running runner reads it every cycle: on
    means it closes every pair (reduce-only orders) and opens nothing until it is off again.
    The switch persists across restarts."""
    import time

    from perpdesk.errors import PerpdeskError
    from perpdesk.store import Ledger, safe_url

    word = state.strip().lower()
    if word not in ("on", "off"):
        raise PerpdeskError(f"kill-switch {state!r}: say on or off")
    register_env_secrets()
    settings = load_settings(config)
    target = ledger_url(settings, url)
    now = time.time_ns()
    with Ledger(target) as ledger:
        ledger.set_kill_switch(word == "on", now, reason)
        ledger.record_event(
            "KILL_SWITCH", f"kill switch {word} (perpdesk kill-switch)", now, {"reason": reason}
        )
    _emit(f"kill switch {word.upper()} in {safe_url(target)}")


@store_app.command("layer")
def layer_cmd(
    action: Annotated[str, typer.Argument(help="enable or disable.")],
    name: Annotated[str, typer.Argument(help="Layer name, one of [risk.layer_allocation_pct].")],
    reason: ReasonOpt = "",
    config: ConfigOpt = None,
    url: UrlOpt = None,
) -> None:
    """Enable or disable one strategy layer in the ledger. A disabled layer's opening orders
    are rejected by the safeguards (its reduce-only exits still pass); persists across
    restarts."""
    import time

    from perpdesk.errors import PerpdeskError
    from perpdesk.store import Ledger, safe_url

    act = action.strip().lower()
    if act not in ("enable", "disable"):
        raise PerpdeskError(f"layer {action!r}: say enable or disable")
    register_env_secrets()
    settings = load_settings(config)
    known = sorted(settings.risk.layer_allocation_pct.model_dump())
    if name not in known:
        raise PerpdeskError(f"layer {name!r}: unknown (known: {', '.join(known)})")
    target = ledger_url(settings, url)
    now = time.time_ns()
    with Ledger(target) as ledger:
        ledger.set_layer(name, act == "enable", now, reason)
        ledger.record_event(
            "LAYER", f"layer {name} {act}d (perpdesk layer)", now, {"reason": reason}
        )
    _emit(f"layer {name} {act}d in {safe_url(target)}")
