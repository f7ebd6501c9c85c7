"""GridStrategyV4 (perpdesk issue 7): a volatility-adaptive long/short grid.

``params`` — :class:`GridParams`, every default, validated; ``records`` — trade labels,
open-fill records; ``mechanisms`` — grid geometry, Avellaneda–Stoikov skew, trailing,
circuit breaker, two-stage stop, VaR gate; ``pruning`` — which stale fill to close. The
regime FSM is :mod:`perpdesk.regimes.kama`. All pure; ``strategy`` — :class:`GridStrategyV4`,
the :class:`~perpdesk.strategies.base.Strategy` that wires them onto the event engine.
:mod:`perpdesk.research.grid_backtest` runs it from a catalog and holds
the walk-forward :class:`~perpdesk.research.grid_backtest.GridEvaluator`.
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
from perpdesk.strategies.grid.strategy import GridCounters, GridFeatures, GridStrategyV4

__all__ = [
    "CircuitBreakerStream",
    "FillSide",
    "GridCounters",
    "GridFeatures",
    "GridInputError",
    "GridParams",
    "GridStrategyV4",
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
