"""The carry backtest on the event engine: real legs (short perp, long spot), fills, fees,
slippage, latency and funding booked by :mod:`perpdesk.sim`, and a comparison with the
vectorised run (:mod:`perpdesk.research.carry_backtest`).

:func:`run_engine_carry` builds what the engine needs from a catalog and
:class:`~perpdesk.config.Settings` — instruments, streams (perp bars, spot bars and funding
of every symbol), a cross-margin account holding the bankroll with the carry leverage —
and runs :class:`~perpdesk.strategies.carry_event.CarryEventStrategy` over the same window
as the vectorised run:

- the replay starts 24h (+ 1 ns) before the first settlement, so the 24h volume filter
  sees the same bars as :func:`~perpdesk.data.panel.load_carry_panel`, and equity is
  sampled every ``equity_every_ns`` at settlement instants + 1 ns (after the bars, fills
  and settlements stamped at that instant — the vectorised curve's points);
- settlements in ``[start_ns, end_ns)`` count; with ``carry.close_at_end`` open pairs are
  closed just after the last settlement of that window (the vectorised ``close_at_end``);
- :func:`matching_costs` is the vectorised cost model on the engine: a taker fee of
  ``cost_bps_per_leg`` on each leg, no slippage, no latency; :func:`realistic_costs` is a
  Binance tier's fees (perp tier, spot VIP0), fixed-bps slippage and a constant latency.

Lots: ``lots="exchange"`` trades the catalog's lot sizes (Binance ``LOT_SIZE``: a leg is
``floor(X / price / lot) × lot``, so it is up to one lot short of ``X``); ``"fractional"``
(the default) uses per leg the decimal lot ``10^(⌊log10(X / p0)⌋ − 7)`` (``p0`` = the
leg's first bar close), so a leg is 10^7..10^8 lots at ``p0`` and flooring it to the lot
costs < 1e-7 of ``X``. Exits and unwinds send the exact Decimal holdings (the engine
books Decimal quantities exactly); entries are float sizes the strategy keeps on the lot
grid (``CarryEventStrategy._lots``). The vectorised simulator does not round quantities at
all; that floor is the one difference left between the two runs with matching costs (a
few 1e-6 USD per round trip).
"""

from __future__ import annotations

import decimal
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perpdesk.config import Settings
from perpdesk.data.catalog import (
    NS_PER_S,
    Catalog,
    _partition_bounds,
    atomic_write_parquet,
    bar_interval_s,
)
from perpdesk.data.panel import DAY_NS
from perpdesk.domain import Instrument, InstrumentKind, spot_symbol
from perpdesk.errors import CatalogError, ConfigError
from perpdesk.research.carry_backtest import (
    CarryBacktest,
    pick_venue,
    rules_from_settings,
    sizing_from_settings,
)
from perpdesk.research.metrics import summarize
from perpdesk.sim.costs import (
    BINANCE_SPOT_VIP0,
    BINANCE_USDM_TIERS,
    ConstantLatency,
    Costs,
    FeeModel,
    FeeSchedule,
    FixedBpsSlippage,
)
from perpdesk.sim.engine import AccountConfig, EngineResult, run_backtest
from perpdesk.sim.replay import Replay, StreamSpec
from perpdesk.strategies.carry_event import CarryEventStrategy

H_NS = 3_600 * NS_PER_S


@dataclass(frozen=True)
class EngineCarryRun:
    """A finished engine carry run.

    ``pnl_rows``: per (strategy, engine symbol) price / funding / fees / slippage / total
    (USD floats of the account's exact Decimal breakdown; price PnL includes slippage,
    ``slippage_usd`` says how much of it); ``pair_rows``: the same summed per perp symbol
    (perp + spot leg); ``trades``: round trips with their PnL; ``metrics``: from
    :func:`~perpdesk.research.metrics.summarize` over the equity samples from the first
    settlement on; ``counts``: the strategy's counters and the engine's event counts.
    """

    settings: Settings
    venue: str
    symbols: tuple[str, ...]
    costs: Costs
    lots: str
    result: EngineResult
    strategy: CarryEventStrategy
    first_settlement_ns: int
    last_settlement_ns: int
    pnl_rows: list[dict]
    pair_rows: list[dict]
    trades: list[dict]
    metrics: dict[str, float]
    counts: dict[str, int]
    run_id: str
    seconds: float
    final_equity_usd: Decimal = field(default=Decimal(0))


