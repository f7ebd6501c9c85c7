"""Self-contained HTML reports (plotly, JavaScript inlined so they open offline)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from perpdesk.data.catalog import fmt_ts
from perpdesk.domain import annualise_rate
from perpdesk.files import atomic_write_text

if TYPE_CHECKING:
    from perpdesk.research.carry_backtest import CarryBacktest

_COLUMNS = [
    ("symbol", "symbol", "{}"),
    ("interval_h", "int h", "{:g}"),
    ("return_pct", "return %", "{:.2f}"),
    ("sharpe", "Sharpe", "{:.2f}"),
    ("max_dd_pct", "max DD %", "{:.2f}"),
    ("entries", "entries", "{}"),
    ("exits", "exits", "{}"),
    ("funding_bps", "funding bps", "{:.1f}"),
    ("costs_bps", "costs bps", "{:.1f}"),
    ("price_pnl_bps", "price/basis bps", "{:.1f}"),
    ("pnl_usd", "PnL USD", "{:,.0f}"),
]


def fmt_cell(value: object, pattern: str) -> str:
    """Render a table cell; NaN shows as an en dash."""
    if isinstance(value, float) and math.isnan(value):
        return "–"
    return pattern.format(value)


def _dt(ts_ns: np.ndarray) -> np.ndarray:
    return np.asarray(ts_ns, dtype="int64").astype("datetime64[ns]")


def carry_figure(bt: CarryBacktest) -> go.Figure:
    """Portfolio equity, per-symbol cumulative PnL (% of slot capital), and each symbol's
    annualised funding at its settlements against the entry and exit thresholds."""
    p = bt.run.panel
    c = bt.settings.carry
    C = bt.run.sizing.slot_capital_usd
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=(
            "Portfolio equity (USD)",
            "Per-symbol PnL (% of slot capital)",
            "Annualised funding at settlement (%) vs entry / exit thresholds",
        ),
    )
    fig.add_trace(
        go.Scatter(x=_dt(bt.equity_ts_ns), y=bt.equity_usd, name="equity", line={"width": 2}), 1, 1
    )
    x = _dt(p.grid_ts_ns)
    cum = np.cumsum(bt.run.pnl_usd, axis=1) / C * 100.0
    for i, sym in enumerate(p.symbols):
        fig.add_trace(go.Scatter(x=x, y=cum[i], name=sym, legendgroup=sym, mode="lines"), 2, 1)
        m = p.settles[i]
        ann = annualise_rate(p.funding_rate[i][m], p.interval_h[i][m])
        fig.add_trace(
            go.Scatter(
                x=x[m],
                y=ann,
                name=sym,
                legendgroup=sym,
                showlegend=False,
                mode="lines",
                line={"width": 1},
            ),
            3,
            1,
        )
    for level, label, pos in (
        (c.entry_ann_pct, "entry", "top left"),
        (c.exit_ann_pct, "exit", "bottom left"),
    ):
        fig.add_hline(
            y=level,
            row=3,
            col=1,
            line_dash="dash",
            annotation_text=f"{label} {level:g}%",
            annotation_position=pos,
        )
    fig.update_layout(height=1100, template="plotly_white", legend={"orientation": "v"})
    return fig


def write_carry_report(bt: CarryBacktest, path: Path) -> Path:
    """Write the carry report (summary table + figure) as one offline HTML file."""
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in _COLUMNS)
    body = []
    for r in [*bt.rows, bt.portfolio]:
        cells = "".join(f"<td>{html.escape(fmt_cell(r[k], f))}</td>" for k, _, f in _COLUMNS)
        style = ' style="font-weight:bold"' if r is bt.portfolio else ""
        body.append(f"<tr{style}>{cells}</tr>")
    s = bt.settings
    p = bt.run.panel
    intro = (
        f"<p>venue <b>{html.escape(p.venue)}</b>, {len(p.symbols)} symbols, "
        f"settlements {fmt_ts(p.grid_ts_ns[0])} → {fmt_ts(p.grid_ts_ns[-1])}; "
        f"bankroll {s.account.bankroll_usd:,.0f} USD, carry {s.carry.allocation_pct:g}%, "
        f"entry &gt; {s.carry.entry_ann_pct:g}% / exit &lt; {s.carry.exit_ann_pct:g}% annualised, "
        f"{s.carry.cost_bps_per_leg:g} bps per leg, max {s.carry.max_positions} pairs, "
        f"24h volume ≥ {s.carry.min_quote_volume_24h_usd:,.0f} USD. Run {html.escape(bt.run_id)}, "
        f"config {s.content_hash()}. Symbol bps are of the leg notional; portfolio bps of the bankroll.</p>"
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>perpdesk carry backtest</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>"
        f"<h1>Funding carry backtest</h1>{intro}<table><tr>{head}</tr>{''.join(body)}</table>"
        + carry_figure(bt).to_html(full_html=False, include_plotlyjs=True)
        + "</body></html>"
    )
    atomic_write_text(page, path)
    return path


_METRIC_ROWS = [
    ("total_return_pct", "total return %", "{:.2f}"),
    ("cagr_pct", "CAGR %", "{:.2f}"),
    ("sharpe", "Sharpe", "{:.2f}"),
    ("sortino", "Sortino", "{:.2f}"),
    ("calmar", "Calmar", "{:.2f}"),
    ("max_dd_pct", "max drawdown %", "{:.2f}"),
    ("max_dd_days", "max drawdown duration (days)", "{:.1f}"),
    ("win_rate_pct", "win rate %", "{:.1f}"),
    ("profit_factor", "profit factor", "{:.2f}"),
    ("trades", "closed trades", "{:.0f}"),
    ("exposure_pct", "exposure %", "{:.1f}"),
    ("turnover_per_year", "turnover / year", "{:.2f}"),
]

_PNL_PARTS = [
    ("price_pnl_usd", "price"),
    ("funding_usd", "funding"),
    ("fees_usd", "fees"),
    ("slippage_usd", "slippage"),
]


def run_figure(
    ts_ns: np.ndarray,
    equity_usd: np.ndarray,
    breakdown: list[dict],
    benchmark_usd: np.ndarray | None,
) -> go.Figure:
    """Equity (and an optional buy-and-hold benchmark), drawdown, and the PnL of each
    (strategy, symbol) split into price, funding, fees and slippage (fees and slippage
    drawn as negative bars: they are costs)."""
    e = np.asarray(equity_usd, dtype=float)
    fig = make_subplots(
        rows=3,
        cols=1,
        vertical_spacing=0.08,
        subplot_titles=("Equity (USD)", "Drawdown (%)", "PnL decomposition (USD)"),
    )
    x = _dt(ts_ns)
    fig.add_trace(go.Scatter(x=x, y=e, name="equity", line={"width": 2}), 1, 1)
    if benchmark_usd is not None:
        fig.add_trace(
            go.Scatter(x=x, y=benchmark_usd, name="buy and hold", line={"dash": "dot"}), 1, 1
        )
    if e.size:
        dd = (1.0 - e / np.maximum.accumulate(e)) * -100.0
        fig.add_trace(go.Scatter(x=x, y=dd, name="drawdown", fill="tozeroy"), 2, 1)
    labels = [f"{r.get('strategy_id') or '-'} / {r['symbol']}" for r in breakdown]
    for key, name in _PNL_PARTS:
        sign = -1.0 if key in ("fees_usd", "slippage_usd") else 1.0
        fig.add_trace(
            go.Bar(x=labels, y=[sign * float(r.get(key, 0.0)) for r in breakdown], name=name),
            3,
            1,
        )
    fig.update_layout(height=1000, template="plotly_white", barmode="relative")
    return fig


def write_run_report(
    path: Path,
    title: str,
    intro: str,
    ts_ns: np.ndarray,
    equity_usd: np.ndarray,
    metrics: dict[str, float],
    breakdown: list[dict],
    counts: dict[str, int] | None = None,
    benchmark_usd: np.ndarray | None = None,
) -> Path:
    """One offline HTML page for any engine run: headline metrics, counters (e.g. circuit
    breaker triggers), the PnL breakdown table and :func:`run_figure`. ``intro`` is plain
    text (escaped here)."""
    mrows = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{html.escape(fmt_cell(metrics.get(k, math.nan), f))}</td></tr>"
        for k, label, f in _METRIC_ROWS
        if k in metrics
    )
    crows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{v:,}</td></tr>" for k, v in (counts or {}).items()
    )
    bhead = (
        "<tr><th>strategy</th><th>symbol</th>"
        + "".join(f"<th>{n} USD</th>" for _, n in _PNL_PARTS)
        + "</tr>"
    )
    brows = "".join(
        "<tr><td>{}</td><td>{}</td>{}</tr>".format(
            html.escape(str(r.get("strategy_id") or "-")),
            html.escape(str(r["symbol"])),
            "".join(f"<td>{float(r.get(k, 0.0)):,.2f}</td>" for k, _ in _PNL_PARTS),
        )
        for r in breakdown
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"
        f"<table>{mrows}{crows}</table><table>{bhead}{brows}</table>"
        + run_figure(ts_ns, equity_usd, breakdown, benchmark_usd).to_html(
            full_html=False, include_plotlyjs=True
        )
        + "</body></html>"
    )
    atomic_write_text(page, path)
    return path
