"""`perpdesk run --paper --exchange bybit|okx` on live market data, end to end against the
loopback fakes of tests/fake_venues.py (Bybit v5 / OKX v5 REST + public websockets on
127.0.0.1), modelled on tests/test_paper_live.py (the Binance fake).

The runner runs as a real subprocess of the CLI, with no API key (the hidden ``--api-url``,
``--ws-url``, ``--spot-api-url``, ``--spot-ws-url`` flags point it at the fake; Bybit's
``ws_url`` is the host, OKX's the ``/ws/v5`` base). Signals come from the venue's mark
stream (``runner.signals = "mark"``): Bybit's linear ``tickers.BTCUSDT`` topic, OKX's
``mark-price`` + ``funding-rate`` channels. A publisher thread plays a flat live market:
every 20 ms a perp trade of 0.1 BTC at 50,000 (aggressor alternating, balanced flow; OKX: 10
contracts of 0.01 BTC) and a spot trade of 0.01 BTC at 50,000; every 100 ms the perp book
49,999.9 / 50,000.0 and the spot book 50,000.0 / 50,000.1 (10 BTC a side; both venues' BTC
spot tick is 0.1) and the mark 50,000 with the predicted funding rate 0.0003 for the next
settlement on a 2 s grid (Bybit: one ``tickers.BTCUSDT`` delta; OKX: ``mark-price`` and
``funding-rate`` messages; the announced times are recorded).

Sizing by hand (default config: bankroll 100,000 USD, carry 50 %, 10 slots, perp leverage 3):
a slot is C = 5,000 USD, each leg X = C·3/4 = 3,750 USD = 0.075 BTC at 50,000, rounded down
to the coarser lot of the two legs: Bybit's BTCUSDT lot is 0.001 BTC (``qtyStep``), its spot
lot 0.000001, so 0.075; OKX's BTC-USDT-SWAP lot is 1 contract = 0.01 BTC, so 0.07. The paper
venue charges the exchange's own regular-user fees (``FeeModel.for_venue``): Bybit non-VIP perp
taker 0.055 %, spot 0.10 %; OKX Lv1 perp taker 0.05 %, spot taker 0.10 %; a spot buy's
commission is taken in BTC, as both exchanges do (the holding is the buy less it). The
short perp sells at the bid 49,999.9, the spot buy pays the ask 50,000.1.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from perpdesk.domain import BookTop, Instrument, InstrumentKind, MarkPrice, Trade
from perpdesk.live.paper_feed import LiveMarketData
from perpdesk.live.runner import CarrySignal, DurablePaperVenue, PairSpec, Runner, RunnerConfig
from perpdesk.risk.safeguards import Limits
from perpdesk.sim.costs import Costs, FeeModel
from perpdesk.store import Ledger, init_db
from perpdesk.strategies.carry import CarryRules
from tests import paper_cli
from tests.fake_venues import FakeBybit, FakeOKX
from tests.paper_cli import query, spawn_cli, wait_for

D = Decimal
RATE = "0.0003"  # × 3 × 365 = 32.85 % annualised (8 h interval): above the 20 % entry
FUNDING_GRID_MS = 2_000
BYBIT_PRIVATE = ("/v5/order", "/v5/position", "/v5/account", "/v5/execution", "/v5/user")
OKX_PRIVATE = ("/api/v5/trade", "/api/v5/account", "/api/v5/asset")


class LiveMarket(threading.Thread):
    """The publisher (module docstring) on a Bybit or OKX fake; ``announced`` holds every
    next settlement time (ms) it published. OKX swap sizes are contracts of 0.01 BTC."""

    def __init__(self, fake: FakeBybit | FakeOKX) -> None:
        super().__init__(daemon=True)
        self.fake = fake
        self.okx = isinstance(fake, FakeOKX)
        self.perp, self.spot = ("BTC-USDT-SWAP", "BTC-USDT") if self.okx else ("BTCUSDT",) * 2
        self.halt = threading.Event()
        self.announced: set[int] = set()

    def mark(self) -> None:
        now_ms = int(time.time() * 1000)
        nxt = (now_ms // FUNDING_GRID_MS + 1) * FUNDING_GRID_MS
        self.announced.add(nxt)
        if isinstance(self.fake, FakeOKX):
            self.fake.set_mark(self.perp, "50000.0", ts_ms=now_ms)
            self.fake.set_funding_now(self.perp, RATE, nxt, ts_ms=now_ms)
        else:
            self.fake.set_ticker(
                self.perp,
                ts_ms=now_ms,
                markPrice="50000.0",
                indexPrice="50000.0",
                fundingRate=RATE,
                nextFundingTime=str(nxt),
            )

    def run(self) -> None:
        f, i = self.fake, 0
        perp_qty, book_qty = ("10", "1000") if self.okx else ("0.1", "10")
        while not self.halt.is_set():
            side = "sell" if i % 2 else "buy"
            f.trade(self.perp, "50000.0", perp_qty, side=side)
            f.trade(self.spot, "50000.0", "0.01", spot=True, side=side)
            if i % 5 == 0:
                f.set_book(self.perp, "49999.9", "50000.0", bid_qty=book_qty, ask_qty=book_qty)
                f.set_book(self.spot, "50000.0", "50000.1", spot=True, bid_qty="10", ask_qty="10")
                self.mark()
            i += 1
            time.sleep(0.02)

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


def write_config(d: Path, **runner: Any) -> Path:
    return paper_cli.write_config(d, **{"signals": "mark", **runner})


def spawn(d: Path, exchange: str, url: str, ws_url: str, cfg: Path) -> subprocess.Popen[str]:
    args = ["run", "--paper", "--exchange", exchange, "--config", str(cfg)]
    args += ["--api-url", url, "--ws-url", ws_url, "--spot-api-url", url, "--spot-ws-url", ws_url]
    return spawn_cli(d, args)


@pytest.mark.parametrize(
    ("exchange", "qty", "perp_fee", "spot_fee", "spot_fee_base", "funding", "private"),
    [
        # Bybit: 0.075 × 49,999.9 × 0.00055 = 2.062495875 → 2.06249588 (fees round half-up
        # to 1e-8 USD); the spot buy's commission in BTC: 0.075 × 0.001 = 0.000075, worth
        # 0.000075 × 50,000.1 = 3.7500075 USD; funding 0.075 × 50,000 × 0.0003 = 1.125
        pytest.param(
            "bybit", "0.075", "2.06249588", "3.7500075", "0.000075", "1.125", BYBIT_PRIVATE
        ),
        # OKX: lot 1 contract = 0.01 BTC, so 0.075 → 0.07 on both legs (the coarser lot):
        # 0.07 × 49,999.9 × 0.0005 = 1.7499965; spot 0.07 × 0.001 = 0.00007 BTC, worth
        # 0.00007 × 50,000.1 = 3.500007 USD; funding 0.07 × 50,000 × 0.0003 = 1.05
        pytest.param("okx", "0.07", "1.7499965", "3.500007", "0.00007", "1.05", OKX_PRIVATE),
    ],
)
def test_run_paper_on_live_data_fills_and_books_funding(
    tmp_path: Path,
    exchange: str,
    qty: str,
    perp_fee: str,
    spot_fee: str,
    spot_fee_base: str,
    funding: str,
    private: tuple[str, ...],
) -> None:
    now_ms = int(time.time() * 1000)
    with FakeBybit(now_ms) if exchange == "bybit" else FakeOKX(now_ms) as fake:
        market = LiveMarket(fake)
        market.mark()  # the snapshot a subscriber gets is already the live one
        market.start()
        cfg = write_config(tmp_path, run_id="pl")
        p = spawn(tmp_path, exchange, fake.url, fake.ws_url, cfg)
        try:
            wait_for(
                lambda: (
                    len(query(tmp_path, "SELECT 1 FROM fills")) >= 2
                    and bool(
                        query(tmp_path, "SELECT 1 FROM funding_payments WHERE amount_usd != '0'")
                    )
                ),
                p,
            )
            p.send_signal(signal.SIGTERM)
            _out, err = p.communicate(timeout=30)
        finally:
            market.stop()
            if p.poll() is None:
                p.kill()
        assert p.returncode == 0, err[-2000:]

        fills = query(
            tmp_path,
            "SELECT client_order_id, symbol, side, qty_base, price, fee_usd, fee_qty_base"
            " FROM fills ORDER BY id",
        )
        k = fills[0][0].split("-")[1]  # the cycle that entered
        assert [(c, s, side, D(q), D(px), D(f), D(b)) for c, s, side, q, px, f, b in fills[:2]] == [
            (f"pl-{k}-P-BTCUSDT", "BTCUSDT", "sell", D(qty), D("49999.9"), D(perp_fee), D(0)),
            (
                f"pl-{k}-S-BTCUSDT", "BTCUSDT.SPOT", "buy", D(qty), D("50000.1"), D(spot_fee),
                D(spot_fee_base),
            ),
        ]  # fmt: skip
        # the ledger holds the spot leg net of the commission taken in the coin, as the
        # exchange (and the paper venue) does, and audits clean
        with Ledger(f"sqlite:///{tmp_path / 'data' / 'ledger.sqlite'}") as led:
            rep = led.audit()
            assert rep.ok, rep.mismatches
            assert {p.symbol: p.qty_base for p in led.status().positions if p.qty_base} == {
                "BTCUSDT": -D(qty),
                "BTCUSDT.SPOT": D(qty) - D(spot_fee_base),
            }
        # funding received by the short at mark 50,000 and the predicted rate 0.0003, at a
        # settlement time the fake announced
        paid = query(
            tmp_path,
            "SELECT symbol, ts_ns, amount_usd, funding_rate FROM funding_payments"
            " WHERE amount_usd != '0'",
        )
        assert paid
        for sym, ts_ns, amount, rate in paid:
            assert (sym, D(amount), D(rate)) == ("BTCUSDT", D(funding), D(RATE))
            assert ts_ns % 1_000_000 == 0 and ts_ns // 1_000_000 in market.announced
        # public data only: no key, no order, no private endpoint or socket reached
        assert not [r for r in fake.requests if r.path.startswith(private)]
        assert fake.ws_connections["private"] == 0
        marks = ("mark-price:BTC-USDT-SWAP", "funding-rate:BTC-USDT-SWAP")
        for topic in marks if exchange == "okx" else ("tickers.BTCUSDT",):
            assert fake.ws_subscriptions[topic] >= 1
        if exchange == "okx":  # the spot leg's own streams
            assert fake.ws_subscriptions["trades:BTC-USDT"] >= 1
            assert fake.ws_subscriptions["bbo-tbt:BTC-USDT"] >= 1
        else:  # the same topic names on /v5/public/spot
            assert fake.ws_connections["spot"] >= 1
            assert fake.ws_subscriptions["publicTrade.BTCUSDT"] >= 2
            assert fake.ws_subscriptions["orderbook.1.BTCUSDT"] >= 2


def test_the_feed_opens_only_the_streams_the_venue_has_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A ccxt.pro client without the call behind ``mark_prices`` (Bybit's ``watchTickers``
    switched off in its ``has`` table, as in a ccxt.pro that lacks it): ``events()`` opens the
    perp trades and book and the spot streams, not the marks, and logs that once however
    often the feed reopens its streams. The spot leg comes from /v5/public/spot."""

    async def main(fake: FakeBybit) -> list[Any]:
        md = LiveMarketData.public(
            "bybit",
            ["BTCUSDT"],
            api_url=fake.url,
            ws_url=fake.ws_url,
            spot_api_url=fake.url,
            spot_ws_url=fake.ws_url,
            timeout_ms=2000,
            enable_rate_limit=False,
            reconnect_delay_s=0.05,
        )
        got: list[Any] = []
        try:
            await md.connect()
            md.perp.ex.has["watchTickers"] = False
            for i in range(2):  # the feed reopens its streams after an error
                stream = md.events()
                batch: list[Any] = []
                task = asyncio.ensure_future(_collect(stream, batch))
                # perp and spot books, each subscribed once per opening
                await asyncio.to_thread(fake.wait_subscribed, "orderbook.1.BTCUSDT", 2 * (i + 1))
                px = str(50000 + i)  # a new top on both books, and a trade on each
                fake.set_book("BTCUSDT", f"{px}.0", f"{px}.1")
                fake.set_book("BTCUSDT", f"{px}.0", f"{px}.1", spot=True)
                fake.trade("BTCUSDT", px, "0.1", side="buy")
                fake.trade("BTCUSDT", px, "0.01", spot=True, side="sell")
                end = time.monotonic() + 5
                while len({(type(x).__name__, x.symbol) for x in batch}) < 4:
                    assert time.monotonic() < end, batch
                    await asyncio.sleep(0.02)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await stream.aclose()  # type: ignore[attr-defined]
                got += batch
        finally:
            await md.close()
        return got

    with FakeBybit(int(time.time() * 1000)) as fake:
        fake.set_book("BTCUSDT", "49999.9", "50000.0")
        fake.set_book("BTCUSDT", "50000.0", "50000.1", spot=True)
        with caplog.at_level(logging.WARNING, logger="perpdesk.live.paper_feed"):
            got = asyncio.run(main(fake))
        assert {(type(x).__name__, x.symbol) for x in got} == {
            ("Trade", "BTCUSDT"),
            ("BookTop", "BTCUSDT"),
            ("Trade", "BTCUSDT.SPOT"),
            ("BookTop", "BTCUSDT.SPOT"),
        }
        assert not [x for x in got if isinstance(x, MarkPrice)]
        assert fake.ws_subscriptions["tickers.BTCUSDT"] == 0
        skipped = [
            r.getMessage() for r in caplog.records if "no mark_prices stream" in r.getMessage()
        ]
        assert skipped == [
            "bybit: no mark_prices stream in ccxt.pro for this venue; paper feed runs without it"
        ]


