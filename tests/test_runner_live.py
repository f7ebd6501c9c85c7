"""The runner trading live against the loopback fake Binance (spot + USD-M), under faults.

Real parts only: the fake exchange (tests/fake_exchange.py — aiohttp on 127.0.0.1, signed
REST, market and user websockets, one matching engine for spot and futures), ccxt async +
ccxt.pro clients pointed at it (``binance`` for the spot leg, ``binanceusdm`` for the perp,
behind :class:`~perpdesk.execution.ccxt_live.SpotPerpVenue`), the runner with
``enable_live_orders`` on, and the ledger on SQLite and on PostgreSQL (127.0.0.1:5432,
database ``test``, one schema per test, dropped afterwards).

Market: perp bid 49,999.9 / ask 50,000.0, spot bid 50,000.00 / ask 50,000.01, 10 BTC at
each top; one public trade at 50,000 on each market sets the runner's prices. Default
config (bankroll 100,000 USD, carry allocation 50 %, 10 slots, perp leverage 3): a slot is
C = 5,000 USD, each leg X = C·3/4 = 3,750 USD = 0.075 BTC at 50,000. Fees of the fake:
perp taker 0.05 %, spot 0.1 % (in USDT). Signals: 30 % annualised funding (enter / hold),
then 0 % (exit).

After every scenario: the runner is still cycling (every cycle returns "ok"), the fake holds
no two orders with one client id and exactly the orders the scenario needs, the pair is
hedged (|perp + spot| below one lot) and no ``pair_unhedged`` alert was raised (a leg
mismatch was repaired within ``unwind_timeout_s``; scenarios with a mismatch also check its
``pair_unwound`` alert), and the ledger equals the exchange: every fill (trade id, client id, side,
quantity, price, fee), every order's status, and the positions (perp position, spot BTC
balance).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from perpdesk.execution.ccxt_live import LiveVenue, SpotPerpVenue, venue_client_id
from perpdesk.execution.orders import ClientIdFactory, RetryPolicy
from perpdesk.execution.protocol import VenueError
from perpdesk.live.runner import (
    CarrySignal,
    LiveExecutions,
    PairSpec,
    Runner,
    RunnerConfig,
    _cycle_of,
    client_order_id,
)
from perpdesk.risk.safeguards import Limits
from perpdesk.store import Ledger, init_db
from perpdesk.store.models import EventRow, FillRow, PositionRow
from perpdesk.strategies.carry import CarryRules
from tests.fake_exchange import FakeBinanceUSDM, Fault
from tests.test_store import drop_schema, pg_schema_url

D = Decimal
KEY, SECRET = "live-test-key-4e1f", "live-test-secret-93ab07"
ENV = {"PERPDESK_BINANCE_API_KEY": KEY, "PERPDESK_BINANCE_API_SECRET": SECRET}
PAIRS = (PairSpec("BTCUSDT", "BTCUSDT.SPOT"),)
SYMS = ["BTCUSDT", "BTCUSDT.SPOT"]
LIMITS = Limits(enable_live_orders=True, live_layers=frozenset({"carry"}))
SPOT_ORDER, PERP_ORDER = "/api/v3/order", "/fapi/v1/order"
LEDGER_STATUS = {
    "NEW": "open",
    "PARTIALLY_FILLED": "partially_filled",
    "FILLED": "filled",
    "CANCELED": "canceled",
    "EXPIRED": "expired",
}


class Signals:
    """Annualised funding per cycle (index = cycle number, from 1; the last value
    repeats)."""

    def __init__(self, ann_pct: list[float]) -> None:
        self.ann_pct = ann_pct

    async def signals(self, cycle: int) -> dict[str, CarrySignal]:
        return {"BTCUSDT": CarrySignal(self.ann_pct[min(cycle, len(self.ann_pct) - 1)], 1e9)}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path):
    """The ledger on SQLite and on PostgreSQL (the scenarios that exercise the ledger most:
    the full cycle with a restart, the rebuild, an unwind, a partial fill)."""
    if request.param == "sqlite":
        u = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        init_db(u)
        yield u
        return
    u, schema = pg_schema_url()
    try:
        init_db(u)
        yield u
    finally:
        drop_schema(schema)


@pytest.fixture
def lite(tmp_path: Path) -> str:
    """The ledger on SQLite only (the transport-fault scenarios; keeps the file fast)."""
    u = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    init_db(u)
    return u


def _fake(spot_fee_asset: str = "quote") -> FakeBinanceUSDM:
    f = FakeBinanceUSDM(
        int(time.time() * 1000), api_key=KEY, api_secret=SECRET, spot_fee_asset=spot_fee_asset
    )
    f.start()
    f.set_book("BTCUSDT", "49999.9", "10", "50000.0", "10", publish=False)
    f.set_book("BTCUSDT", "50000.00", "10", "50000.01", "10", publish=False, spot=True)
    return f


@pytest.fixture
def fake():
    f = _fake()
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture
def fake_base_fee():
    """The fake charging a spot buy's commission in BTC (Binance without BNB)."""
    f = _fake("base")
    try:
        yield f
    finally:
        f.stop()