# ----------------------------------------------------------------------------- cost models


def matching_costs(settings: Settings) -> Costs:
    """The vectorised cost model on the engine: maker = taker fee = ``cost_bps_per_leg``
    on perp and spot legs, no slippage, no latency."""
    rate = Decimal(repr(settings.carry.cost_bps_per_leg)) / Decimal(10_000)
    sched = FeeSchedule(rate, rate)
    return Costs(fees=FeeModel(perp=sched, spot=sched))


def realistic_costs(
    slippage_bps: float = 2.0, latency_ms: float = 200.0, tier: str = "VIP0"
) -> Costs:
    """Binance fees (USD-M ``tier`` for perps, spot VIP0 0.10 %; https://www.binance.com/en/fee/futureFee
    and /en/fee/schedule), ``slippage_bps`` on every taker fill (FixedBpsSlippage) and a
    constant ``latency_ms`` between decision and arrival."""
    if tier not in BINANCE_USDM_TIERS:
        raise ConfigError(f"fee tier {tier!r}: unknown (VIP0..VIP6)")
    if not slippage_bps >= 0 or not latency_ms >= 0:
        raise ConfigError(f"slippage {slippage_bps} bps / latency {latency_ms} ms must be >= 0")
    return Costs(
        fees=FeeModel(perp=BINANCE_USDM_TIERS[tier], spot=BINANCE_SPOT_VIP0),
        slippage=FixedBpsSlippage(float(slippage_bps)),
        latency=ConstantLatency(round(latency_ms * 1_000_000)),
    )


# ----------------------------------------------------------------------------- building


def _settlement_range(
    cat: Catalog, venue: str, symbols: Sequence[str], start_ns: int | None, end_ns: int | None
) -> tuple[int, int]:
    """First and last settlement time in ``[start_ns, end_ns)`` over ``symbols``, reading
    only the partitions at either end."""
    lo = start_ns if start_ns is not None else -(2**62)
    hi = end_ns if end_ns is not None else 2**62
    first, last = None, None
    for s in symbols:
        files = [
            p
            for p in cat.partitions(venue, "funding", s)
            if _partition_bounds(p.stem)[1] > lo and _partition_bounds(p.stem)[0] < hi
        ]

        def ts_in(path: Path) -> np.ndarray:
            pf = pq.ParquetFile(path)
            md = pf.metadata
            k = pf.schema_arrow.get_field_index("ts_ns")
            if md.num_rows and k >= 0 and md.num_row_groups:
                # the footer's min/max statistics, when the file lies inside [lo, hi)
                st = [md.row_group(g).column(k).statistics for g in range(md.num_row_groups)]
                if all(x is not None and x.has_min_max for x in st):
                    t_min, t_max = min(x.min for x in st), max(x.max for x in st)
                    if t_min >= lo and t_max < hi:
                        return np.array([t_min, t_max], dtype=np.int64)
            ts = pf.read(columns=["ts_ns"]).column("ts_ns").to_numpy()
            return ts[(ts >= lo) & (ts < hi)]

        for p in files:
            ts = ts_in(p)
            if ts.size:
                first = int(ts.min()) if first is None else min(first, int(ts.min()))
                break
        for p in reversed(files):
            ts = ts_in(p)
            if ts.size:
                last = int(ts.max()) if last is None else max(last, int(ts.max()))
                break
        if not files:
            raise CatalogError(f"{cat.root / venue / 'funding' / s}: no settlements in range")
    if first is None or last is None:
        raise CatalogError(f"{cat.root / venue / 'funding'}: no settlements in range")
    return first, last


def _first_close(cat: Catalog, venue: str, dataset: str, symbol: str) -> float:
    first = min((cat.root / venue / dataset / symbol).glob("[0-9]*.parquet"), key=lambda p: p.name)
    t = pq.ParquetFile(first).read(columns=["close"])
    return float(t.column("close")[0].as_py())


FRACTIONAL_LOT_DIGITS = 7
"""Fractional lots hold a leg of ``X`` USD at the first price in 10^7..10^8 lots."""


