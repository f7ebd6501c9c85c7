"""Delta-neutral pair execution: the spot and perp legs of a carry pair, sent together.

A carry pair is long spot + short perp of the same base quantity (entry), or the two
reduce-only closes of such a pair (exit). :func:`execute_pair` sends both legs at once
(``asyncio.gather``), waits for each to reach a final state for at most ``fill_timeout_s``
(an order still working then is cancelled), and compares the base quantities filled:

* equal → hedged, done;
* one leg filled more (the other was rejected, refused by the safeguards, timed out, raised,
  or filled partially) → the excess is exposure without its hedge. For an **entry** the
  excess of the leg that filled more is **unwound** with a reduce-only market order on that
  leg (opposite side); for an **exit** the leg that closed less is **completed** with
  another reduce-only close, of at most what is left of that leg's own quantity (the spot
  leg of a pair whose buy paid its fee in the base asset closes a little less than the
  perp). Attempts repeat (new deterministic id per attempt) until the two legs match,
  ``unwind_timeout_s`` has passed since the first attempt, or ``max_attempts`` orders were
  sent. An order refused by the safeguards ends the repair (sending it again cannot help).

**Backoff.** A refused or unfilled order is not resent at once: after ``n`` consecutive
orders on the leg being repaired that filled nothing (the leg's own first order counts — a
close the venue rejected, e.g. for want of balance), the next waits
``min(backoff_s × 2^(n−1), backoff_max_s)`` (cut to what is left of ``unwind_timeout_s``).
An unwind after a leg that *did* fill (the other leg failed) goes at once: that exposure is
unhedged now. The venue's refusal is written once per distinct reason (the runner's
``venue_reject`` event, deduplicated), not once per attempt.

Every mismatch raises an alert (``alert(kind, message, data)``): ``pair_unwound`` when
repaired within the bounds, ``pair_unhedged`` when it could not be — naming the leg still
unmatched (``leg``, ``symbol``, ``side``), the base quantity left (``qty``) and the venue's
reasons (``reasons``, distinct, in order); the runner's next cycle repairs any leftover
imbalance it finds in the ledger. Quantities are base units (``Decimal``); the excess is
rounded to the lot of the leg that trades it (a remainder below one lot cannot be traded
and is reported).

Ids come from ``cid_of(code)``: ``P``/``S`` for the legs, ``U<leg><n>`` for unwind
attempts and ``C<leg><n>`` for completions, so a restarted runner re-running the same
cycle produces the same ids and the venue/ledger dedupe them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any

from perpdesk.domain import Side
from perpdesk.execution.protocol import OrderState, OrderStatus

__all__ = ["Leg", "PairExecutor", "PairResult", "execute_pair"]

log = logging.getLogger(__name__)
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg: ``code`` is ``P`` (perp) or ``S`` (spot); ``qty_base`` > 0 base units;
    ``lot_base`` the venue's lot size of ``symbol``."""

    code: str
    symbol: str
    side: Side
    qty_base: Decimal
    lot_base: Decimal
    reduce_only: bool = False


Send = Callable[[Leg, str], Awaitable[OrderState | None]]
"""Send ``leg`` under client id ``cid`` through the safeguards; None when they refused it."""
Query = Callable[[str, str], Awaitable[OrderState | None]]
Cancel = Callable[[str, str], Awaitable[OrderState]]
Alert = Callable[[str, str, Mapping[str, Any]], None]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class PairResult:
    """Outcome: ``filled`` base units per leg code (after repairs), ``hedged`` when the
    two legs ended equal to within one lot of the coarser leg, the ``states`` of every
    order sent (by client id), the alerts raised (kinds), the distinct ``reasons`` the venue
    gave for refusing orders and the ``waits`` (seconds) of the backoff."""

    filled: dict[str, Decimal]
    hedged: bool = False
    states: dict[str, OrderState | None] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)


