"""`perpdesk run --paper` on live market data, end to end against the loopback fake Binance
(tests/fake_exchange.py: USD-M and spot REST + market websockets on 127.0.0.1).

The runner runs as a real subprocess of the CLI, with no API key. A publisher thread plays a
flat live market on the fake's public streams: every 20 ms a perp trade of 0.1 BTC at
50,000 (aggressor alternating buyer/seller, i.e. 5,000 USD per trade, balanced flow) and a
spot trade of 0.01 BTC at 50,000; every 100 ms the perp book 49,999.9 / 50,000.0 and the spot
book 50,000.00 / 50,000.01 (10 BTC each) and a mark price of 50,000 with its funding rate and
the next settlement on a 2 s grid.

Sizing by hand (default config: bankroll 100,000 USD, carry 50 %, 10 slots, perp leverage 3):
a slot is C = 5,000 USD, each leg X = C·3/4 = 3,750 USD = 0.075 BTC at 50,000 (well inside
the caps). Paper fills take the live book top: the short perp sells at the bid 49,999.9, the
spot buy pays the ask 50,000.01; fees Binance VIP0 taker 0.05 % perp, 0.10 % spot
(``FeeModel.for_venue("binanceusdm")``), a spot buy's commission taken in BTC as Binance
does without BNB: buying 0.075 holds 0.075 − 0.075 × 0.001 = 0.074925 BTC.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from perpdesk.live.paper_feed import LiveMarketData
from perpdesk.live.runner import DurablePaperVenue
from perpdesk.sim.costs import Costs, FeeModel
from perpdesk.store import Ledger, init_db
from tests.fake_exchange import FakeBinanceUSDM, recorded
from tests.paper_cli import query, spawn_cli, wait_for, write_config

D = Decimal
ROOT = Path(__file__).resolve().parents[1]
RATE_HIGH = "0.0003"  # 0.0003 × 3 × 365 = 32.85 % annualised (8 h): above the 20 % entry
FUNDING_GRID_MS = 2_000


class LiveMarket(threading.Thread):
    """The publisher (module docstring). ``rate(t)`` gives the mark's funding rate at wall
    time ``t`` (s)."""

    def __init__(self, fake: FakeBinanceUSDM, rate: Callable[[float], str]) -> None:
        super().__init__(daemon=True)
        self.fake, self.rate = fake, rate
        self.halt = threading.Event()

    def run(self) -> None:
        f, i = self.fake, 0
        while not self.halt.is_set():
            f.trade("BTCUSDT", "50000.0", "0.1", bool(i % 2))
            f.trade("BTCUSDT", "50000.00", "0.01", bool(i % 2), spot=True)
            if i % 5 == 0:
                f.set_book("BTCUSDT", "49999.9", "10", "50000.0", "10")
                f.set_book("BTCUSDT", "50000.00", "10", "50000.01", "10", spot=True)
                now_ms = int(time.time() * 1000)
                nxt = (now_ms // FUNDING_GRID_MS + 1) * FUNDING_GRID_MS
                f.set_mark("BTCUSDT", "50000.0", "50000.0", self.rate(time.time()), nxt)
            i += 1
            time.sleep(0.02)

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


@pytest.fixture
def fake():
    with FakeBinanceUSDM(int(time.time() * 1000)) as f:
        # the scanner's inputs: recorded premiumIndex (BTCUSDT lastFundingRate 0.00038246,
        # 41.9 % annualised) and a 24 h quote volume above the 10 M USD universe filter
        ticker = {**recorded("ticker_24hr"), "quoteVolume": "2000000000.0"}
        f.set_json("/fapi/v1/ticker/24hr", [ticker])
        yield f


def spawn(d: Path, fake: FakeBinanceUSDM, cfg: Path) -> subprocess.Popen[str]:
    args = ["run", "--paper", "--config", str(cfg), "--api-url", fake.url, "--ws-url"]
    args += [fake.ws_url, "--spot-api-url", fake.url, "--spot-ws-url", fake.spot_ws_url]
    return spawn_cli(d, args)


def venue_record(d: Path, fake: FakeBinanceUSDM, run_id: str) -> DurablePaperVenue:
    """The paper venue rebuilt from its journal, on the instruments the runner used."""

    async def main() -> DurablePaperVenue:
        md = LiveMarketData.public(
            "binanceusdm",
            ["BTCUSDT"],
            api_url=fake.url,
            ws_url=fake.ws_url,
            spot_api_url=fake.url,
            spot_ws_url=fake.spot_ws_url,
            enable_rate_limit=False,
        )
        try:
            await md.connect()
            inst = md.instruments("paper")
        finally:
            await md.close()
        # with the fees the runner's venue had (`run --paper` on live data: for_venue)
        costs = Costs(fees=FeeModel.for_venue("binanceusdm"))
        v = DurablePaperVenue(d / "data" / f"paper-{run_id}.sqlite", inst, "100000", costs=costs)
        await v.open()
        return v

    return asyncio.run(main())


TRADE_PLANS = "SELECT 1 FROM events WHERE kind = 'plan' AND data NOT LIKE '%\"actions\":[]%'"
PRIVATE = ("/fapi/v1/order", "/api/v3/order", "/fapi/v1/listenKey", "/api/v3/account")


def test_run_paper_on_live_data_trades_the_live_book(tmp_path: Path, fake) -> None:
    market = LiveMarket(fake, lambda t: RATE_HIGH)
    market.start()
    cfg = write_config(tmp_path, run_id="e2e")  # signals = scanner, as in --live
    p = spawn(tmp_path, fake, cfg)
    try:
        # entered, and at least one settlement of the held pair booked
        wait_for(
            lambda: (
                len(query(tmp_path, "SELECT 1 FROM fills")) >= 2
                and bool(query(tmp_path, "SELECT 1 FROM funding_payments WHERE amount_usd != '0'"))
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
    k = fills[0][0].split("-")[1]  # the cycle that entered (the first with a warm VPIN)
    assert [(c, s, side, D(q), D(px), D(f), D(b)) for c, s, side, q, px, f, b in fills[:2]] == [
        # 0.075 × 49,999.9 = 3,749.9925 USD; fee × 0.0005 = 1.87499625
        (f"e2e-{k}-P-BTCUSDT", "BTCUSDT", "sell", D("0.075"), D("49999.9"), D("1.87499625"), 0),
        # the commission in BTC: 0.075 × 0.001 = 0.000075, worth × 50,000.01 = 3.75000075 USD
        (
            f"e2e-{k}-S-BTCUSDT", "BTCUSDT.SPOT", "buy", D("0.075"), D("50000.01"),
            D("3.75000075"), D("0.000075"),
        ),
    ]  # fmt: skip
    # funding on the short 0.075 at mark 50,000 and rate 0.0003: +0.075 × 50,000 × 0.0003
    paid = {D(a) for (a,) in query(tmp_path, "SELECT amount_usd FROM funding_payments")}
    assert paid - {D(0)} == {D("1.125")}
    plans = [
        json.loads(x) for (x,) in query(tmp_path, "SELECT data FROM events WHERE kind = 'plan'")
    ]
    entry = next(p for p in plans if p["actions"])
    assert entry["cycle"] == int(k) and entry["actions"][0]["kind"] == "enter"
    assert entry["vpin"]["BTCUSDT"] == 0.0  # tick VPIN warm on the live trades (balanced flow)
    with Ledger(f"sqlite:///{tmp_path / 'data' / 'ledger.sqlite'}") as led:
        assert led.audit().ok
        assert {p.symbol: p.qty_base for p in led.status().positions if p.qty_base} == {
            "BTCUSDT": D("-0.075"),
            "BTCUSDT.SPOT": D("0.074925"),  # 0.075 − the 0.000075 BTC commission
        }
    snap = json.loads((tmp_path / "data" / "state.json").read_text())
    assert snap["mode"] == "paper"
    # public data only: no key, no order, no private endpoint ever reached the exchange
    assert not [r for r in fake.requests if r.path.startswith(PRIVATE)]
    assert {"/fapi/v1/exchangeInfo", "/api/v3/exchangeInfo", "/fapi/v1/premiumIndex"} <= {
        r.path for r in fake.requests
    }
    # the journal holds the live events the fills were made from
    v = venue_record(tmp_path, fake, "e2e")
    try:
        assert [f.client_order_id for f in v.inner.fill_log][:2] == [c for c, *_ in fills[:2]]
        # the paper venue holds what the ledger holds
        assert v.inner.account.position("BTCUSDT.SPOT").qty_base == D("0.074925")
        assert len(v.recent_trades(["BTCUSDT", "BTCUSDT.SPOT"])) > 20
    finally:
        asyncio.run(v.close())


def test_killed_and_restarted_paper_run_on_live_data_keeps_every_fill_once(
    tmp_path: Path, fake
) -> None:
    """SIGKILL 0–100 ms after the runner planned a trade (before, while or after it sends
    the legs), three times, restarting each time; the live stream goes on meanwhile. Funding alternates 1 s high / 1 s zero (mark stream signals), so
    pairs open and close across the kills."""
    t0 = time.time()
    market = LiveMarket(fake, lambda t: RATE_HIGH if int(t - t0) % 2 == 0 else "0")
    market.start()
    cfg = write_config(tmp_path, run_id="rk", signals="mark", cycle_s=0.2)
    rng = random.Random(20261123)
    kills = 0
    try:
        for _ in range(3):
            # kill right after the runner planned a trade: before, while or after it sends
            # the legs (the plan is written before the first order)
            n_plans = len(query(tmp_path, TRADE_PLANS))
            p = spawn(tmp_path, fake, cfg)
            wait_for(lambda n=n_plans: len(query(tmp_path, TRADE_PLANS)) > n, p)
            time.sleep(rng.choice((0.0, 0.002, 0.01, 0.03, 0.1)))
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            assert p.returncode == -signal.SIGKILL
            kills += 1
        # a last clean run: reconciles after the final kill and trades on; then the market
        # stops, the runner books what the venue did in a full cycle, and stops on SIGTERM
        p = spawn(tmp_path, fake, cfg)
        # it trades (a pair in this run), and pairs have been opened and closed by now
        n = max(4, len(query(tmp_path, "SELECT 1 FROM fills")) + 2)
        wait_for(lambda: len(query(tmp_path, "SELECT 1 FROM fills")) >= n, p)
        market.stop()
        ends = len(query(tmp_path, "SELECT 1 FROM events WHERE kind = 'cycle_end'"))
        wait_for(
            lambda: (
                len(query(tmp_path, "SELECT 1 FROM events WHERE kind = 'cycle_end'")) >= ends + 2
            ),
            p,
        )
        p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err[-2000:]
    finally:
        market.stop()
    assert kills == 3

    kinds = Counter(k for (k,) in query(tmp_path, "SELECT kind FROM events"))
    assert kinds["reconciled"] == kills + 1
    assert kinds["reconcile_mismatch"] == 0 and kinds["cycle_error"] == 0
    assert kinds["safeguard_reject"] == 0
    ledger_fills = query(
        tmp_path,
        "SELECT trade_id, client_order_id, side, qty_base, price, fee_usd, symbol, fee_qty_base"
        " FROM fills",
    )
    assert len(ledger_fills) >= 4, "pairs were opened and closed"
    # every fill a taker (Binance VIP0): a spot buy pays 0.1 % of the coin bought, worth that
    # many BTC at its price; every other fill pays in USDT (perp 0.05 %, spot sale 0.1 %),
    # rounded half-up to 1e-8 USD
    for _tid, _cid, side, q, px, fee, sym, b in ledger_fills:
        spot = sym == "BTCUSDT.SPOT"
        if spot and side == "buy":
            assert D(b) == D(q) * D("0.001") and D(fee) == D(b) * D(px)
        else:
            rate = D("0.001") if spot else D("0.0005")
            half_up = (D(q) * D(px) * rate).quantize(D("1e-8"), rounding=ROUND_HALF_UP)
            assert D(b) == 0 and D(fee) == half_up
    v = venue_record(tmp_path, fake, "rk")
    try:
        execs = asyncio.run(v.executions_since(0))
        # no fill lost, none doubled: the venue's trade ids, once each, same numbers
        assert len({r[0] for r in ledger_fills}) == len(ledger_fills)
        assert {r[0]: (r[1], r[2], D(r[3]), D(r[4]), D(r[5]), D(r[7])) for r in ledger_fills} == {
            e.trade_id: (
                e.client_order_id, e.side.value, e.qty_base, e.price, e.fee_usd, e.fee_qty_base
            )
            for e in execs
        }  # fmt: skip
        # no order sent twice
        con = sqlite3.connect(tmp_path / "data" / "paper-rk.sqlite")
        placed = [
            json.loads(o)["client_order_id"]
            for (o,) in con.execute("SELECT payload FROM journal WHERE kind = 'place'")
        ]
        con.close()
        assert len(placed) == len(set(placed))
        # positions: Σ (signed fill − commission in the coin) (computed here) = venue, and
        # hedged to within a perp lot (the spot leg is net of its buys' commissions; an exit
        # sells it rounded down to the 0.00001 spot lot)
        qty: dict[str, D] = {}
        for _tid, _cid, side, q, _p, _f, sym, b in ledger_fills:
            qty[sym] = qty.get(sym, D(0)) + (D(q) if side == "buy" else -D(q)) - D(b)
        venue_pos = {x.symbol: x.qty_base for x in asyncio.run(v.positions())}
        for sym in ("BTCUSDT", "BTCUSDT.SPOT"):
            assert qty.get(sym, D(0)) == venue_pos.get(sym, D(0)), sym
        assert abs(qty.get("BTCUSDT", D(0)) + qty.get("BTCUSDT.SPOT", D(0))) < D("0.001")
        # funding: every settlement the venue booked is in the ledger once
        fund = query(tmp_path, "SELECT ts_ns, amount_usd FROM funding_payments")
        assert sorted((t, D(a)) for t, a in fund) == sorted(
            (f.ts_ns, f.amount_usd) for f in v.inner.funding
        )
        # equity: bankroll + Σ fills (−signed q × p − fee + coin commission × p) + Σ funding
        # + Σ qty × mark
        cash = D(100_000) + sum((D(a) for _t, a in fund), D(0))
        for _tid, _cid, side, q, px, fee, _s, b in ledger_fills:
            cash += -(D(q) if side == "buy" else -D(q)) * D(px) - D(fee) + D(b) * D(px)
        marks = dict(query(tmp_path, "SELECT symbol, mark_price FROM positions"))
        cash += sum((qty.get(s, D(0)) * D(m) for s, m in marks.items() if m is not None), D(0))
        with Ledger(f"sqlite:///{tmp_path / 'data' / 'ledger.sqlite'}") as led:
            rep = led.audit()
            assert rep.ok, rep.mismatches
            assert led.status().equity_usd == cash == rep.recomputed_equity_usd
    finally:
        asyncio.run(v.close())


def test_feed_survives_a_malformed_message_and_a_dropped_socket(tmp_path: Path, fake) -> None:
    from perpdesk.live.paper_feed import live_feed

    async def main() -> None:
        md = LiveMarketData.public(
            "binanceusdm",
            ["BTCUSDT"],
            api_url=fake.url,
            ws_url=fake.ws_url,
            spot_api_url=fake.url,
            spot_ws_url=fake.spot_ws_url,
            enable_rate_limit=False,
            reconnect_delay_s=0.05,
        )
        await md.connect()
        inst = md.instruments("paper")
        assert [(i.symbol, i.tick_size, i.lot_size, i.funding_interval_h) for i in inst] == [
            ("BTCUSDT", 0.1, 0.001, 8),  # recorded USD-M exchangeInfo filters
            ("BTCUSDT.SPOT", 0.01, 0.00001, 0),  # recorded spot exchangeInfo filters
        ]
        v = DurablePaperVenue(tmp_path / "j.sqlite", inst, "1000")
        await v.open()
        errors: list[BaseException] = []
        feed = asyncio.ensure_future(
            live_feed(v, md.events, flush_s=0.0, restart_delay_s=0.05, on_error=errors.append)
        )

        async def until(cond: Callable[[], bool]) -> None:
            end = time.monotonic() + 10
            while not cond():
                assert time.monotonic() < end, "condition not reached"
                await asyncio.sleep(0.02)

        async def subscribed() -> None:
            for s in ("btcusdt@trade", "btcusdt@bookTicker", "btcusdt@markPrice"):
                assert await asyncio.to_thread(fake.wait_subscribed, s)
            for s in ("btcusdt@trade", "btcusdt@bookTicker"):
                assert await asyncio.to_thread(fake.wait_subscribed, s, spot=True)

        def prices() -> list[tuple[str, float]]:
            return [(t.symbol, t.price) for t in v.recent_trades(["BTCUSDT", "BTCUSDT.SPOT"])]

        async def publish_until(send: Callable[[], None], last: tuple[str, float]) -> None:
            # a restarted stream misses what arrived while it was down: send until seen
            end = time.monotonic() + 10
            while prices()[-1:] != [last]:
                assert time.monotonic() < end, f"{last} never arrived"
                send()
                await asyncio.sleep(0.1)

        await subscribed()
        await publish_until(
            lambda: fake.trade("BTCUSDT", "50001.0", "0.1", False), ("BTCUSDT", 50001.0)
        )
        now = int(time.time() * 1000)
        bad = {"e": "trade", "E": now, "T": now, "s": "BTCUSDT", "t": 7, "p": None, "q": "0.1"}
        fake.publish("btcusdt@trade", {**bad, "X": "MARKET", "m": False})
        await until(lambda: len(errors) >= 1)
        assert isinstance(errors[0], TypeError)  # the price null of the malformed frame
        await publish_until(
            lambda: fake.trade("BTCUSDT", "50002.0", "0.1", True, spot=True),
            ("BTCUSDT.SPOT", 50002.0),
        )
        assert await asyncio.to_thread(fake.drop_market_streams) >= 2
        await until(lambda: md.stream_errors >= 1)
        await subscribed()
        await publish_until(
            lambda: fake.trade("BTCUSDT", "50003.0", "0.1", False), ("BTCUSDT", 50003.0)
        )
        feed.cancel()
        seen = prices()
        assert [x for i, x in enumerate(seen) if i == 0 or seen[i - 1] != x] == [
            ("BTCUSDT", 50001.0),
            ("BTCUSDT.SPOT", 50002.0),
            ("BTCUSDT", 50003.0),
        ]
        await v.close()
        await md.close()
        # every event applied was journaled: a reopened venue holds the same trades
        v2 = DurablePaperVenue(tmp_path / "j.sqlite", inst, "1000")
        await v2.open()
        assert [(t.symbol, t.price) for t in v2.recent_trades(["BTCUSDT", "BTCUSDT.SPOT"])] == seen
        await v2.close()

    asyncio.run(main())


def test_a_perp_without_a_spot_market_is_one_clear_error(fake) -> None:
    from perpdesk.execution.protocol import VenueError

    fake.spot_exchange_info = {
        **fake.spot_exchange_info,
        "symbols": [s for s in fake.spot_exchange_info["symbols"] if s["symbol"] != "ETHUSDT"],
    }

    async def main() -> None:
        md = LiveMarketData.public(
            "binanceusdm",
            ["ETHUSDT"],
            api_url=fake.url,
            spot_api_url=fake.url,
            enable_rate_limit=False,
        )
        try:
            with pytest.raises(
                VenueError, match=r"^binance: no spot market ETH/USDT for ETHUSDT.SPOT$"
            ):
                await md.connect()
        finally:
            await md.close()

    asyncio.run(main())


def test_a_late_mark_does_not_settle_the_same_funding_twice() -> None:
    """Live streams interleave: a mark stamped just before a settlement can arrive after the
    perp trade that triggered it. Binance settles each time once; so does the paper venue.
    Short 0.1 BTC, mark 50,000, rate 0.0003: each settlement pays +0.1 × 50,000 × 0.0003 =
    1.5 USD."""
    from perpdesk.domain import BookTop, MarkPrice, Order, Side, Trade
    from perpdesk.execution.paper import PaperVenue
    from perpdesk.live.runner import PairSpec, paper_instruments

    s_ns = 1_000_000_000
    t0 = 1_700_000_000 * s_ns
    v = PaperVenue(paper_instruments("paper", (PairSpec("BTCUSDT", "BTCUSDT.SPOT"),)), "100000")
    v.on_event(BookTop("paper", "BTCUSDT", t0, 50000.0, 5.0, 50000.1, 5.0))
    v.submit(Order("s1", "paper", "BTCUSDT", Side.SELL, 0.1))
    due = t0 + 2 * s_ns
    v.on_event(MarkPrice("paper", "BTCUSDT", t0 + s_ns, 50000.0, 50000.0, 0.0003, due))
    v.on_event(Trade("paper", "BTCUSDT", due, 50000.0, 0.01, False))  # triggers the settlement
    late = MarkPrice("paper", "BTCUSDT", due - 1_000_000, 50000.0, 50000.0, 0.0003, due)
    v.on_event(late)  # stamped 1 ms before it, received after it
    v.on_event(Trade("paper", "BTCUSDT", due + s_ns // 2, 50000.0, 0.01, False))
    assert [(f.ts_ns, f.amount_usd) for f in v.funding] == [(due, D("1.5"))]
    # the next announced time settles as usual
    nxt = due + 2 * s_ns
    v.on_event(MarkPrice("paper", "BTCUSDT", due + s_ns, 50000.0, 50000.0, 0.0003, nxt))
    v.on_event(Trade("paper", "BTCUSDT", nxt, 50000.0, 0.01, False))
    assert [(f.ts_ns, f.amount_usd) for f in v.funding] == [(due, D("1.5")), (nxt, D("1.5"))]


def test_flip_one_switch_the_same_config_runs_live(tmp_path: Path) -> None:
    """The paper config plus the two risk switches and `--live` instead of `--paper`: the same
    runner trades the pair on the (fake) exchange with the API key from the environment;
    every order and fill the exchange holds is in the ledger once, and the pair is hedged."""
    key, secret = "flip-test-key-0123456789", "flip-test-secret-0123456789"
    with FakeBinanceUSDM(int(time.time() * 1000), api_key=key, api_secret=secret) as fake:
        fake.spot_balances["USDT"] = D(100_000)
        market = LiveMarket(fake, lambda t: RATE_HIGH)
        market.start()
        # ccxt's own rate limiter paces the REST calls (income costs 30 weights = 1.5 s on
        # binanceusdm), so the live test runs slower cycles than the paper ones
        cfg = write_config(
            tmp_path,
            run_id="flip",
            signals="mark",
            cycle_s=2.0,
            cycle_timeout_s=20.0,
            leg_fill_timeout_s=8.0,
            unwind_timeout_s=8.0,
        )
        cfg.write_text(
            cfg.read_text() + '[risk]\nenable_live_orders = true\nlive_layers = ["carry"]\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERPDESK_")}
        env |= {
            "PYTHONUNBUFFERED": "1",
            "PERPDESK_BINANCE_API_KEY": key,
            "PERPDESK_BINANCE_API_SECRET": secret,
        }
        # live needs the ledger created beforehand (`perpdesk init-db`); paper creates its own
        (tmp_path / "data").mkdir()
        init_db(f"sqlite:///{tmp_path / 'data' / 'ledger.sqlite'}")
        args = ["run", "--live", "--config", str(cfg), "--api-url", fake.url, "--ws-url"]
        args += [fake.ws_url, "--spot-api-url", fake.url, "--spot-ws-url", fake.spot_ws_url]
        args += ["--spot-ws-api-url", fake.spot_ws_api_url]
        p = subprocess.Popen(
            [sys.executable, "-m", "perpdesk.app.cli", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: len(query(tmp_path, "SELECT 1 FROM fills")) >= 2, p)
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=30)
        finally:
            market.stop()
            if p.poll() is None:
                p.kill()
        assert p.returncode == 0, err[-2000:]
        assert key not in out + err and secret not in out + err
        fills = query(tmp_path, "SELECT client_order_id, symbol, side, qty_base FROM fills")
        venue_orders = {
            o["clientOrderId"]: o for o in [*fake.orders.values(), *fake.spot_orders.values()]
        }
        # each ledger fill is an order the exchange holds, and no client id was sent twice
        assert len(venue_orders) == len(fake.orders) + len(fake.spot_orders)
        assert {c for c, *_ in fills} <= set(venue_orders)
        by_sym = Counter()
        for _c, sym, side, q in fills:
            by_sym[sym] += D(q) if side == "buy" else -D(q)
        # 0.075 BTC per leg, as in paper (module docstring): short perp, long spot
        assert by_sym["BTCUSDT"] == -by_sym["BTCUSDT.SPOT"] and by_sym["BTCUSDT.SPOT"] >= D("0.075")
        assert fake.spot_balances["BTC"] == by_sym["BTCUSDT.SPOT"]
        assert (tmp_path / "data" / "state.json").is_file()
        snap = json.loads((tmp_path / "data" / "state.json").read_text())
        assert snap["mode"] == "live"