def engine_instruments(
    cat: Catalog,
    venue: str,
    symbols: Sequence[str],
    bars: str,
    spot_bars: str,
    leg_notional_usd: float,
    lots: str = "fractional",
) -> list[Instrument]:
    """A perp and a spot instrument per symbol (spot named ``spot_symbol(sym)``): from the
    venue's instrument table when it has them, else with a tick of ``10^(⌊log10 p0⌋ − 10)``
    of the first close ``p0``; lots per ``lots`` (see the module docstring)."""
    if lots not in ("fractional", "exchange"):
        raise ConfigError(f"lots {lots!r}: use 'fractional' or 'exchange'")
    table = cat.instruments(venue) if (cat.root / venue / "instruments.parquet").is_file() else {}
    out = []
    for s in symbols:
        for kind, ds, name in (
            (InstrumentKind.PERP, bars, s),
            (InstrumentKind.SPOT, spot_bars, spot_symbol(s)),
        ):
            inst = table.get((s, kind))
            if inst is None and lots == "exchange":
                raise CatalogError(
                    f"{cat.root / venue / 'instruments.parquet'}: no {kind} row for '{s}' "
                    "(needed for exchange lots)"
                )
            if inst is None or lots == "fractional":
                p0 = _first_close(cat, venue, ds, s)
                if not p0 > 0:
                    raise CatalogError(f"{cat.root / venue / ds / s}: first close {p0} is not > 0")
                lot = 10.0 ** (
                    math.floor(math.log10(leg_notional_usd / p0)) - FRACTIONAL_LOT_DIGITS
                )
            else:
                lot = inst.lot_size
            if inst is None:
                tick = 10.0 ** (math.floor(math.log10(p0)) - 10)
                interval = 8 if kind is InstrumentKind.PERP else 0
                inst = Instrument(
                    venue, name, kind, s.removesuffix("USDT"), "USDT", tick, lot, interval
                )
            else:
                inst = Instrument(
                    venue, name, kind, inst.base, inst.quote, inst.tick_size, lot,
                    inst.funding_interval_h, inst.funding_cap, inst.funding_floor,
                )  # fmt: skip
            out.append(inst)
    return out


def engine_streams(
    venue: str, symbols: Sequence[str], bars: str, spot_bars: str
) -> list[StreamSpec]:
    """Perp bars, spot bars and funding of every symbol."""
    return [StreamSpec(venue, ds, s) for s in symbols for ds in (bars, spot_bars, "funding")]


