"""Order manager: deterministic client ids, idempotent submission, fills booked once.

- :class:`ClientIdFactory` — ``<prefix>-<n>`` ids, deterministic for a run (the prefix names
  the run/strategy; the runner restarts ``n`` from its ledger). Binance limits
  ``newClientOrderId`` to ``^[.A-Z:/a-z0-9_-]{1,36}$`` (USD-M "New Order" doc), so prefixes
  are checked against that, and against the encoded limit of every venue given
  (:data:`CLIENT_ID_RULES`, :func:`client_id_fits`: Bybit 36, OKX 32).
- :class:`OrderManager.submit` — **no duplicate order, ever**. A send whose outcome is unknown
  (timeout, dropped connection, 5xx: :class:`~perpdesk.execution.protocol.TransientVenueError`)
  is never simply repeated: the manager first waits ``settle_s`` (at least the request's
  ``recvWindow``, after which Binance refuses the original request with -1021 if it had not
  yet reached the matching engine), then queries the order by client id; only when the venue
  does not know the id is the order sent again, **with the same client id** (Binance refuses a
  second live order with that id, -4116). A 429/418 (:class:`RateLimitedError`) means the request
  was refused before execution: wait ``max(backoff, Retry-After)`` and send again.
  If every query fails the outcome stays unknown: :class:`OutcomeUnknownError` is raised, the
  order is marked uncertain, and a later ``submit`` of it queries before sending anything.
- :meth:`OrderManager.on_execution` — each venue execution is booked once, keyed by
  ``(client_order_id, trade_id)``; duplicates (a websocket repeat, the REST poll seeing what
  the stream already delivered) return None. Cumulative fills come only from executions, so
  out-of-order order updates cannot move them; status updates never go backwards
  (a late NEW after PARTIALLY_FILLED or FILLED is ignored).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Protocol

from perpdesk.domain import Fill, Liquidity, Order, PositionSide, Side, to_decimal
from perpdesk.execution.protocol import (
    OrderState,
    OrderStatus,
    RateLimitedError,
    TransientVenueError,
    VenueError,
)

__all__ = [
    "BINANCE_CLIENT_ID_MAX",
    "CLIENT_ID_RULES",
    "ClientIdFactory",
    "DuplicateClientIdError",
    "OrderManager",
    "OrderTransport",
    "OutcomeUnknownError",
    "RetryPolicy",
    "VenueExecution",
    "client_id_fits",
    "engine_client_id",
    "venue_client_id",
]

_CID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
BINANCE_CLIENT_ID_MAX = 36
CLIENT_ID_RULES: dict[str, tuple[re.Pattern[str], str, int]] = {
    "bybit": (re.compile(r"[A-Za-z0-9-]"), "_", 36),
    "okx": (re.compile(r"[A-Za-z0-9]"), "Q", 32),
}
"""Venue → (characters kept as they are, escape character, maximum length) of its client id:
Bybit ``orderLinkId`` takes letters, digits, ``-`` and ``_`` up to 36; OKX ``clOrdId`` letters
and digits up to 32 (each venue's *Place order* doc). Binance takes ``[.A-Z:/a-z0-9_-]``
(the :class:`ClientIdFactory` alphabet) as it is, up to 36 (:data:`BINANCE_CLIENT_ID_MAX`).
The table lives here (not in :mod:`~perpdesk.execution.ccxt_live`) so that id makers —
this module's :class:`ClientIdFactory`, the runner's ``client_order_id`` — can check what
a venue accepts without importing ccxt."""
_ESCAPES = {".": "d", ":": "c", "/": "s", "_": "u", "-": "h"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}


def venue_client_id(venue_id: str, client_order_id: str) -> str:
    """Our client id in the venue's alphabet, reversibly (:func:`engine_client_id`): a character
    the venue refuses becomes the escape character + a letter (``.`` → ``d``, ``:`` → ``c``,
    ``/`` → ``s``, ``_`` → ``u``, ``-`` → ``h``) and the escape character itself is doubled
    (Bybit ``carry.r7-41`` → ``carry_dr7-41``; OKX → ``carryQdr7Qh41``). Raises
    :class:`VenueError` when the result is longer than the venue allows."""
    rule = CLIENT_ID_RULES.get(venue_id)
    if rule is None:
        return client_order_id
    keep, esc, limit = rule
    out = []
    for ch in client_order_id:
        if ch == esc:
            out.append(esc + esc)
        elif keep.fullmatch(ch):
            out.append(ch)
        elif ch in _ESCAPES:
            out.append(esc + _ESCAPES[ch])
        else:
            raise VenueError(f"client id {client_order_id!r}: character {ch!r} not supported")
    vid = "".join(out)
    if len(vid) > limit:
        raise VenueError(
            f"client id {client_order_id!r}: {venue_id} takes at most {limit} characters "
            f"({vid!r} has {len(vid)})"
        )
    return vid


def engine_client_id(venue_id: str, venue_cid: str) -> str:
    """The inverse of :func:`venue_client_id` (an id that is not a valid escape sequence is
    returned as it is: an order placed by hand)."""
    rule = CLIENT_ID_RULES.get(venue_id)
    if rule is None or not venue_cid:
        return venue_cid
    esc = rule[1]
    out, i = [], 0
    while i < len(venue_cid):
        ch = venue_cid[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        nxt = venue_cid[i + 1 : i + 2]
        if nxt == esc:
            out.append(esc)
        elif nxt in _UNESCAPES:
            out.append(_UNESCAPES[nxt])
        else:
            return venue_cid
        i += 2
    return "".join(out)


def client_id_fits(venue_id: str, client_order_id: str) -> bool:
    """Whether ``client_order_id`` can be sent to ``venue_id``: encoded by
    :func:`venue_client_id` within that venue's limit (Bybit, OKX), else Binance's rule
    ``^[.A-Z:/a-z0-9_-]{1,36}$`` (every other venue id: Binance spot and USD-M, paper)."""
    if venue_id not in CLIENT_ID_RULES:
        return _CID_RE.match(client_order_id) is not None
    try:
        venue_client_id(venue_id, client_order_id)
    except VenueError:
        return False
    return True


_RANK = {
    OrderStatus.NEW: 0,
    OrderStatus.PARTIALLY_FILLED: 1,
    OrderStatus.FILLED: 2,
    OrderStatus.CANCELED: 2,
    OrderStatus.REJECTED: 2,
    OrderStatus.EXPIRED: 2,
}


class DuplicateClientIdError(VenueError):
    """The venue already holds an order with this client id (Binance -4116)."""


class OutcomeUnknownError(VenueError):
    """The order could not be confirmed or ruled out after every allowed query; it was NOT
    resent. The runner must reconcile (query again later) before trading the symbol."""


class ClientIdFactory:
    """Deterministic unique client order ids ``<prefix>-<n>`` (n = start, start+1, …).

    The prefix is at most 24 of Binance's ``[.A-Za-z0-9:/_-]``. With ``venues`` (venue ids
    the ids will be sent to, e.g. ``("okx",)``) the prefix must also leave room for a
    counter of :data:`COUNTER_DIGITS` digits on every one of them, as encoded there
    (:func:`client_id_fits`: on OKX each ``-``, ``.``, ``_``, ``:``, ``/`` takes two of its
    32 characters)."""

    COUNTER_DIGITS = 10

    def __init__(self, prefix: str, start: int = 1, venues: Iterable[str] = ()) -> None:
        if not _CID_RE.match(f"{prefix}-{start}") or len(prefix) > 24:
            raise VenueError(
                f"client id prefix {prefix!r}: use at most 24 of [.A-Za-z0-9:/_-] (Binance)"
            )
        if start < 0:
            raise VenueError(f"client id start {start} must be >= 0")
        widest = f"{prefix}-{'9' * max(self.COUNTER_DIGITS, len(str(start)))}"
        for v in venues:
            if not client_id_fits(v, widest):
                raise VenueError(
                    f"client id prefix {prefix!r}: too long for {v} once encoded "
                    f"({widest!r} would not fit); shorten it"
                )
        self.prefix = prefix
        self._n = start

    def next(self) -> str:
        """The next id."""
        cid = f"{self.prefix}-{self._n}"
        self._n += 1
        return cid

    @property
    def next_n(self) -> int:
        """The counter of the next id (persist it to resume after a restart)."""
        return self._n


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry rules. Attempt ``k`` (0-based) of a rate-limited request waits
    ``max(min(max_delay_s, base_delay_s × 2**k), Retry-After)``; after an ambiguous failure
    the manager waits ``settle_s`` (≥ the request's recvWindow) before querying."""

    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    settle_s: float = 5.0

    def delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds to wait after failed attempt ``attempt``."""
        backoff = min(self.max_delay_s, self.base_delay_s * 2**attempt)
        return backoff if retry_after_s is None else max(backoff, retry_after_s)


class OrderTransport(Protocol):
    """The raw venue calls the manager drives (one request each, no retries inside).

    ``send`` returns the venue's state (REJECTED with a reason for a business refusal) or
    raises :class:`TransientVenueError` / :class:`RateLimitedError` / :class:`DuplicateClientIdError`;
    ``lookup`` returns None when the venue does not know the client id."""

    async def send(self, order: Order) -> OrderState: ...

    async def lookup(self, order: Order) -> OrderState | None: ...

    async def cancel(self, order: Order) -> OrderState: ...


@dataclass(frozen=True, slots=True)
class VenueExecution:
    """One execution as a venue reports it (websocket or REST): ``trade_id`` is the venue's
    id of the execution, unique per symbol; ``fee_usd`` > 0 paid, < 0 rebate."""

    client_order_id: str
    symbol: str
    side: Side
    trade_id: str
    qty_base: Decimal
    price: Decimal
    fee_usd: Decimal
    liquidity: Liquidity
    ts_ns: int
    venue_order_id: str = ""
    position_side: PositionSide = PositionSide.BOTH
    fee_qty_base: Decimal = Decimal(0)
    """The part of the commission the venue took in the symbol's base asset (base units;
    a spot buy on Bybit, OKX, Binance without BNB). ``fee_usd`` already includes it, valued
    at ``price``; the base asset held moves by ``±qty_base − fee_qty_base``."""


@dataclass(slots=True)
class _Tracked:
    order: Order
    state: OrderState
    filled: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    uncertain: bool = False  # a send may have reached the venue and nobody confirmed it


Sleep = Callable[[float], Awaitable[None]]


class OrderManager:
    """Tracks the orders of one venue (see the module docstring).

    ``venue`` names the fills; ``sleep`` is injectable (tests record waits); ``clock_ns``
    stamps states the manager makes itself."""

    def __init__(
        self,
        transport: OrderTransport,
        venue: str,
        *,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.transport = transport
        self.venue = venue
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.clock_ns = clock_ns
        self._orders: dict[str, _Tracked] = {}
        self._seen: set[tuple[str, str]] = set()
        self._by_venue_id: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.waits_s: list[float] = []
        """Every wait the manager made (rate limits and settles), in order."""

    # ------------------------------------------------------------------ queries
    def state(self, client_order_id: str) -> OrderState | None:
        """The latest known state of an order sent through this manager."""
        t = self._orders.get(client_order_id)
        return None if t is None else t.state

    def order(self, client_order_id: str) -> Order | None:
        """The order as submitted."""
        t = self._orders.get(client_order_id)
        return None if t is None else t.order

    def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        """Orders that may still fill, in submission order."""
        return [
            t.state
            for t in self._orders.values()
            if t.state.status.is_open and (symbol is None or t.order.symbol == symbol)
        ]

    def client_id_of(self, venue_order_id: str) -> str | None:
        """Our client id of a venue order id (learnt from acks and updates)."""
        return self._by_venue_id.get(venue_order_id)

    def restore(
        self,
        order: Order,
        state: OrderState | None = None,
        trade_ids: Iterable[str] = (),
        filled_base: Decimal = Decimal(0),
        filled_notional_usd: Decimal = Decimal(0),
    ) -> None:
        """Re-register an order after a restart (from the ledger): ``state`` None means the
        send was never confirmed, so the next :meth:`submit` of it queries first;
        ``trade_ids`` are executions already booked (they will not be returned again) and
        ``filled_base`` / ``filled_notional_usd`` their totals."""
        cid = order.client_order_id
        st = state if state is not None else self._pending_state(order)
        self._orders[cid] = _Tracked(
            order, st, filled_base, filled_notional_usd, uncertain=state is None
        )
        if st.venue_order_id:
            self._by_venue_id[st.venue_order_id] = cid
        self._seen.update((cid, str(t)) for t in trade_ids)

    # ------------------------------------------------------------------ submit / cancel
    def _pending_state(self, order: Order) -> OrderState:
        return OrderState(
            order.client_order_id,
            order.symbol,
            order.side,
            OrderStatus.NEW,
            to_decimal(order.qty_base),
            Decimal(0),
            price=None if order.price is None else to_decimal(order.price),
            ts_ns=self.clock_ns(),
        )

    async def submit(self, order: Order) -> OrderState:
        """Place ``order`` exactly once (see the module docstring). Returns the venue's
        state (REJECTED with the venue's reason for a business refusal). Raises
        :class:`OutcomeUnknownError` when the order can be neither confirmed nor ruled out, and
        :class:`VenueError` for non-retryable transport errors."""
        cid = order.client_order_id
        lock = self._locks.setdefault(cid, asyncio.Lock())
        async with lock:
            t = self._orders.get(cid)
            if t is not None:
                if t.order != order:
                    raise DuplicateClientIdError(
                        f"client_order_id {cid} already used for another order"
                    )
                if t.uncertain:  # an earlier call could not tell: ask before any send
                    found = await self._lookup(order)
                    t.uncertain = False
                    if found is not None:
                        return self.on_order_update(found)
                elif t.state.venue_order_id or not t.state.status.is_open:
                    return t.state
            else:
                t = self._orders[cid] = _Tracked(order, self._pending_state(order))
            attempt = 0
            while True:
                t.uncertain = True
                try:
                    st = await self.transport.send(order)
                except RateLimitedError as e:  # refused before execution
                    t.uncertain = False
                    attempt = self._give_up_after(attempt, cid, e)
                    await self._wait(self.retry.delay_s(attempt - 1, e.retry_after_s))
                    continue
                except (TransientVenueError, DuplicateClientIdError) as e:
                    await self._wait(self.retry.settle_s)
                    found = await self._lookup(order)  # raises OutcomeUnknownError
                    t.uncertain = False
                    if found is not None:
                        return self.on_order_update(found)
                    attempt = self._give_up_after(attempt, cid, e)
                    continue
                t.uncertain = False
                return self.on_order_update(st)

    def _give_up_after(self, attempt: int, cid: str, err: Exception) -> int:
        """Count a failed attempt; after the last one the order is known NOT to be at the
        venue (the query found nothing, or every send was rate-limited), so it is forgotten
        (a later submit may send it afresh) and :class:`VenueError` raised."""
        attempt += 1
        if attempt >= self.retry.max_attempts:
            self._orders.pop(cid, None)
            raise VenueError(f"order {cid}: not placed after {attempt} attempts ({err})")
        return attempt

    async def _wait(self, seconds: float) -> None:
        self.waits_s.append(seconds)
        await self.sleep(seconds)

    async def _lookup(self, order: Order) -> OrderState | None:
        """Query by client id, retrying transient failures; raise :class:`OutcomeUnknownError`
        when every query failed (then the order must not be resent)."""
        last: Exception | None = None
        for k in range(self.retry.max_attempts):
            try:
                return await self.transport.lookup(order)
            except RateLimitedError as e:
                last = e
                await self._wait(self.retry.delay_s(k, e.retry_after_s))
            except TransientVenueError as e:
                last = e
                await self._wait(self.retry.delay_s(k, None))
        raise OutcomeUnknownError(
            f"order {order.client_order_id}: cannot confirm whether it was placed ({last})"
        )

    async def cancel(self, client_order_id: str) -> OrderState:
        """Cancel an order sent through this manager (retrying rate limits and transient
        errors: a cancel is idempotent). A venue that no longer knows it as open answers
        with its final state."""
        t = self._orders.get(client_order_id)
        if t is None:
            raise VenueError(f"cancel {client_order_id}: unknown client order id")
        if not t.state.status.is_open:
            return t.state
        for k in range(self.retry.max_attempts):
            try:
                return self.on_order_update(await self.transport.cancel(t.order))
            except RateLimitedError as e:
                await self._wait(self.retry.delay_s(k, e.retry_after_s))
            except TransientVenueError:
                await self._wait(self.retry.delay_s(k, None))
                found = await self._lookup(t.order)
                if found is not None and not found.status.is_open:
                    return self.on_order_update(found)
        raise VenueError(f"cancel {client_order_id}: gave up after {self.retry.max_attempts}")

    # ------------------------------------------------------------------ updates
    def on_order_update(self, st: OrderState) -> OrderState:
        """Merge a venue state (ack, query, websocket update): the status never goes back
        (NEW < PARTIALLY_FILLED < terminal); cumulative fill = max(seen, reported) until the
        executions themselves arrive. Returns the merged state."""
        if st.venue_order_id:
            self._by_venue_id[st.venue_order_id] = st.client_order_id
        t = self._orders.get(st.client_order_id)
        if t is None:
            return st
        cur = t.state
        if cur.venue_order_id and _RANK[st.status] < _RANK[cur.status]:
            merged = replace(cur, venue_order_id=cur.venue_order_id or st.venue_order_id)
        elif _RANK[cur.status] == 2 and cur.venue_order_id:
            merged = cur
        else:
            filled = max(st.filled_base, t.filled)
            avg = st.avg_price if st.filled_base >= t.filled else cur.avg_price
            merged = replace(st, filled_base=filled, avg_price=avg)
        t.state = merged
        return merged

    def on_execution(self, ex: VenueExecution) -> Fill | None:
        """Book one execution; None when ``(client_order_id, trade_id)`` was seen before.
        Fills of orders this manager did not send (placed before a restart) are returned
        too, without strategy id or label."""
        key = (ex.client_order_id, ex.trade_id)
        if key in self._seen:
            return None
        self._seen.add(key)
        t = self._orders.get(ex.client_order_id)
        sid = label = ""
        pos_side = ex.position_side
        if t is not None:
            sid, label, pos_side = t.order.strategy_id, t.order.label, t.order.position_side
            t.filled += ex.qty_base
            t.notional += ex.qty_base * ex.price
            qty = t.state.qty_base
            status = OrderStatus.FILLED if t.filled >= qty else OrderStatus.PARTIALLY_FILLED
            if _RANK[t.state.status] == 2 and t.state.status is not OrderStatus.FILLED:
                status = t.state.status  # filled before the cancel/expiry landed
            t.state = replace(
                t.state,
                status=status,
                filled_base=max(t.filled, t.state.filled_base),
                avg_price=t.notional / t.filled,
                venue_order_id=t.state.venue_order_id or ex.venue_order_id,
                ts_ns=ex.ts_ns,
            )
        return Fill(
            ex.client_order_id,
            self.venue,
            ex.symbol,
            ex.side,
            ex.qty_base,
            ex.price,
            ex.fee_usd,
            ex.liquidity,
            ex.ts_ns,
            pos_side,
            Decimal(0),
            sid,
            label,
        )

    def seen(self, client_order_id: str, trade_id: str) -> bool:
        """True when this execution was booked already."""
        return (client_order_id, trade_id) in self._seen