class Live:
    """One runner process: the two ccxt venues, the ledger, the runner. ``waits`` records
    every wait the venues asked for (a Retry-After of 7 s is recorded as 7 but slept as at
    most 0.25 s, so the test stays fast)."""

    def __init__(self, fake: FakeBinanceUSDM, url: str, tmp: Path, ann: list[float]) -> None:
        self.fake, self.url, self.tmp, self.ann = fake, url, tmp, ann
        self.waits: list[float] = []

    async def sleep(self, s: float) -> None:
        self.waits.append(s)
        await asyncio.sleep(min(s, 0.25))

    def _venue(self, exchange: str, ws: str, ws_api: str | None) -> LiveVenue:
        v = LiveVenue.from_env(
            exchange,
            environ=ENV,
            dotenv_path=None,
            api_url=self.fake.url,
            ws_url=ws,
            ws_api_url=ws_api,
            timeout_ms=200,
            recv_window_ms=200,
            enable_rate_limit=False,  # ccxt's client throttle only slows a loopback test
            retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05, settle_s=0.25),
            sleep=self.sleep,
            poll_interval_s=0.1,
            reconnect_delay_s=0.05,
            scan_interval_s=0.05,
        )
        v.ex.timeout_on_exit = 0
        return v

    async def __aenter__(self) -> Live:
        f = self.fake
        self.perp = self._venue("binanceusdm", f.ws_url, None)
        self.spot = self._venue("binance", f.spot_ws_url, f.spot_ws_api_url)
        self.venue = SpotPerpVenue(self.spot, self.perp)
        await self.venue.connect()
        self.ledger = Ledger(self.url)
        cfg = RunnerConfig(
            mode="live",
            run_id="L",
            pairs=PAIRS,
            cycle_s=0.01,
            cycle_timeout_s=10.0,
            leg_fill_timeout_s=2.0,
            unwind_timeout_s=3.0,
            poll_s=0.01,
            require_warm_vpin=False,
            snapshot_path=self.tmp / "state.json",
        )
        self.runner = Runner(
            cfg,
            LiveExecutions(self.venue, SYMS),
            self.ledger,
            LIMITS,
            CarryRules(),
            Signals(self.ann),
        )
        await self.runner.start()
        await self.prices("50000")
        return self

    async def prices(self, px: str) -> None:
        """Print one trade at ``px`` on each market and wait until the runner saw both."""
        f = self.fake
        assert await asyncio.to_thread(f.wait_subscribed, "btcusdt@trade")
        assert await asyncio.to_thread(f.wait_subscribed, "btcusdt@trade", spot=True)
        f.trade("BTCUSDT", px, "0.001", False)
        f.trade("BTCUSDT", px, "0.001", False, spot=True)
        want = float(px)
        await until(lambda: all(self.runner.market.price.get(s) == want for s in SYMS))

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.stop()
        await self.venue.close()
        self.ledger.close()

    async def cycles(self, ks: range) -> list[str]:
        return [await self.runner.run_cycle(k) for k in ks]


async def until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- checks


def events(led: Ledger, kind: str) -> list[dict[str, Any]]:
    with Session(led.engine) as s:
        rows = s.scalars(select(EventRow.data).where(EventRow.kind == kind).order_by(EventRow.id))
        return [json.loads(d) if d else {} for d in rows]


def positions(led: Ledger) -> dict[str, D]:
    out: dict[str, D] = {}
    for p in led.status().positions:
        out[p.symbol] = out.get(p.symbol, D(0)) + p.qty_base
    return {s: q for s, q in out.items() if q != 0}


def fake_positions(fake: FakeBinanceUSDM) -> dict[str, D]:
    out = {s: q for s, (q, _) in fake.positions.items() if q != 0}
    btc = fake.spot_balances.get("BTC", D(0))
    if btc != 0:
        out["BTCUSDT.SPOT"] = btc
    return out