def run_engine_carry(
    settings: Settings,
    catalog_root: str | Path,
    venue: str | None = None,
    symbols: list[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    bars: str = "perp_bars_5m",
    *,
    costs: Costs | None = None,
    lots: str = "fractional",
    equity_every_ns: int | None = None,
    reader_processes: int = 0,
) -> EngineCarryRun:
    """Run the carry strategy on the event engine (see the module docstring).

    ``costs`` defaults to :func:`matching_costs`. ``equity_every_ns`` defaults to the
    shortest funding interval of the instruments (8h without a table). Raises
    :class:`~perpdesk.errors.CatalogError` naming the path when a symbol has no funding,
    no perp bars or no spot bars (the engine trades a real spot leg; the vectorised run
    would assume a perfect hedge there). ``reader_processes``: background processes reading
    the partition files (:class:`~perpdesk.sim.replay.Replay`; 1 roughly halves the time of
    a run over thousands of small files; only from a ``__main__``-guarded script)."""
    t0 = time.perf_counter()
    cat = Catalog(catalog_root)
    v = pick_venue(cat, venue)
    if symbols is None:
        symbols = cat.symbols(v, "funding")
        if not symbols:
            raise CatalogError(f"{cat.root / v / 'funding'}: no funding data")
    symbols = list(symbols)
    spot_bars = "spot_" + bars.removeprefix("perp_")
    for s in symbols:
        for ds in ("funding", bars, spot_bars):
            if not any((cat.root / v / ds / s).glob("[0-9]*.parquet")):  # cat.partitions
                raise CatalogError(
                    f"{cat.root / v / ds / s}: missing (the event-engine carry needs funding, "
                    f"{bars} and {spot_bars} for every symbol)"
                )
    sizing = sizing_from_settings(settings)
    lev = settings.carry.perp_leverage
    if lev != int(lev):
        raise ConfigError(f"carry.perp_leverage = {lev}: the exchange takes whole leverage only")
    first, last = _settlement_range(cat, v, symbols, start_ns, end_ns)
    costs = costs if costs is not None else matching_costs(settings)
    latency_ns = costs.latency.arrival_ns(0)
    bar_s = bar_interval_s(bars)
    X = sizing.leg_notional_usd
    instruments = engine_instruments(cat, v, symbols, bars, spot_bars, X, lots)
    if equity_every_ns is None:
        ivs = [i.funding_interval_h for i in instruments if i.kind is InstrumentKind.PERP]
        equity_every_ns = min(ivs) * H_NS if ivs else 8 * H_NS
    close_at = last if sizing.close_at_end else None
    # replay: from 24h before the first counted settlement (+1 ns: the bars of the panel's
    # volume window [t − 24h, t], and equity samples at grid + 1 ns, i.e. after everything
    # stamped at a settlement instant); end just after the last settlement, or after the
    # closing orders
    replay_start = first - DAY_NS + 1
    replay_end = last + 1 if close_at is None else last + 2 + 2 * latency_ns + 1
    strategy = CarryEventStrategy(
        symbols,
        rules_from_settings(settings),
        X,
        bar_s,
        trade_from_ns=start_ns,
        close_at_ns=close_at,
    )
    account = AccountConfig(
        Decimal(repr(settings.account.bankroll_usd)),
        leverage={s: int(lev) for s in symbols},
    )
    # 38 significant digits, as the engine's Parquet decimal128(38, 18) columns: under the
    # default 28 its result tables cannot hold a quantity of 1e10 base units or more (a
    # PEPE leg), ``quantize(1e-18)`` raises InvalidOperation
    with decimal.localcontext() as dctx:
        dctx.prec = 38
        replay = Replay(
            cat.root,
            engine_streams(v, symbols, bars, spot_bars),
            replay_start,
            replay_end,
            reader_processes=reader_processes,
        )
        res = run_backtest(
            strategy,
            replay,
            instruments,
            account,
            None,
            costs,
            equity_every_ns=equity_every_ns,
        )
    pnl_rows, pair_rows = _pnl_rows(res)
    trades = _trade_rows(res, strategy)
    eq_ts = res.equity.column("ts_ns").to_numpy()
    eq = res.equity.column("equity_usd").to_numpy()
    keep = eq_ts >= first - equity_every_ns
    gross = _gross_notional(eq_ts[keep], trades, 2.0 * X)
    traded = float(
        sum(
            float(q) * float(p)
            for q, p in zip(
                res.fills["qty_base"].to_pylist(), res.fills["price"].to_pylist(), strict=True
            )
        )
    )
    closed = np.array([t["pnl_usd"] for t in trades if not math.isnan(t["pnl_usd"])], dtype=float)
    metrics = summarize(eq_ts[keep], eq[keep], closed, gross, traded)
    counts = dict(strategy.counts)
    counts.update(
        events=res.events,
        dispatched=res.dispatched,
        fills=res.fills.num_rows,
        rejections=res.rejections.num_rows,
        settlements_booked=res.funding.num_rows,
    )
    blob = json.dumps(
        [
            settings.content_hash(),
            str(cat.root.resolve()),
            v,
            symbols,
            start_ns,
            end_ns,
            bars,
            repr(costs),
            lots,
        ]
    ).encode()
    rid = f"carry-event-{hashlib.sha256(blob).hexdigest()[:12]}"
    return EngineCarryRun(
        settings=settings,
        venue=v,
        symbols=tuple(symbols),
        costs=costs,
        lots=lots,
        result=res,
        strategy=strategy,
        first_settlement_ns=first,
        last_settlement_ns=last,
        pnl_rows=pnl_rows,
        pair_rows=pair_rows,
        trades=trades,
        metrics=metrics,
        counts=counts,
        run_id=rid,
        seconds=time.perf_counter() - t0,
        final_equity_usd=res.account.equity_usd,
    )


# ----------------------------------------------------------------------------- results


def _pnl_rows(res: EngineResult) -> tuple[list[dict], list[dict]]:
    rows, pairs = [], {}
    for r in res.pnl:
        d = {
            "strategy_id": r.strategy_id,
            "symbol": r.symbol,
            "price_pnl_usd": float(r.price_pnl_usd),
            "funding_usd": float(r.funding_usd),
            "fees_usd": float(r.fees_usd),
            "slippage_usd": float(r.slippage_usd),
            "total_usd": float(r.total_usd),
        }
        rows.append(d)
        key = (r.strategy_id, r.symbol.removesuffix(".SPOT"))
        acc = pairs.setdefault(key, [Decimal(0)] * 5)
        for k, x in enumerate(
            (r.price_pnl_usd, r.funding_usd, r.fees_usd, r.slippage_usd, r.total_usd)
        ):
            acc[k] += x
    pair_rows = [
        {
            "strategy_id": sid,
            "symbol": sym,
            "price_pnl_usd": float(a[0]),
            "funding_usd": float(a[1]),
            "fees_usd": float(a[2]),
            "slippage_usd": float(a[3]),
            "total_usd": float(a[4]),
        }
        for (sid, sym), a in sorted(pairs.items())
    ]
    return rows, pair_rows


def _trade_rows(res: EngineResult, strategy: CarryEventStrategy) -> list[dict]:
    """Round trips with entry/exit fill prices, fees, slippage, funding between the entry
    fill and the exit fill, and their PnL (USD)."""
    f = res.fills.to_pydict()
    by_id: dict[str, list[int]] = {}
    for k, oid in enumerate(f["client_order_id"]):
        by_id.setdefault(oid, []).append(k)
    fu = res.funding.to_pydict()
    fund_by_sym: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for sym in set(fu["symbol"]):
        m = [k for k, s in enumerate(fu["symbol"]) if s == sym]
        fund_by_sym[sym] = (
            np.array([fu["ts_ns"][k] for k in m], dtype=np.int64),
            np.array([float(fu["amount_usd"][k]) for k in m]),
        )
    out = []
    for t in strategy.trades:
        legs = {"perp": [], "spot": []}
        for phase, ids in (("entry", t["entry_order_ids"]), ("exit", t["exit_order_ids"])):
            for oid in ids:
                for k in by_id.get(oid, []):
                    legs["spot" if f["symbol"][k].endswith(".SPOT") else "perp"].append((phase, k))
        cash = fees = slip = 0.0
        ts_entry, ts_exit = None, None
        px: dict[str, float] = {}
        for leg, items in legs.items():
            for phase, k in items:
                q, p = float(f["qty_base"][k]), float(f["price"][k])
                cash += q * p if f["side"][k] == "sell" else -q * p
                fees += float(f["fee_usd"][k])
                slip += float(f["slippage_usd"][k])
                px[f"{phase}_{leg}_px"] = p
                if phase == "entry":
                    ts_entry = f["ts_ns"][k] if ts_entry is None else min(ts_entry, f["ts_ns"][k])
                else:
                    ts_exit = f["ts_ns"][k] if ts_exit is None else max(ts_exit, f["ts_ns"][k])
        funding = 0.0
        got = fund_by_sym.get(t["symbol"])
        if got is not None and ts_entry is not None:
            hi = ts_exit if ts_exit is not None else np.iinfo(np.int64).max
            sel = (got[0] >= ts_entry) & (got[0] < hi)
            funding = float(got[1][sel].sum())
        closed = t["exit_ts_ns"] is not None and ts_exit is not None
        out.append(
            {
                "symbol": t["symbol"],
                "entry_ts_ns": t["entry_ts_ns"],
                "exit_ts_ns": t["exit_ts_ns"],
                "exit_reason": t["exit_reason"],
                "entry_fill_ts_ns": ts_entry,
                "exit_fill_ts_ns": ts_exit,
                "entry_perp_px": px.get("entry_perp_px", math.nan),
                "entry_spot_px": px.get("entry_spot_px", math.nan),
                "exit_perp_px": px.get("exit_perp_px", math.nan),
                "exit_spot_px": px.get("exit_spot_px", math.nan),
                "funding_usd": funding,
                "fees_usd": fees,
                "slippage_usd": slip,
                "pnl_usd": cash - fees + funding if closed else math.nan,
            }
        )
    return out


def _gross_notional(ts_ns: np.ndarray, trades: list[dict], pair_notional_usd: float) -> np.ndarray:
    """Gross notional (both legs at entry size) of the pairs open at each sample time."""
    g = np.zeros(ts_ns.size)
    for t in trades:
        a = t["entry_fill_ts_ns"]
        if a is None:
            continue
        b = t["exit_fill_ts_ns"] if t["exit_fill_ts_ns"] is not None else np.iinfo(np.int64).max
        g[(ts_ns >= a) & (ts_ns < b)] += pair_notional_usd
    return g


# ----------------------------------------------------------------------------- comparison


def compare_with_vector(vec: CarryBacktest, eng: EngineCarryRun) -> list[dict]:
    """Vectorised vs engine, item by item (USD unless a count): entries, exits, pairs
    closed at the end, settlements earned, funding, trading costs (vectorised: the
    all-in ``cost_bps_per_leg``; engine: fees + slippage) and each part, price/basis PnL
    without slippage, total PnL and final equity. ``change_pct`` is engine vs vectorised."""
    run = vec.run
    p = vec.portfolio
    res = eng.result
    fees = float(res.account.fees_usd)
    slip = sum(r["slippage_usd"] for r in eng.pnl_rows)
    price = sum(r["price_pnl_usd"] for r in eng.pnl_rows)
    funding = float(res.account.funding_usd)
    bankroll = eng.settings.account.bankroll_usd
    settl_vec = int((run.held & run.panel.settles).sum())
    exits_eng = sum(1 for t in eng.trades if t["exit_reason"] == "signal")
    end_eng = sum(1 for t in eng.trades if t["exit_reason"] == "end")
    items = [
        ("entries", float(p["entries"]), float(len(eng.trades))),
        ("exits (signal)", float(p["exits"]), float(exits_eng)),
        ("closed at end", float(p["closed_at_end"]), float(end_eng)),
        ("settlements earned", float(settl_vec), float(res.funding.num_rows)),
        ("funding USD", p["funding_usd"], funding),
        ("trading costs USD", p["costs_usd"], fees + slip),
        ("  fees USD", p["costs_usd"], fees),
        ("  slippage USD", 0.0, slip),
        ("price/basis PnL ex slippage USD", p["price_pnl_usd"], price + slip),
        ("total PnL USD", p["pnl_usd"], float(eng.final_equity_usd) - bankroll),
        ("final equity USD", p["final_equity_usd"], float(eng.final_equity_usd)),
    ]
    out = []
    for name, a, b in items:
        ch = (b - a) / abs(a) * 100.0 if a else math.nan
        out.append(
            {"item": name, "vector": float(a), "engine": float(b), "diff": b - a, "change_pct": ch}
        )
    return out


def cost_impact_line(rows: list[dict], costs: Costs) -> str:
    """One line: how much the costs (and what they drag with them) change on the engine."""
    r = {x["item"]: x for x in rows}
    c, f, t = r["trading costs USD"], r["funding USD"], r["total PnL USD"]
    desc = describe_costs(costs)
    return (
        f"cost impact ({desc}): trading costs {c['vector']:,.2f} → {c['engine']:,.2f} USD "
        f"({c['diff']:+,.2f}, {c['change_pct']:+.1f} %; fees {r['  fees USD']['engine']:,.2f}, "
        f"slippage {r['  slippage USD']['engine']:,.2f}); funding {f['diff']:+,.2f} USD "
        f"({r['settlements earned']['diff']:+.0f} settlements); total PnL "
        f"{t['vector']:,.2f} → {t['engine']:,.2f} USD ({t['diff']:+,.2f})"
    )


def describe_costs(costs: Costs) -> str:
    """Short description of a cost model, e.g. ``fees perp 5.0/spot 10.0 bp taker,
    slippage 2 bp, latency 200 ms``."""
    fees = costs.fees
    slip = getattr(costs.slippage, "bps", None)
    lat = costs.latency.arrival_ns(0) / 1e6
    s = (
        f"fees perp {float(fees.perp.taker_rate) * 1e4:g}/spot "
        f"{float(fees.spot.taker_rate) * 1e4:g} bp taker"
    )
    s += f", slippage {slip:g} bp" if slip is not None else f", slippage {costs.slippage!r}"
    return s + f", latency {lat:g} ms"


# ----------------------------------------------------------------------------- outputs


def _table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


_PNL_SCHEMA = pa.schema(
    [
        ("strategy_id", pa.string()),
        ("symbol", pa.string()),
        ("price_pnl_usd", pa.float64()),
        ("funding_usd", pa.float64()),
        ("fees_usd", pa.float64()),
        ("slippage_usd", pa.float64()),
        ("total_usd", pa.float64()),
    ]
)
_TRADE_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("entry_ts_ns", pa.int64()),
        ("exit_ts_ns", pa.int64()),
        ("exit_reason", pa.string()),
        ("entry_fill_ts_ns", pa.int64()),
        ("exit_fill_ts_ns", pa.int64()),
        ("entry_perp_px", pa.float64()),
        ("entry_spot_px", pa.float64()),
        ("exit_perp_px", pa.float64()),
        ("exit_spot_px", pa.float64()),
        ("funding_usd", pa.float64()),
        ("fees_usd", pa.float64()),
        ("slippage_usd", pa.float64()),
        ("pnl_usd", pa.float64()),
    ]
)
_CMP_SCHEMA = pa.schema(
    [
        ("item", pa.string()),
        ("vector", pa.float64()),
        ("engine", pa.float64()),
        ("diff", pa.float64()),
        ("change_pct", pa.float64()),
    ]
)