class Signals:
    """Annualised funding per cycle (list index = cycle; the last value repeats)."""

    def __init__(self, ann_pct: list[float]) -> None:
        self.ann_pct = ann_pct

    async def signals(self, cycle: int) -> dict[str, CarrySignal]:
        return {"BTCUSDT": CarrySignal(self.ann_pct[min(cycle, len(self.ann_pct) - 1)], 1e9)}


# the paper instruments of each venue (tick, lot): perp and spot filters as the fakes and
# the exchanges publish them (Binance: paper_instruments' USD-M and spot BTCUSDT; Bybit
# qtyStep 0.001 / spot basePrecision 0.000001; OKX 1 contract = 0.01 BTC / spot lotSz 1e-8)
VENUE_FILTERS = {
    "binanceusdm": ((0.1, 0.001), (0.01, 0.00001)),
    "bybit": ((0.1, 0.001), (0.1, 0.000001)),
    "okx": ((0.1, 0.01), (0.1, 0.00000001)),
}


@pytest.mark.parametrize(
    ("exchange", "qty", "fees", "fee_base", "sold", "perp_cash", "spot_cash"),
    [
        # Binance VIP0: perp taker 0.05 %: 0.075 × 49,999.9 × 0.0005 = 1.87499625 and
        # 0.075 × 50,000.0 × 0.0005 = 1.875; spot 0.10 %: the buy's 0.075 × 0.001 =
        # 0.000075 BTC (× 50,000.1 = 3.7500075 USD) leaves 0.074925; the exit sells it rounded
        # down to the 0.00001 lot, 0.07492 (fee 0.07492 × 50,000 × 0.001 = 3.746) and
        # 0.000005 stays. Perp cash: 0.075 × (49,999.9 − 50,000) − 1.87499625 − 1.875 =
        # −3.75749625; spot: −0.075 × 50,000.1 + 0.07492 × 50,000 − 3.746 = −3,750.0075 +
        # 3,746 − 3.746 = −7.7535 (the coin paid the buy's fee, not the cash)
        pytest.param(
            "binanceusdm", "0.075", ("1.87499625", "3.7500075", "1.875", "3.746"),
            "0.000075", "0.07492", "-3.75749625", "-7.7535", id="binance",
        ),
        # Bybit non-VIP: perp taker 0.055 %: 0.075 × 49,999.9 × 0.00055 = 2.062495875 →
        # 2.06249588 (half-up to 1e-8 USD), 0.075 × 50,000 × 0.00055 = 2.0625; spot as
        # Binance, but the 0.000001 lot sells all 0.074925 (fee 3,746.25 × 0.001 = 3.74625).
        # Perp cash −0.0075 − 2.06249588 − 2.0625 = −4.13249588; spot −3,750.0075 +
        # 3,746.25 − 3.74625 = −7.50375
        pytest.param(
            "bybit", "0.075", ("2.06249588", "3.7500075", "2.0625", "3.74625"),
            "0.000075", "0.074925", "-4.13249588", "-7.50375", id="bybit",
        ),
        # OKX Lv1: 0.07 on both legs (the 0.01 BTC contract); perp taker 0.05 %: 0.07 ×
        # 49,999.9 × 0.0005 = 1.7499965, 0.07 × 50,000 × 0.0005 = 1.75; spot taker 0.10 %:
        # 0.07 × 0.001 = 0.00007 BTC (× 50,000.1 = 3.500007 USD) leaves 0.06993, sold whole
        # (fee 3,496.5 × 0.001 = 3.4965). Perp cash 0.07 × −0.1 − 1.7499965 − 1.75 =
        # −3.5069965; spot −0.07 × 50,000.1 + 3,496.5 − 3.4965 = −7.0035
        pytest.param(
            "okx", "0.07", ("1.7499965", "3.500007", "1.75", "3.4965"),
            "0.00007", "0.06993", "-3.5069965", "-7.0035", id="okx",
        ),
    ],
)  # fmt: skip
def test_runner_books_the_spot_buy_fee_in_the_coin_as_the_paper_venue_holds_it(
    tmp_path: Path,
    exchange: str,
    qty: str,
    fees: tuple[str, str, str, str],
    fee_base: str,
    sold: str,
    perp_cash: str,
    spot_cash: str,
) -> None:
    """The runner on a paper venue with the exchange's fees (``FeeModel.for_venue``, as
    `perpdesk run --paper` on live data): it enters (cycle 1) and exits (cycle 2, the signal
    drops to 0 %) a pair on a flat book — perp 49,999.9 / 50,000.0, spot 50,000.0 / 50,000.1,
    10 BTC a side, trades at 50,000 — and after each cycle the ledger's spot quantity is the
    paper venue's BTC balance exactly, and so is every cash flow; the ledger audits clean."""
    (ptick, plot), (stick, slot) = VENUE_FILTERS[exchange]
    inst = [
        Instrument("paper", "BTCUSDT", InstrumentKind.PERP, "BTC", "USDT", ptick, plot, 8),
        Instrument("paper", "BTCUSDT.SPOT", InstrumentKind.SPOT, "BTC", "USDT", stick, slot),
    ]
    t0, ms = 1_700_000_000_000_000_000, 1_000_000
    events: list[Any] = [
        BookTop("paper", "BTCUSDT", t0, 49999.9, 10.0, 50000.0, 10.0),
        BookTop("paper", "BTCUSDT.SPOT", t0, 50000.0, 10.0, 50000.1, 10.0),
        Trade("paper", "BTCUSDT.SPOT", t0, 50000.0, 0.01, False),
    ]
    events += [
        Trade("paper", "BTCUSDT", t0 + (i + 1) * ms, 50000.0, 0.1, bool(i % 2)) for i in range(40)
    ]
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    init_db(url)
    cfg = RunnerConfig(
        mode="paper",
        run_id="fb",
        pairs=(PairSpec("BTCUSDT", "BTCUSDT.SPOT"),),
        cycle_s=0.01,
        cycle_timeout_s=5.0,
        leg_fill_timeout_s=1.0,
        unwind_timeout_s=2.0,
        poll_s=0.005,
        vpin_bucket_usd=10_000.0,
        vpin_n_buckets=5,
        snapshot_path=tmp_path / "state.json",
    )
    costs = Costs(fees=FeeModel.for_venue(exchange))

    def spot_row(d: Path) -> tuple[D, D]:
        con = sqlite3.connect(d / "ledger.sqlite")
        try:
            ((q, cash),) = con.execute(
                "SELECT qty_base, net_cash_usd FROM positions WHERE symbol = 'BTCUSDT.SPOT'"
            ).fetchall()
        finally:
            con.close()
        return D(q), D(cash)

    async def main() -> None:
        v = DurablePaperVenue(tmp_path / "paper.sqlite", inst, "100000", costs=costs)
        await v.open()
        for ev in events:
            v.on_market(ev)
        v.flush()
        acct = v.inner.account
        with Ledger(url) as led:
            r = Runner(cfg, v, led, Limits(), CarryRules(), Signals([30, 30, 0]))
            await r.start()
            assert await r.run_cycle(1) == "ok"  # enter
            held = D(qty) - D(fee_base)  # the coin bought less the commission taken in it
            assert acct.position("BTCUSDT.SPOT").qty_base == held
            assert spot_row(tmp_path) == (held, -D(qty) * D("50000.1"))  # = the venue's
            assert acct.cash_usd == D(100_000) - D(qty) * D("50000.1") - D(fees[0])
            execs = await v.executions_since(0)
            assert [(e.symbol, e.qty_base, e.fee_usd, e.fee_qty_base) for e in execs] == [
                ("BTCUSDT", D(qty), D(fees[0]), D(0)),
                ("BTCUSDT.SPOT", D(qty), D(fees[1]), D(fee_base)),
            ]
            assert led.audit().ok
            assert await r.run_cycle(2) == "ok"  # exit: sells what is held, on the lot
            await r.stop()
            left = held - D(sold)
            assert acct.position("BTCUSDT.SPOT").qty_base == left
            assert acct.position("BTCUSDT").qty_base == 0
            assert {p.symbol: p.qty_base for p in led.status().positions if p.qty_base} == (
                {"BTCUSDT.SPOT": left} if left else {}
            )
            assert spot_row(tmp_path) == (left, D(spot_cash))
            rows = await v.executions_since(0)
            assert [(e.side.value, e.qty_base, e.fee_usd, e.fee_qty_base) for e in rows[2:]] == [
                ("buy", D(qty), D(fees[2]), D(0)),
                ("sell", D(sold), D(fees[3]), D(0)),
            ]
            # the venue's cash = bankroll + the ledger's cash flows of both legs
            assert acct.cash_usd == D(100_000) + D(perp_cash) + D(spot_cash)
            rep = led.audit()
            assert rep.ok, rep.mismatches
        await v.close()

    asyncio.run(main())


async def _collect(stream: Any, into: list[Any]) -> None:
    async for x in stream:
        into.append(x)
