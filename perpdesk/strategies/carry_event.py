"""The funding carry as an event-driven strategy with real legs: short the perp, buy the spot.

It reuses the pure rules of :mod:`perpdesk.strategies.carry` (:func:`signal_ann_pct`,
:func:`decide`) and takes its decisions at the same instants and on the same information as
the vectorised simulator (:func:`perpdesk.sim.carry.simulate_carry`), so that on the engine
with zero slippage, zero latency and a taker fee of ``cost_bps_per_leg`` on both legs it
books the same trades:

- **When.** A symbol decides at each of its funding settlements ``t``. The settlement time
  is *predicted*, point-in-time, from the previous one: ``t = t_prev + interval_h``
  (Binance settles on a fixed schedule it announces as ``nextFundingTime``), floored to the
  bar grid. The decision runs in ``on_bar`` once the bars closing at that instant have
  arrived for both legs of every symbol deciding then — the replay delivers all bars of an
  instant before its funding settlements, so an entry sent then with zero latency fills
  before the settlement at ``t`` and earns it, and an exit does not (the vectorised
  convention). A bar that never comes (a data gap) makes the decision run *late*, at the
  next event after it; a settlement that was not predicted (first one of a symbol — the
  vectorised signal is then NaN anyway — or an interval change) is counted.
- **What it sees.** The last settled rate and its interval (settlements before ``t``); the
  last bar closes at or before ``t`` of both legs (stale when older than
  :data:`~perpdesk.data.panel.MAX_PRICE_AGE_NS`); the trailing 24h perp quote volume over
  bars opened at or after ``t − 24h`` and closed at or before ``t`` (NaN until the bars seen
  cover 24h) — the definitions of :mod:`perpdesk.data.panel`, the sum computed as the same
  difference of a running (sequential) cumulative sum, so it is bit-identical.
- **Sizing.** Each leg is ``X = leg_notional_usd`` USD at the decision prices:
  ``q = X / price`` floored to the instrument's lot (``LOT_SIZE``). No compounding.
- **Orders.** Entry: market SELL perp, market BUY spot. Exit: market BUY perp
  (reduce-only) and market SELL spot, of the quantities actually filled (exact Decimals).
  A rejected entry leg unwinds the other leg. With ``close_at_ns`` every pair still open is closed by a
  timer at ``close_at_ns + 1 ns`` (after the settlements at ``close_at_ns``).

Funding before ``trade_from_ns`` is ignored (not a signal, not a schedule), so a replay may
start earlier to warm up the 24h volume window.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from decimal import Decimal

import numpy as np

from perpdesk.domain import Bar, Fill, FundingSettlement, Order, Side, Timer, spot_symbol
from perpdesk.strategies.base import Context, Strategy
from perpdesk.strategies.carry import CarryRules, decide, signal_ann_pct

H_NS = 3_600 * 1_000_000_000
DAY_NS = 24 * H_NS
MAX_PRICE_AGE_NS = H_NS
"""A leg whose last bar closed more than this before the settlement is stale (no trade):
the vectorised panel's rule, ``perpdesk.data.panel.MAX_PRICE_AGE_NS`` (strategies do not
import ``perpdesk.data``; a test keeps the two equal)."""
_NEVER = 2**63
ENTRY, EXIT, END, UNWIND = "carry-entry", "carry-exit", "carry-end", "carry-unwind"


class CarryEventStrategy(Strategy):
    """Delta-neutral funding carry on the engine (see the module docstring).

    ``symbols``: perp symbols (their spot legs are ``spot_symbol(sym)``); ``rules``: the
    carry thresholds; ``leg_notional_usd``: X per leg (USD); ``bar_interval_s``: length of
    the bars replayed (the decision grid); ``trade_from_ns``: first settlement that counts;
    ``close_at_ns``: close every open pair just after this time (None: leave them open).
    """

    strategy_id = "carry"

    def __init__(
        self,
        symbols: Sequence[str],
        rules: CarryRules,
        leg_notional_usd: float,
        bar_interval_s: int,
        *,
        trade_from_ns: int | None = None,
        close_at_ns: int | None = None,
        strategy_id: str | None = None,
    ) -> None:
        super().__init__(strategy_id)
        if not leg_notional_usd > 0:
            raise ValueError(f"leg_notional_usd {leg_notional_usd} must be > 0")
        if bar_interval_s <= 0:
            raise ValueError(f"bar_interval_s {bar_interval_s} must be > 0")
        self.symbols = tuple(symbols)
        self.rules = rules
        self.leg_notional_usd = float(leg_notional_usd)
        self.bar_ns = int(bar_interval_s) * 1_000_000_000
        self.trade_from_ns = trade_from_ns
        self.close_at_ns = close_at_ns
        n = len(self.symbols)
        self._idx = {s: i for i, s in enumerate(self.symbols)}
        self._spot_idx = {spot_symbol(s): i for i, s in enumerate(self.symbols)}
        self.held = np.zeros(n, dtype=bool)
        self._rates = [math.nan] * n  # last settled rate per symbol
        self._ivs = [0] * n  # its interval (h)
        self._legs = [(s, spot_symbol(s)) for s in self.symbols]
        # last bar close and its close time per leg
        self._perp_px = [math.nan] * n
        self._perp_ts = [-1] * n
        self._spot_px = [math.nan] * n
        self._spot_ts = [-1] * n
        # 24h quote volume: running cumulative sum and (open ts, cum before) of recent bars
        self._cum = [0.0] * n
        self._recent: list[deque[tuple[int, float]]] = [deque() for _ in range(n)]
        self._first_open = [-1] * n
        # decisions: instant -> [(symbol index, predicted settlement ts)], legs awaited
        self._pending: dict[int, list[tuple[int, int]]] = {}
        self._first_t = _NEVER  # earliest pending instant
        self._awaiting: dict[int, set[str]] = {}
        self._predicted = [-1] * n  # decision instant predicted for each symbol's next settlement
        # filled quantities (Decimal, signed) and the lots of the legs
        self._q_perp = [Decimal(0)] * n
        self._q_spot = [Decimal(0)] * n
        self._lot: dict[str, float] = {}
        self._open_trade: list[dict | None] = [None] * n
        self._order_pair: dict[str, tuple[int, str]] = {}
        #: round trips: symbol, entry/exit decision ts, exit reason, order ids
        self.trades: list[dict] = []
        #: counters for the run report
        self.counts = {
            "decisions": 0,
            "late_decisions": 0,
            "unscheduled_settlements": 0,
            "entries": 0,
            "exits": 0,
            "closed_at_end": 0,
            "rejected_orders": 0,
            "skipped_below_lot": 0,
        }

    @property
    def last_rate(self) -> np.ndarray:
        """Last settled funding rate per symbol (fraction per settlement; NaN before any)."""
        return np.array(self._rates, dtype=float)

    @property
    def last_interval_h(self) -> np.ndarray:
        """Interval (hours) of each symbol's last settlement (0 before any)."""
        return np.array(self._ivs, dtype=np.int32)

    # ------------------------------------------------------------------ callbacks

    def on_start(self, ctx: Context) -> None:
        """Read the lot sizes; schedule the closing timer."""
        inst = ctx.instruments
        for s in self.symbols:
            for leg in (s, spot_symbol(s)):
                if leg not in inst:
                    raise ValueError(f"carry: instrument {leg} is not tradable in this run")
                self._lot[leg] = inst[leg].lot_size
        if self.close_at_ns is not None:
            ctx.set_timer(max(self.close_at_ns + 1, ctx.now_ns), "carry-close")

    def on_bar(self, ctx: Context, bar: Bar) -> None:
        """Record the leg's close (and perp volume); decide once an instant is complete."""
        c = bar.ts_ns + bar.interval_s * 1_000_000_000
        if self._first_t < c:
            self._flush(ctx, c, inclusive=False)
        sym = bar.symbol
        i = self._idx.get(sym)
        if i is not None:
            self._perp_px[i] = bar.close
            self._perp_ts[i] = c
            cum = self._cum[i]
            rec = self._recent[i]
            rec.append((bar.ts_ns, cum))
            self._cum[i] = cum + bar.volume_quote
            if self._first_open[i] < 0:
                self._first_open[i] = bar.ts_ns
            lo = c - DAY_NS
            while rec and rec[0][0] < lo:
                rec.popleft()
        else:
            i = self._spot_idx.get(sym)
            if i is None:
                return
            self._spot_px[i] = bar.close
            self._spot_ts[i] = c
        wait = self._awaiting.get(c)
        if wait is not None:
            wait.discard(sym)
            if not wait:
                self._decide(ctx, c, late=False)

    def on_funding(self, ctx: Context, settlement: FundingSettlement) -> None:
        """Learn the settled rate (a signal from now on) and predict the next settlement."""
        ts = settlement.ts_ns
        if self._first_t <= ts:
            self._flush(ctx, ts, inclusive=True)
        i = self._idx.get(settlement.symbol)
        if i is None:
            return
        tf = self.trade_from_ns
        if tf is not None and ts < tf:
            return
        bar_ns = self.bar_ns
        pred = self._predicted[i]
        if pred >= 0 and pred != (ts // bar_ns) * bar_ns:
            self.counts["unscheduled_settlements"] += 1
        self._rates[i] = settlement.funding_rate
        iv = int(settlement.funding_interval_h)
        self._ivs[i] = iv
        nxt = ts + iv * H_NS
        t_dec = (nxt // bar_ns) * bar_ns
        if t_dec <= ts:  # bars longer than the interval: no bar closes in between
            self._predicted[i] = -1
            return
        self._predicted[i] = t_dec
        pending = self._pending.get(t_dec)
        if pending is None:
            self._pending[t_dec] = [(i, nxt)]
        else:
            pending.append((i, nxt))
        if t_dec < self._first_t:
            self._first_t = t_dec
        wait = self._awaiting.get(t_dec)
        if wait is None:
            self._awaiting[t_dec] = set(self._legs[i])
        else:
            wait.update(self._legs[i])

    def on_fill(self, ctx: Context, fill: Fill) -> None:
        """Track the legs' filled quantities; an entry leg filling after its pair was
        given up (other leg refused, or the run closing) is closed at once."""
        d = fill.qty_base if fill.side is Side.BUY else -fill.qty_base
        i = self._idx.get(fill.symbol)
        if i is not None:
            self._q_perp[i] += d
        else:
            i = self._spot_idx.get(fill.symbol)
            if i is None:
                return
            self._q_spot[i] += d
        if fill.label == ENTRY and not self.held[i]:
            qty = fill.qty_base  # exact Decimal: the unwind closes exactly what filled
            if fill.symbol == self.symbols[i]:
                ctx.market(fill.symbol, Side.BUY, qty, reduce_only=True, label=UNWIND)
            else:
                ctx.market(fill.symbol, Side.SELL, qty, label=UNWIND)

    def on_reject(self, ctx: Context, order: Order, reason: str) -> None:
        """Count it; a refused entry leg unwinds the other leg."""
        self.counts["rejected_orders"] += 1
        got = self._order_pair.get(order.client_order_id)
        if got is None or order.label != ENTRY:
            return
        i, _ = got
        if self.held[i]:
            self.held[i] = False
            self._close_pair(ctx, i, UNWIND)

    def on_timer(self, ctx: Context, timer: Timer) -> None:
        """Close every open pair (the end of the run)."""
        if timer.name != "carry-close":
            return
        if self._pending:
            self._flush(ctx, ctx.now_ns, inclusive=True)
        for i in np.flatnonzero(self.held):
            self._close_pair(ctx, int(i), END, ts_ns=self.close_at_ns)
            self.held[i] = False
            self.counts["closed_at_end"] += 1

    # ------------------------------------------------------------------ decisions

    def _flush(self, ctx: Context, now: int, *, inclusive: bool) -> None:
        """Run the decisions of instants before ``now`` (or at it) whose bars never came."""
        for t in sorted(self._pending):
            if t < now or (inclusive and t == now):
                self._decide(ctx, t, late=True)

    def _volume_24h(self, i: int, t: int) -> float:
        """Quote volume of the perp bars inside [t − 24h, t] (NaN while not covered)."""
        first = self._first_open[i]
        if first < 0 or t - DAY_NS < first:
            return math.nan
        rec = self._recent[i]
        lo = t - DAY_NS
        while rec and rec[0][0] < lo:
            rec.popleft()
        return self._cum[i] - (rec[0][1] if rec else self._cum[i])

    def _decide(self, ctx: Context, t: int, *, late: bool) -> None:
        items = self._pending.pop(t)
        self._first_t = min(self._pending) if self._pending else _NEVER
        self._awaiting.pop(t, None)
        self.counts["decisions"] += 1
        if late:
            self.counts["late_decisions"] += 1
        n = len(self.symbols)
        deciding = np.zeros(n, dtype=bool)
        tradable = np.zeros(n, dtype=bool)
        vol = np.full(n, np.nan)
        idx = np.fromiter((i for i, _ in items), dtype=np.int64, count=len(items))
        ts = np.fromiter((x for _, x in items), dtype=np.int64, count=len(items))
        vol24 = self._volume_24h
        vol[idx] = [vol24(i, x) for i, x in items]
        deciding[idx] = True
        p_ts = np.array(self._perp_ts, dtype=np.int64)[idx]
        s_ts = np.array(self._spot_ts, dtype=np.int64)[idx]
        tradable[idx] = (
            (p_ts >= 0)
            & (s_ts >= 0)
            & (ts - p_ts <= MAX_PRICE_AGE_NS)
            & (ts - s_ts <= MAX_PRICE_AGE_NS)
        )
        ann = signal_ann_pct(self.last_rate, self.last_interval_h)
        exit_mask, enter_mask = decide(self.rules, self.held, deciding, ann, vol, tradable)
        for i in np.flatnonzero(exit_mask):
            i = int(i)
            self.held[i] = False
            self._close_pair(ctx, i, EXIT)
        for i in np.flatnonzero(enter_mask):
            self._open_pair(ctx, int(i))

    def _lots(self, leg: str, qty: float) -> float:
        """``qty`` floored to whole lots, as the float ``x`` of the Decimal ``k × lot``
        the venue will book, with ``k`` lowered (by a lot or two, rarely) until the venue's
        float floor ``⌊x / lot + 1e-9⌋`` gives back ``k`` — so selling the holdings later,
        ``float(k × lot)``, closes the leg to zero instead of leaving a lot behind."""
        lot = self._lot[leg]
        dlot = Decimal(repr(lot))
        k = math.floor(qty / lot + 1e-9)
        while k > 0:
            x = float(Decimal(k) * dlot)
            if math.floor(x / lot + 1e-9) == k:
                return x
            k -= 1
        return 0.0

    def _open_pair(self, ctx: Context, i: int) -> None:
        sym = self.symbols[i]
        spot = spot_symbol(sym)
        x = self.leg_notional_usd
        q_perp = self._lots(sym, x / self._perp_px[i])
        q_spot = self._lots(spot, x / self._spot_px[i])
        if not (q_perp > 0 and q_spot > 0):
            self.counts["skipped_below_lot"] += 1
            return
        self.held[i] = True
        self.counts["entries"] += 1
        a = ctx.market(sym, Side.SELL, q_perp, label=ENTRY)
        b = ctx.market(spot, Side.BUY, q_spot, label=ENTRY)
        self._order_pair[a] = (i, "perp")
        self._order_pair[b] = (i, "spot")
        trade = {
            "symbol": sym,
            "entry_ts_ns": ctx.now_ns,
            "exit_ts_ns": None,
            "exit_reason": "open",
            "entry_order_ids": (a, b),
            "exit_order_ids": (),
        }
        self._open_trade[i] = trade
        self.trades.append(trade)

    def _close_pair(self, ctx: Context, i: int, reason: str, ts_ns: int | None = None) -> None:
        sym = self.symbols[i]
        ids = []
        qp = self._q_perp[i]
        if qp < 0:
            ids.append(ctx.market(sym, Side.BUY, -qp, reduce_only=True, label=reason))
        qs = self._q_spot[i]
        if qs > 0:
            ids.append(ctx.market(spot_symbol(sym), Side.SELL, qs, label=reason))
        for oid in ids:
            self._order_pair[oid] = (i, reason)
        if reason == EXIT:
            self.counts["exits"] += 1
        trade = self._open_trade[i]
        if trade is not None:
            trade["exit_ts_ns"] = ctx.now_ns if ts_ns is None else ts_ns
            trade["exit_reason"] = {EXIT: "signal", END: "end", UNWIND: "unwind"}[reason]
            trade["exit_order_ids"] = tuple(ids)
            self._open_trade[i] = None