def write_engine_outputs(
    eng: EngineCarryRun, out_dir: Path, comparison: list[dict] | None = None
) -> dict[str, Path]:
    """Parquet (fills, orders, equity, funding, pnl per symbol, pnl per pair, trades,
    comparison) and the HTML report into ``out_dir``, each file atomically."""
    from perpdesk.research.report import write_run_report

    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    res = eng.result
    tables = {
        "fills": res.fills,
        "orders": res.orders,
        "equity": res.equity,
        "funding": res.funding,
        "rejections": res.rejections,
        "pnl": _table(eng.pnl_rows, _PNL_SCHEMA),
        "pnl_pairs": _table(eng.pair_rows, _PNL_SCHEMA),
        "trades": _table(eng.trades, _TRADE_SCHEMA),
    }
    if comparison is not None:
        tables["comparison"] = _table(comparison, _CMP_SCHEMA)
    paths = {}
    for name, t in tables.items():
        paths[name] = out_dir / f"{name}.parquet"
        atomic_write_parquet(t, paths[name])
    intro = (
        f"Funding carry on the event engine — venue {eng.venue}, {len(eng.symbols)} symbols, "
        f"short perp + long spot; {describe_costs(eng.costs)}; {eng.lots} lots. "
    )
    if comparison is not None:
        intro += "Against the vectorised run: " + "; ".join(
            f"{r['item'].strip()} {r['vector']:,.2f} → {r['engine']:,.2f}" for r in comparison
        )
        intro += ". " + cost_impact_line(comparison, eng.costs)
    eq = res.equity
    paths["report"] = write_run_report(
        out_dir / "report.html",
        "perpdesk carry (event engine)",
        intro,
        eq.column("ts_ns").to_numpy(),
        eq.column("equity_usd").to_numpy(),
        eng.metrics,
        eng.pair_rows,
        eng.counts,
    )
    return paths