def fake_fills(fake: FakeBinanceUSDM) -> dict[tuple[str, str], tuple[str, str, D, D, D]]:
    """Every execution the fake made, keyed like the ledger: (symbol, trade id) →
    (client id, side, qty, price, fee in USD: a commission in BTC valued at the price)."""
    cid = {o["orderId"]: o["clientOrderId"] for o in fake.all_orders()}
    out = {}
    for t in fake.user_trades:
        side = "buy" if t["side"] == "BUY" else "sell"
        out[(t["symbol"], str(t["id"]))] = (
            cid[t["orderId"]],
            side,
            D(t["qty"]),
            D(t["price"]),
            D(t["commission"]),
        )
    for t in fake.spot_trades:
        fee = D(t["commission"])
        if t["commissionAsset"] == "BTC":
            fee *= D(t["price"])
        out[(t["symbol"] + ".SPOT", str(t["id"]))] = (
            cid[t["orderId"]],
            "buy" if t["isBuyer"] else "sell",
            D(t["qty"]),
            D(t["price"]),
            fee,
        )
    return out


def ledger_fills(led: Ledger) -> dict[tuple[str, str], tuple[str, str, D, D, D]]:
    with Session(led.engine) as s:
        rows = s.scalars(select(FillRow)).all()
        return {
            (r.symbol, r.trade_id): (
                r.client_order_id,
                r.side,
                D(r.qty_base),
                D(r.price),
                D(r.fee_usd),
            )
            for r in rows
        }


def check_consistent(live: Live, n_orders: int) -> None:
    """The invariants of every scenario (module docstring)."""
    fake, led = live.fake, live.ledger
    orders = fake.all_orders()
    counts = Counter(o["clientOrderId"] for o in orders)
    assert all(n == 1 for n in counts.values()), counts
    assert len(orders) == n_orders, [o["clientOrderId"] for o in orders]
    assert ledger_fills(led) == fake_fills(fake)
    assert positions(led) == fake_positions(fake)
    for o in orders:
        row = led.order(o["clientOrderId"])
        assert row is not None and row.status == LEDGER_STATUS[o["status"]], o["clientOrderId"]
    q = positions(led)
    assert abs(q.get("BTCUSDT", D(0)) + q.get("BTCUSDT.SPOT", D(0))) < D("0.001")
    # every mismatch was repaired within the pair executor's bound (else pair_unhedged)
    assert events(led, "pair_unhedged") == []
    assert led.audit().ok


def cids(fake: FakeBinanceUSDM) -> list[str]:
    return [o["clientOrderId"] for o in fake.all_orders()]


# --------------------------------------------------------------------------- scenarios


