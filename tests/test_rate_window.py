"""ccxt's client throttle as the live venue configures it (rolling window, see
perpdesk.execution.ccxt_live.make_exchange): an order right after a heavy bookkeeping read
is admitted at once, and the window's budget (10 s / rateLimit weight units) still binds.

The waits asserted are ccxt's own arithmetic, not machine speed: the leaky bucket would hold
the order for 30 × 50 ms = 1.5 s after a weight-30 read (``GET /fapi/v1/income``), and the
window holds a request over budget until the first one leaves the window (~10 s). The
timeouts (1 s to pass, 0.5 s to be held) sit far from both."""

from __future__ import annotations

import asyncio

import pytest

from perpdesk.execution.ccxt_live import RATE_WINDOW_MS, make_exchange


def test_order_after_income_read_is_not_queued_and_the_budget_binds() -> None:
    async def go() -> None:
        ex = make_exchange("binanceusdm", None)
        try:
            assert ex.rateLimit == 50  # ccxt binanceusdm: 50 ms per weight unit
            budget = RATE_WINDOW_MS / ex.rateLimit  # 10,000 / 50 = 200 units per window
            assert budget == 200
            await ex.throttle(30)  # GET /fapi/v1/income (ccxt cost 30)
            await asyncio.wait_for(ex.throttle(1), 1.0)  # POST /fapi/v1/order: at once
            await asyncio.wait_for(ex.throttle(169), 1.0)  # 30 + 1 + 169 = 200: still in
            with pytest.raises(asyncio.TimeoutError):  # 201 > 200: waits for the window
                await asyncio.wait_for(ex.throttle(1), 0.5)
        finally:
            await ex.close()

    asyncio.run(go())


def test_leaky_bucket_would_have_queued_the_order() -> None:
    """The same sequence on ccxt's default (leaky bucket) holds the order 1.5 s: what the
    rolling window removes."""

    async def go() -> None:
        ex = make_exchange("binanceusdm", None)
        ex.rateLimiterAlgorithm = "leakyBucket"
        ex.tokenBucket = None
        ex.init_rest_rate_limiter()
        try:
            await ex.throttle(30)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ex.throttle(1), 0.5)
        finally:
            await ex.close()

    asyncio.run(go())
