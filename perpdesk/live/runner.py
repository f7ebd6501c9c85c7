"""The runner: a cycle scheduler that trades funding carry through the safeguards, durably.

Every ``cycle_s`` seconds (:class:`RunnerConfig`) the runner runs one **cycle** under a hard
timeout (``asyncio.wait_for``, ``cycle_timeout_s``): a stuck venue call is cancelled, the
timeout is written to the ledger as a ``cycle_timeout`` event, and the next cycle runs on
schedule. One cycle:

1. **book** what the venue did: own executions since the last fill in the ledger
   (idempotent by trade id), funding payments since the last one (one row per position per
   settlement), the state of every open order of the ledger (queried by client id);
2. **decide** (or re-load — see restart safety) a plan: the carry rules of
   :func:`perpdesk.strategies.carry.decide` on the signal source (annualised funding and
   24 h volume per perp), gated by **tick VPIN** (:class:`~perpdesk.features.vpin.VPINStream`
   fed by the venue's trade stream, aggressor-flag classification): an entry needs a
   warmed-up VPIN below ``vpin_entry_max`` (0.80), a held pair is closed when the warmed-up
   VPIN is above ``vpin_exit_min`` (0.90); kline VPIN is never used here. Any pair whose
   perp and spot quantities differ in the ledger by a lot or more is repaired first
   (reduce-only close of the excess). The kill switch closes every pair and opens none;
3. **execute** each action as a delta-neutral pair (:mod:`perpdesk.live.pairs`): spot and
   perp legs sent together, the excess of a failed leg unwound within bounds (time, orders,
   with backoff after refusals), an alert event written. Every order passes
   :func:`perpdesk.risk.safeguards.check_order` in :meth:`Runner._send` — the only code
   that calls ``venue.place`` — and is written to the ledger (status ``new``: the intent)
   **before** it is sent;
4. **record** fills, an equity snapshot and the atomic JSON state snapshot. A spot fill whose
   commission the venue took in the base asset (Bybit, OKX, Binance without BNB; the paper
   venue too with their fees, ``FeeModel.for_venue``) is booked
   with it (``fee_qty_base``): the ledger's spot position is the net quantity the exchange
   holds, and an exit sells that (rounded down to the spot lot).

**Restart safety.** Client order ids are deterministic: :func:`client_order_id` of
``(run_id, cycle, perp symbol, leg code)``, shortened (hashed) where needed to fit every venue
the runner sends to as that venue encodes them (OKX: 32 characters, ``-`` counted twice).
The cycle number is durable: a ``cycle_start``
and a ``cycle_end`` event (with dedupe keys) bracket each cycle, and the plan of a cycle is
written as a ``plan`` event before any of its orders. On start the runner reconciles the
ledger with the venue *before trading* (:meth:`Runner.reconcile`): fills the ledger lacks
are inserted, orders in an open or unknown state are queried by client id (an order of an
earlier cycle the venue never received is marked rejected), venue orders and positions
the ledger does not know are reported as ``reconcile_mismatch`` events. A cycle that was
interrupted is then re-run with the **same plan and the same ids**: an order the venue
already has is adopted (never sent twice), one it never received is sent.

**Paper mode** uses :class:`DurablePaperVenue`: a :class:`~perpdesk.execution.paper.PaperVenue`
whose inputs (market events, orders, cancels) are journaled to its own SQLite file (WAL,
``synchronous=FULL``) and replayed on open, so its orders, fills, positions and cash survive a
SIGKILL exactly (the paper venue is deterministic in its inputs). Every ``checkpoint_every``
rows the journal is cut: the venue's exact state becomes one checkpoint row and the rows
before it are deleted in the same transaction, so a restart restores the checkpoint and
replays only what came after (:meth:`DurablePaperVenue.checkpoint`). Market events are journaled
in batches; nothing derived from an event (a fill, an order state, funding) is handed out
before that event is committed. Its market data is either a recorded capture
(:func:`replay_feed`) or the exchange's live public streams
(:func:`perpdesk.live.paper_feed.live_feed`); the runner taps the paper venue's input for its
prices, tick VPIN and mark-price signals, so it is the same runner as in live mode.

**Entry sizing** (:meth:`Runner.entry_size`): a slot holds ``1.5 C`` gross at 3× leverage, so
the slots could add up to more than the deployed cap; each entry (best funding first) is
cut to what the caps leave and skipped with an ``entry_skipped`` event below the minimum.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from perpdesk.domain import (
    BookTop,
    Fill,
    FundingSettlement,
    Instrument,
    InstrumentKind,
    MarkPrice,
    Order,
    OrderType,
    PositionSide,
    Side,
    TimeInForce,
    Trade,
    annualise_rate,
    to_decimal,
)
from perpdesk.errors import PerpdeskError
from perpdesk.execution.orders import VenueExecution, client_id_fits
from perpdesk.execution.paper import PaperVenue
from perpdesk.execution.protocol import (
    Balance,
    FundingPayment,
    Liquidation,
    OrderState,
    OrderStatus,
    VenueError,
    VenuePosition,
)
from perpdesk.features.vpin import VPINStream
from perpdesk.live.pairs import Leg, PairExecutor
from perpdesk.risk.safeguards import (
    Limits,
    OrderRequest,
    PortfolioState,
    apply_order,
    check_order,
    is_halted,
)
from perpdesk.sim.costs import Costs
from perpdesk.store.ledger import Ledger
from perpdesk.store.models import EquitySnapshotRow, EventRow, FillRow, FundingPaymentRow, OrderRow
from perpdesk.store.snapshot import status_payload, write_snapshot
from perpdesk.strategies.carry import CarryRules, decide

__all__ = [
    "CarrySignal",
    "DurablePaperVenue",
    "MarkFundingSignals",
    "PairSpec",
    "Runner",
    "RunnerConfig",
    "capture_events",
    "client_order_id",
    "replay_feed",
    "runner_config",
]

log = logging.getLogger(__name__)
_ZERO = Decimal(0)
MarketEvent = Trade | BookTop | MarkPrice | FundingSettlement
_LEDGER_STATUS = {
    OrderStatus.NEW: "open",
    OrderStatus.PARTIALLY_FILLED: "partially_filled",
    OrderStatus.FILLED: "filled",
    OrderStatus.CANCELED: "canceled",
    OrderStatus.REJECTED: "rejected",
    OrderStatus.EXPIRED: "expired",
}


class RunnerError(PerpdeskError):
    """The runner cannot start or continue (one line: what and why)."""


# --------------------------------------------------------------------------- ids


def _h(text: str, n_bytes: int) -> str:
    return hashlib.blake2b(text.encode(), digest_size=n_bytes).hexdigest()


def _run_tag(run_id: str) -> str:
    """The short stand-in of ``run_id`` in ids that must be short: 8 hex digits of its
    BLAKE2b hash."""
    return _h(run_id, 4)


def client_order_id(
    run_id: str, cycle: int, symbol: str, leg: str, venues: Iterable[str] = ()
) -> str:
    """Deterministic client order id of ``(run_id, cycle, symbol, leg)`` that every venue of
    ``venues`` (venue ids; Binance's rule always) accepts *as it is sent there*
    (:func:`~perpdesk.execution.orders.client_id_fits`: Binance ``^[.A-Z:/a-z0-9_-]{1,36}$``,
    Bybit ≤ 36 and OKX ≤ 32 after escaping — on OKX each ``-`` takes two characters). The
    first of these forms that fits:

    1. ``<run_id>-<cycle>-<leg>-<symbol>``;
    2. ``<run_id>-<cycle>-<leg>-<h>``, ``h`` = 10 hex digits of the symbol's BLAKE2b hash;
    3. ``<tag>-<cycle>-<h>``, ``tag`` = 8 hex digits of the run id's hash
       (:func:`_run_tag`), ``h`` = 10 hex digits of the hash of ``<leg>-<symbol>``
       (OKX: 20 characters + the cycle's digits).

    The same inputs give the same id (restart safety); every form starts with the run id or
    its tag and then the cycle (:func:`_cycle_of` reads it back)."""
    targets = ("binanceusdm", *venues)
    forms = (
        f"{run_id}-{cycle}-{leg}-{symbol}",
        f"{run_id}-{cycle}-{leg}-{_h(symbol, 5)}",
        f"{_run_tag(run_id)}-{cycle}-{_h(f'{leg}-{symbol}', 5)}",
    )
    for cid in forms:
        if all(client_id_fits(v, cid) for v in targets):
            return cid
    raise RunnerError(
        f"client id {forms[0]!r}: no form fits {', '.join(sorted(set(targets)))}; "
        "shorten run_id (or the cycle number is too large)"
    )


def _cycle_of(run_id: str, cid: str) -> int | None:
    for head in (f"{run_id}-", f"{_run_tag(run_id)}-"):
        if cid.startswith(head):
            num = cid[len(head) :].split("-", 1)[0]
            return int(num) if num.isdigit() else None
    return None


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class PairSpec:
    """A carry pair: the perp symbol and its spot leg's engine symbol."""

    perp: str
    spot: str


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    """Runner settings (seconds; fractions for VPIN).

    ``bankroll_usd`` scales the caps and the slot size; a slot is
    ``bankroll × allocation_pct / 100 / max_positions`` of capital C, of which the spot leg
    buys ``X = C·L/(L+1)`` and the perp shorts ``X`` (``perp_leverage`` L; README "The carry
    backtest"). ``vpin_bucket_usd`` / ``vpin_n_buckets`` size the tick VPIN
    (Easley, López de Prado & O'Hara 2012); ``require_warm_vpin`` keeps entries off until
    ``n_buckets`` buckets have completed.

    Entries are sized to pass the caps (:meth:`Runner.entry_size`): ``cap_price_buffer_bps``
    keeps a capped entry inside its cap if the price rises by up to that much between the
    plan and the send. ``paper_cash_usd`` is the paper wallet booked into the ledger at
    start (None: ``bankroll_usd``).

    A pair whose legs filled unequally is repaired by :class:`~perpdesk.live.pairs.PairExecutor`
    with at most ``max_repair_attempts`` orders per cycle, within ``unwind_timeout_s``; an
    order on a leg whose last order filled nothing (refused by the venue, say) waits
    ``min(repair_backoff_s × 2^(n−1), repair_backoff_max_s)`` after n such orders."""

    mode: str = "paper"
    run_id: str = "pd"
    layer: str = "carry"
    pairs: tuple[PairSpec, ...] = ()
    bankroll_usd: Decimal = Decimal(100_000)
    allocation_pct: Decimal = Decimal(50)
    perp_leverage: Decimal = Decimal(3)
    cycle_s: float = 300.0
    cycle_timeout_s: float = 60.0
    leg_fill_timeout_s: float = 10.0
    unwind_timeout_s: float = 30.0
    poll_s: float = 0.05
    vpin_entry_max: float = 0.80
    vpin_exit_min: float = 0.90
    vpin_bucket_usd: float = 50_000.0
    vpin_n_buckets: int = 50
    require_warm_vpin: bool = True
    snapshot_path: Path | None = None
    cap_price_buffer_bps: Decimal = Decimal(20)
    paper_cash_usd: Decimal | None = None
    repair_backoff_s: float = 0.5
    repair_backoff_max_s: float = 8.0
    max_repair_attempts: int = 6

    def __post_init__(self) -> None:
        if self.mode not in ("paper", "live"):
            raise RunnerError(f"runner mode {self.mode!r}: use paper or live")
        if not self.cycle_s > 0 or not self.cycle_timeout_s > 0:
            raise RunnerError("runner cycle_s and cycle_timeout_s must be > 0")
        if not self.vpin_entry_max < self.vpin_exit_min:
            raise RunnerError("runner vpin_entry_max must be below vpin_exit_min")
        if self.max_repair_attempts < 1 or not self.repair_backoff_s >= 0:
            raise RunnerError("runner max_repair_attempts must be >= 1, repair_backoff_s >= 0")
        if not client_id_fits("binanceusdm", f"{self.run_id}-0-UP0-X"):
            raise RunnerError(
                f"runner run_id {self.run_id!r}: use at most 28 of [.A-Za-z0-9:/_-] (the "
                "client ids <run_id>-<cycle>-<leg>-<symbol> must fit Binance's 36)"
            )


# --------------------------------------------------------------------------- signals


@dataclass(frozen=True, slots=True)
class CarrySignal:
    """What the carry rules need of one perp: annualised funding (%) and 24 h quote
    volume (USD). NaN means unknown (the symbol is not tradable this cycle)."""

    ann_pct: float
    quote_volume_24h_usd: float


class SignalSource(Protocol):
    """Carry signals for cycle ``cycle`` by perp symbol."""

    async def signals(self, cycle: int) -> Mapping[str, CarrySignal]: ...


class MarkFundingSignals:
    """Signals from a venue's mark-price stream: the predicted funding rate ``r`` of the
    last mark seen, annualised with the symbol's interval
    (``ann_pct = r × 24/interval_h × 365 × 100``, :func:`perpdesk.domain.annualise_rate`).
    The stream has no volume, so ``quote_volume_24h_usd`` is ``assumed_volume_usd``."""

    def __init__(self, interval_h: Mapping[str, int], assumed_volume_usd: float = math.inf):
        self.interval_h = dict(interval_h)
        self.assumed_volume_usd = assumed_volume_usd
        self.rate: dict[str, float] = {}

    def on_mark(self, m: MarkPrice) -> None:
        """Feed one mark-price event."""
        self.rate[m.symbol] = m.predicted_funding_rate

    async def signals(self, cycle: int) -> Mapping[str, CarrySignal]:
        """The latest rates, annualised."""
        return {
            s: CarrySignal(annualise_rate(r, self.interval_h.get(s, 8)), self.assumed_volume_usd)
            for s, r in self.rate.items()
        }


class ScannerSignals:
    """Signals from :func:`perpdesk.live.scanner.scan` (funding estimate annualised with each
    symbol's interval, 24 h quote volume) on ccxt clients; the scan runs in a thread."""

    def __init__(self, clients: Sequence[Any], rules: CarryRules, symbols: Sequence[str]):
        self.clients, self.rules, self.symbols = list(clients), rules, list(symbols)

    async def signals(self, cycle: int) -> Mapping[str, CarrySignal]:
        """One scan."""
        from perpdesk.live.scanner import scan

        _, rows = await asyncio.to_thread(scan, self.clients, self.rules, self.symbols, 0)
        return {r.symbol: CarrySignal(r.ann_pct, r.quote_volume_24h_usd) for r in rows}


# --------------------------------------------------------------------------- paper venue


CHECKPOINT_VERSION = 1
"""Layout version of a paper journal's ``checkpoint`` row (:meth:`DurablePaperVenue.checkpoint`:
``{"version", "paper": PaperVenue.state() (its own PAPER_STATE_VERSION), "source_seq",
"recent"}``); :meth:`DurablePaperVenue.open` refuses any other with a one-line error naming the
journal."""


def _jf(x: float) -> float | str:
    """A float for strict JSON: finite as is, else its ``repr`` (``float`` reads it back)."""
    return x if math.isfinite(x) else repr(x)


def _enc_event(ev: MarketEvent) -> str:
    return json.dumps([type(ev).__name__, *dataclasses.astuple(ev)], separators=(",", ":"))


_EVENT_TYPES: dict[str, type] = {
    t.__name__: t for t in (Trade, BookTop, MarkPrice, FundingSettlement)
}


def _dec_event(text: str) -> MarketEvent:
    name, *vals = json.loads(text)
    return _EVENT_TYPES[name](*vals)


def _enc_order(o: Order) -> str:
    return json.dumps(dataclasses.asdict(o), separators=(",", ":"))


def _dec_order(text: str) -> Order:
    d = json.loads(text)
    d["side"] = Side(d["side"])
    d["type"] = OrderType(d["type"])
    d["tif"] = TimeInForce(d["tif"])
    d["position_side"] = PositionSide(d["position_side"])
    return Order(**d)


class DurablePaperVenue:
    """A :class:`PaperVenue` whose every input is journaled (module docstring).

    ``journal_path`` is its SQLite file; the other arguments are :class:`PaperVenue`'s. Call
    :meth:`open` (restores the last checkpoint and replays the journal after it) before use.
    ``source_seq`` is the sequence number of the last journaled event of a replayed source
    (resume a replay after it). Trade ids of the fills are ``<client_order_id>.<n>`` (n-th
    fill of that order) — stable across replays because the paper venue is deterministic in
    its inputs.

    **Checkpoints** keep the journal and the restart time bounded: :meth:`checkpoint` writes
    one ``checkpoint`` row (the paper venue's :meth:`~PaperVenue.state`, ``source_seq`` and
    the recent trades; layout :data:`CHECKPOINT_VERSION`) and deletes every earlier row in
    the same transaction, so a crash leaves either the old journal or the new one. It runs
    automatically once ``checkpoint_every`` journal rows (events, orders, cancels) were
    committed since the last one, after :meth:`open` replayed that many, and at
    :meth:`close` when the journal holds ``close_checkpoint_min`` rows or more after the last
    checkpoint (a shorter tail replays in about a second: a clean stop of a short session
    leaves its journal as it is); ``checkpoint_every=0`` turns the automatic ones off (a
    journal of inputs only, as before checkpoints). Restoring a checkpoint gives exactly the
    state the replay of the rows it replaced gives. After a checkpoint the journal no longer
    lists the earlier orders as ``place`` rows: the checkpoint's ``paper.orders`` holds every
    order the venue ever received."""

    def __init__(
        self,
        journal_path: Path,
        instruments: Iterable[Instrument],
        cash_usd: Decimal | str,
        *,
        venue: str = "paper",
        costs: Costs | None = None,
        flush_every: int = 2000,
        recent_maxlen: int = 5000,
        leverage: Mapping[str, int] | None = None,
        checkpoint_every: int = 200_000,
        close_checkpoint_min: int = 50_000,
    ) -> None:
        if checkpoint_every < 0:
            raise ValueError(f"checkpoint_every {checkpoint_every} must be >= 0 (0: off)")
        self.close_checkpoint_min = close_checkpoint_min
        self.path = Path(journal_path)
        self.inner = PaperVenue(instruments, cash_usd, venue=venue, costs=costs, leverage=leverage)
        self.flush_every = flush_every
        self.checkpoint_every = checkpoint_every
        self.source_seq = -1
        self._pending: list[tuple[str, int | None, str]] = []
        self._book_rows: dict[str, tuple[int, tuple[str, int | None, str], int]] = {}
        self.coalesced = 0
        self.checkpoints = 0  # written by this process
        self._since_checkpoint = 0  # journal rows committed after the last checkpoint
        self._trade_ids: list[str] = []
        self._n_fills: dict[str, int] = {}
        self._db: sqlite3.Connection | None = None
        self._recent: dict[str, deque[Trade]] = {}
        self.recent_maxlen = recent_maxlen

    def _remember(self, ev: MarketEvent) -> None:
        if isinstance(ev, Trade):
            q = self._recent.get(ev.symbol)
            if q is None:
                q = self._recent[ev.symbol] = deque(maxlen=self.recent_maxlen)
            q.append(ev)

    def recent_trades(self, symbols: Sequence[str]) -> list[Trade]:
        """The last ``recent_maxlen`` trades per symbol applied (journal included), in time
        order — what a restarted runner warms its prices and VPIN with."""
        out = [t for s in symbols for t in self._recent.get(s, ())]
        return sorted(out, key=lambda t: t.ts_ns)

    # -- journal
    async def open(self) -> None:
        """Open (create) the journal: restore its checkpoint (always its first row when there
        is one) into the paper venue and replay the rows after it. Replaying
        ``checkpoint_every`` rows or more ends with a checkpoint."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
            "src_seq INTEGER, payload TEXT NOT NULL)"
        )
        self._db = db
        after = 0
        first = db.execute("SELECT seq, kind, payload FROM journal ORDER BY seq LIMIT 1").fetchone()
        if first is not None and first[1] == "checkpoint":
            after = first[0]
            self._restore(after, first[2])
        n = 0
        for seq, kind, src, payload in db.execute(
            "SELECT seq, kind, src_seq, payload FROM journal WHERE seq > ? ORDER BY seq", (after,)
        ):
            n += 1
            if kind == "ev":
                ev = _dec_event(payload)
                self.inner.on_event(ev)
                self._remember(ev)
                if src is not None:
                    self.source_seq = max(self.source_seq, int(src))
            elif kind == "place":
                self.inner.submit(_dec_order(payload))
            elif kind == "cancel":
                await self.inner.cancel(payload, "")
            elif kind == "checkpoint":  # checkpoints delete every row before them
                raise RunnerError(f"paper journal {self.path}: checkpoint row {seq} is not first")
            else:
                raise RunnerError(f"paper journal {self.path}: unknown entry kind {kind!r}")
        self._since_checkpoint = n
        self._index_fills()
        self._maybe_checkpoint()

    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "paper": self.inner.state(),
            "source_seq": self.source_seq,
            # recent trades per symbol, oldest first: [venue, ts_ns, price, qty_base, m]
            "recent": {
                s: [[t.venue, t.ts_ns, _jf(t.price), _jf(t.qty_base), t.buyer_is_maker] for t in q]
                for s, q in self._recent.items()
            },
        }

    def _restore(self, seq: int, payload: str) -> None:
        where = f"paper journal {self.path}: checkpoint row {seq}"
        d = json.loads(payload)
        version = d.get("version")
        if version != CHECKPOINT_VERSION:
            raise RunnerError(
                f"{where} has format version {version!r}; this code reads version "
                f"{CHECKPOINT_VERSION}"
            )
        try:
            self.inner.restore(d["paper"])
        except VenueError as e:
            raise RunnerError(f"{where}: {e}") from None
        self.source_seq = int(d["source_seq"])
        self._recent = {
            s: deque(
                (Trade(v, s, int(ts), float(p), float(q), bool(m)) for v, ts, p, q, m in rows),
                maxlen=self.recent_maxlen,
            )
            for s, rows in d["recent"].items()
        }

    def checkpoint(self) -> None:
        """Write a checkpoint of the current state and delete every earlier journal row, in
        one transaction (``BEGIN IMMEDIATE`` … ``COMMIT``); events applied but not yet
        flushed are part of the checkpoint (no rows of their own). Then reclaim the space
        (VACUUM when free pages are most of the file) and truncate the WAL."""
        db = self._db
        if db is None:
            raise RunnerError("paper venue: call open() first")
        payload = json.dumps(self._checkpoint_state(), separators=(",", ":"), allow_nan=False)
        db.execute("BEGIN IMMEDIATE")
        try:
            cur = db.execute(
                "INSERT INTO journal (kind, src_seq, payload) VALUES ('checkpoint', NULL, ?)",
                (payload,),
            )
            db.execute("DELETE FROM journal WHERE seq < ?", (cur.lastrowid,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._pending = []
        self._book_rows.clear()
        self._since_checkpoint = 0
        self.checkpoints += 1
        # give the deleted rows' pages back to the file system when they are most of the file
        # (VACUUM rewrites only the live rows — the checkpoint and any later ones — so it
        # costs tens of ms; it is a transaction of its own: a crash inside it leaves the
        # committed checkpoint), then empty the WAL. The checkpoint is committed: a failure
        # here (another process reading the file) only leaves the space for the next one.
        try:
            (free,) = db.execute("PRAGMA freelist_count").fetchone()
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            if free * 2 > pages:
                db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as e:
            log.warning(
                "paper journal %s: space not reclaimed after a checkpoint: %s", self.path, e
            )

    def _maybe_checkpoint(self) -> None:
        """Checkpoint when ``checkpoint_every`` rows were committed since the last one (call
        only when every committed input has been applied)."""
        if self.checkpoint_every and self._since_checkpoint >= self.checkpoint_every:
            self.checkpoint()

    def _commit(self, rows: list[tuple[str, int | None, str]]) -> None:
        if not rows:
            return
        if self._db is None:
            raise RunnerError("paper venue: call open() first")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT INTO journal (kind, src_seq, payload) VALUES (?, ?, ?)", rows
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._since_checkpoint += len(rows)

    def flush(self) -> None:
        """Commit the market events applied since the last flush (then checkpoint if due)."""
        rows, self._pending = self._pending, []
        self._commit(rows)
        self._maybe_checkpoint()

    def on_market(self, ev: MarketEvent, src_seq: int | None = None) -> None:
        """Apply one market event (journaled at the next flush, before anything derived
        from it is handed out).

        Book tops are coalesced: a book top replaces the not-yet-committed book top of the
        same symbol when no other kind of event, order or cancel came between them and its
        time is not earlier. Replaying the journal gives the same state: a book top only
        sets its symbol's quote and advances the clock (funding due by then settles with
        the rate and mark of the last mark event, on positions that nothing in between
        changed), so every trade, mark, order and cancel still meets the quotes and clock it
        met live. On live data this keeps the journal to about the size of the trade and
        mark streams (``coalesced`` counts the book tops folded away)."""
        row = ("ev", src_seq, _enc_event(ev))
        prev = self._book_rows.get(ev.symbol) if isinstance(ev, BookTop) else None
        if (
            prev is not None
            and prev[0] < len(self._pending)
            and self._pending[prev[0]] is prev[1]
            and ev.ts_ns >= prev[2]
        ):
            self._pending[prev[0]] = row
            self._book_rows[ev.symbol] = (prev[0], row, ev.ts_ns)
            self.coalesced += 1
        else:
            if isinstance(ev, BookTop):
                self._book_rows[ev.symbol] = (len(self._pending), row, ev.ts_ns)
            else:
                self._book_rows.clear()
            self._pending.append(row)
        self.inner.on_event(ev)
        self._remember(ev)
        if src_seq is not None:
            self.source_seq = max(self.source_seq, src_seq)
        if len(self._pending) >= self.flush_every:
            self.flush()

    def _index_fills(self) -> None:
        for f in self.inner.fill_log[len(self._trade_ids) :]:
            n = self._n_fills.get(f.client_order_id, 0)
            self._n_fills[f.client_order_id] = n + 1
            self._trade_ids.append(f"{f.client_order_id}.{n}")

    # -- protocol
    @property
    def venue_id(self) -> str:
        """The paper venue's name."""
        return self.inner.venue_id

    async def instruments(self) -> Mapping[str, Instrument]:
        """Tradable instruments."""
        return await self.inner.instruments()

    async def balances(self) -> Mapping[str, Balance]:
        """Balances (after committing pending events)."""
        self.flush()
        return await self.inner.balances()

    async def positions(self) -> list[VenuePosition]:
        """Positions (after committing pending events)."""
        self.flush()
        return await self.inner.positions()

    async def place(self, order: Order) -> OrderState:
        """Journal the order with the pending events in one transaction, then submit it.
        A client id already known returns its state without a journal entry."""
        known = await self.inner.query(order.client_order_id, order.symbol)
        if known is not None:
            self.flush()
            return self.inner.submit(order)
        rows, self._pending = self._pending, []
        self._commit([*rows, ("place", None, _enc_order(order))])
        state = self.inner.submit(order)
        self._maybe_checkpoint()
        return state

    async def cancel(self, client_order_id: str, symbol: str) -> OrderState:
        """Journal and apply a cancel."""
        if await self.inner.query(client_order_id, symbol) is None:
            raise VenueError(f"cancel {client_order_id}: unknown client order id")
        rows, self._pending = self._pending, []
        self._commit([*rows, ("cancel", None, client_order_id)])
        state = await self.inner.cancel(client_order_id, symbol)
        self._maybe_checkpoint()
        return state

    async def query(self, client_order_id: str, symbol: str) -> OrderState | None:
        """Order state (after committing pending events)."""
        self.flush()
        return await self.inner.query(client_order_id, symbol)

    async def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        """Working orders (after committing pending events)."""
        self.flush()
        return await self.inner.open_orders(symbol)

    async def funding_payments(self, since_ns: int) -> list[FundingPayment]:
        """Funding booked at or after ``since_ns`` (after committing pending events)."""
        self.flush()
        return await self.inner.funding_payments(since_ns)

    async def executions_since(self, since_ns: int) -> list[VenueExecution]:
        """Own executions at or after ``since_ns`` with their stable trade ids and the part of
        each commission taken in the base asset (``fee_qty_base``, a spot buy when the fee
        model says so: the ledger then holds what the paper account holds)."""
        self.flush()
        self._index_fills()
        out = []
        for i, (tid, f) in enumerate(zip(self._trade_ids, self.inner.fill_log, strict=True)):
            if f.ts_ns >= since_ns:
                out.append(
                    VenueExecution(
                        f.client_order_id,
                        f.symbol,
                        f.side,
                        tid,
                        f.qty_base,
                        f.price,
                        f.fee_usd,
                        f.liquidity,
                        f.ts_ns,
                        f.client_order_id,
                        f.position_side,
                        self.inner.fill_fee_qty_base(i),
                    )
                )
        return out

    def fills(self) -> AsyncIterator[Fill]:
        """Own fills as they happen."""
        return self.inner.fills()

    def trades(self, symbols: Sequence[str]) -> AsyncIterator[Trade]:
        """Public trades the venue processes."""
        return self.inner.trades(symbols)

    def book_tops(self, symbols: Sequence[str]) -> AsyncIterator[BookTop]:
        """Book tops the venue processes."""
        return self.inner.book_tops(symbols)

    def mark_prices(self, symbols: Sequence[str]) -> AsyncIterator[MarkPrice]:
        """Marks the venue processes."""
        return self.inner.mark_prices(symbols)

    def liquidations(self, symbols: Sequence[str]) -> AsyncIterator[Liquidation]:
        """Liquidations fed to the venue."""
        return self.inner.liquidations(symbols)

    async def close(self) -> None:
        """Checkpoint (when automatic checkpoints are on and at least
        ``close_checkpoint_min`` rows would otherwise be replayed on the next open;
        otherwise commit pending events) and close the journal."""
        if self._db is not None:
            tail = self._since_checkpoint + len(self._pending)
            if self.checkpoint_every and tail and tail >= self.close_checkpoint_min:
                self.checkpoint()
            else:
                self.flush()
            self._db.close()
            self._db = None


def capture_events(
    captures: Sequence[tuple[Path, str | None]], venue: str = "paper"
) -> list[MarketEvent]:
    """Trades, book tops and mark prices of Binance websocket captures (:func:`read_capture`) as one
    time-ordered event list. Each capture is ``(path, rename)``: ``rename`` maps the
    capture's symbol to an engine symbol (e.g. the spot capture's ``BTCUSDT`` →
    ``BTCUSDT.SPOT``) or None to keep it. Ties keep capture order, then trades first."""
    from perpdesk.data.sources.binance_ws import read_capture

    rows: list[tuple[int, int, int, MarketEvent]] = []
    for ci, (path, rename) in enumerate(captures):
        tabs = read_capture(path)
        for sym, t in tabs.trades.items():
            name = rename or sym
            d = t.to_pydict()
            for i in range(t.num_rows):
                ev = Trade(
                    venue,
                    name,
                    int(d["ts_ns"][i]),
                    float(d["price"][i]),
                    float(d["qty_base"][i]),
                    bool(d["is_buyer_maker"][i]),
                )
                rows.append((ev.ts_ns, ci, 0, ev))
        for sym, t in tabs.book_ticker.items():
            name = rename or sym
            d = t.to_pydict()
            for i in range(t.num_rows):
                bt = BookTop(
                    venue,
                    name,
                    int(d["ts_ns"][i]),
                    float(d["bid_px"][i]),
                    float(d["bid_qty"][i]),
                    float(d["ask_px"][i]),
                    float(d["ask_qty"][i]),
                )
                rows.append((bt.ts_ns, ci, 1, bt))
        for sym, t in tabs.mark_price.items():
            name = rename or sym
            d = t.to_pydict()
            for i in range(t.num_rows):
                idx = d["index_px"][i]
                mp = MarkPrice(
                    venue,
                    name,
                    int(d["ts_ns"][i]),
                    float(d["mark_px"][i]),
                    math.nan if idx is None else float(idx),
                    float(d["predicted_funding_rate"][i]),
                    int(d["next_funding_ts_ns"][i]),
                )
                rows.append((mp.ts_ns, ci, 2, mp))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [r[3] for r in rows]


async def replay_feed(
    venue: DurablePaperVenue,
    events: Sequence[MarketEvent],
    events_per_s: float,
    *,
    tick_s: float = 0.01,
    flush_s: float = 0.2,
    on_event: Callable[[MarketEvent], None] | None = None,
) -> None:
    """Feed ``events`` to ``venue`` at ``events_per_s`` of wall time, resuming after the
    venue's ``source_seq`` (events already journaled are not fed again). Returns when the
    events are exhausted."""
    i = venue.source_seq + 1
    per_tick = max(1, int(events_per_s * tick_s))
    last_flush = time.monotonic()
    while i < len(events):
        for j in range(i, min(i + per_tick, len(events))):
            venue.on_market(events[j], j)
            if on_event is not None:
                on_event(events[j])
        i += per_tick
        if time.monotonic() - last_flush >= flush_s:
            venue.flush()
            last_flush = time.monotonic()
        await asyncio.sleep(tick_s)
    venue.flush()


# --------------------------------------------------------------------------- runner


class ExecutionHistory(Protocol):
    """A venue that lists its own executions with trade ids (for fill reconciliation)."""

    async def executions_since(self, since_ns: int) -> list[VenueExecution]: ...


@dataclass(slots=True)
class _Market:
    price: dict[str, float] = field(default_factory=dict)
    ts_ns: dict[str, int] = field(default_factory=dict)
    vpin: dict[str, VPINStream] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Action:
    """One planned pair action: ``kind`` enter | exit | repair; quantities in base units
    (perp quantity positive; the side follows from the kind)."""

    kind: str
    perp: str
    spot: str
    qty_perp: Decimal
    qty_spot: Decimal

    def to_json(self) -> dict[str, str]:
        """JSON form (decimals as strings)."""
        return {
            "kind": self.kind,
            "perp": self.perp,
            "spot": self.spot,
            "qty_perp": str(self.qty_perp),
            "qty_spot": str(self.qty_spot),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, str]) -> Action:
        """Inverse of :meth:`to_json`."""
        return cls(d["kind"], d["perp"], d["spot"], Decimal(d["qty_perp"]), Decimal(d["qty_spot"]))