@dataclass(slots=True)
class PairExecutor:
    """Runs pairs with one set of venue callbacks, time bounds (seconds) and the repair
    bounds (module docstring: ``max_attempts`` repair orders per pair, backoff
    ``backoff_s`` doubling up to ``backoff_max_s``). ``sleep`` waits the backoff."""

    send: Send
    query: Query
    cancel: Cancel
    alert: Alert
    fill_timeout_s: float = 10.0
    unwind_timeout_s: float = 30.0
    poll_s: float = 0.05
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    max_attempts: int = 6
    sleep: Sleep = asyncio.sleep

    def backoff(self, n_unfilled: int) -> float:
        """Seconds to wait before the next order on a leg after ``n_unfilled`` (≥ 1)
        consecutive orders on it that filled nothing: ``min(backoff_s·2^(n−1), backoff_max_s)``."""
        return min(self.backoff_s * 2 ** (n_unfilled - 1), self.backoff_max_s)

    async def _leg(self, leg: Leg, cid: str, result: PairResult) -> Decimal:
        """Send one leg and wait (≤ fill_timeout_s) for a final state; base units filled."""
        deadline = time.monotonic() + self.fill_timeout_s
        try:
            st = await asyncio.wait_for(self.send(leg, cid), self.fill_timeout_s)
            while st is not None and st.status.is_open and time.monotonic() < deadline:
                await asyncio.sleep(self.poll_s)
                st = await asyncio.wait_for(
                    self.query(cid, leg.symbol), max(deadline - time.monotonic(), 0.001)
                )
            if st is not None and st.status.is_open:
                st = await self.cancel(cid, leg.symbol)
        except (TimeoutError, Exception) as exc:  # the leg failed: find out what it did
            result.errors.append(f"{cid}: {type(exc).__name__}: {exc}")
            try:
                st = await asyncio.wait_for(self.query(cid, leg.symbol), self.poll_s * 20)
                if st is not None and st.status.is_open:
                    st = await self.cancel(cid, leg.symbol)
            except (TimeoutError, Exception) as exc2:
                result.errors.append(f"{cid} query: {type(exc2).__name__}: {exc2}")
                st = None
        result.states[cid] = st
        if st is not None and st.status is OrderStatus.REJECTED:
            reason = st.reason or "rejected (no reason given)"
            if reason not in result.reasons:
                result.reasons.append(reason)
        return _ZERO if st is None else st.filled_base

    async def run(
        self, perp: Leg, spot: Leg, cid_of: Callable[[str], str], *, is_exit: bool
    ) -> PairResult:
        """Execute one pair (module docstring)."""
        result = PairResult(filled={})
        fp, fs = await asyncio.gather(
            self._leg(perp, cid_of(perp.code), result), self._leg(spot, cid_of(spot.code), result)
        )
        result.filled = {perp.code: fp, spot.code: fs}
        tol = max(perp.lot_base, spot.lot_base)
        if abs(fp - fs) < tol:
            result.hedged = True
            return result
        first = {"P": fp, "S": fs}
        # consecutive orders per leg that filled nothing, the leg's own first order included
        unfilled = {perp.code: int(fp == 0), spot.code: int(fs == 0)}
        t0 = time.monotonic()
        attempt = 0
        leg, side, qty = perp, perp.side, _ZERO
        while True:
            fp, fs = result.filled[perp.code], result.filled[spot.code]
            diff = fp - fs
            if abs(diff) < tol:
                result.hedged = True
                break
            if is_exit:  # complete the leg that closed less
                leg = spot if diff > 0 else perp
                prefix, side = "C", leg.side
            else:  # unwind the excess of the leg that filled more
                leg = perp if diff > 0 else spot
                prefix, side = "U", Side.SELL if leg.side is Side.BUY else Side.BUY
            qty = (abs(diff) / leg.lot_base).to_integral_value(ROUND_HALF_EVEN) * leg.lot_base
            if is_exit:  # a close never exceeds what is left of the leg's own quantity (a
                # spot leg net of a base-asset fee closes less than the perp)
                rest = leg.qty_base - result.filled[leg.code]
                qty = min(qty, (rest / leg.lot_base).to_integral_value(ROUND_DOWN) * leg.lot_base)
            if qty <= 0:
                result.errors.append(f"excess {abs(diff)} below the lot {leg.lot_base}")
                result.hedged = not is_exit or abs(diff) < leg.lot_base
                break
            left = self.unwind_timeout_s - (time.monotonic() - t0)
            if left <= 0 or attempt >= self.max_attempts:
                break
            if unfilled[leg.code]:  # the last order on this leg got nothing: back off
                wait = min(self.backoff(unfilled[leg.code]), left)
                result.waits.append(wait)
                await self.sleep(wait)
                if time.monotonic() - t0 >= self.unwind_timeout_s:
                    break
            fix = Leg(leg.code, leg.symbol, side, qty, leg.lot_base, reduce_only=True)
            fix_cid = cid_of(f"{prefix}{leg.code}{attempt}")
            n_errors = len(result.errors)
            got = await self._leg(fix, fix_cid, result)
            attempt += 1
            if result.states[fix_cid] is None and len(result.errors) == n_errors:
                result.errors.append(f"{fix_cid}: refused by the safeguards")
                break  # refused, not failed: sending it again cannot help
            sign = -1 if prefix == "U" else 1
            result.filled[leg.code] += sign * got
            unfilled[leg.code] = unfilled[leg.code] + 1 if got == 0 else 0
        data: dict[str, Any] = {
            "perp": perp.symbol,
            "spot": spot.symbol,
            "first_fills": {k: str(v) for k, v in first.items()},
            "after": {k: str(v) for k, v in result.filled.items()},
            "attempts": attempt,
            "is_exit": is_exit,
            "reasons": list(result.reasons),
            "errors": result.errors[-5:],
        }
        if result.hedged:
            kind = "pair_unwound"
            msg = (
                f"{perp.symbol}/{spot.symbol}: legs filled {first['P']} / {first['S']}; "
                f"{'completed' if is_exit else 'unwound'} to {result.filled['P']} / "
                f"{result.filled['S']} in {attempt} order(s)"
            )
        else:
            kind = "pair_unhedged"
            data.update(leg=leg.code, symbol=leg.symbol, side=side.value, qty=str(qty))
            why = "; ".join(result.reasons) or "; ".join(result.errors[-2:]) or "no fill"
            msg = (
                f"{perp.symbol}/{spot.symbol}: {side.value} {qty} {leg.symbol} (leg {leg.code}) "
                f"still unmatched after {attempt} repair order(s) in "
                f"{time.monotonic() - t0:.1f} s (bounds: {self.max_attempts} orders, "
                f"{self.unwind_timeout_s} s); legs {result.filled['P']} / "
                f"{result.filled['S']}; venue: {why}; the next cycle repairs"
            )
        log.warning("%s: %s", kind, msg)
        result.alerts.append(kind)
        self.alert(kind, msg, data)
        return result


async def execute_pair(
    executor: PairExecutor, perp: Leg, spot: Leg, cid_of: Callable[[str], str], *, is_exit: bool
) -> PairResult:
    """Functional alias of :meth:`PairExecutor.run`."""
    return await executor.run(perp, spot, cid_of, is_exit=is_exit)