def test_enter_hold_exit_and_a_restart_reconciles_clean(
    fake: FakeBinanceUSDM, url: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with Live(fake, url, tmp_path, [30, 30, 30, 0]) as lv:
            assert await lv.cycles(range(1, 2)) == ["ok"]
            assert positions(lv.ledger) == {"BTCUSDT": D("-0.075"), "BTCUSDT.SPOT": D("0.075")}
            # funding on the short 0.075: −(−0.075) × 50,000 × 0.0001 = 0.375 USDT received
            t_ms = int(time.time() * 1000)
            assert fake.settle_funding("BTCUSDT", "0.0001", "50000", t_ms) == D("0.375")
            assert await lv.cycles(range(2, 4)) == ["ok", "ok"]  # hold; exit
            assert positions(lv.ledger) == {}
            assert cids(fake) == [
                "L-1-P-BTCUSDT",
                "L-1-S-BTCUSDT",
                "L-3-P-BTCUSDT",
                "L-3-S-BTCUSDT",
            ]
            fills = sorted(ledger_fills(lv.ledger).values())
            assert fills == [
                # 0.075 × 49,999.9 × 0.0005 = 1.87499625
                ("L-1-P-BTCUSDT", "sell", D("0.075"), D("49999.9"), D("1.87499625")),
                # 0.075 × 50,000.01 × 0.001 = 3.75000075
                ("L-1-S-BTCUSDT", "buy", D("0.075"), D("50000.01"), D("3.75000075")),
                ("L-3-P-BTCUSDT", "buy", D("0.075"), D("50000.0"), D("1.875")),
                ("L-3-S-BTCUSDT", "sell", D("0.075"), D("50000.00"), D("3.75")),
            ]
            with Session(lv.ledger.engine) as s:
                from perpdesk.store.models import FundingPaymentRow

                amounts = list(s.scalars(select(FundingPaymentRow.amount_usd)))
            assert amounts == [D("0.375")]
            check_consistent(lv, 4)
            assert events(lv.ledger, "pair_unwound") == events(lv.ledger, "pair_unhedged") == []

        # a new process on the same ledger and exchange: nothing to insert, no mismatch
        async with Live(fake, url, tmp_path, [0]) as lv2:
            rec = events(lv2.ledger, "reconciled")[-1]
            assert rec["fills_inserted"] == 0 and rec["mismatches"] == 0
            assert await lv2.cycles(range(4, 5)) == ["ok"]
            check_consistent(lv2, 4)

    asyncio.run(main())


def test_a_lost_ledger_is_rebuilt_from_the_exchange_with_client_ids(
    fake: FakeBinanceUSDM, url: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with Live(fake, url, tmp_path, [30]) as lv:
            assert await lv.cycles(range(1, 2)) == ["ok"]
        # the same exchange, an empty ledger (another schema / file) and a fresh process:
        # the trade lists carry no client id, the venue fetches each order once to learn it
        other = f"sqlite:///{tmp_path / 'rebuilt.sqlite'}"
        init_db(other)
        async with Live(fake, other, tmp_path, [30]) as lv2:
            rec = events(lv2.ledger, "reconciled")[-1]
            assert rec["fills_inserted"] == 2
            got = sorted(c for c, *_ in ledger_fills(lv2.ledger).values())
            assert got == ["L-1-P-BTCUSDT", "L-1-S-BTCUSDT"]
            assert positions(lv2.ledger) == fake_positions(fake)
            gets = [r for r in fake.requests if r.method == "GET" and r.path.endswith("/order")]
            assert sorted(r.query.get("orderId", "") for r in gets) == sorted(
                str(o["orderId"]) for o in fake.all_orders()
            )

    asyncio.run(main())


def test_lost_response_on_the_spot_leg_is_adopted_not_resent(
    fake: FakeBinanceUSDM, lite: str, tmp_path: Path
) -> None:
    """The spot POST executes but its answer arrives after the client's 200 ms timeout."""

    async def main() -> None:
        async with Live(fake, lite, tmp_path, [0, 30, 30, 0]) as lv:
            fake.inject(SPOT_ORDER, Fault.lost_response(0.35), method="POST")
            assert await lv.cycles(range(1, 4)) == ["ok"] * 3
            posts = [r for r in fake.requests_to(SPOT_ORDER) if r.method == "POST"]
            assert [r.query["newClientOrderId"] for r in posts] == [
                "L-1-S-BTCUSDT",
                "L-3-S-BTCUSDT",
            ]
            assert 0.25 in lv.waits  # the settle wait before the query
            check_consistent(lv, 4)
            assert events(lv.ledger, "pair_unwound") == []

    asyncio.run(main())


def test_timeout_before_execution_on_the_perp_exit_is_resent_once(
    fake: FakeBinanceUSDM, lite: str, tmp_path: Path
) -> None:
    """The perp close is held past its recvWindow (the exchange refuses it, -1021): the
    query finds nothing and the same client id is sent again — one order."""

    async def main() -> None:
        async with Live(fake, lite, tmp_path, [0, 30, 0]) as lv:
            assert await lv.cycles(range(1, 2)) == ["ok"]
            fake.inject(PERP_ORDER, Fault.delay(0.3), method="POST")
            assert await lv.cycles(range(2, 4)) == ["ok", "ok"]
            posts = [r for r in fake.requests_to(PERP_ORDER) if r.method == "POST"]
            assert [r.query["newClientOrderId"] for r in posts] == [
                "L-1-P-BTCUSDT",
                "L-2-P-BTCUSDT",
                "L-2-P-BTCUSDT",
            ]
            assert positions(lv.ledger) == {}
            check_consistent(lv, 4)

    asyncio.run(main())


def test_429_and_418_retry_after_on_both_legs(
    fake: FakeBinanceUSDM, lite: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with Live(fake, lite, tmp_path, [0, 30, 0]) as lv:
            fake.inject(PERP_ORDER, Fault.rate_limited(7), method="POST")
            fake.inject(SPOT_ORDER, Fault.banned(30), method="POST")
            fake.inject("/fapi/v1/userTrades", Fault.rate_limited(3))
            assert await lv.cycles(range(1, 3)) == ["ok", "ok"]
            # Retry-After is honoured (backoff 0.01·2^k is smaller): 7, 30 and 3 s
            assert {7.0, 30.0, 3.0} <= set(lv.waits)
            for path in (PERP_ORDER, SPOT_ORDER):
                posts = [r.query["newClientOrderId"] for r in fake.requests_to(path)]
                assert Counter(posts)[posts[0]] == 2  # refused once, sent again
            check_consistent(lv, 4)

    asyncio.run(main())


def test_5xx_on_the_spot_leg_is_queried_then_resent(
    fake: FakeBinanceUSDM, lite: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with Live(fake, lite, tmp_path, [0, 30, 0]) as lv:
            fake.inject(SPOT_ORDER, Fault.server_error(503), method="POST")
            fake.inject("/api/v3/myTrades", Fault.server_error(502), Fault.truncated())
            assert await lv.cycles(range(1, 3)) == ["ok", "ok"]
            methods = [(r.method, r.fault) for r in fake.requests_to(SPOT_ORDER)]
            assert methods[:3] == [("POST", "status"), ("GET", None), ("POST", None)]
            check_consistent(lv, 4)

    asyncio.run(main())


def test_second_leg_that_fails_is_unwound_within_the_bound_and_alerted(
    fake: FakeBinanceUSDM, url: str, tmp_path: Path
) -> None:
    """Every spot send fails (503, three attempts, the queries find nothing): the perp leg
    filled alone and is closed by a reduce-only buy; the next cycle enters normally."""

    async def main() -> None:
        async with Live(fake, url, tmp_path, [30, 30]) as lv:
            fake.inject(SPOT_ORDER, *[Fault.server_error(503)] * 3, method="POST")
            assert await lv.cycles(range(1, 2)) == ["ok"]
            # pair_unwound (not pair_unhedged): repaired within unwind_timeout_s
            assert events(lv.ledger, "pair_unhedged") == []
            (alert,) = events(lv.ledger, "pair_unwound")
            assert {k: D(v) for k, v in alert["first_fills"].items()} == {"P": D("0.075"), "S": 0}
            assert {k: D(v) for k, v in alert["after"].items()} == {"P": 0, "S": 0}
            assert positions(lv.ledger) == {}
            assert lv.ledger.order("L-1-S-BTCUSDT").status in ("new", "rejected")
            assert await lv.cycles(range(2, 3)) == ["ok"]
            assert positions(lv.ledger) == {"BTCUSDT": D("-0.075"), "BTCUSDT.SPOT": D("0.075")}
            assert cids(fake) == [
                "L-1-P-BTCUSDT",
                "L-1-UP0-BTCUSDT",
                "L-2-P-BTCUSDT",
                "L-2-S-BTCUSDT",
            ]
            check_consistent(lv, 4)

    asyncio.run(main())


def test_spot_reject_unwinds_the_perp_and_the_runner_keeps_cycling(
    fake: FakeBinanceUSDM, lite: str, tmp_path: Path
) -> None:
    async def main() -> None:
        # 1,000 USDT on the spot account < 0.075 × 50,000.01 × 1.001: -2010 insufficient
        fake.spot_balances["USDT"] = D("1000")
        async with Live(fake, lite, tmp_path, [30]) as lv:
            assert await lv.cycles(range(1, 2)) == ["ok"]
            assert [e["client_order_id"] for e in events(lv.ledger, "venue_reject")] == [
                "L-1-S-BTCUSDT"
            ]
            assert lv.ledger.order("L-1-S-BTCUSDT").status == "rejected"
            assert len(events(lv.ledger, "pair_unwound")) == 1
            assert positions(lv.ledger) == {}
            fake.spot_balances["USDT"] = D("10000")
            assert await lv.cycles(range(2, 3)) == ["ok"]
            assert cids(fake) == [
                "L-1-P-BTCUSDT",
                "L-1-UP0-BTCUSDT",
                "L-2-P-BTCUSDT",
                "L-2-S-BTCUSDT",
            ]
            check_consistent(lv, 4)

    asyncio.run(main())


def test_partial_fill_of_the_perp_leg_unwinds_the_spot_excess(
    fake: FakeBinanceUSDM, url: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with Live(fake, url, tmp_path, [0, 30, 30, 0]) as lv:
            fake.partial_next["BTCUSDT"] = D("0.03")  # thin book: the market sell gets 0.03
            assert await lv.cycles(range(1, 2)) == ["ok"]
            # spot bought 0.075, perp sold 0.03: sell the spot excess 0.045 at the bid
            assert positions(lv.ledger) == {"BTCUSDT": D("-0.03"), "BTCUSDT.SPOT": D("0.03")}
            (alert,) = events(lv.ledger, "pair_unwound")
            assert {k: D(v) for k, v in alert["first_fills"].items()} == {
                "P": D("0.03"),
                "S": D("0.075"),
            }
            assert lv.ledger.order("L-1-P-BTCUSDT").status == "expired"
            assert await lv.cycles(range(2, 4)) == ["ok", "ok"]  # hold, exit 0.03 / 0.03
            assert positions(lv.ledger) == {}
            assert cids(fake) == [
                "L-1-P-BTCUSDT",
                "L-1-S-BTCUSDT",
                "L-1-US0-BTCUSDT",
                "L-3-P-BTCUSDT",
                "L-3-S-BTCUSDT",
            ]
            sells = sorted(
                (c, q) for c, side, q, *_ in ledger_fills(lv.ledger).values() if side == "sell"
            )
            assert sells == [
                ("L-1-P-BTCUSDT", D("0.03")),
                ("L-1-US0-BTCUSDT", D("0.045")),
                ("L-3-S-BTCUSDT", D("0.03")),
            ]
            check_consistent(lv, 5)

    asyncio.run(main())


def test_partial_fill_of_the_spot_exit_is_completed(
    fake: FakeBinanceUSDM, lite: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with Live(fake, lite, tmp_path, [0, 30, 0]) as lv:
            assert await lv.cycles(range(1, 2)) == ["ok"]
            fake.spot_partial_next["BTCUSDT"] = D("0.05")  # the spot close gets 0.05 of 0.075
            assert await lv.cycles(range(2, 3)) == ["ok"]
            # the exit is completed with another reduce-only sell of 0.025
            assert positions(lv.ledger) == {}
            assert cids(fake)[-1] == "L-2-CS0-BTCUSDT"
            check_consistent(lv, 5)

    asyncio.run(main())


def test_websocket_drops_do_not_stop_the_runner(
    fake: FakeBinanceUSDM, lite: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with Live(fake, lite, tmp_path, [0, 30, 30, 0]) as lv:
            assert await lv.cycles(range(1, 2)) == ["ok"]
            assert await asyncio.to_thread(fake.drop_market_streams) >= 2
            await asyncio.to_thread(fake.drop_user_streams, refuse=False)
            await until(lambda: lv.perp.stream_errors >= 1 and lv.spot.stream_errors >= 1)
            await lv.prices("50100")  # resubscribed: new prices reach the runner
            assert await lv.cycles(range(2, 4)) == ["ok", "ok"]
            fills = ledger_fills(lv.ledger)
            # the exit of cycle 3 traded at the (unchanged) book
            assert {f[0] for f in fills.values()} >= {"L-3-P-BTCUSDT", "L-3-S-BTCUSDT"}
            check_consistent(lv, 4)

    asyncio.run(main())


def test_duplicate_and_out_of_order_messages_book_each_fill_once(
    fake: FakeBinanceUSDM, lite: str, tmp_path: Path
) -> None:
    """Own-trade lists (REST) answer every row twice, newest first; the user streams send
    every message twice and hold some back; a second consumer reads the fill streams."""

    async def main() -> None:
        async with Live(fake, lite, tmp_path, [0, 30, 0]) as lv:
            fake.trade_lists_dup_reversed = True
            fake.user_ws_duplicate = True
            fake.hold_user_messages(4)
            streamed: list[Any] = []

            async def consume() -> None:
                async for f in lv.venue.fills():
                    streamed.append(f)

            task = asyncio.create_task(consume())
            # trades made before a user stream is up reach only the REST path
            assert await asyncio.to_thread(fake.wait_user_connections, 1)
            assert await asyncio.to_thread(fake.wait_spot_user_connection)
            assert await lv.cycles(range(1, 3)) == ["ok", "ok"]
            await until(lambda: len(streamed) >= 4)
            await asyncio.sleep(0.2)
            task.cancel()
            assert len(ledger_fills(lv.ledger)) == 4
            assert sorted(f.client_order_id for f in streamed) == sorted(
                c for c, *_ in fake_fills(fake).values()
            )
            check_consistent(lv, 4)

    asyncio.run(main())


# --------------------------------------------------------------------------- base-asset fees


def test_a_spot_fee_in_btc_is_netted_and_a_restart_reconciles_clean(
    fake_base_fee: FakeBinanceUSDM, url: str, tmp_path: Path
) -> None:
    """Binance without BNB: the spot buy of 0.075 BTC pays 0.1 % of it in BTC (0.000075),
    so the account holds 0.074925. The ledger's spot position is that net quantity; the exit
    sells it on the spot lot (0.00001): 0.07492, leaving 0.000005 BTC on both sides."""
    fake = fake_base_fee

    async def main() -> None:
        async with Live(fake, url, tmp_path, [0, 30, 0]) as lv:
            assert lv.runner.id_venues == ("binanceusdm", "binance")
            assert await lv.cycles(range(1, 2)) == ["ok"]
            assert fake.spot_balances["BTC"] == D("0.074925")
            assert positions(lv.ledger) == {"BTCUSDT": D("-0.075"), "BTCUSDT.SPOT": D("0.074925")}
            assert await lv.cycles(range(2, 3)) == ["ok"]
            spot_sells = [o for o in fake.all_orders() if o["clientOrderId"] == "L-2-S-BTCUSDT"]
            assert [D(o["origQty"]) for o in spot_sells] == [D("0.07492")]
            # 0.074925 − 0.07492 = 0.000005 BTC left, in the ledger exactly as on the exchange
            assert fake.spot_balances["BTC"] == D("0.000005")
            assert positions(lv.ledger) == {"BTCUSDT.SPOT": D("0.000005")}
            with Session(lv.ledger.engine) as s:
                spot = {
                    r.client_order_id: (D(r.fee_usd), D(r.fee_qty_base))
                    for r in s.scalars(select(FillRow).where(FillRow.symbol == "BTCUSDT.SPOT"))
                }
                cash = s.scalars(
                    select(PositionRow.net_cash_usd).where(PositionRow.symbol == "BTCUSDT.SPOT")
                ).one()
            assert spot == {
                # 0.000075 BTC × 50,000.01 = 3.75000075 USD, paid in BTC
                "L-1-S-BTCUSDT": (D("3.75000075"), D("0.000075")),
                # the sell's fee in USDT: 0.07492 × 50,000.00 × 0.1 % = 3.746
                "L-2-S-BTCUSDT": (D("3.746"), D(0)),
            }
            # the fee counts once: the spot leg's cash is the spot account's USDT change,
            # −0.075 × 50,000.01 + 0.07492 × 50,000 − 3.746 = −7.74675 (the BTC fee is the
            # 0.000075 BTC the position no longer holds)
            assert D(cash) == fake.spot_balances["USDT"] - 10000 == D("-7.74675")
            check_consistent(lv, 4)
            assert events(lv.ledger, "pair_unwound") == []

        async with Live(fake, url, tmp_path, [0]) as lv2:
            rec = events(lv2.ledger, "reconciled")[-1]
            assert rec["fills_inserted"] == 0 and rec["mismatches"] == 0
            assert events(lv2.ledger, "reconcile_mismatch") == []
            assert await lv2.cycles(range(3, 4)) == ["ok"]  # 0.000005 BTC: below a lot
            assert positions(lv2.ledger) == {"BTCUSDT.SPOT": fake.spot_balances["BTC"]}
            check_consistent(lv2, 4)

    asyncio.run(main())


# --------------------------------------------------------------------------- refused closes

INSUFFICIENT = "Account has insufficient balance for requested action."


def test_a_refused_spot_close_backs_off_is_capped_and_alerted_once(
    fake: FakeBinanceUSDM, lite: str, tmp_path: Path
) -> None:
    """The exchange refuses every spot sell of the exit (-2010): the perp closes, the spot
    close is retried max_repair_attempts = 6 times with backoff 0.5 · 2^(n−1) s capped at
    8 s (0.5, 1, 2, 4, 8, 8), the refusal is one event, and one pair_unhedged names the
    leg, the quantity and the venue's reason. The next cycle repairs the spot leg."""

    async def main() -> None:
        async with Live(fake, lite, tmp_path, [0, 30, 0, 0]) as lv:
            waits: list[float] = []

            async def sleep(s: float) -> None:
                waits.append(s)

            lv.runner.pairs.sleep = sleep
            lv.runner.pairs.unwind_timeout_s = 600.0  # the attempt cap is the bound here
            assert await lv.cycles(range(1, 2)) == ["ok"]
            refusal = Fault.binance_error(400, -2010, INSUFFICIENT)
            fake.inject(SPOT_ORDER, *[refusal] * 7, method="POST")
            assert await lv.cycles(range(2, 3)) == ["ok"]
            posts = [r.query["newClientOrderId"] for r in fake.requests_to(SPOT_ORDER)]
            assert posts[1:] == ["L-2-S-BTCUSDT"] + [f"L-2-CS{n}-BTCUSDT" for n in range(6)]
            assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
            rejects = events(lv.ledger, "venue_reject")
            assert len(rejects) == 1 and INSUFFICIENT in rejects[0]["reason"]
            assert rejects[0]["client_order_id"] == "L-2-S-BTCUSDT"
            (alert,) = events(lv.ledger, "pair_unhedged")
            assert (alert["leg"], alert["symbol"], alert["side"]) == ("S", "BTCUSDT.SPOT", "sell")
            assert D(alert["qty"]) == D("0.075") and alert["attempts"] == 6
            assert len(alert["reasons"]) == 1 and INSUFFICIENT in alert["reasons"][0]
            for n in range(6):
                assert lv.ledger.order(f"L-2-CS{n}-BTCUSDT").status == "rejected"
            assert positions(lv.ledger) == {"BTCUSDT.SPOT": D("0.075")}
            # the next cycle closes the unhedged spot: one reduce-only sell
            assert await lv.cycles(range(3, 5)) == ["ok", "ok"]
            assert positions(lv.ledger) == {} == fake_positions(fake)
            assert cids(fake) == [
                "L-1-P-BTCUSDT",
                "L-1-S-BTCUSDT",
                "L-2-P-BTCUSDT",
                "L-3-RS-BTCUSDT",
            ]
            assert ledger_fills(lv.ledger) == fake_fills(fake)
            assert lv.ledger.audit().ok

    asyncio.run(main())


def test_an_unhedged_spot_net_of_a_btc_fee_is_repaired_on_the_lot_grid(
    fake_base_fee: FakeBinanceUSDM, lite: str, tmp_path: Path
) -> None:
    """The exit's spot close is refused (the attempt cap, then pair_unhedged); the next
    cycle's repair sells the net holding 0.074925 BTC rounded down to the lot 0.00001:
    0.07492 (an off-grid 0.074925 would be refused before sending, every cycle)."""
    fake = fake_base_fee

    async def main() -> None:
        async with Live(fake, lite, tmp_path, [0, 30, 0, 0]) as lv:

            async def sleep(s: float) -> None:
                pass

            lv.runner.pairs.sleep = sleep
            lv.runner.pairs.unwind_timeout_s = 600.0
            assert await lv.cycles(range(1, 2)) == ["ok"]
            refusal = Fault.binance_error(400, -2010, INSUFFICIENT)
            fake.inject(SPOT_ORDER, *[refusal] * 7, method="POST")
            assert await lv.cycles(range(2, 3)) == ["ok"]
            (alert,) = events(lv.ledger, "pair_unhedged")
            assert D(alert["qty"]) == D("0.07492")  # the exit sold the net holding
            assert await lv.cycles(range(3, 5)) == ["ok", "ok"]
            (repair,) = [o for o in fake.all_orders() if o["clientOrderId"] == "L-3-RS-BTCUSDT"]
            assert (repair["status"], D(repair["executedQty"])) == ("FILLED", D("0.07492"))
            assert positions(lv.ledger) == {"BTCUSDT.SPOT": D("0.000005")} == fake_positions(fake)
            assert ledger_fills(lv.ledger) == fake_fills(fake)
            assert lv.ledger.audit().ok

    asyncio.run(main())


# --------------------------------------------------------------------------- client ids


def test_runner_client_ids_fit_every_venue_and_are_deterministic() -> None:
    """A long run id, a 4-digit cycle and 1000PEPEUSDT: the plain id
    ``carry-eu.prod_07-1234-UP0-1000PEPEUSDT`` has 37 characters (Binance takes 36) and 43
    on OKX (each of its 6 ``-``, ``.``, ``_`` takes 2; OKX takes 32): every id fits
    Binance, Bybit and OKX as sent, is the same for the same inputs, differs between legs,
    and gives its cycle back."""
    run, venues = "carry-eu.prod_07", ("okx", "bybit", "binanceusdm")
    legs = ["P", "S", "UP0", "US5", "CP12", "CS3", "RP", "RS"]
    got = {}
    for leg in legs:
        cid = client_order_id(run, 1234, "1000PEPEUSDT", leg, venues)
        assert cid == client_order_id(run, 1234, "1000PEPEUSDT", leg, venues)
        assert len(venue_client_id("okx", cid)) <= 32
        assert len(venue_client_id("bybit", cid)) <= 36
        assert len(venue_client_id("binanceusdm", cid)) <= 36
        assert _cycle_of(run, cid) == 1234
        got[leg] = cid
    assert len(set(got.values())) == len(legs)
    # for Binance alone the run id stays readable (only the symbol is hashed)
    binance = client_order_id(run, 1234, "1000PEPEUSDT", "UP0")
    assert binance.startswith("carry-eu.prod_07-1234-UP0-") and len(binance) == 36
    # short ids are unchanged on every venue
    assert client_order_id("L", 1, "BTCUSDT", "P", venues) == "L-1-P-BTCUSDT"
    # the order manager's ids: a prefix must leave room for a 10-digit counter as encoded
    assert ClientIdFactory("carry.r7", venues=venues).next() == "carry.r7-1"
    # 20 characters, 5 of them escaped on OKX: 25 + "Qh" + 10 digits = 37 > 32
    with pytest.raises(VenueError, match="too long for okx"):
        ClientIdFactory("carry-eu.prod_07.x-y", venues=venues)
    assert ClientIdFactory("carry-eu.prod_07.x-y").next() == "carry-eu.prod_07.x-y-1"