def _venue_ids(venue: Any) -> tuple[str, ...]:
    """The venue ids ``venue`` sends orders to: its own and, for a spot + perp pair of venues
    (:class:`~perpdesk.execution.ccxt_live.SpotPerpVenue`, possibly behind
    :class:`LiveExecutions`), each leg's (Binance: ``binance`` and ``binanceusdm``)."""
    out = [str(venue.venue_id)]
    for attr in ("spot", "perp"):
        vid = getattr(getattr(venue, attr, None), "venue_id", None)
        if isinstance(vid, str) and vid not in out:
            out.append(vid)
    return tuple(out)


class Runner:
    """The cycle scheduler (module docstring).

    ``venue`` is any :class:`~perpdesk.execution.protocol.Venue` that also lists its
    executions (:class:`ExecutionHistory`); ``ledger`` a migrated :class:`Ledger`;
    ``limits`` the safeguards; ``rules`` the carry rules; ``signals`` the signal source (None:
    no signal-driven entries or exits). ``clock_ns`` stamps ledger events and snapshots."""

    def __init__(
        self,
        cfg: RunnerConfig,
        venue: Any,
        ledger: Ledger,
        limits: Limits,
        rules: CarryRules,
        signals: SignalSource | None = None,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.cfg = cfg
        self._venue = venue  # venue.place is called only by Runner._send
        self.ledger = ledger
        self.limits = limits
        self.rules = rules
        self.signals = signals
        self.clock_ns = clock_ns
        self.market = _Market()
        self._perps = {p.perp for p in cfg.pairs}
        self.instruments: dict[str, Instrument] = {}
        self.cycle = 0
        self.resume_cycle: int | None = None
        self.cycles_run = 0
        self.timeouts = 0
        self._risk: PortfolioState | None = None
        self._pos_px: dict[tuple[str, str], Decimal] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self.id_venues = _venue_ids(venue)
        self.pairs = PairExecutor(
            send=self._send,
            query=self._query,
            cancel=self._cancel,
            alert=self._alert,
            fill_timeout_s=cfg.leg_fill_timeout_s,
            unwind_timeout_s=cfg.unwind_timeout_s,
            poll_s=cfg.poll_s,
            backoff_s=cfg.repair_backoff_s,
            backoff_max_s=cfg.repair_backoff_max_s,
            max_attempts=cfg.max_repair_attempts,
        )

    # ----------------------------------------------------------------- ledger helpers
    def _event(
        self, kind: str, message: str, data: Mapping[str, Any] | None = None, key: str | None = None
    ) -> None:
        self.ledger.record_event(kind, message, self.clock_ns(), data, dedupe_key=key)

    def _alert(self, kind: str, message: str, data: Mapping[str, Any]) -> None:
        self._event(kind, message, {"cycle": self.cycle, **data})

    def _scalar(self, stmt: Any) -> Any:
        with Session(self.ledger.engine) as s:
            return s.scalar(stmt)

    def _last_cycle(self) -> tuple[int, bool]:
        """(last started cycle of this run id, whether it ended); (0, True) if none."""
        pre = f"cyc:{self.cfg.run_id}:"
        with Session(self.ledger.engine) as s:
            row = s.scalars(
                select(EventRow.dedupe_key)
                .where(EventRow.kind == "cycle_start", EventRow.dedupe_key.like(pre + "%"))
                .order_by(EventRow.id.desc())
                .limit(1)
            ).first()
            if row is None:
                return 0, True
            k = int(row[len(pre) :].split(":")[0])
            ended = s.scalar(select(func.count()).where(EventRow.dedupe_key == f"{pre}{k}:e"))
            return k, bool(ended)

    def _plan_event(self, k: int) -> list[Action] | None:
        with Session(self.ledger.engine) as s:
            data = s.scalars(
                select(EventRow.data).where(EventRow.dedupe_key == f"plan:{self.cfg.run_id}:{k}")
            ).first()
        if data is None:
            return None
        return [Action.from_json(a) for a in json.loads(data)["actions"]]

    # ----------------------------------------------------------------- market tasks
    def on_trade(self, t: Trade) -> None:
        """Feed one public trade: last price, and tick VPIN (aggressor flag, quote volume
        ``price × qty``) for the perps."""
        self.market.price[t.symbol] = t.price
        self.market.ts_ns[t.symbol] = t.ts_ns
        if t.symbol in self._perps:
            st = self.market.vpin.get(t.symbol)
            if st is None:
                st = self.market.vpin[t.symbol] = VPINStream(
                    "aggressor",
                    bucket_usd=self.cfg.vpin_bucket_usd,
                    n_buckets=self.cfg.vpin_n_buckets,
                )
            st.update(t.price, t.price * t.qty_base, t.buyer_is_maker)

    async def _watch_trades(self, symbols: Sequence[str]) -> None:
        async for t in self._venue.trades(symbols):
            self.on_trade(t)

    async def _watch_marks(self, symbols: Sequence[str]) -> None:
        async for m in self._venue.mark_prices(symbols):
            if isinstance(self.signals, MarkFundingSignals):
                self.signals.on_mark(m)

    def vpin(self, symbol: str) -> float:
        """Current tick VPIN of ``symbol`` (NaN until warmed up)."""
        st = self.market.vpin.get(symbol)
        return math.nan if st is None else st.vpin

    # ----------------------------------------------------------------- start / reconcile
    async def start(self) -> None:
        """Load instruments, open the market-data taps, bootstrap the paper bankroll, and
        reconcile before any trading."""
        self.instruments = dict(await self._venue.instruments())
        for p in self.cfg.pairs:
            for s in (p.perp, p.spot):
                if s not in self.instruments:
                    raise RunnerError(f"pair {p.perp}/{p.spot}: {s} is not traded on the venue")
        syms = [s for p in self.cfg.pairs for s in (p.perp, p.spot)]
        recent = getattr(self._venue, "recent_trades", None)
        if callable(recent):  # warm prices and VPIN from the ticks seen before a restart
            for t in recent(syms):
                self.on_trade(t)
        self._tasks.append(asyncio.ensure_future(self._watch_trades(syms)))
        self._tasks.append(
            asyncio.ensure_future(self._watch_marks([p.perp for p in self.cfg.pairs]))
        )
        if self.cfg.mode == "paper":
            self.ledger.record_transfer(
                f"paper-bankroll-{self.cfg.run_id}",
                self.cfg.bankroll_usd
                if self.cfg.paper_cash_usd is None
                else self.cfg.paper_cash_usd,
                self.clock_ns(),
                "paper bankroll",
            )
        last, ended = self._last_cycle()
        self.resume_cycle = None if ended else last
        self.cycle = last if not ended else last + 1
        await self.reconcile()

    async def reconcile(self) -> dict[str, int]:
        """Bring the ledger in line with the venue (module docstring); returns counts."""
        n_fills = await self.sync_fills()
        n_funding = await self.sync_funding()
        n_orders = await self.refresh_orders(keep_cycle=self.resume_cycle)
        mismatches = 0
        ledger_ids = {o.client_order_id for o in self.ledger.open_orders()}
        for st in await self._venue.open_orders():
            if (
                st.client_order_id not in ledger_ids
                and self.ledger.order(st.client_order_id) is None
            ):
                mismatches += 1
                self._event(
                    "reconcile_mismatch",
                    f"venue order {st.client_order_id} ({st.symbol}) is not in the ledger",
                    {"client_order_id": st.client_order_id, "symbol": st.symbol},
                )
        venue_qty = {p.symbol: p.qty_base for p in await self._venue.positions()}
        ledger_qty: dict[str, Decimal] = {}
        for p in self.ledger.status().positions:
            ledger_qty[p.symbol] = ledger_qty.get(p.symbol, _ZERO) + p.qty_base
        for sym in sorted(set(venue_qty) | set(ledger_qty)):
            v, lq = venue_qty.get(sym, _ZERO), ledger_qty.get(sym, _ZERO)
            if v != lq:
                mismatches += 1
                self._event(
                    "reconcile_mismatch",
                    f"{sym}: venue position {v}, ledger {lq}",
                    {"symbol": sym, "venue_qty": str(v), "ledger_qty": str(lq)},
                )
        counts = {
            "fills_inserted": n_fills,
            "funding_inserted": n_funding,
            "orders_updated": n_orders,
            "mismatches": mismatches,
        }
        self._event("reconciled", f"reconciled with {self._venue.venue_id}: {counts}", counts)
        return counts

    async def sync_fills(self) -> int:
        """Insert executions since the ledger's last fill (inclusive; idempotent)."""
        since = self._scalar(select(func.max(FillRow.ts_ns))) or 0
        n = 0
        for ex in await self._venue.executions_since(int(since)):
            row = self.ledger.order(ex.client_order_id)
            layer = row.layer if row is not None else self.cfg.layer
            fill = Fill(
                ex.client_order_id,
                self._venue.venue_id,
                ex.symbol,
                ex.side,
                ex.qty_base,
                ex.price,
                ex.fee_usd,
                ex.liquidity,
                ex.ts_ns,
                ex.position_side,
            )
            if self.ledger.record_fill(
                fill, ex.trade_id, layer=layer, fee_qty_base=ex.fee_qty_base
            ):
                n += 1
                if row is None:
                    self._event("unknown_fill", f"fill {ex.trade_id} of unknown order")
        return n

    async def sync_funding(self) -> int:
        """Record funding payments since the last one (one per position per settlement)."""
        since = self._scalar(select(func.max(FundingPaymentRow.ts_ns))) or 0
        n = 0
        for fp in await self._venue.funding_payments(int(since)):
            rate = None if fp.rate is None else to_decimal(fp.rate)
            if self.ledger.record_funding(
                self._venue.venue_id,
                fp.symbol,
                self.cfg.layer,
                fp.ts_ns,
                fp.amount_usd,
                funding_rate=rate,
            ):
                n += 1
        return n

    async def refresh_orders(self, keep_cycle: int | None = None) -> int:
        """Query every open/unsent ledger order by client id and store its state. An order
        the venue does not know is marked rejected, unless it belongs to ``keep_cycle``
        (the interrupted cycle, which will send it)."""
        n = 0
        for row in self.ledger.open_orders():
            st = await self._venue.query(row.client_order_id, row.symbol)
            if st is None:
                if (
                    keep_cycle is not None
                    and _cycle_of(self.cfg.run_id, row.client_order_id) == keep_cycle
                ):
                    continue
                if row.status == "new":
                    self.ledger.update_order(row.client_order_id, "rejected", self.clock_ns())
                    self._event(
                        "order_lost",
                        f"order {row.client_order_id} never reached the venue",
                        {"client_order_id": row.client_order_id},
                    )
                    n += 1
                continue
            status = _LEDGER_STATUS[st.status]
            if status != row.status:
                self.ledger.update_order(
                    row.client_order_id, status, self.clock_ns(), st.venue_order_id or None
                )
                n += 1
        return n

    # ----------------------------------------------------------------- risk gate
    def _risk_state(self) -> PortfolioState:
        st = self.ledger.status()
        with Session(self.ledger.engine) as s:
            seen = frozenset(
                s.scalars(select(OrderRow.client_order_id).where(OrderRow.status != "new"))
            )
            day0 = (self.clock_ns() // 86_400_000_000_000) * 86_400_000_000_000
            eq0 = s.scalars(
                select(EquitySnapshotRow.equity_usd)
                .where(EquitySnapshotRow.mode == self.cfg.mode, EquitySnapshotRow.ts_ns >= day0)
                .order_by(EquitySnapshotRow.ts_ns)
                .limit(1)
            ).first()
        positions = {(p.layer, p.symbol): p.notional_usd for p in st.positions if p.qty_base != 0}
        # the price each position is valued at (its ledger mark): a reduce-only order is
        # checked at this price, so closing a whole position is exactly its notional
        self._pos_px = {
            (p.layer, p.symbol): p.mark_price
            for p in st.positions
            if p.qty_base != 0 and p.mark_price is not None
        }
        return PortfolioState(
            bankroll_usd=self.cfg.bankroll_usd,
            positions_usd=positions,
            daily_pnl_usd=_ZERO if eq0 is None else st.equity_usd - eq0,
            kill_switch=st.kill_switch,
            seen_client_order_ids=seen,
            disabled_layers=frozenset(n for n, on in st.layers.items() if not on),
        )

    def _ref_price(self, symbol: str) -> Decimal:
        px = self.market.price.get(symbol)
        if px is None or not px > 0:
            raise RunnerError(f"{symbol}: no price seen yet")
        return to_decimal(px)

    async def _send(self, leg: Leg, cid: str) -> OrderState | None:
        """The only path to ``venue.place``: adopt an order the venue already has, else
        check it with the safeguards, record the intent, send it. None when refused."""
        row = self.ledger.order(cid)
        if row is not None:
            st = await self._venue.query(cid, leg.symbol)
            if st is not None:
                self.ledger.update_order(
                    cid, _LEDGER_STATUS[st.status], self.clock_ns(), st.venue_order_id or None
                )
                return st
            if row.status != "new":
                return None  # finished without reaching the venue earlier: never resend
        now = self.clock_ns()
        order = Order(
            cid,
            self._venue.venue_id,
            leg.symbol,
            leg.side,
            float(leg.qty_base),
            OrderType.MARKET,
            reduce_only=leg.reduce_only,
            ts_ns=row.ts_ns if row is not None else now,
            strategy_id=self.cfg.layer,
            label=leg.code,
        )
        state = self._risk if self._risk is not None else self._risk_state()
        px = self._pos_px.get((self.cfg.layer, leg.symbol)) if leg.reduce_only else None
        req = OrderRequest(
            layer=self.cfg.layer,
            symbol=leg.symbol,
            side=leg.side,
            notional_usd=leg.qty_base * (px or self._ref_price(leg.symbol)),
            client_order_id=cid,
            reduce_only=leg.reduce_only,
            live=self.cfg.mode == "live",
        )
        decision = check_order(req, state, self.limits)
        if not decision.ok and decision.rule == "reduce_only" and leg.reduce_only:
            state, req, decision = await self._recheck_reduce_only(leg, req)
        if not decision.ok:
            self._event(
                "safeguard_reject",
                decision.reason,
                {"client_order_id": cid, "rule": decision.rule, "cycle": self.cycle},
                key=f"rej:{cid}",
            )
            if row is not None:
                self.ledger.update_order(cid, "rejected", now)
            return None
        self._risk = apply_order(state, req)
        self.ledger.record_order(order, layer=self.cfg.layer, mode=self.cfg.mode, ts_ns=order.ts_ns)
        st = await self._venue.place(order)
        self.ledger.update_order(
            cid, _LEDGER_STATUS[st.status], self.clock_ns(), st.venue_order_id or None
        )
        if st.status is OrderStatus.REJECTED:  # once per cycle, symbol and reason
            self._event(
                "venue_reject",
                f"{cid}: {st.reason}",
                {"client_order_id": cid, "symbol": leg.symbol, "reason": st.reason},
                key=f"vrej:{self.cfg.run_id}:{self.cycle}:{leg.symbol}:{_h(st.reason, 8)}",
            )
        return st

    async def _recheck_reduce_only(
        self, leg: Leg, req: OrderRequest
    ) -> tuple[PortfolioState, OrderRequest, Any]:
        """Re-check a reduce-only order that the in-cycle risk state refused, against the
        ledger after booking this cycle's fills. The in-cycle state counts every order sent
        this cycle as fully filled, so after a partly filled close it shows the position
        gone and would refuse the completion the pair executor sends (found with a partial
        fill of a spot close on the live venue); the ledger holds what really remains."""
        await self.sync_fills()
        state = self._risk_state()
        px = self._pos_px.get((self.cfg.layer, leg.symbol))
        req = dataclasses.replace(
            req, notional_usd=leg.qty_base * (px or self._ref_price(leg.symbol))
        )
        return state, req, check_order(req, state, self.limits)

    async def _query(self, cid: str, symbol: str) -> OrderState | None:
        st = await self._venue.query(cid, symbol)
        if st is not None and self.ledger.order(cid) is not None:
            self.ledger.update_order(
                cid, _LEDGER_STATUS[st.status], self.clock_ns(), st.venue_order_id or None
            )
        return st

    async def _cancel(self, cid: str, symbol: str) -> OrderState:
        st = await self._venue.cancel(cid, symbol)
        if self.ledger.order(cid) is not None:
            self.ledger.update_order(cid, _LEDGER_STATUS[st.status], self.clock_ns())
        return st

    # ----------------------------------------------------------------- decide
    def _held(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for p in self.ledger.status().positions:
            if p.layer == self.cfg.layer:
                out[p.symbol] = out.get(p.symbol, _ZERO) + p.qty_base
        return out

    def _lot(self, symbol: str) -> Decimal:
        return to_decimal(self.instruments[symbol].lot_size)

    def _floor_lot(self, qty: Decimal, symbol: str) -> Decimal:
        """``qty`` rounded down to ``symbol``'s lot."""
        lot = self._lot(symbol)
        return (qty / lot).to_integral_value(ROUND_DOWN) * lot

    async def decide(self, k: int) -> list[Action]:
        """The plan of cycle ``k`` (module docstring, step 2)."""
        held = self._held()
        state = self._risk if self._risk is not None else self._risk_state()
        kill = state.kill_switch or self._daily_loss_kill(state)
        if kill and not state.kill_switch:
            state = self._risk = replace(state, kill_switch=True)
        disabled = self.cfg.layer in state.disabled_layers
        sig = dict(await self.signals.signals(k)) if self.signals is not None else {}
        pairs = list(self.cfg.pairs)
        n = len(pairs)
        qp = [held.get(p.perp, _ZERO) for p in pairs]
        qs = [held.get(p.spot, _ZERO) for p in pairs]
        actions: list[Action] = []
        entries: list[int] = []
        repaired = set()
        for i, p in enumerate(pairs):
            tol = max(self._lot(p.perp), self._lot(p.spot))
            if abs(qp[i] + qs[i]) >= tol:  # unhedged remainder: close the excess
                ex = qp[i] + qs[i]  # on the leg's lot grid (a spot holding net of a base fee
                # is not): rounded down, at least one lot since |ex| ≥ the coarser lot
                if qp[i] != 0 and (ex < 0) == (qp[i] < 0) and abs(ex) <= abs(qp[i]):
                    q = self._floor_lot(abs(ex), p.perp)
                    actions.append(Action("repair", p.perp, p.spot, q, _ZERO))
                else:
                    q = self._floor_lot(abs(ex), p.spot)
                    actions.append(Action("repair", p.perp, p.spot, _ZERO, q))
                repaired.add(i)
        is_held = np.array([qp[i] < 0 and qs[i] > 0 for i in range(n)], dtype=bool)
        ann = np.array([sig[p.perp].ann_pct if p.perp in sig else math.nan for p in pairs])
        qv = np.array([sig[p.perp].quote_volume_24h_usd if p.perp in sig else 0.0 for p in pairs])
        tradable = np.array(
            [
                np.isfinite(ann[i]) and p.perp in self.market.price and p.spot in self.market.price
                for i, p in enumerate(pairs)
            ],
            dtype=bool,
        )
        exit_mask, enter_mask = decide(
            self.rules, is_held, np.ones(n, dtype=bool), np.nan_to_num(ann, nan=0.0), qv, tradable
        )
        for i, p in enumerate(pairs):
            v = self.vpin(p.perp)
            warm = math.isfinite(v)
            gate_ok = (warm and v < self.cfg.vpin_entry_max) or (
                not warm and not self.cfg.require_warm_vpin
            )
            toxic = warm and v > self.cfg.vpin_exit_min
            if i in repaired:
                continue
            if is_held[i] and (exit_mask[i] or toxic or kill):
                # the spot holding is net of base-asset fees: sell what is held, on the lot
                q_spot = self._floor_lot(qs[i], p.spot)
                if q_spot > 0:
                    actions.append(Action("exit", p.perp, p.spot, -qp[i], q_spot))
                else:  # less than one spot lot held: only the perp is left to close
                    actions.append(Action("repair", p.perp, p.spot, -qp[i], _ZERO))
            elif enter_mask[i] and gate_ok and not kill and not disabled:
                entries.append(i)
        # entries after exits, best funding first (ties keep the configured order), each
        # sized against what the caps leave after the entries planned before it
        for i in sorted(entries, key=lambda j: -ann[j]):
            p = pairs[i]
            qty, px_perp, px_spot = self.entry_size(p, state)
            if qty <= 0:
                continue
            actions.append(Action("enter", p.perp, p.spot, qty, qty))
            for sym, side, px in ((p.perp, Side.SELL, px_perp), (p.spot, Side.BUY, px_spot)):
                state = apply_order(
                    state, OrderRequest(self.cfg.layer, sym, side, qty * px, f"plan-{k}-{sym}")
                )
        return actions

    def _daily_loss_kill(self, st: PortfolioState) -> bool:
        """Trip the kill switch when the day's loss reached ``risk.max_daily_loss_pct`` of the
        bankroll (:func:`perpdesk.risk.safeguards.is_halted`; day = since 00:00 UTC, from the
        first equity snapshot of the day). The switch persists in the ledger (so a restart
        stays halted) and makes this cycle close every pair; ``perpdesk kill-switch off``
        resumes. ``st`` is the cycle's risk state. Returns whether it tripped."""
        halted, why = is_halted(replace(st, kill_switch=False), self.limits)
        if not halted:
            return False
        now = self.clock_ns()
        self.ledger.set_kill_switch(True, now, f"runner: {why}")
        self._alert("kill_switch", f"kill switch on: {why}; closing every pair", {"why": why})
        return True

    def entry_size(self, p: PairSpec, state: PortfolioState) -> tuple[Decimal, Decimal, Decimal]:
        """``(qty, perp price, spot price)`` of a new pair: the slot quantity
        (:meth:`_entry_qty`) cut to what the caps leave — measured as the safeguards measure
        them, on gross notional (``qty × last price``) of each leg:

        - per leg symbol ``s``: ``qty × p_s ≤ max_position_pct × bankroll − Σ|pos(·, s)|``;
        - both legs: ``qty × (p_perp + p_spot) ≤`` the room under ``max_deployed_pct`` and
          under the layer's ``layer_allocation_pct``,

        with each price raised by ``cap_price_buffer_bps`` (so the order still passes if the
        price rises that much before it is sent), rounded down to the coarser lot. Returns
        ``qty = 0`` (and writes an ``entry_skipped`` event, not an error) when the result
        is below the minimum position ``min_position_pct × bankroll`` on either leg. Prices
        are the unbuffered last prices (what the safeguards will value the legs at)."""
        lim, bank, layer = self.limits, state.bankroll_usd, self.cfg.layer
        px_perp, px_spot = self._ref_price(p.perp), self._ref_price(p.spot)
        lot = max(self._lot(p.perp), self._lot(p.spot))
        slot = self._entry_qty(p)
        buf = 1 + self.cfg.cap_price_buffer_bps / 10_000
        bp, bs = px_perp * buf, px_spot * buf

        def cap(pct: Decimal) -> Decimal:
            return bank * pct / 100

        room_perp = cap(lim.max_position_pct) - state.symbol_gross_usd(p.perp)
        room_spot = cap(lim.max_position_pct) - state.symbol_gross_usd(p.spot)
        room_pair = min(
            cap(lim.max_deployed_pct) - state.deployed_usd(),
            cap(lim.layer_allocation_pct.get(layer, _ZERO)) - state.layer_gross_usd(layer),
        )
        q_cap = max(_ZERO, min(room_perp / bp, room_spot / bs, room_pair / (bp + bs)))
        qty = (min(slot, q_cap) / lot).to_integral_value(ROUND_DOWN) * lot
        floor = cap(lim.min_position_pct)
        if qty < slot:
            log.info("%s: entry cut from %s to %s by the caps", p.perp, slot, qty)
        if qty <= 0 or qty * min(px_perp, px_spot) < floor:
            self._event(
                "entry_skipped",
                f"{p.perp}/{p.spot}: the caps leave {qty} per leg "
                f"({qty * px_perp} USD perp, {qty * px_spot} USD spot), below the minimum "
                f"position {floor} USD ({lim.min_position_pct}% of {bank})",
                {
                    "cycle": self.cycle,
                    "perp": p.perp,
                    "spot": p.spot,
                    "slot_qty": str(slot),
                    "capped_qty": str(qty),
                    "min_position_usd": str(floor),
                },
                key=f"skip:{self.cfg.run_id}:{self.cycle}:{p.perp}",
            )
            return _ZERO, px_perp, px_spot
        return qty, px_perp, px_spot

    def _entry_qty(self, p: PairSpec) -> Decimal:
        """Base quantity of each leg: ``X / price`` rounded down to the coarser lot, with
        ``X = C·L/(L+1)``, ``C = bankroll × allocation_pct / 100 / max_positions``."""
        c = self.cfg.bankroll_usd * self.cfg.allocation_pct / 100 / self.rules.max_positions
        lev = self.cfg.perp_leverage
        x_usd = c * lev / (lev + 1)
        lot = max(self._lot(p.perp), self._lot(p.spot))
        return (x_usd / self._ref_price(p.perp) / lot).to_integral_value(ROUND_DOWN) * lot

    # ----------------------------------------------------------------- cycle
    async def _execute(self, k: int, a: Action) -> None:
        def cid_of(code: str) -> str:
            return client_order_id(self.cfg.run_id, k, a.perp, code, self.id_venues)

        lp, ls = self._lot(a.perp), self._lot(a.spot)
        if a.kind == "repair":
            if a.qty_perp > 0:  # the perp is the excess (short beyond the spot)
                held = self._held().get(a.perp, _ZERO)
                side = Side.BUY if held < 0 else Side.SELL
                leg = Leg("RP", a.perp, side, a.qty_perp, lp, reduce_only=True)
            else:
                held = self._held().get(a.spot, _ZERO)
                side = Side.SELL if held > 0 else Side.BUY
                leg = Leg("RS", a.spot, side, a.qty_spot, ls, reduce_only=True)
            st = await self._send(leg, cid_of(leg.code))
            self._alert(
                "pair_repair",
                f"{a.perp}/{a.spot}: closing unhedged {leg.qty_base} of {leg.symbol}",
                {"client_order_id": cid_of(leg.code), "status": None if st is None else st.status},
            )
            return
        if a.kind == "enter":
            perp = Leg("P", a.perp, Side.SELL, a.qty_perp, lp)
            spot = Leg("S", a.spot, Side.BUY, a.qty_spot, ls)
        else:
            perp = Leg("P", a.perp, Side.BUY, a.qty_perp, lp, reduce_only=True)
            spot = Leg("S", a.spot, Side.SELL, a.qty_spot, ls, reduce_only=True)
        await self.pairs.run(perp, spot, cid_of, is_exit=a.kind == "exit")

    def _mark(self) -> None:
        for sym, px in self.market.price.items():
            self.ledger.set_mark(
                self._venue.venue_id, sym, to_decimal(px), self.market.ts_ns.get(sym, 0)
            )

    async def _cycle(self, k: int) -> None:
        await self.sync_fills()
        await self.sync_funding()
        await self.refresh_orders(keep_cycle=k)
        self._mark()
        self._risk = self._risk_state()
        plan = self._plan_event(k)
        if plan is None:
            plan = await self.decide(k)
            self._event(
                "plan",
                f"cycle {k}: {len(plan)} action(s)",
                {
                    "cycle": k,
                    "actions": [a.to_json() for a in plan],
                    "vpin": {p.perp: _num(self.vpin(p.perp)) for p in self.cfg.pairs},
                },
                key=f"plan:{self.cfg.run_id}:{k}",
            )
        for a in plan:
            await self._execute(k, a)
        await self.sync_fills()
        await self.sync_funding()

    async def run_cycle(self, k: int) -> str:
        """Run cycle ``k`` under the hard timeout; returns ok | timeout | error."""
        self.cycle = k
        pre = f"cyc:{self.cfg.run_id}:{k}"
        self._event("cycle_start", f"cycle {k}", {"cycle": k}, key=f"{pre}:s")
        status = "ok"
        try:
            await asyncio.wait_for(self._cycle(k), self.cfg.cycle_timeout_s)
        except TimeoutError:
            status = "timeout"
            self.timeouts += 1
            self._event(
                "cycle_timeout",
                f"cycle {k} exceeded {self.cfg.cycle_timeout_s} s and was cancelled",
                {"cycle": k},
                key=f"{pre}:t",
            )
        except PerpdeskError as exc:
            status = "error"
            self._event("cycle_error", f"cycle {k}: {exc}", {"cycle": k}, key=f"{pre}:x")
        except Exception as exc:  # the runner stays up; the cause is in the ledger
            status = "error"
            log.exception("cycle %d failed", k)
            self._event(
                "cycle_error",
                f"cycle {k}: {type(exc).__name__}: {exc}",
                {"cycle": k},
                key=f"{pre}:x",
            )
        self._risk = None
        try:
            self.ledger.record_equity_snapshot(self.cfg.mode, self.clock_ns())
            self._snapshot(k, status)
        except PerpdeskError as exc:
            self._event("snapshot_error", f"cycle {k}: {exc}", {"cycle": k})
        self._event(
            "cycle_end", f"cycle {k}: {status}", {"cycle": k, "status": status}, key=f"{pre}:e"
        )
        self.cycles_run += 1
        return status

    def _snapshot(self, k: int, status: str) -> None:
        if self.cfg.snapshot_path is None:
            return
        payload = {
            "mode": self.cfg.mode,
            "run_id": self.cfg.run_id,
            "cycle": k,
            "cycle_status": status,
            "pid": _pid(),
            "vpin": {
                s: (None if math.isnan(v) else v) for s in self.market.vpin for v in [self.vpin(s)]
            },
            "status": status_payload(self.ledger.status()),
        }
        write_snapshot(self.cfg.snapshot_path, payload, self.clock_ns())

    async def run(
        self,
        max_cycles: int | None = None,
        stop: asyncio.Event | None = None,
        on_cycle: Callable[[int, str], Awaitable[None] | None] | None = None,
    ) -> None:
        """Start (reconcile), then run cycles every ``cycle_s`` until ``max_cycles`` or
        ``stop`` is set. A cycle that overruns delays the next; none is skipped."""
        await self.start()
        k = self.cycle
        loop = asyncio.get_running_loop()
        try:
            while max_cycles is None or self.cycles_run < max_cycles:
                t0 = loop.time()
                status = await self.run_cycle(k)
                if on_cycle is not None:
                    r = on_cycle(k, status)
                    if asyncio.iscoroutine(r):
                        await r
                k += 1
                if stop is not None and stop.is_set():
                    break
                wait = max(0.0, t0 + self.cfg.cycle_s - loop.time())
                if stop is None:
                    await asyncio.sleep(wait)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
                    if stop.is_set():
                        break
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Cancel the market-data tasks."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


def _pid() -> int:
    import os

    return os.getpid()


# --------------------------------------------------------------------------- live adapter


class LiveExecutions:
    """A live venue (:class:`~perpdesk.execution.ccxt_live.LiveVenue` or
    :class:`~perpdesk.execution.ccxt_live.SpotPerpVenue`) restricted to the runner's
    symbols for :meth:`executions_since` (the venue's public method: REST own trades with the
    exchange's trade ids); every other call passes through."""

    def __init__(self, venue: Any, symbols: Sequence[str]) -> None:
        self._v = venue
        self.symbols = list(symbols)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._v, name)

    @property
    def venue_id(self) -> str:
        """The live venue's id."""
        return str(self._v.venue_id)

    async def executions_since(self, since_ns: int) -> list[VenueExecution]:
        """Own trades at or after ``since_ns`` of the configured symbols, oldest first."""
        return list(await self._v.executions_since(since_ns, self.symbols))


def runner_config(
    settings: Any, mode: str, *, snapshot_path: Path | None = None, **overrides: Any
) -> RunnerConfig:
    """A :class:`RunnerConfig` from ``perpdesk.config.Settings``: ``[runner]`` (cycle,
    timeouts, VPIN, run id, symbols paired with their spot legs, paper wallet), the carry
    sizing of ``[carry]`` and the bankroll of ``[account]``; ``overrides`` replace fields."""
    from perpdesk.domain import spot_symbol

    r, c = settings.runner, settings.carry

    def dec(x: float) -> Decimal:
        return Decimal(repr(float(x)))

    fields: dict[str, Any] = dict(
        mode=mode,
        run_id=r.run_id,
        pairs=tuple(PairSpec(sym, spot_symbol(sym)) for sym in r.symbols),
        bankroll_usd=dec(settings.account.bankroll_usd),
        allocation_pct=dec(c.allocation_pct),
        perp_leverage=dec(c.perp_leverage),
        cycle_s=r.cycle_s,
        cycle_timeout_s=r.cycle_timeout_s,
        leg_fill_timeout_s=r.leg_fill_timeout_s,
        unwind_timeout_s=r.unwind_timeout_s,
        poll_s=r.poll_s,
        vpin_entry_max=r.vpin_entry_max,
        vpin_exit_min=r.vpin_exit_min,
        vpin_bucket_usd=r.vpin_bucket_usd,
        vpin_n_buckets=r.vpin_n_buckets,
        require_warm_vpin=r.require_warm_vpin,
        cap_price_buffer_bps=dec(r.cap_price_buffer_bps),
        snapshot_path=snapshot_path,
        paper_cash_usd=dec(r.paper_balance_usd) if r.paper_balance_usd > 0 else None,
    )
    fields.update(overrides)
    return RunnerConfig(**fields)


def paper_instruments(venue: str, pairs: Sequence[PairSpec]) -> list[Instrument]:
    """Binance-like instruments for paper pairs: perp tick 0.1 / lot 0.001 (8 h funding),
    spot tick 0.01 / lot 0.00001 (BTCUSDT filters of USD-M and spot exchangeInfo)."""
    out = []
    for p in pairs:
        base = p.perp.removesuffix("USDT")
        out.append(Instrument(venue, p.perp, InstrumentKind.PERP, base, "USDT", 0.1, 0.001, 8))
        out.append(Instrument(venue, p.spot, InstrumentKind.SPOT, base, "USDT", 0.01, 0.00001))
    return out


async def audit_venue(venue: Any) -> list[tuple[str, bool, str]]:
    """Read-only checks of a :class:`~perpdesk.execution.ccxt_live.LiveVenue`: connect
    (markets), balances, positions, open orders and the API key's permissions, through
    ccxt's implicit API methods: Binance ``GET /sapi/v1/account/apiRestrictions``
    (``enableReading``, ``enableFutures``, ``enableWithdrawals``, ``ipRestrict``); Bybit
    ``GET /v5/user/query-api`` (``readOnly`` 0 read and write / 1 read only, ``permissions``
    per area — ``Withdraw`` in ``Wallet`` is the withdrawal right —, ``ips`` bound, ``["*"]``
    or empty: none, and for a key without IPs ``expiredAt`` / ``deadlineDay``); OKX
    ``GET /api/v5/account/config`` (``perm`` e.g. ``read_only,trade,withdraw``, ``ip``
    bound — empty: none —, ``acctLv``, ``posMode``). A key that can withdraw is a failure
    (a trading key should not withdraw); on Bybit and OKX so is a read-only key (it cannot
    trade). Never places or cancels an order. Rows are ``(check, ok, detail)``; details
    are redacted and never quote the key."""
    from perpdesk.secrets import redact

    rows: list[tuple[str, bool, str]] = []

    async def step(name: str, call: Callable[[], Awaitable[Any]], show: Callable[[Any], str]):
        try:
            res = await call()
        except Exception as exc:  # every failure is a row, not a crash
            text = str(exc).strip().splitlines()
            rows.append((name, False, redact(f"{type(exc).__name__}: {text[0] if text else ''}")))
            return None
        rows.append((name, True, redact(show(res))))
        return res

    await step("connect", venue.connect, lambda _: "markets loaded")
    if not rows[-1][1]:
        return rows
    await step("markets", venue.instruments, lambda m: f"{len(m)} instruments")
    await step(
        "balances",
        venue.balances,
        lambda b: ", ".join(f"{a} {v.total}" for a, v in sorted(b.items())) or "none",
    )
    await step("positions", venue.positions, lambda p: f"{len(p)} open")
    await step("open orders", venue.open_orders, lambda o: f"{len(o)} open")
    ex = getattr(venue, "ex", None)
    call = getattr(ex, "sapi_get_account_apirestrictions", None)
    ex_id = getattr(ex, "id", None)
    if call is None and ex_id in ("bybit", "okx"):
        if ex_id == "bybit":
            res = await step("permissions", ex.private_get_v5_user_query_api, lambda r: "")
            key = (res or {}).get("result") if isinstance(res, Mapping) else None
        else:
            res = await step("permissions", ex.private_get_account_config, lambda r: "")
            data = (res or {}).get("data") if isinstance(res, Mapping) else None
            key = data[0] if isinstance(data, list) and data else None
        if res is not None:  # a refused request is already a failed row
            problems: list[str] = []
            can_withdraw = read_only = False
            if not isinstance(key, Mapping):
                parts, problems = ["unreadable answer"], ["no key information"]
            elif ex_id == "bybit":
                perms = key.get("permissions") or {}
                ips = [str(i) for i in key.get("ips") or [] if str(i) not in ("", "*")]
                can_withdraw = "Withdraw" in (perms.get("Wallet") or [])
                read_only = str(key.get("readOnly")) != "0"
                parts = [f"readOnly={key.get('readOnly')}"]
                parts += [
                    f"{area}={'+'.join(map(str, perms.get(area) or [])) or '-'}"
                    for area in ("ContractTrade", "Spot", "Derivatives", "Wallet")
                ]
                parts += [f"withdraw={can_withdraw}", f"ipRestrict={','.join(ips) or 'none'}"]
                if not ips:  # Bybit expires keys bound to no IP
                    parts.append(f"expiredAt={key.get('expiredAt')} ({key.get('deadlineDay')} d)")
            else:
                perm = [p.strip() for p in str(key.get("perm") or "").split(",") if p.strip()]
                ips = [i.strip() for i in str(key.get("ip") or "").split(",") if i.strip()]
                can_withdraw = "withdraw" in perm
                read_only = "trade" not in perm
                parts = [f"perm={'+'.join(perm) or '-'}", f"withdraw={can_withdraw}"]
                parts += [f"ipRestrict={','.join(ips) or 'none'}"]
                parts += [f"acctLv={key.get('acctLv')}", f"posMode={key.get('posMode')}"]
            if can_withdraw:
                problems.append("withdrawals enabled: use a key without them")
            if read_only:
                problems.append("read-only key: it cannot trade")
            detail = ", ".join(parts) + "".join(f" ({p})" for p in problems)
            rows[-1] = ("permissions", not problems, redact(detail))
    elif call is None:
        rows.append(("permissions", True, "not reported by this exchange"))
    else:
        res = await step(
            "permissions",
            call,
            lambda r: ", ".join(
                f"{k}={r.get(k)}"
                for k in ("enableReading", "enableFutures", "enableWithdrawals", "ipRestrict")
            ),
        )
        if isinstance(res, Mapping) and res.get("enableWithdrawals"):
            name, _, detail = rows[-1]
            rows[-1] = (name, False, detail + " (withdrawals enabled: use a key without them)")
    return rows