def trades_match(vec: CarryBacktest, eng: EngineCarryRun) -> tuple[list, list]:
    """``(symbol, entry_ts_ns, exit_ts_ns, exit_reason)`` of both runs, sorted (an engine
    pair closed at the end reports the last settlement as its exit time, as the vectorised
    run does)."""
    a = sorted(
        (t["symbol"], t["entry_ts_ns"], t["exit_ts_ns"], t["exit_reason"]) for t in vec.run.trades
    )
    b = sorted(
        (t["symbol"], t["entry_ts_ns"], t["exit_ts_ns"], t["exit_reason"]) for t in eng.trades
    )
    return a, b


def funding_by_symbol(eng: EngineCarryRun) -> dict[str, float]:
    """Funding received per perp symbol (USD) on the engine."""
    f = eng.result.funding
    out: dict[str, Decimal] = {}
    for s, a in zip(f["symbol"].to_pylist(), f["amount_usd"].to_pylist(), strict=True):
        out[s] = out.get(s, Decimal(0)) + a
    return {s: float(a) for s, a in out.items()}


__all__ = [
    "EngineCarryRun",
    "compare_with_vector",
    "cost_impact_line",
    "describe_costs",
    "engine_instruments",
    "engine_streams",
    "funding_by_symbol",
    "matching_costs",
    "realistic_costs",
    "run_engine_carry",
    "trades_match",
    "write_engine_outputs",
]
