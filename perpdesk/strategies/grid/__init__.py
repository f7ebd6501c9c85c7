"""GridStrategyV4 (perpdesk issue 7): a volatility-adaptive long/short grid.

``params`` — :class:`GridParams`, every default, validated; ``records`` — trade labels,
open-fill records; ``mechanisms`` — grid geometry, Avellaneda–Stoikov skew, trailing,
circuit breaker, two-stage stop, VaR gate; ``pruning`` — which stale fill to close. The
regime FSM is :mod:`perpdesk.regimes.kama`. All pure: the strategy class wires them onto the
event engine.
"""

from perpdesk.strategies.grid.mechanisms import (
    CircuitBreakerStream,
    GridInputError,
    StopExit,
    affordable_levels,
    as_reservation_price,
    as_spread,
    breaker_triggers,
    cb_step,
    circuit_breaker,
    grid_levels,
    grid_spacing,
    inventory_q,
    lag1,
    needs_regen,
    opening_sides,
    order_qty_base,
    side_position,
    stop_exits,
    stop_prices,
    trail_shift,
    var95_usd,
    var_blocks,
)
from perpdesk.strategies.grid.params import GridParams
from perpdesk.strategies.grid.pruning import PruneChoice, choose_prune, worst_underwater
from perpdesk.strategies.grid.records import FillSide, OpenFill, TradeLabel

__all__ = [
    "CircuitBreakerStream",
    "FillSide",
    "GridInputError",
    "GridParams",
    "OpenFill",
    "PruneChoice",
    "StopExit",
    "TradeLabel",
    "affordable_levels",
    "as_reservation_price",
    "as_spread",
    "breaker_triggers",
    "cb_step",
    "choose_prune",
    "circuit_breaker",
    "grid_levels",
    "grid_spacing",
    "inventory_q",
    "lag1",
    "needs_regen",
    "opening_sides",
    "order_qty_base",
    "side_position",
    "stop_exits",
    "stop_prices",
    "trail_shift",
    "var95_usd",
    "var_blocks",
    "worst_underwater",
]
